package caddymodule

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
)

// Helpers for the chat completion tests: an OpenAI-shaped upstream that
// records what reaches it, the config that puts it behind arcane, and
// readers for the gateway's SSE answers.

const (
	// upstreamKeyEnv names the environment variable the test configs read
	// the provider's key from, as an operator's would.
	upstreamKeyEnv = "ARCANE_TEST_UPSTREAM_KEY"
	// publicModel is what clients ask for; upstreamModel is the provider's
	// own id for it, which clients must never see.
	publicModel   = "gpt-5.2"
	upstreamModel = "up-model-2025"
	// streamWait bounds every wait on a stream, so a gateway that buffers
	// or never cancels fails the test instead of hanging it.
	streamWait = 10 * time.Second
)

// recordedRequest is one request as the upstream received it.
type recordedRequest struct {
	Method string
	Path   string
	Header http.Header
	Body   []byte
}

// upstreamHandler answers one upstream request whose body was read.
type upstreamHandler func(w http.ResponseWriter, r *http.Request, body []byte)

// fakeUpstream is an OpenAI-compatible provider on a local port. It
// records every request and answers with its current handler, by default
// replyWith(standardReply).
type fakeUpstream struct {
	*httptest.Server
	calls atomic.Int64

	mu       sync.Mutex
	requests []recordedRequest
	handler  upstreamHandler
}

func newFakeUpstream(t testing.TB) *fakeUpstream {
	t.Helper()
	u := &fakeUpstream{handler: replyWith(standardReply)}
	u.Server = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.Close)
	return u
}

func (u *fakeUpstream) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
		return
	}
	u.calls.Add(1)
	u.mu.Lock()
	u.requests = append(u.requests, recordedRequest{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body})
	h := u.handler
	u.mu.Unlock()
	h(w, r, body)
}

// handle replaces the upstream's answer for the requests that follow.
func (u *fakeUpstream) handle(h upstreamHandler) {
	u.mu.Lock()
	u.handler = h
	u.mu.Unlock()
}

// last returns the latest request the upstream received.
func (u *fakeUpstream) last(t testing.TB) recordedRequest {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.requests) == 0 {
		t.Fatal("the upstream received no request")
	}
	return u.requests[len(u.requests)-1]
}

// upstreamReply is what the fake upstream answers to a chat completion.
type upstreamReply struct {
	// Pieces are the content deltas of a stream; joined, the message.
	Pieces []string
	// Usage is reported in the response, or in the stream's usage chunk
	// when the request asked for it; nil reports none at all.
	Usage *wireUsage
}

type wireUsage struct {
	PromptTokens        int64 `json:"prompt_tokens"`
	CompletionTokens    int64 `json:"completion_tokens"`
	TotalTokens         int64 `json:"total_tokens"`
	PromptTokensDetails struct {
		CachedTokens     int64 `json:"cached_tokens"`
		CacheWriteTokens int64 `json:"cache_write_tokens,omitempty"`
	} `json:"prompt_tokens_details"`
}

func usageOf(prompt, completion, cached int64) *wireUsage {
	u := &wireUsage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion}
	u.PromptTokensDetails.CachedTokens = cached
	return u
}

// standardReply is the upstream's usual answer.
var standardReply = upstreamReply{
	Pieces: []string{"Hello", " from", " upstream."},
	Usage:  usageOf(11, 7, 3),
}

func (rep upstreamReply) content() string { return strings.Join(rep.Pieces, "") }

