package upstream

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/arcaneapi/caddy-arcane/upstream/anthropic"
	"github.com/arcaneapi/caddy-arcane/upstream/openai"
	"github.com/arcaneapi/caddy-arcane/upstream/sse"
	"github.com/arcaneapi/caddy-arcane/upstream/tokens"
)

// Basis says where a usage figure came from.
type Basis string

// Usage bases, as ledger rows record them.
const (
	// BasisUpstream: the provider reported the usage.
	BasisUpstream Basis = "upstream"
	// BasisCounted: the provider reported none; the gateway counted the
	// prompt and the text it delivered with a tokenizer.
	BasisCounted Basis = "counted"
)

// Outcome says how an exchange ended.
type Outcome string

// Outcomes.
const (
	OutcomeOK            Outcome = "ok"
	OutcomeClientClosed  Outcome = "client_closed"
	OutcomeUpstreamError Outcome = "upstream_error"
	// OutcomeInvalidRequest: the provider refused the request itself (a
	// 4xx such as 400 or 422, passed on to the client); the deployment
	// works and nothing is charged.
	OutcomeInvalidRequest Outcome = "invalid_request"
)

// Exchange is one chat completion passing through the proxy: what the
// handler knows going in, and what Forward found out.
type Exchange struct {
	// Body is the client's request body as received; Request is its scan.
	Body    []byte
	Request *openai.Request
	Model   *Model
	// Header is the client's request header; only an allow-list of it
	// goes upstream.
	Header http.Header
	// Cost, when set, appends what the client is charged for a usage, as a
	// JSON number of dollars; the proxy adds it to the usage the client
	// sees as usage.cost.
	Cost func(dst []byte, u openai.Usage) []byte

	// Deployment served the request (nil if none was tried).
	Deployment *Deployment
	// Usage is what the request used, from Basis.
	Usage openai.Usage
	Basis Basis
	// Delivered reports whether any part of an answer reached the client.
	Delivered bool
	Outcome   Outcome
	// Refused reports bad input found only when translating the request
	// for the deployment's provider: answered with a 400 before any call.
	Refused bool
	// Attempts counts the calls made to deployments (0 when none could be
	// tried); Tries lists the failed ones that were moved on from.
	Attempts int
	Tries    []Try

	// FirstByte is how long after Forward began the answer's first byte
	// went to the client (the time to first token, for a stream); zero
	// when nothing was delivered. Upstream is the time spent in calls to
	// deployments, from sending each request to the end of its answer.
	FirstByte time.Duration
	Upstream  time.Duration

	// keepAlive writes comments to a stream's client until its first
	// event (Proxy.KeepAlive).
	keepAlive *keepAlive
	began     time.Time
}

// delivering marks the first byte of the answer going to the client.
func (x *Exchange) delivering() {
	x.Delivered = true
	x.FirstByte = max(time.Since(x.began), 1)
}

// Error is a failure before anything was written to the client; the
// handler answers it in OpenAI's error envelope.
type Error struct {
	Status  int
	Type    string
	Code    string
	Param   string
	Message string
	// RetryAfter is the Retry-After header to send, if any.
	RetryAfter string
	// Err is the cause, for logs; never shown to clients.
	Err error
	// retry: the deployment, not the request, failed; another deployment
	// may serve the request.
	retry bool
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%d %s: %v", e.Status, e.Code, e.Err)
	}
	return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// forwardHeaders are the client headers that go upstream. Everything else
// (the client's Authorization, cookies, forwarding headers, ...) stays
// behind: the gateway is a client of the provider, not a relay.
var forwardHeaders = []string{"Accept-Language", "OpenAI-Beta", "X-Request-Id"}

