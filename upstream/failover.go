package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// Try is one failed attempt at a request that was moved to another
// deployment (or answered with the last attempt's error).
type Try struct {
	Deployment *Deployment
	Err        *Error
	// Duration is how long the attempt took.
	Duration time.Duration
}

// Default timeouts and failover bounds.
const (
	DefaultAttempts              = 3
	DefaultTryDuration           = 10 * time.Minute
	DefaultResponseHeaderTimeout = 5 * time.Minute
	DefaultIdleTimeout           = 5 * time.Minute
	DefaultRequestTimeout        = 30 * time.Minute
)

// Causes of an attempt's context being cancelled by the gateway.
var (
	errHeaderTimeout  = errors.New("no response headers within the response header timeout")
	errIdleTimeout    = errors.New("no data within the idle timeout")
	errRequestTimeout = errors.New("the request ran past the request timeout")
	errMalformed      = errors.New("the stream's data is not JSON")
)

// attempt is one upstream call for a request: its context (cancelled when
// the client leaves, the request runs out of time, or the upstream keeps
// the gateway waiting too long), and what it taught about the deployment.
type attempt struct {
	client context.Context // the client's request
	ctx    context.Context // the call's
	cancel context.CancelCauseFunc
	timer  *time.Timer
	// idle is set once the response headers came: the timer then measures
	// the wait between reads.
	idle        atomic.Bool
	idleTimeout time.Duration
	// writing is set while a stream's events are being written to the
	// client: the gateway is not reading then, so a slow client, not the
	// provider, is what keeps it waiting.
	writing atomic.Bool
	// deadline is the request's: request_timeout after it began.
	deadline time.Time
	// active is when the provider was last heard from (or a write to the
	// client ended), as time since start. Reads only record it: the idle
	// timer, when it fires, waits again for what is left of the idle
	// timeout after it, instead of every read resetting the timer.
	active atomic.Int64
	// ended is set when the attempt is over, so the timer is not armed
	// again behind end's Stop.
	ended atomic.Bool
	// body is the answer's body while a stream reads it through the
	// attempt, so that every read restarts the idle timer (SSE comments
	// a provider sends to keep a slow stream alive included).
	body io.Reader

	dep *Deployment
	// ticket is the probe's when the attempt probes a half-open circuit.
	ticket  uint64
	start   time.Time
	latency time.Duration
	verdict verdict
	bench   time.Duration
	cause   string
}

// begin starts an attempt on dep; its header timer runs from now. One
// timer serves the attempt's three limits: the response header timeout,
// then the idle timeout, each cut short by the request's deadline.
func (p *Proxy) begin(client context.Context, deadline time.Time, dep *Deployment, ticket uint64) *attempt {
	a := &attempt{client: client, dep: dep, ticket: ticket, start: time.Now(), deadline: deadline}
	a.ctx, a.cancel = context.WithCancelCause(client)
	header := dep.Provider.ResponseHeaderTimeout
	if header <= 0 {
		header = DefaultResponseHeaderTimeout
	}
	a.idleTimeout = dep.Provider.IdleTimeout
	if a.idleTimeout <= 0 {
		a.idleTimeout = DefaultIdleTimeout
	}
	a.timer = time.AfterFunc(min(header, time.Until(deadline)), a.expire)
	dep.Health.begin()
	return a
}

// expire cancels the attempt when its timer fires, saying which limit ran
// out, or arms it again for the rest of an idle timeout that activity
// since it was armed has pushed back.
func (a *attempt) expire() {
	switch {
	case !time.Now().Before(a.deadline):
		a.cancel(errRequestTimeout)
	case a.idle.Load() && a.writing.Load():
		// Not the provider's silence: the client has not taken the last
		// events yet. The wait starts again once the write is done.
		a.rearm(a.idleTimeout)
	case a.idle.Load():
		if quiet := time.Since(a.start) - time.Duration(a.active.Load()); quiet < a.idleTimeout {
			a.rearm(a.idleTimeout - quiet)
			return
		}
		a.cancel(errIdleTimeout)
	default:
		a.cancel(errHeaderTimeout)
	}
}

// rearm runs the timer again for d, cut short by the request's deadline.
func (a *attempt) rearm(d time.Duration) {
	a.timer.Reset(min(d, time.Until(a.deadline)))
	if a.ended.Load() {
		a.timer.Stop() // end stopped it before the Reset
	}
}