// upstreamRequestFields are what the fake upstream reads from a request.
type upstreamRequestFields struct {
	Model         string `json:"model"`
	Stream        bool   `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

func parseUpstreamRequest(body []byte) (upstreamRequestFields, error) {
	var f upstreamRequestFields
	err := json.Unmarshal(body, &f)
	return f, err
}

// replyWith answers as OpenAI does: a JSON completion, or an SSE stream
// with the usage chunk only when the request asked for it. It echoes the
// model of the request it received, as real providers do.
func replyWith(rep upstreamReply) upstreamHandler {
	return func(w http.ResponseWriter, r *http.Request, body []byte) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/chat/completions" {
			writeUpstreamError(w, http.StatusNotFound, "invalid_request_error", "Invalid URL ("+r.Method+" "+r.URL.Path+")")
			return
		}
		req, err := parseUpstreamRequest(body)
		if err != nil {
			writeUpstreamError(w, http.StatusBadRequest, "invalid_request_error", "We could not parse the JSON body of your request.")
			return
		}
		if !req.Stream {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(completionJSON(req.Model, rep.content(), rep.Usage))
			return
		}
		includeUsage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage
		startUpstreamStream(w)
		writeUpstreamEvent(w, chunkJSON(req.Model, roleDelta, nil, includeUsage))
		for _, p := range rep.Pieces {
			writeUpstreamEvent(w, chunkJSON(req.Model, contentDelta(p), nil, includeUsage))
		}
		writeUpstreamEvent(w, finishChunkJSON(req.Model, includeUsage))
		if includeUsage && rep.Usage != nil {
			writeUpstreamEvent(w, usageChunkJSON(req.Model, rep.Usage))
		}
		writeUpstreamEvent(w, []byte("[DONE]"))
	}
}

func writeUpstreamError(w http.ResponseWriter, status int, typ, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": message, "type": typ, "param": nil, "code": nil}})
}

const (
	testCompletionID = "chatcmpl-test"
	testCreated      = 1700000000
)

type wireDelta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

var roleDelta = &wireDelta{Role: "assistant", Content: new(string)}

func contentDelta(s string) *wireDelta { return &wireDelta{Content: &s} }

type wireChoice struct {
	Index        int             `json:"index"`
	Delta        *wireDelta      `json:"delta,omitempty"`
	Message      any             `json:"message,omitempty"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason *string         `json:"finish_reason"`
}

type wireObject struct {
	ID                string          `json:"id"`
	Object            string          `json:"object"`
	Created           int64           `json:"created"`
	Model             string          `json:"model"`
	SystemFingerprint string          `json:"system_fingerprint"`
	Choices           []wireChoice    `json:"choices"`
	Usage             json.RawMessage `json:"usage,omitempty"`
}

func mustJSON(v any) []byte {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return data
}

// completionJSON is a non-streamed chat completion; usage nil leaves the
// usage key out, as some OpenAI-compatible servers do.
func completionJSON(model, content string, usage *wireUsage) []byte {
	stop := "stop"
	o := wireObject{ID: testCompletionID, Object: "chat.completion", Created: testCreated, Model: model, SystemFingerprint: "fp_test",
		Choices: []wireChoice{{Index: 0, Message: map[string]any{"role": "assistant", "content": content, "refusal": nil},
			Logprobs: json.RawMessage("null"), FinishReason: &stop}}}
	if usage != nil {
		o.Usage = mustJSON(usage)
	}
	return mustJSON(o)
}

// chunkJSON is one stream chunk with one choice; usageNull adds
// "usage":null as OpenAI does on every chunk when usage was asked for.
func chunkJSON(model string, delta *wireDelta, finish *string, usageNull bool) []byte {
	o := wireObject{ID: testCompletionID, Object: "chat.completion.chunk", Created: testCreated, Model: model, SystemFingerprint: "fp_test",
		Choices: []wireChoice{{Index: 0, Delta: delta, Logprobs: json.RawMessage("null"), FinishReason: finish}}}
	if usageNull {
		o.Usage = json.RawMessage("null")
	}
	return mustJSON(o)
}

func finishChunkJSON(model string, usageNull bool) []byte {
	stop := "stop"
	return chunkJSON(model, &wireDelta{}, &stop, usageNull)
}

// usageChunkJSON is the include_usage chunk: no choices, the usage.
func usageChunkJSON(model string, usage *wireUsage) []byte {
	return mustJSON(wireObject{ID: testCompletionID, Object: "chat.completion.chunk", Created: testCreated, Model: model,
		SystemFingerprint: "fp_test", Choices: []wireChoice{}, Usage: mustJSON(usage)})
}

func startUpstreamStream(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
}

// writeUpstreamEvent writes one SSE event and flushes it.
func writeUpstreamEvent(w http.ResponseWriter, data []byte) {
	_, _ = w.Write([]byte("data: "))
	_, _ = w.Write(data)
	_, _ = w.Write([]byte("\n\n"))
	_ = http.NewResponseController(w).Flush()
}