// Proxy forwards chat completions to deployments. The zero value is not
// usable; set Tokens.
type Proxy struct {
	// Tokens counts usage when an upstream reports none.
	Tokens *tokens.Counter
	// MaxResponse bounds a non-streamed upstream answer. Zero means 32 MiB.
	MaxResponse int64
	// MaxEvent bounds one streamed event. Zero means 16 MiB.
	MaxEvent int
	// DefaultMaxTokens is the max_tokens sent to providers that require
	// one (Anthropic) when neither the request nor the model sets it.
	// Zero means 4096.
	DefaultMaxTokens int64

	// Attempts bounds the calls one request makes, each to a different
	// deployment. Zero means DefaultAttempts; 1 turns failover off.
	Attempts int
	// TryDuration is how long after the first attempt a new one may start.
	// Zero means DefaultTryDuration.
	TryDuration time.Duration
	// RequestTimeout caps a request's whole time upstream, attempts and
	// streaming included. Zero means DefaultRequestTimeout.
	RequestTimeout time.Duration
	// Breaker is the circuit-breaking policy for every deployment.
	Breaker Breaker
	// KeepAlive, when positive, makes a stream's client get an SSE
	// comment at this interval until the answer's first event. Zero turns
	// keep-alives off.
	KeepAlive time.Duration
	// Now is the clock circuits are timed by; nil means time.Now.
	Now func() time.Time
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

func getBuf() *[]byte  { return bufPool.Get().(*[]byte) }
func putBuf(b *[]byte) { *b = (*b)[:0]; bufPool.Put(b) }

// send posts body to the attempt's deployment with the headers its
// provider's API wants, and returns a 200 response. Anything else is the
// client's *Error, and the attempt records what it says of the deployment.
func (p *Proxy) send(a *attempt, x *Exchange, body []byte) (*http.Response, error) {
	dep := a.dep
	var r io.Reader
	var sent *sentBody
	if x.Request.Stream {
		sent = &sentBody{all: body}
		r = sent.reader()
	} else {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(a.ctx, http.MethodPost, dep.Provider.Endpoint, r)
	if err != nil {
		a.verdict = verdictNone
		return nil, &Error{Status: http.StatusInternalServerError, Type: "server_error", Message: "The gateway could not build the upstream request.", Err: err}
	}
	if sent != nil {
		req.ContentLength, req.GetBody = int64(len(body)), sent.getBody
		// Once the answer's headers are in, the transport sends the
		// request again no more.
		defer sent.release()
	}
	h := req.Header
	h.Set("Content-Type", "application/json")
	if x.Request.Stream {
		h.Set("Accept", "text/event-stream")
	} else {
		h.Set("Accept", "application/json")
	}
	key := dep.key()
	if dep.Provider.Type == TypeAnthropic {
		if key != "" {
			h.Set("X-Api-Key", key)
		}
		h.Set("Anthropic-Version", anthropic.Version)
	} else {
		if key != "" {
			h.Set("Authorization", "Bearer "+key)
		}
		for _, name := range forwardHeaders {
			if v := x.Header.Values(name); len(v) > 0 {
				h[name] = v
			}
		}
	}
	resp, err := dep.Provider.Client.Do(req)
	if err != nil {
		if a.client.Err() != nil {
			return nil, errClientClosed(x, err)
		}
		if cause := a.timedOut(); cause != nil {
			return nil, a.timeoutError(cause)
		}
		if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
			// The gateway is out of file descriptors: its own trouble, not
			// the provider's. Opening the provider's circuit would turn an
			// overload into an outage for every client; failing over would
			// only fail again.
			a.verdict = verdictNone
			return nil, &Error{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "gateway_overloaded", RetryAfter: "1",
				Message: "The gateway has too many connections open. Retry with backoff.", Err: err}
		}
		a.fail(err.Error())
		return nil, &Error{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "upstream_unavailable",
			Message: "The model's provider could not be reached. Retry with backoff.", Err: err, retry: true}
	}
	a.headers()
	// An answer: the deployment works, unless what follows says otherwise.
	a.verdict = verdictOK
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, p.upstreamError(a, resp, x)
	}
	if !x.Request.Stream {
		a.firstByte()
	}
	return resp, nil
}

// errClientClosed is returned when the client left before anything was
// written; nobody reads it, but the access log records 499.
func errClientClosed(x *Exchange, cause error) *Error {
	x.Outcome = OutcomeClientClosed
	return &Error{Status: 499, Type: "invalid_request_error", Code: "client_closed", Message: "The client closed the request.", Err: cause}
}