// headers marks the response headers' arrival: from now on the timer
// bounds the wait between reads.
func (a *attempt) headers() {
	a.touch()
	a.idle.Store(true)
	a.rearm(a.idleTimeout)
}

// touch records activity: the provider's wait starts again now.
func (a *attempt) touch() { a.active.Store(int64(time.Since(a.start))) }

// Read reads the answer's body, restarting the idle timer on data.
func (a *attempt) Read(p []byte) (int, error) {
	n, err := a.body.Read(p)
	if n > 0 {
		a.touch()
	}
	return n, err
}

// firstByte records the time to the answer's first byte as the
// deployment's latency sample.
func (a *attempt) firstByte() {
	if a.latency == 0 {
		a.latency = max(time.Since(a.start), 1)
	}
}

// fail records that the deployment failed, unless the client left first.
func (a *attempt) fail(cause string) {
	if a.client.Err() != nil {
		a.verdict = verdictNone
		return
	}
	a.verdict, a.cause = verdictFailed, cause
}

// end stops the attempt's timer and context, adds its time to x's time
// upstream, and tells the deployment's health how it went.
func (p *Proxy) end(a *attempt, x *Exchange) {
	x.Upstream += time.Since(a.start)
	a.ended.Store(true)
	a.timer.Stop()
	a.cancel(context.Canceled)
	if a.client.Err() != nil {
		// The client left: whatever happened after says nothing of the
		// deployment.
		a.verdict = verdictNone
	}
	a.dep.Health.endProbe(a.ticket, p.now(), a.verdict, a.latency, a.bench, a.cause, &p.Breaker)
}

// timedOut reports why the gateway cut the attempt short, if it did.
func (a *attempt) timedOut() error {
	if a.ctx.Err() == nil || a.client.Err() != nil {
		return nil
	}
	switch cause := context.Cause(a.ctx); {
	case errors.Is(cause, errHeaderTimeout), errors.Is(cause, errIdleTimeout), errors.Is(cause, errRequestTimeout):
		return cause
	case errors.Is(cause, context.DeadlineExceeded):
		return errRequestTimeout
	}
	return nil
}

// timeoutError is the answer to an attempt the gateway cut short before
// anything was sent.
func (a *attempt) timeoutError(cause error) *Error {
	msg := "The model's provider did not answer in time. Retry with backoff."
	switch {
	case errors.Is(cause, errIdleTimeout):
		msg = "The model's provider stopped sending its answer. Retry with backoff."
	case errors.Is(cause, errRequestTimeout):
		msg = "The request took longer than this gateway allows."
	}
	if errors.Is(cause, errRequestTimeout) {
		// A request that outlives request_timeout says nothing of the
		// deployment; a deployment that keeps the gateway waiting does.
		a.verdict = verdictNone
	} else {
		a.fail(cause.Error())
	}
	return &Error{Status: http.StatusGatewayTimeout, Type: "server_error", Code: "upstream_timeout", Message: msg,
		Err: fmt.Errorf("upstream %s: %w", a.dep.Name(), cause), retry: !errors.Is(cause, errRequestTimeout)}
}

func (p *Proxy) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

// Forward sends x to a deployment of x.Model and writes the answer to w:
// the JSON response, or the stream event by event, with the public model
// id in place of the provider's. A deployment that fails before anything
// was written (connection, timeout before headers, 429, 5xx, a broken or
// unreadable answer) is left for the next one, up to Attempts calls and
// TryDuration. It returns an *Error when it failed before writing anything
// (the caller answers it), and nil once the answer was written, however it
// ended; x says how. ctx is the client's request context: when the client
// goes away, the upstream request is cancelled.
func (p *Proxy) Forward(ctx context.Context, w http.ResponseWriter, x *Exchange) error {
	x.Outcome = OutcomeUpstreamError
	x.began = time.Now()
	timeout := p.RequestTimeout
	if timeout <= 0 {
		timeout = DefaultRequestTimeout
	}
	deadline := time.Now().Add(timeout)
	if x.Request.Stream && p.KeepAlive > 0 {
		x.keepAlive = startKeepAlive(w, p.KeepAlive)
		defer func() { x.keepAlive.stop() }()
	}
	err := p.forward(ctx, deadline, w, x)
	if err != nil && x.keepAlive.stop() {
		// Keep-alive comments sent the headers: the client hears of the
		// failure in band.
		return p.endInBand(w, x, err)
	}
	return err
}