// chatArcane is the arcane block's catalog for the chat tests: one
// OpenAI-shaped provider at baseURL with the key from upstreamKeyEnv, and
// gpt-5.2 deployed on it as up-model-2025. extra is added to the block.
func chatArcane(baseURL, extra string) string {
	return fmt.Sprintf(`provider up {
			type openai
			base_url %s
			api_key {env.%s}
		}
		model %s {
			deploy up %s
			price input 1.75 output 14.00 cached_input 0.175
			context_length 400000
			max_output_tokens 128000
			owned_by openai
		}
		%s`, baseURL, upstreamKeyEnv, publicModel, upstreamModel, extra)
}

// chatRoutes adds the proxy and the model list to testCaddyfile's site.
const chatRoutes = `handle /v1/chat/completions {
			arcane_proxy
		}
		handle /v1/models {
			arcane_models
		}`

// balanceRoutes are chatRoutes behind arcane_balance, which runs after
// testCaddyfile's arcane_auth and before the handles.
const balanceRoutes = `arcane_balance
		` + chatRoutes

// creditAccount adds amount (a decimal string of dollars) to an account
// through the admin API.
func creditAccount(t testing.TB, accountID, amount string) {
	t.Helper()
	adminOK(t, http.MethodPost, "/arcane/accounts/"+accountID+"/credit", map[string]any{"amount": amount, "note": "test funds"}, http.StatusOK, nil)
}

// chatOptions vary the chat test config.
type chatOptions struct {
	// arcaneExtra is added to the arcane block (more models, limits).
	arcaneExtra string
	// baseURL replaces the fake upstream's as the provider's base_url.
	baseURL string
	// accessLog writes the site's access log as JSON to chatEnv.logPath.
	accessLog bool
	// balance puts arcane_balance in the route before the handles, so chat
	// completions are charged to the account's balance (fund it with
	// creditAccount).
	balance bool
	// limit, when not empty, is the block of an arcane_limit put in the
	// route after arcane_auth, before arcane_balance (if any) and the
	// handles: `requests 3 1s`, one option a line.
	limit string
}

// chatEnv is a running arcane in front of a fake upstream, with an
// account and a fresh key.
type chatEnv struct {
	// cfg is the Caddyfile the server was loaded with.
	cfg         string
	tester      *caddytest.Tester
	up          *fakeUpstream
	providerKey string
	key         testKey
	acct        testAccount
	logPath     string
}