// upstreamError turns a provider's refusal into the client's error. The
// provider rejecting the gateway's own credentials is the operator's
// problem, never "your key is invalid".
func (p *Proxy) upstreamError(a *attempt, resp *http.Response, x *Exchange) error {
	status := resp.StatusCode
	cause := fmt.Errorf("upstream %s answered HTTP %d", x.Deployment.Name(), status)
	// Whatever says the deployment, not the request, is at fault moves the
	// request to the next deployment.
	switch {
	case status == http.StatusTooManyRequests:
		a.verdict, a.cause = verdictLimited, cause.Error()
		if n, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && n > 0 {
			a.bench = time.Duration(min(n, 3600)) * time.Second
		}
	case status >= 500 || status < 400 || status == http.StatusRequestTimeout ||
		status == http.StatusUnauthorized || status == http.StatusForbidden || status == http.StatusNotFound ||
		status == http.StatusPaymentRequired || status == http.StatusProxyAuthRequired:
		a.fail(cause.Error())
	default:
		// The provider refused the request itself: the deployment works.
		return p.requestRefused(resp, x, cause)
	}
	e := p.deploymentError(resp, status, cause)
	e.retry = true
	return e
}

// deploymentError is the client's answer when a deployment failed (or
// asked for a pause) and no other could take the request.
func (p *Proxy) deploymentError(resp *http.Response, status int, cause error) *Error {
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden ||
		status == http.StatusPaymentRequired || status == http.StatusProxyAuthRequired:
		// The gateway's own key, provider account (402: out of credit) or
		// outbound proxy was refused: the operator's problem, and its
		// details are not the client's business.
		return &Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_auth_failed",
			Message: "The model's provider rejected this gateway's credentials. This is a gateway configuration problem, not a problem with your API key; contact the operator.", Err: cause}
	case status == http.StatusTooManyRequests:
		retry := retryAfter(resp)
		return &Error{Status: http.StatusTooManyRequests, Type: "requests", Code: "rate_limit_exceeded", RetryAfter: retry,
			Message: "The model's provider is rate limiting requests. Retry after " + retry + " seconds.", Err: cause}
	case status == statusOverloaded:
		// Anthropic's "overloaded_error": a transient failure on their
		// side that clients should retry, as they retry 503.
		retry := retryAfter(resp)
		return &Error{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "upstream_overloaded", RetryAfter: retry,
			Message: "The model's provider is overloaded. Retry after " + retry + " seconds.", Err: cause}
	case status == http.StatusNotFound:
		return &Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_model_unavailable",
			Message: "The model's provider does not know this model. This is a gateway configuration problem; contact the operator.", Err: cause}
	case status == http.StatusRequestTimeout:
		return &Error{Status: http.StatusGatewayTimeout, Type: "server_error", Code: "upstream_timeout",
			Message: "The model's provider timed out. Retry with backoff.", Err: cause}
	}
	return &Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_error",
		Message: fmt.Sprintf("The model's provider failed (HTTP %d). Retry with backoff.", status), Err: cause}
}

// requestRefused passes on a provider's refusal of the request itself (a
// 4xx other than those deploymentError answers): its words, with its
// model id replaced by the public one.
func (p *Proxy) requestRefused(resp *http.Response, x *Exchange, cause error) *Error {
	x.Outcome = OutcomeInvalidRequest
	status := resp.StatusCode
	if status == http.StatusRequestEntityTooLarge {
		return &Error{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "request_too_large",
			Message: "The model's provider refused the request as too large.", Err: cause}
	}
	// Other 4xx: the provider refused the request itself. Pass its words
	// on, with its model id replaced by the public one.
	e := &Error{Status: status, Type: "invalid_request_error", Message: "The model's provider refused the request.", Err: cause}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var env struct {
		Error struct {
			Message string `json:"message"`
			Type    string `json:"type"`
			Param   string `json:"param"`
			Code    any    `json:"code"`
		} `json:"error"`
	}
	if typ, msg, ok := anthropic.ParseError(data); ok && x.Deployment.Provider.Type == TypeAnthropic {
		e.Message = replaceModel(msg, x.Deployment.Model, x.Model.ID)
		if typ != "" && typ != "error" {
			e.Type = typ
		}
	} else if json.Unmarshal(data, &env) == nil && env.Error.Message != "" {
		e.Message = replaceModel(env.Error.Message, x.Deployment.Model, x.Model.ID)
		e.Param = env.Error.Param
		if env.Error.Type != "" {
			e.Type = env.Error.Type
		}
		if code, ok := env.Error.Code.(string); ok {
			e.Code = code
		}
	}
	if key := x.Deployment.key(); key != "" && strings.Contains(e.Message, key) {
		// A provider quoting the gateway's key in its words: the words
		// go on, the key does not.
		e.Message = strings.ReplaceAll(e.Message, key, "[REDACTED]")
	}
	return e
}