// upstreamBodySlack is the room an upstream body is given beyond the
// client's: the model id rewritten, stream_options added.
const upstreamBodySlack = 256

// forward is Forward's failover loop.
func (p *Proxy) forward(ctx context.Context, deadline time.Time, w http.ResponseWriter, x *Exchange) error {
	attempts, window := p.Attempts, p.TryDuration
	if attempts <= 0 {
		attempts = DefaultAttempts
	}
	if window <= 0 {
		window = DefaultTryDuration
	}
	start := p.now()
	var (
		tried   uint64
		last    *Error
		lastDep *Deployment
		refusal error
	)
	for x.Attempts < attempts && (x.Attempts == 0 || p.now().Sub(start) < window && time.Now().Before(deadline)) {
		i, ticket := x.Model.choose(p.now(), tried)
		if i < 0 {
			break
		}
		tried |= 1 << i
		dep := x.Model.Deployments[i]
		x.Deployment = dep
		began := p.now()
		err := p.try(ctx, deadline, w, x, dep, ticket)
		if err == nil {
			return nil
		}
		var ue *Error
		if !errors.As(err, &ue) {
			return err
		}
		if x.Refused {
			// Only this provider's translation refuses the request; a
			// deployment on another provider may take it.
			x.Refused, refusal = false, err
			x.Deployment = lastDep
			continue
		}
		if x.Delivered || !ue.retry || ctx.Err() != nil {
			return err
		}
		x.Tries = append(x.Tries, Try{Deployment: dep, Err: ue, Duration: p.now().Sub(began)})
		last, lastDep = ue, dep
	}
	switch {
	case last != nil:
		return last
	case refusal != nil:
		x.Refused = true
		return refusal
	}
	x.Deployment = nil
	retry := "1"
	at, limited := x.Model.reopens()
	if !at.IsZero() {
		secs := (at.Sub(p.now()) + time.Second - 1) / time.Second
		retry = strconv.Itoa(int(min(max(secs, 1), 3600)))
	}
	if limited {
		// Every deployment's provider asked for a pause: say so as the
		// provider did.
		return &Error{Status: http.StatusTooManyRequests, Type: "requests", Code: "rate_limit_exceeded", RetryAfter: retry,
			Message: "The model's provider is rate limiting requests. Retry after " + retry + " seconds.",
			Err:     fmt.Errorf("model %s: every deployment is benched by its provider's 429", x.Model.ID)}
	}
	return &Error{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "upstream_unavailable", RetryAfter: retry,
		Message: "No deployment of this model is available: each failed recently and is cooling down. Retry after " + retry + " seconds.",
		Err:     fmt.Errorf("model %s: every deployment's circuit is open", x.Model.ID)}
}

// try makes one attempt at x on dep.
func (p *Proxy) try(client context.Context, deadline time.Time, w http.ResponseWriter, x *Exchange, dep *Deployment, ticket uint64) error {
	attempts0 := x.Attempts
	if ticket != 0 {
		// A probe that is never sent (refused input, a panic) gives its
		// claim back; once sent, end settles it.
		defer func() {
			if x.Attempts == attempts0 {
				dep.Health.abandon(ticket)
			}
		}()
	}
	// The body is built in a buffer of the attempt's own, not one from a
	// pool: the transport may go on reading it after the answer (an
	// answer that came before the whole body was sent, RoundTrip's
	// contract), and a pooled buffer could by then hold another
	// request's prompt.
	body := make([]byte, 0, len(x.Body)+upstreamBodySlack)
	if dep.Provider.Type == TypeAnthropic {
		var err error
		if body, err = p.anthropicRequest(body, x, dep); err != nil {
			return err
		}
	} else {
		body = x.Request.AppendUpstream(body, x.Body, dep.Model, x.Request.Stream)
	}
	x.Attempts++
	a := p.begin(client, deadline, dep, ticket)
	defer p.end(a, x)
	resp, err := p.send(a, x, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch {
	case dep.Provider.Type == TypeAnthropic && x.Request.Stream:
		return p.anthropicStream(a, w, resp, x)
	case dep.Provider.Type == TypeAnthropic:
		return p.anthropicSingle(a, w, resp, x)
	case x.Request.Stream:
		return p.stream(a, w, resp, x)
	}
	return p.single(a, w, resp, x)
}