// startChat starts a fake upstream and loads a config that serves
// gpt-5.2 from it, then creates an account and a key.
func startChat(t *testing.T, opts chatOptions) *chatEnv {
	t.Helper()
	secret := make([]byte, 16)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	env := &chatEnv{providerKey: "sk-upstream-" + hex.EncodeToString(secret)}
	// Before loading: the placeholder is resolved when the config is
	// provisioned.
	t.Setenv(upstreamKeyEnv, env.providerKey)
	env.up = newFakeUpstream(t)
	base := opts.baseURL
	if base == "" {
		base = env.up.URL + "/v1"
	}
	dir := t.TempDir()
	routes := chatRoutes
	if opts.balance {
		routes = balanceRoutes
	}
	if opts.limit != "" {
		routes = "arcane_limit {\n" + opts.limit + "\n}\n\t\t" + routes
	}
	cfg := testCaddyfile(filepath.Join(dir, "arcane.db"), chatArcane(base, opts.arcaneExtra), routes)
	if opts.accessLog {
		env.logPath = filepath.Join(dir, "access.log")
		cfg = withAccessLog(t, cfg, env.logPath)
	}
	env.cfg = cfg
	env.tester = caddytest.NewTester(t)
	env.tester.InitServer(cfg, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	env.acct = createAccount(t, "chat")
	env.key = createKey(t, env.acct.ID, nil)
	return env
}

// withAccessLog adds a JSON access log written to path to testCaddyfile's
// site.
func withAccessLog(t testing.TB, cfg, path string) string {
	t.Helper()
	const site = "http://localhost:9080 {\n"
	if strings.Count(cfg, site) != 1 {
		t.Fatalf("the config has no single site block to add a log to")
	}
	return strings.Replace(cfg, site, site+fmt.Sprintf("\tlog {\n\t\toutput file %q\n\t\tformat json\n\t}\n", path), 1)
}

// apiClient sends API requests; streams are bounded by their contexts.
var apiClient = &http.Client{Timeout: 2 * streamWait}

// chatResponse is an answer of /v1/chat/completions read whole.
type chatResponse struct {
	Status int
	Header http.Header
	Body   []byte
}

// sendChat sends a request to /v1/chat/completions with the key (if any)
// and the extra headers, and reads the whole answer.
func sendChat(t testing.TB, method, key, body string, header http.Header) chatResponse {
	t.Helper()
	resp := openChat(t, context.Background(), method, key, body, header)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	return chatResponse{Status: resp.StatusCode, Header: resp.Header, Body: data}
}

// postChat is sendChat for a POST without extra headers.
func postChat(t testing.TB, key, body string) chatResponse {
	t.Helper()
	return sendChat(t, http.MethodPost, key, body, nil)
}

// openChat sends a request and returns the response with its body unread.
func openChat(t testing.TB, ctx context.Context, method, key, body string, header http.Header) *http.Response {
	t.Helper()
	resp, err := apiClient.Do(newChatRequest(t, ctx, method, key, body, header))
	if err != nil {
		t.Fatalf("%s /v1/chat/completions: %v", method, err)
	}
	return resp
}

// newChatRequest builds a request to /v1/chat/completions with the key
// (if any) and the extra headers.
func newChatRequest(t testing.TB, ctx context.Context, method, key, body string, header http.Header) *http.Request {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, siteURL+"/v1/chat/completions", rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for name, values := range header {
		req.Header[name] = values
	}
	return req
}

// openStream starts a streamed chat completion and waits, at most
// streamWait, for the answer's headers (which the gateway sends with the
// first event). The stream is closed when the test ends.
func openStream(t *testing.T, key, body string, header http.Header) *http.Response {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req := newChatRequest(t, ctx, http.MethodPost, key, body, header)
	got := make(chan *http.Response, 1)
	go func() {
		resp, err := apiClient.Do(req)
		if err != nil {
			resp = nil
		}
		got <- resp
	}()
	select {
	case resp := <-got:
		if resp == nil {
			t.Fatal("the request failed")
		}
		t.Cleanup(func() { resp.Body.Close() })
		if resp.StatusCode != http.StatusOK {
			data, _ := io.ReadAll(resp.Body)
			t.Fatalf("status %d, want 200; body %s", resp.StatusCode, data)
		}
		return resp
	case <-time.After(streamWait):
		cancel()
		t.Fatalf("no answer within %v: the gateway holds the first event back", streamWait)
		return nil
	}
}

// releaser returns a channel and the function that closes it once; the
// test's end closes it too, so an upstream handler waiting on it always
// returns.
func releaser(t *testing.T) (ch chan struct{}, release func()) {
	ch = make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(ch) }) }
	t.Cleanup(release)
	return ch, release
}

// chatBody is a minimal request for model; extra members are appended
// (each starting with a comma).
func chatBody(model, extra string) string {
	return `{"model":"` + model + `","messages":[{"role":"user","content":"Say hi."}]` + extra + `}`
}

// splitEvents checks that raw is a sequence of `data: <payload>\n\n`
// events and nothing else, and returns the payloads.
func splitEvents(t testing.TB, raw []byte) []string {
	t.Helper()
	if !bytes.HasSuffix(raw, []byte("\n\n")) {
		t.Fatalf("the stream does not end with a blank line: %q", tail(raw))
	}
	var events []string
	for _, ev := range strings.Split(string(raw[:len(raw)-2]), "\n\n") {
		payload, ok := strings.CutPrefix(ev, "data: ")
		if !ok || strings.ContainsAny(payload, "\r\n") {
			t.Fatalf("event %d is not one `data: ` line: %q", len(events), head(ev))
		}
		events = append(events, payload)
	}
	return events
}

// eventReader reads SSE events one at a time, each read bounded by
// streamWait.
type eventReader struct {
	br *bufio.Reader
}

func newEventReader(r io.Reader) *eventReader {
	return &eventReader{br: bufio.NewReaderSize(r, 64<<10)}
}

// next reads one `data: <payload>\n\n` event and returns the payload. It
// fails the test if the event does not arrive within streamWait.
func (er *eventReader) next(t testing.TB) string {
	t.Helper()
	type result struct {
		payload string
		err     error
	}
	done := make(chan result, 1)
	go func() {
		line, err := er.br.ReadString('\n')
		if err != nil {
			done <- result{err: fmt.Errorf("reading a data line: %w (got %q)", err, head(line))}
			return
		}
		blank, err := er.br.ReadString('\n')
		if err != nil || blank != "\n" {
			done <- result{err: fmt.Errorf("the event is not ended by a blank line: %q, %v", blank, err)}
			return
		}
		payload, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "data: ")
		if !ok {
			done <- result{err: fmt.Errorf("not a data line: %q", head(line))}
			return
		}
		done <- result{payload: payload}
	}()
	select {
	case res := <-done:
		if res.err != nil {
			t.Fatal(res.err)
		}
		return res.payload
	case <-time.After(streamWait):
		t.Fatalf("no event within %v: the gateway holds events back", streamWait)
		return ""
	}
}