// statusOverloaded is Anthropic's 529 "overloaded_error".
const statusOverloaded = 529

// retryAfter is the upstream's Retry-After in whole seconds, clamped to 1
// to 3600 (1 when missing or not a number).
func retryAfter(resp *http.Response) string {
	if n, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
		return strconv.Itoa(min(max(n, 1), 3600))
	}
	return "1"
}

func replaceModel(s, upstream, public string) string {
	if upstream == "" || upstream == public {
		return s
	}
	return string(bytes.ReplaceAll([]byte(s), []byte(upstream), []byte(public)))
}

// single relays a non-streamed answer.
func (p *Proxy) single(a *attempt, w http.ResponseWriter, resp *http.Response, x *Exchange) error {
	in := getBuf()
	defer putBuf(in)
	data, err := p.readAnswer(a, *in, resp, x)
	*in = data
	if err != nil {
		return err
	}
	// One walk validates the answer (exactly as json.Valid would, for an
	// object) and finds its model and usage.
	c := openai.ScanChunk(data)
	if !c.Valid() {
		a.fail("answer is not a JSON object")
		return &Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_error",
			Message: "The model's provider sent an answer that is not a JSON object.", Err: errors.New("invalid JSON from upstream"), retry: true}
	}
	out := getBuf()
	defer putBuf(out)
	*out = c.AppendWithModel((*out)[:0], x.Model.ID)
	u, ok := c.Usage()
	return p.writeAnswer(w, x, out, in, u, ok)
}

// readAnswer reads a non-streamed upstream answer into buf, up to
// MaxResponse; failures are the client's *Error.
func (p *Proxy) readAnswer(a *attempt, buf []byte, resp *http.Response, x *Exchange) ([]byte, error) {
	limit := p.MaxResponse
	if limit <= 0 {
		limit = 32 << 20
	}
	data, err := readAll(buf, io.LimitReader(resp.Body, limit+1), a)
	if err != nil && a.client.Err() != nil {
		return data, errClientClosed(x, err)
	}
	if cause := a.timedOut(); err != nil && cause != nil {
		return data, a.timeoutError(cause)
	}
	if err != nil {
		a.fail("answer broken off: " + err.Error())
		return data, &Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_error",
			Message: "The model's provider broke off its answer. Retry with backoff.", Err: err, retry: true}
	}
	if int64(len(data)) > limit {
		a.fail("answer too large")
		return data, &Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_error",
			Message: "The model's provider sent an answer larger than this gateway accepts.", Err: fmt.Errorf("response over %d bytes", limit)}
	}
	return data, nil
}

// writeAnswer sends *out, a complete OpenAI-shaped answer, with usage u
// (reported: the provider's figure, with its cost added) or, when not
// reported, the usage counted over the answer's text. spare is a scratch
// buffer; the two may be swapped.
func (p *Proxy) writeAnswer(w http.ResponseWriter, x *Exchange, out, spare *[]byte, u openai.Usage, reported bool) error {
	if reported {
		x.Usage, x.Basis = u, BasisUpstream
		if x.Cost != nil {
			*spare = p.withCost((*spare)[:0], *out, x)
			*spare, *out = *out, *spare
		}
	} else {
		*spare = openai.AppendContent((*spare)[:0], *out)
		x.Usage, x.Basis = p.count(x, *spare), BasisCounted
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Content-Length", strconv.Itoa(len(*out)))
	w.WriteHeader(http.StatusOK)
	x.delivering()
	if _, err := w.Write(*out); err != nil {
		x.Outcome = OutcomeClientClosed
		return nil
	}
	x.Outcome = OutcomeOK
	return nil
}

// withCost appends obj with usage.cost set to what x.Cost says the client
// pays for x.Usage.
func (p *Proxy) withCost(dst, obj []byte, x *Exchange) []byte {
	var num [32]byte
	return openai.AppendUsageCost(dst, obj, x.Cost(num[:0], x.Usage))
}

// readAll is io.ReadAll into a reused buffer; each read restarts a's idle
// timer.
func readAll(b []byte, r io.Reader, a *attempt) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if n > 0 {
			a.touch()
		}
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// maxCountBuffer bounds the delivered text a stream keeps for counting in
// case the upstream reports no usage; past it, text is counted as it goes.
const maxCountBuffer = 1 << 20

// stream relays an SSE answer event by event. The client's headers are
// written with the first event, so a provider that fails before sending
// anything still leaves the request free to go to another deployment.
func (p *Proxy) stream(a *attempt, w http.ResponseWriter, resp *http.Response, x *Exchange) error {
	a.body = resp.Body
	rd := sse.NewReader(a, p.MaxEvent)
	out := newRelay(w, x, a)
	defer out.close()
	// A stream may run for minutes, most of it waiting for the provider:
	// the work buffers come from the pool for one event at a time and go
	// back before the next wait, so an idle stream holds only what it must
	// keep (the delivered text and its first event, both sized to fit).
	var (
		chunk, scratch              *[]byte
		text, first                 []byte
		gotUsage, sawDone, sawError bool
		counted                     int64
		readErr                     error
	)
	release := func() {
		if chunk != nil {
			putBuf(chunk)
			putBuf(scratch)
			chunk, scratch = nil, nil
		}
	}
	defer release()
	for {
		release()
		ev, err := out.next(rd)
		if err != nil {
			if err != errClientGone {
				readErr = err
			}
			break
		}
		if sse.IsDone(ev.Data) {
			sawDone = true
			break
		}
		// One walk answers every question asked of the event below, and
		// proves it is one JSON object: anything else is relayed to no
		// one (it could carry the provider's model unrewritten).
		c := openai.ScanChunk(ev.Data)
		if !c.Valid() {
			readErr = errMalformed
			break
		}
		var msg string
		var isError bool
		if c.MayBeError() {
			msg, isError = errorEvent(ev.Data)
		}
		if isError && !x.Delivered {
			// The provider failed before answering: nothing was sent, so
			// another deployment may still answer.
			a.fail("error event: " + msg)
			return &Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_error",
				Message: "The model's provider failed before answering. Retry with backoff.", Err: errors.New(msg), retry: true}
		}
		if !x.Delivered {
			a.firstByte()
			first = append(first[:0], ev.Data...)
		}
		u, usageEvent := c.Usage()
		if usageEvent {
			x.Usage, gotUsage = u, true
		}
		if !x.Request.IncludeUsage && c.UsageOnly() {
			continue
		}
		if !gotUsage {
			text = c.AppendContent(text)
			if len(text) > maxCountBuffer {
				counted += int64(p.Tokens.Count(x.Model.ID, text))
				text = text[:0]
			}
		}
		f := out.frames()
		switch {
		case !isError && !(usageEvent && x.Cost != nil) && sse.OneLine(ev.Data):
			// The common event, one line of JSON: rewritten straight into
			// the frame AppendData would give it.
			*f = append(*f, "data: "...)
			*f = c.AppendWithModel(*f, x.Model.ID)
			*f = append(*f, '\n', '\n')
		default:
			chunk, scratch = getBuf(), getBuf()
			if isError {
				// The provider reported its own failure in band: pass it
				// on, in OpenAI's shape and with the public model named,
				// instead of adding a second one.
				sawError = true
				*chunk = append((*chunk)[:0], openai.MarshalError(replaceModel(msg, x.Deployment.Model, x.Model.ID), "server_error", "", "upstream_error")...)
			} else {
				*chunk = c.AppendWithModel((*chunk)[:0], x.Model.ID)
				if usageEvent && x.Cost != nil {
					*scratch = p.withCost((*scratch)[:0], *chunk, x)
					*scratch, *chunk = *chunk, *scratch
				}
			}
			// AppendData re-frames the rewritten data: an upstream may
			// spread one event's JSON over several data lines.
			*f = sse.AppendData(*f, *chunk)
		}
		out.added()
		if sawError {
			break
		}
	}
	if gotUsage {
		x.Basis = BasisUpstream
	} else {
		u := p.count(x, text)
		u.CompletionTokens += counted
		u.TotalTokens += counted
		x.Usage, x.Basis = u, BasisCounted
	}
	if x.Outcome == OutcomeClientClosed {
		a.verdict = verdictNone
		return nil
	}
	if !x.Delivered {
		if !sawDone || a.client.Err() != nil {
			return a.undelivered(x, readErr)
		}
		// An empty but complete stream: answer it as one.
		if !x.keepAlive.stop() {
			startStream(w)
		}
		x.delivering()
	}
	if a.client.Err() != nil {
		x.Outcome = OutcomeClientClosed
		return nil
	}
	if scratch == nil {
		chunk, scratch = getBuf(), getBuf()
	}
	switch {
	case sawError:
		a.fail("error event mid-stream")
		x.Outcome = OutcomeUpstreamError
	case !sawDone:
		// The provider broke off mid-stream: say so in band, the way
		// OpenRouter's clients expect, then end the stream cleanly.
		code, msg := a.brokenOff(readErr)
		*scratch = appendStreamError((*scratch)[:0], first, x.Model.ID, "server_error", code, msg)
		f := out.frames()
		*f = sse.AppendData(*f, *scratch)
		x.Outcome = OutcomeUpstreamError
	default:
		x.Outcome = OutcomeOK
	}
	f := out.frames()
	*f = sse.AppendDone(*f)
	if !out.flush() {
		x.Outcome = OutcomeClientClosed
	}
	return nil
}