// waitFor waits until ch is closed or streamWait passes.
func waitFor(t testing.TB, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(streamWait):
		t.Fatalf("%s did not happen within %v", what, streamWait)
	}
}

// chunkFields are what the tests read of a chunk or a completion.
type chunkFields struct {
	Model   string `json:"model"`
	Choices []struct {
		Delta struct {
			Content *string `json:"content"`
		} `json:"delta"`
		Message struct {
			Content string `json:"content"`
		} `json:"message"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *wireUsage     `json:"usage"`
	Error map[string]any `json:"error"`
}

func decodeChunk(t testing.TB, payload string) chunkFields {
	t.Helper()
	var c chunkFields
	if err := json.Unmarshal([]byte(payload), &c); err != nil {
		t.Fatalf("the event is not JSON: %v; %q", err, head(payload))
	}
	return c
}

// accessLogLine waits for the access log line of the request that carried
// the header X-Arcane-Test: marker, and returns it decoded and raw.
func accessLogLine(t testing.TB, path, marker string) (map[string]any, string) {
	t.Helper()
	deadline := time.Now().Add(streamWait)
	for {
		data, err := os.ReadFile(path)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		for line := range strings.SplitSeq(string(data), "\n") {
			if !strings.Contains(line, marker) {
				continue
			}
			var entry map[string]any
			if err := json.Unmarshal([]byte(line), &entry); err != nil {
				t.Fatalf("the access log line is not JSON: %v; %s", err, line)
			}
			return entry, line
		}
		if time.Now().After(deadline) {
			t.Fatalf("no access log line for %s within %v; the log holds:\n%s", marker, streamWait, data)
		}
		// The line is written after the answer is sent: poll for it.
		time.Sleep(10 * time.Millisecond)
	}
}

func head(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

func tail(b []byte) []byte {
	if len(b) > 200 {
		return b[len(b)-200:]
	}
	return b
}

// resetHealth closes every deployment's circuit and forgets its counters,
// so that a case that asserts one answer's mapping is not answered by
// what earlier cases taught the gateway about the same upstream.
func resetHealth() {
	healths.Range(func(_, v any) bool {
		v.(healthEntry).Reset()
		return true
	})
}

// leaveAfter sends a request on a connection of its own, lets ready read
// what the test waits for, then closes the client's side of the
// connection, as net/http reports a client going away, and waits for
// cancelled (the upstream seeing the gateway give up) and for the server to
// close the connection: the request is over, settled and counted.
func leaveAfter(t testing.TB, key, body string, header http.Header, cancelled <-chan struct{}, ready func(req *http.Request, br *bufio.Reader)) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(siteURL, "http://"), streamWait)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(2 * streamWait)); err != nil {
		t.Fatal(err)
	}
	req := newChatRequest(t, context.Background(), http.MethodPost, key, body, header)
	req.Close = true
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	ready(req, br)
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, cancelled, "the gateway cancelling the upstream request")
	if _, err := io.Copy(io.Discard, br); err != nil {
		t.Fatalf("waiting for the server to close the connection: %v", err)
	}
}

// leavingCompletion starts a JSON answer larger than the kernel's
// socket buffers hold, so that once reading is closed the gateway has the
// headers and is reading the body; then it waits for the gateway to cancel
// the request and closes cancelled.
func leavingCompletion(reading, cancelled chan struct{}, stop <-chan struct{}) upstreamHandler {
	return func(w http.ResponseWriter, r *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, `{"id":"chatcmpl-test","object":"chat.completion","padding":"`)
		_, err := w.Write(bytes.Repeat([]byte("a"), 16<<20))
		close(reading)
		if err != nil {
			return
		}
		select {
		case <-r.Context().Done():
			close(cancelled)
		case <-stop:
		}
	}
}

// readStreamStart reads the response head of a request written on a raw
// connection (see leaveAfter) and checks it is a 200.
func readStreamStart(t testing.TB, req *http.Request, br *bufio.Reader) *http.Response {
	t.Helper()
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	return resp
}