// relay writes a stream's frames to the client. The first event goes out
// the moment it is added (it commits the response, and its timing is the
// time to first token); after it, frames gather until flush, which the
// stream calls before it waits for the provider. So every event is written
// as soon as it has been read, but a burst of events that arrived in one
// read costs one write and one flush, as through a plain proxy, instead of
// one each: a relay that falls behind does not fall further behind by
// making more system calls.
type relay struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	x       *Exchange
	a       *attempt // the provider's idle timer does not run while writing
	pending *[]byte  // frames not yet written, from the pool; nil when none
}

func newRelay(w http.ResponseWriter, x *Exchange, a *attempt) *relay {
	return &relay{w: w, rc: http.NewResponseController(w), x: x, a: a}
}

// frames is the buffer to append the next frames to.
func (r *relay) frames() *[]byte {
	if r.pending == nil {
		r.pending = getBuf()
	}
	return r.pending
}

// added is called after frames were appended: before the stream has
// started they are written at once.
func (r *relay) added() {
	if !r.x.Delivered {
		r.flush()
	}
}

// flush writes and flushes the pending frames, starting the response if
// it has not started. It reports false once the client is gone (the
// exchange's outcome then says so).
func (r *relay) flush() bool {
	if r.x.Outcome == OutcomeClientClosed {
		return false
	}
	if r.pending == nil {
		return true
	}
	if len(*r.pending) == 0 {
		// Events that produced no frames start nothing.
		r.close()
		return true
	}
	r.a.writing.Store(true)
	ok := emit(r.w, r.rc, r.x, *r.pending)
	// The provider's wait starts again now; the order leaves no moment
	// when the timer could blame it for the write.
	r.a.touch()
	r.a.writing.Store(false)
	putBuf(r.pending)
	r.pending = nil
	return ok
}

// errClientGone is next's answer when the client left: not a read error.
var errClientGone = errors.New("the client is gone")

// next returns the stream's next event: one already read if there is one;
// otherwise it flushes what is pending (everything that has arrived goes
// out before the wait for more) and reads. It returns errClientGone when
// the flush finds the client gone, and the reader's error otherwise.
func (r *relay) next(rd *sse.Reader) (sse.Event, error) {
	if ev, ok := rd.Buffered(); ok {
		return ev, nil
	}
	if !r.flush() {
		return sse.Event{}, errClientGone
	}
	return rd.Next()
}

// close gives back a buffer that was never flushed.
func (r *relay) close() {
	if r.pending != nil {
		putBuf(r.pending)
		r.pending = nil
	}
}

// undelivered is the answer to a stream that ended before its first event
// reached the client: the client left, the gateway timed the provider out,
// or the provider broke off or sent something unreadable (a failure that
// another deployment may make up for).
func (a *attempt) undelivered(x *Exchange, readErr error) error {
	if a.client.Err() != nil {
		return errClientClosed(x, a.client.Err())
	}
	if cause := a.timedOut(); cause != nil {
		return a.timeoutError(cause)
	}
	a.fail(brokenCause(readErr))
	msg := "The model's provider ended the stream before answering. Retry with backoff."
	if errors.Is(readErr, errMalformed) {
		msg = "The model's provider sent a stream this gateway could not read. Retry with backoff."
	}
	return &Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_error", Message: msg, Err: readErr, retry: true}
}

// brokenOff records why a stream that had started broke off, and returns
// the in-band error's code and message.
func (a *attempt) brokenOff(readErr error) (code, msg string) {
	switch cause := a.timedOut(); {
	case errors.Is(cause, errIdleTimeout):
		a.fail(cause.Error())
		return "upstream_timeout", "The model's provider stopped sending for " + a.idleTimeout.String() + "; the answer is incomplete."
	case errors.Is(cause, errRequestTimeout):
		a.verdict = verdictNone
		return "upstream_timeout", "The request took longer than this gateway allows; the answer is incomplete."
	case errors.Is(readErr, errMalformed):
		a.fail(readErr.Error())
		return "upstream_error", "The model's provider sent data this gateway could not read; the answer is incomplete."
	}
	a.fail(brokenCause(readErr))
	return "upstream_error", "The model's provider ended the stream unexpectedly; the answer is incomplete."
}

func brokenCause(err error) string {
	if err == nil || errors.Is(err, io.EOF) {
		return "stream ended without [DONE]"
	}
	return "stream broken: " + err.Error()
}

// appendStreamError appends the in-band error chunk that ends a broken
// stream: OpenAI's error object beside a choice finished with "error", with
// the id and created time of the stream's first chunk so that it matches
// the chunks before it.
func appendStreamError(dst, first []byte, model, typ, code, msg string) []byte {
	var head struct {
		ID      string `json:"id"`
		Created int64  `json:"created"`
	}
	if first == nil {
		head.Created = time.Now().Unix()
	}
	_ = json.Unmarshal(first, &head)
	id, _ := json.Marshal(head.ID)
	m, _ := json.Marshal(model)
	dst = append(dst, `{"id":`...)
	dst = append(dst, id...)
	dst = append(dst, `,"object":"chat.completion.chunk","created":`...)
	dst = strconv.AppendInt(dst, head.Created, 10)
	dst = append(dst, `,"model":`...)
	dst = append(dst, m...)
	dst = append(dst, `,"choices":[{"index":0,"delta":{},"finish_reason":"error"}],`...)
	env := openai.MarshalError(msg, typ, "", code) // {"error":{…}}
	return append(dst, env[1:]...)
}

// endInBand ends a stream whose headers keep-alive comments sent, but
// whose request failed before its first event: the failure that would
// have been the answer goes in band, then [DONE].
func (p *Proxy) endInBand(w http.ResponseWriter, x *Exchange, err error) error {
	if x.Outcome == OutcomeClientClosed {
		return nil
	}
	typ, code, msg := "server_error", "upstream_error", "The model's provider failed before answering."
	var ue *Error
	if errors.As(err, &ue) {
		typ, code, msg = ue.Type, ue.Code, ue.Message
	}
	out := getBuf()
	defer putBuf(out)
	chunk := getBuf()
	defer putBuf(chunk)
	*chunk = appendStreamError((*chunk)[:0], nil, x.Model.ID, typ, code, msg)
	*out = sse.AppendDone(sse.AppendData((*out)[:0], *chunk))
	if _, err := w.Write(*out); err == nil {
		_ = http.NewResponseController(w).Flush()
	}
	return nil
}

// errorEvent reports whether a chunk is an error event, and returns its
// message. An error event has a top-level member named "error", in any
// case (the relay asks only of chunks whose scan found one,
// openai.Chunk.MayBeError, so the common path stays cheap), whose value is
// anything but null, false or "": an object, as OpenAI sends, or a string,
// as some compatible servers do. Every such member counts, not only the one
// a decoder would keep: relayed as a plain chunk, the event would carry
// them all, and with them the provider's words. The message is the "error"
// member's if there is one, else another's: its string "message" if it is
// an object, itself if it is a string, or a generic one.
func errorEvent(data []byte) (string, bool) {
	var members map[string]json.RawMessage
	if json.Unmarshal(data, &members) != nil {
		return "", false
	}
	var key string
	var value json.RawMessage
	for k, v := range members {
		if !strings.EqualFold(k, "error") {
			continue
		}
		if openai.NoError(v) {
			continue
		}
		// Deterministic whatever the map's order: "error" first, then
		// the least other spelling.
		if value == nil || k == "error" || key != "error" && k < key {
			key, value = k, v
		}
	}
	if value == nil {
		return "", false
	}
	var msg string
	if json.Unmarshal(value, &msg) != nil {
		var obj struct {
			Message json.RawMessage `json:"message"`
		}
		if json.Unmarshal(value, &obj) == nil && obj.Message != nil {
			_ = json.Unmarshal(obj.Message, &msg)
		}
	}
	if msg == "" {
		msg = "The model's provider reported an error."
	}
	return msg, true
}

// emit sends frames to the client and flushes them, starting the stream
// with the first; false means the client is gone (x says so).
func emit(w http.ResponseWriter, rc *http.ResponseController, x *Exchange, frames []byte) bool {
	if !x.Delivered {
		if !x.keepAlive.stop() {
			startStream(w)
		}
		x.delivering()
	}
	if _, err := w.Write(frames); err != nil {
		x.Outcome = OutcomeClientClosed
		return false
	}
	if err := rc.Flush(); err != nil {
		x.Outcome = OutcomeClientClosed
		return false
	}
	return true
}

func startStream(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
}

// sentBody is a stream's upstream request body, which lets go of its
// bytes as soon as nothing can need them: the transport holds a request
// until its answer ends, minutes for a stream, and a long prompt's body
// would stay with it. A reader drops them once read to the end (or
// closed); GetBody, which the transport calls to send the request again on
// a new connection (an HTTP/2 server's GOAWAY), keeps them until release,
// once the answer's headers are in and the transport retries no more.
//
// A short request's body is a bytes.Reader instead: net/http writes the
// headers and a body it knows to be in memory in one system call, and
// flushes the headers alone before any other.
type sentBody struct{ all []byte }

func (s *sentBody) reader() io.ReadCloser { return &bodyReader{b: s.all} }

// getBody and release run on the goroutine that called Client.Do, the
// one before Do returns, the other after.
func (s *sentBody) getBody() (io.ReadCloser, error) {
	if s.all == nil {
		return nil, errors.New("the upstream request's body is no longer kept")
	}
	return s.reader(), nil
}

func (s *sentBody) release() { s.all = nil }

// bodyReader reads b once, and then holds none of it. Read and Close may
// run at once: HTTP/2 closes a request's body from a goroutine of its own
// (an answer that came early, a reset stream, the request's end) while its
// writer may be reading it.
type bodyReader struct {
	mu sync.Mutex
	b  []byte
}

func (r *bodyReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.b) == 0 {
		r.b = nil
		return 0, io.EOF
	}
	n := copy(p, r.b)
	if r.b = r.b[n:]; len(r.b) == 0 {
		r.b = nil
	}
	return n, nil
}

func (r *bodyReader) Close() error {
	r.mu.Lock()
	r.b = nil
	r.mu.Unlock()
	return nil
}

// count estimates usage with the tokenizer: the prompt from the request
// body, the completion from the text delivered.
func (p *Proxy) count(x *Exchange, delivered []byte) openai.Usage {
	prompt := int64(p.Tokens.CountChat(x.Model.ID, promptMessages(x.Body)))
	completion := int64(p.Tokens.Count(x.Model.ID, delivered))
	return openai.Usage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion}
}

// promptMessages extracts the text of a request's messages for counting.
// It decodes the body with encoding/json: this runs only for providers
// that report no usage.
func promptMessages(body []byte) []tokens.Message {
	var req struct {
		Messages []struct {
			Role      string          `json:"role"`
			Name      string          `json:"name"`
			Content   json.RawMessage `json:"content"`
			ToolCalls []struct {
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"messages"`
	}
	if json.Unmarshal(body, &req) != nil {
		return nil
	}
	msgs := make([]tokens.Message, 0, len(req.Messages))
	for _, m := range req.Messages {
		tm := tokens.Message{Role: m.Role, Name: m.Name}
		var s string
		var parts []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		}
		switch {
		case json.Unmarshal(m.Content, &s) == nil:
			tm.Texts = append(tm.Texts, []byte(s))
		case json.Unmarshal(m.Content, &parts) == nil:
			for _, part := range parts {
				if part.Text != "" {
					tm.Texts = append(tm.Texts, []byte(part.Text))
				}
			}
		}
		for _, tc := range m.ToolCalls {
			tm.Texts = append(tm.Texts, []byte(tc.Function.Name), []byte(tc.Function.Arguments))
		}
		msgs = append(msgs, tm)
	}
	return msgs
}
