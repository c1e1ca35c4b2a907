package upstream

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arcaneapi/caddy-arcane/upstream/openai"
	"github.com/arcaneapi/caddy-arcane/upstream/tokens"
)

// fakeClock is the proxy's clock in these tests: circuits are timed by it,
// and it moves only when a test says so.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// countingTransport counts the calls made to one provider.
type countingTransport struct {
	rt    http.RoundTripper
	calls atomic.Int32
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.calls.Add(1)
	return c.rt.RoundTrip(r)
}

// checkGoroutines records how many goroutines run now and, when the test
// ends (after the cleanups registered after it, which close the servers),
// waits a few seconds for the count to come back to that.
func checkGoroutines(t *testing.T) {
	t.Helper()
	// The tokenizer loads its vocabularies on first use; do that before
	// counting.
	testCounter.Count("public", []byte("warm up"))
	testCounter.CountChat("public", []tokens.Message{{Role: "user", Texts: [][]byte{[]byte("warm up")}}})
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= base {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("%d goroutines still running, %d before the test:\n%s", n, base, buf)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// upstreamSpec is one deployment of the test model: its provider's name,
// how its server answers (nil: nothing listens at its address, so the
// connection is refused), its weight and its provider's timeouts.
type upstreamSpec struct {
	name          string
	handler       http.HandlerFunc
	weight        int
	headerTimeout time.Duration
	idleTimeout   time.Duration
}

// failover is a model "public" whose deployments ("<name>/private-2025")
// each have their own provider and server, a proxy timed by a fake clock,
// and the count of calls each deployment got.
type failover struct {
	t     *testing.T
	clock *fakeClock
	proxy *Proxy
	model *Model
	calls []*countingTransport
}

func newFailover(t *testing.T, specs ...upstreamSpec) *failover {
	t.Helper()
	f := &failover{t: t, clock: &fakeClock{now: epoch}}
	f.proxy = &Proxy{Tokens: testCounter, Now: f.clock.Now}
	var deps []*Deployment
	for _, s := range specs {
		var base string
		var rt http.RoundTripper
		if s.handler == nil {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			base = "http://" + ln.Addr().String() + "/v1"
			ln.Close()
			tr := &http.Transport{}
			t.Cleanup(tr.CloseIdleConnections)
			rt = tr
		} else {
			srv := httptest.NewServer(s.handler)
			t.Cleanup(srv.Close)
			base = srv.URL + "/v1"
			rt = srv.Client().Transport
		}
		ct := &countingTransport{rt: rt}
		f.calls = append(f.calls, ct)
		p, err := NewProvider(s.name, TypeOpenAI, base, "sk-"+s.name, &http.Client{Transport: ct})
		if err != nil {
			t.Fatal(err)
		}
		p.ResponseHeaderTimeout, p.IdleTimeout = s.headerTimeout, s.idleTimeout
		deps = append(deps, &Deployment{Provider: p, Model: "private-2025", Weight: s.weight})
	}
	c, err := NewCatalog([]*Model{{ID: "public", Deployments: deps}})
	if err != nil {
		t.Fatal(err)
	}
	f.model, _ = c.Lookup("public")
	return f
}

// forward runs one request through the proxy.
func (f *failover) forward(ctx context.Context, body string) (*Exchange, *httptest.ResponseRecorder, error) {
	f.t.Helper()
	req, err := openai.ScanRequest([]byte(body))
	if err != nil {
		f.t.Fatal(err)
	}
	x := &Exchange{Body: []byte(body), Request: &req, Model: f.model, Header: http.Header{}}
	w := httptest.NewRecorder()
	err = f.proxy.Forward(ctx, w, x)
	return x, w, err
}

// wantCalls checks how many calls each deployment got in all.
func (f *failover) wantCalls(want ...int) {
	f.t.Helper()
	for i, ct := range f.calls {
		if got := int(ct.calls.Load()); got != want[i] {
			f.t.Fatalf("%s got %d calls, want %d", f.model.Deployments[i].Name(), got, want[i])
		}
	}
}

func (f *failover) health(i int) HealthSnapshot {
	return f.model.Deployments[i].Health.Snapshot(f.clock.Now())
}

// wantHealth checks a deployment's counts and state.
func (f *failover) wantHealth(i int, state State, requests, failures uint64, consecutive int) HealthSnapshot {
	f.t.Helper()
	s := f.health(i)
	if s.State != state || s.Requests != requests || s.Failures != failures || s.ConsecutiveFailures != consecutive || s.InFlight != 0 {
		f.t.Fatalf("%s health %+v; want state %s, %d requests, %d failures, %d in a row, none in flight",
			f.model.Deployments[i].Name(), s, state, requests, failures, consecutive)
	}
	return s
}

// wantServed checks a request answered by the deployment named, after
// attempts calls and the failed tries listed as "<deployment> <status>
// <code>".
func wantServed(t *testing.T, x *Exchange, err error, name string, attempts int, tries ...string) {
	t.Helper()
	if err != nil {
		t.Fatalf("Forward: %v", err)
	}
	if x.Deployment == nil || x.Deployment.Name() != name {
		t.Fatalf("served by %v, want %s", x.Deployment, name)
	}
	wantTries(t, x, attempts, tries...)
}

func wantTries(t *testing.T, x *Exchange, attempts int, tries ...string) {
	t.Helper()
	if x.Attempts != attempts {
		t.Fatalf("attempts %d, want %d", x.Attempts, attempts)
	}
	var got []string
	for _, tr := range x.Tries {
		got = append(got, tr.Deployment.Name()+" "+strconv.Itoa(tr.Err.Status)+" "+tr.Err.Code)
		if tr.Duration != 0 {
			t.Fatalf("try on %s lasted %v on the fake clock", tr.Deployment.Name(), tr.Duration)
		}
	}
	if strings.Join(got, ", ") != strings.Join(tries, ", ") {
		t.Fatalf("tries [%s], want [%s]", strings.Join(got, ", "), strings.Join(tries, ", "))
	}
}

// wantError checks Forward's *Error.
func wantError(t *testing.T, err error, status int, code, retryAfter string) *Error {
	t.Helper()
	var ue *Error
	if !errors.As(err, &ue) {
		t.Fatalf("err = %v, want an *Error", err)
	}
	if ue.Status != status || ue.Code != code || ue.RetryAfter != retryAfter {
		t.Fatalf("error %d %s Retry-After %q, want %d %s %q (%v)", ue.Status, ue.Code, ue.RetryAfter, status, code, retryAfter, ue.Err)
	}
	return ue
}

// wantNothingWritten checks that the client got nothing: Forward's caller
// answers the error.
func wantNothingWritten(t *testing.T, w *httptest.ResponseRecorder) {
	t.Helper()
	if w.Body.Len() != 0 || len(w.Header()) != 0 || w.Flushed {
		t.Fatalf("something was written: %v %q", w.Header(), w.Body.String())
	}
}

// waitClosed waits for a handler to report that its request's context was
// cancelled.
func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(3 * time.Second):
		t.Fatalf("%s: the upstream request was never cancelled", what)
	}
}

const failoverAnswer = `{"id":"x","object":"chat.completion","model":"private-2025","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}`

var wantAnswer = strings.Replace(failoverAnswer, `"model":"private-2025"`, `"model":"public"`, 1)

func answerOK(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	io.WriteString(w, failoverAnswer)
}

func streamOK(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	writeSSE(w, chunk1, chunk2, "[DONE]")
}

func answerStatus(status int, retryAfter string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.WriteHeader(status)
		io.WriteString(w, `{"error":{"message":"no"}}`)
	}
}

// hang returns a handler that reads the request, runs before (if any),
// then waits for the request's context to end and closes done. The wait is
// bounded so that a proxy that never cancels fails the test instead of
// hanging it.
func hang(before func(w http.ResponseWriter), arrived chan<- struct{}) (http.HandlerFunc, <-chan struct{}) {
	done := make(chan struct{})
	var once sync.Once
	return func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // the server notices a closed connection once the body is read
		if before != nil {
			before(w)
		}
		if arrived != nil {
			arrived <- struct{}{}
		}
		select {
		case <-r.Context().Done():
			once.Do(func() { close(done) })
		case <-time.After(5 * time.Second):
		}
	}, done
}

// A heavy first deployment and a light second: A takes the first attempt
// (the odds of B are one in a million), B the failover.
const heavy = MaxWeight

// streamChunk is an OpenAI chunk of the stream-cut tests.
func streamChunk(content string) string {
	return `{"id":"chatcmpl-7","object":"chat.completion.chunk","created":1700000000,"model":"private-2025","choices":[{"index":0,"delta":{"content":"` + content + `"},"finish_reason":null}]}`
}

func publicFrame(chunk string) string {
	return "data: " + strings.Replace(chunk, `"model":"private-2025"`, `"model":"public"`, 1) + "\n\n"
}

func streamErrorFrame(code, msg string) string {
	return `data: {"id":"chatcmpl-7","object":"chat.completion.chunk","created":1700000000,"model":"public",` +
		`"choices":[{"index":0,"delta":{},"finish_reason":"error"}],` +
		`"error":{"message":"` + msg + `","type":"server_error","param":null,"code":"` + code + `"}}` + "\n\n"
}

func TestFailover(t *testing.T) {
	t.Run("connection refused moves to the next deployment", func(t *testing.T) {
		checkGoroutines(t)
		f := newFailover(t, upstreamSpec{name: "a", weight: heavy}, upstreamSpec{name: "b", handler: answerOK, weight: 1})
		x, w, err := f.forward(context.Background(), plainBody)
		wantServed(t, x, err, "b/private-2025", 2, "a/private-2025 503 upstream_unavailable")
		if w.Code != http.StatusOK || w.Body.String() != wantAnswer {
			t.Fatalf("client got %d %s", w.Code, w.Body.String())
		}
		if x.Outcome != OutcomeOK || !x.Delivered || x.Basis != BasisUpstream || x.Usage.TotalTokens != 21 {
			t.Fatalf("outcome %s delivered %v basis %s usage %+v", x.Outcome, x.Delivered, x.Basis, x.Usage)
		}
		f.wantCalls(1, 1)
		a := f.wantHealth(0, StateClosed, 1, 1, 1)
		if !strings.Contains(a.LastError, "connection refused") || !a.LastFailure.Equal(epoch) || a.RecentFailures != 1 {
			t.Fatalf("a's health: %+v", a)
		}
		if b := f.wantHealth(1, StateClosed, 1, 0, 0); b.Latency <= 0 {
			t.Fatalf("b's latency %v", b.Latency)
		}
	})

	t.Run("no headers within the header timeout moves to the next deployment", func(t *testing.T) {
		checkGoroutines(t)
		hung, cancelled := hang(nil, nil)
		f := newFailover(t,
			upstreamSpec{name: "a", handler: hung, weight: heavy, headerTimeout: 100 * time.Millisecond},
			upstreamSpec{name: "b", handler: answerOK, weight: 1})
		x, w, err := f.forward(context.Background(), plainBody)
		wantServed(t, x, err, "b/private-2025", 2, "a/private-2025 504 upstream_timeout")
		if w.Code != http.StatusOK || w.Body.String() != wantAnswer {
			t.Fatalf("client got %d %s", w.Code, w.Body.String())
		}
		waitClosed(t, cancelled, "a")
		f.wantCalls(1, 1)
		if a := f.wantHealth(0, StateClosed, 1, 1, 1); a.LastError != errHeaderTimeout.Error() {
			t.Fatalf("a's last error %q", a.LastError)
		}
	})

	t.Run("a 500 moves to the next deployment", func(t *testing.T) {
		checkGoroutines(t)
		f := newFailover(t,
			upstreamSpec{name: "a", handler: answerStatus(500, ""), weight: heavy},
			upstreamSpec{name: "b", handler: answerOK, weight: 1})
		x, w, err := f.forward(context.Background(), plainBody)
		wantServed(t, x, err, "b/private-2025", 2, "a/private-2025 502 upstream_error")
		if w.Code != http.StatusOK || w.Body.String() != wantAnswer {
			t.Fatalf("client got %d %s", w.Code, w.Body.String())
		}
		f.wantCalls(1, 1)
		if a := f.wantHealth(0, StateClosed, 1, 1, 1); a.LastError != "upstream a/private-2025 answered HTTP 500" {
			t.Fatalf("a's last error %q", a.LastError)
		}
		f.wantHealth(1, StateClosed, 1, 0, 0)
	})

	t.Run("a 429 benches the deployment for its Retry-After", func(t *testing.T) {
		checkGoroutines(t)
		var aCalls atomic.Int32
		limited := func(w http.ResponseWriter, r *http.Request) {
			if aCalls.Add(1) == 1 {
				answerStatus(http.StatusTooManyRequests, "7")(w, r)
				return
			}
			answerOK(w, r)
		}
		f := newFailover(t, upstreamSpec{name: "a", handler: limited, weight: heavy}, upstreamSpec{name: "b", handler: answerOK, weight: 1})
		x, w, err := f.forward(context.Background(), plainBody)
		wantServed(t, x, err, "b/private-2025", 2, "a/private-2025 429 rate_limit_exceeded")
		if x.Tries[0].Err.RetryAfter != "7" || w.Code != http.StatusOK || w.Body.String() != wantAnswer {
			t.Fatalf("try %+v; client got %d %s", x.Tries[0].Err, w.Code, w.Body.String())
		}
		a := f.wantHealth(0, StateOpen, 1, 1, 0)
		if a.Reason != "rate_limited" || !a.Until.Equal(at(7*time.Second)) || a.RecentRequests != 0 {
			t.Fatalf("a's health %+v", a)
		}
		// Until the bench ends every request goes to B, on the first try.
		for _, d := range []time.Duration{0, 3 * time.Second, 7*time.Second - time.Millisecond} {
			f.clock.Set(at(d))
			x, _, err := f.forward(context.Background(), plainBody)
			wantServed(t, x, err, "b/private-2025", 1)
		}
		f.wantCalls(1, 4)
		// Then A's probe is the next request, and it recovers.
		f.clock.Set(at(7 * time.Second))
		x, _, err = f.forward(context.Background(), plainBody)
		wantServed(t, x, err, "a/private-2025", 1)
		f.wantCalls(2, 4)
		f.wantHealth(0, StateClosed, 2, 1, 0)
	})

	t.Run("a stream cut after some events ends with an in-band error and is not retried", func(t *testing.T) {
		checkGoroutines(t)
		cut := func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			writeSSE(w, streamChunk("Hello"), streamChunk(" there"), streamChunk(" world"))
		}
		f := newFailover(t, upstreamSpec{name: "a", handler: cut, weight: heavy}, upstreamSpec{name: "b", handler: streamOK, weight: 1})
		x, w, err := f.forward(context.Background(), streamBody)
		wantServed(t, x, err, "a/private-2025", 1)
		want := publicFrame(streamChunk("Hello")) + publicFrame(streamChunk(" there")) + publicFrame(streamChunk(" world")) +
			streamErrorFrame("upstream_error", "The model's provider ended the stream unexpectedly; the answer is incomplete.") +
			"data: [DONE]\n\n"
		if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "text/event-stream" || w.Body.String() != want {
			t.Fatalf("client got %d %v\n%s\nwant\n%s", w.Code, w.Header(), w.Body.String(), want)
		}
		if x.Outcome != OutcomeUpstreamError || !x.Delivered {
			t.Fatalf("outcome %s delivered %v", x.Outcome, x.Delivered)
		}
		prompt := int64(testCounter.CountChat("public", []tokens.Message{{Role: "user", Texts: [][]byte{[]byte("Hello")}}}))
		completion := int64(testCounter.Count("public", []byte("Hello there world")))
		if x.Basis != BasisCounted || x.Usage.PromptTokens != prompt || x.Usage.CompletionTokens != completion || x.Usage.TotalTokens != prompt+completion || completion == 0 {
			t.Fatalf("usage %+v basis %s; want %d + %d counted", x.Usage, x.Basis, prompt, completion)
		}
		f.wantCalls(1, 0)
		if a := f.wantHealth(0, StateClosed, 1, 1, 1); a.LastError != "stream ended without [DONE]" || a.Latency != 0 {
			t.Fatalf("a's health %+v", a)
		}
	})

	// Data that is not one JSON object is never relayed: an HTML page, or
	// a chunk that is almost JSON and names the provider's model, which
	// only a valid chunk gets rewritten.
	for name, garbage := range map[string]string{
		"garbage":          "<html>oops</html>",
		"a chunk not JSON": `{"id":"c","model":"private-2025","choices":[{"index":0,"delta":{"content":"x"}}],}`,
	} {
		t.Run(name+" before the first event moves to the next deployment", func(t *testing.T) {
			checkGoroutines(t)
			send := func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				writeSSE(w, garbage)
			}
			f := newFailover(t, upstreamSpec{name: "a", handler: send, weight: heavy}, upstreamSpec{name: "b", handler: streamOK, weight: 1})
			x, w, err := f.forward(context.Background(), streamBody)
			wantServed(t, x, err, "b/private-2025", 2, "a/private-2025 502 upstream_error")
			if msg := x.Tries[0].Err.Message; msg != "The model's provider sent a stream this gateway could not read. Retry with backoff." {
				t.Fatalf("try message %q", msg)
			}
			if want := publicFrame(chunk1) + publicFrame(chunk2) + "data: [DONE]\n\n"; w.Code != http.StatusOK || w.Body.String() != want {
				t.Fatalf("client got %d\n%s\nwant\n%s", w.Code, w.Body.String(), want)
			}
			if x.Outcome != OutcomeOK {
				t.Fatalf("outcome %s", x.Outcome)
			}
			f.wantCalls(1, 1)
			if a := f.wantHealth(0, StateClosed, 1, 1, 1); a.LastError != "stream broken: "+errMalformed.Error() {
				t.Fatalf("a's last error %q", a.LastError)
			}
		})

		t.Run(name+" after some events ends with an in-band error and is not retried", func(t *testing.T) {
			checkGoroutines(t)
			send := func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				writeSSE(w, streamChunk("Hello"), garbage, streamChunk(" never"))
			}
			f := newFailover(t, upstreamSpec{name: "a", handler: send, weight: heavy}, upstreamSpec{name: "b", handler: streamOK, weight: 1})
			x, w, err := f.forward(context.Background(), streamBody)
			wantServed(t, x, err, "a/private-2025", 1)
			want := publicFrame(streamChunk("Hello")) +
				streamErrorFrame("upstream_error", "The model's provider sent data this gateway could not read; the answer is incomplete.") +
				"data: [DONE]\n\n"
			if w.Code != http.StatusOK || w.Body.String() != want {
				t.Fatalf("client got %d\n%s\nwant\n%s", w.Code, w.Body.String(), want)
			}
			if x.Outcome != OutcomeUpstreamError || !x.Delivered {
				t.Fatalf("outcome %s delivered %v", x.Outcome, x.Delivered)
			}
			f.wantCalls(1, 0)
			if a := f.wantHealth(0, StateClosed, 1, 1, 1); a.LastError != errMalformed.Error() {
				t.Fatalf("a's last error %q", a.LastError)
			}
		})
	}

	t.Run("a stream that stalls after some events ends with an in-band timeout", func(t *testing.T) {
		checkGoroutines(t)
		stall, cancelled := hang(func(w http.ResponseWriter) { writeSSE(w, streamChunk("Hello"), streamChunk(" there")) }, nil)
		f := newFailover(t,
			upstreamSpec{name: "a", handler: stall, weight: heavy, idleTimeout: 100 * time.Millisecond},
			upstreamSpec{name: "b", handler: streamOK, weight: 1})
		x, w, err := f.forward(context.Background(), streamBody)
		wantServed(t, x, err, "a/private-2025", 1)
		want := publicFrame(streamChunk("Hello")) + publicFrame(streamChunk(" there")) +
			streamErrorFrame("upstream_timeout", "The model's provider stopped sending for 100ms; the answer is incomplete.") +
			"data: [DONE]\n\n"
		if w.Code != http.StatusOK || w.Body.String() != want {
			t.Fatalf("client got %d\n%s\nwant\n%s", w.Code, w.Body.String(), want)
		}
		if x.Outcome != OutcomeUpstreamError || !x.Delivered || x.Basis != BasisCounted {
			t.Fatalf("outcome %s delivered %v basis %s", x.Outcome, x.Delivered, x.Basis)
		}
		waitClosed(t, cancelled, "a")
		f.wantCalls(1, 0)
		if a := f.wantHealth(0, StateClosed, 1, 1, 1); a.LastError != errIdleTimeout.Error() {
			t.Fatalf("a's last error %q", a.LastError)
		}
	})

	t.Run("a slow client does not count as the provider's silence", func(t *testing.T) {
		checkGoroutines(t)
		// The provider sends the answer in two parts 10ms apart; the
		// client takes the first write five idle timeouts later. The
		// gateway waited on the client, not on the provider.
		twoParts := func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			writeSSE(w, chunk1)
			time.Sleep(10 * time.Millisecond) // the rest in a read of its own
			writeSSE(w, chunk2, "[DONE]")
		}
		f := newFailover(t,
			upstreamSpec{name: "a", handler: twoParts, weight: heavy, idleTimeout: 50 * time.Millisecond},
			upstreamSpec{name: "b", handler: streamOK, weight: 1})
		req, err := openai.ScanRequest([]byte(streamBody))
		if err != nil {
			t.Fatal(err)
		}
		x := &Exchange{Body: []byte(streamBody), Request: &req, Model: f.model, Header: http.Header{}}
		w := &slowWriter{ResponseRecorder: httptest.NewRecorder(), delay: 250 * time.Millisecond}
		err = f.proxy.Forward(context.Background(), w, x)
		wantServed(t, x, err, "a/private-2025", 1)
		if want := publicFrame(chunk1) + publicFrame(chunk2) + "data: [DONE]\n\n"; w.Body.String() != want {
			t.Fatalf("client got\n%s\nwant\n%s", w.Body.String(), want)
		}
		if x.Outcome != OutcomeOK {
			t.Fatalf("outcome %s, want ok", x.Outcome)
		}
		f.wantCalls(1, 0)
		f.wantHealth(0, StateClosed, 1, 0, 0)
	})

	t.Run("a stream that stalls before the first event moves to the next deployment", func(t *testing.T) {
		checkGoroutines(t)
		stall, cancelled := hang(func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
		}, nil)
		f := newFailover(t,
			upstreamSpec{name: "a", handler: stall, weight: heavy, idleTimeout: 100 * time.Millisecond},
			upstreamSpec{name: "b", handler: streamOK, weight: 1})
		x, w, err := f.forward(context.Background(), streamBody)
		wantServed(t, x, err, "b/private-2025", 2, "a/private-2025 504 upstream_timeout")
		if msg := x.Tries[0].Err.Message; msg != "The model's provider stopped sending its answer. Retry with backoff." {
			t.Fatalf("try message %q", msg)
		}
		if want := publicFrame(chunk1) + publicFrame(chunk2) + "data: [DONE]\n\n"; w.Code != http.StatusOK || w.Body.String() != want {
			t.Fatalf("client got %d\n%s\nwant\n%s", w.Code, w.Body.String(), want)
		}
		waitClosed(t, cancelled, "a")
		f.wantCalls(1, 1)
		if a := f.wantHealth(0, StateClosed, 1, 1, 1); a.LastError != errIdleTimeout.Error() {
			t.Fatalf("a's last error %q", a.LastError)
		}
	})

	t.Run("a 400 is the client's answer, not retried", func(t *testing.T) {
		checkGoroutines(t)
		refuse := func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":{"message":"private-2025 does not support x","type":"invalid_request_error","param":"x","code":"bad"}}`)
		}
		f := newFailover(t, upstreamSpec{name: "a", handler: refuse, weight: heavy}, upstreamSpec{name: "b", handler: answerOK, weight: 1})
		x, w, err := f.forward(context.Background(), plainBody)
		ue := wantError(t, err, http.StatusBadRequest, "bad", "")
		if ue.Message != "public does not support x" || ue.Type != "invalid_request_error" || ue.Param != "x" {
			t.Fatalf("error %+v", ue)
		}
		wantNothingWritten(t, w)
		wantTries(t, x, 1)
		if x.Deployment.Name() != "a/private-2025" || x.Delivered || x.Outcome != OutcomeInvalidRequest {
			t.Fatalf("deployment %s delivered %v outcome %s", x.Deployment.Name(), x.Delivered, x.Outcome)
		}
		f.wantCalls(1, 0)
		f.wantHealth(0, StateClosed, 1, 0, 0)
	})

	t.Run("Attempts bounds the deployments tried", func(t *testing.T) {
		checkGoroutines(t)
		f := newFailover(t,
			upstreamSpec{name: "a", handler: answerStatus(500, ""), weight: 1},
			upstreamSpec{name: "b", handler: answerStatus(500, ""), weight: 1},
			upstreamSpec{name: "c", handler: answerStatus(500, ""), weight: 1})
		f.proxy.Attempts = 2
		x, w, err := f.forward(context.Background(), plainBody)
		wantError(t, err, http.StatusBadGateway, "upstream_error", "")
		wantNothingWritten(t, w)
		if x.Attempts != 2 || len(x.Tries) != 2 || x.Tries[0].Deployment == x.Tries[1].Deployment {
			t.Fatalf("attempts %d tries %+v", x.Attempts, x.Tries)
		}
		total := 0
		for i, ct := range f.calls {
			n := int(ct.calls.Load())
			total += n
			tried := x.Tries[0].Deployment == f.model.Deployments[i] || x.Tries[1].Deployment == f.model.Deployments[i]
			if (n == 1) != tried || n > 1 {
				t.Fatalf("%s: %d calls, in tries: %v", f.model.Deployments[i].Name(), n, tried)
			}
			if s := f.health(i); s.Requests != uint64(n) || s.Failures != uint64(n) {
				t.Fatalf("%s health %+v", f.model.Deployments[i].Name(), s)
			}
		}
		if total != 2 {
			t.Fatalf("%d calls in all, want 2", total)
		}
	})

}

// The client leaving while the upstream has not answered: nothing is
// learnt about the deployment.
func TestFailoverClientLeaves(t *testing.T) {
	t.Run("the client leaving is not retried and teaches nothing", func(t *testing.T) {
		checkGoroutines(t)
		arrived := make(chan struct{}, 1)
		hung, cancelled := hang(nil, arrived)
		f := newFailover(t, upstreamSpec{name: "a", handler: hung, weight: heavy}, upstreamSpec{name: "b", handler: answerOK, weight: 1})
		// Two failures already: the client leaving must neither add one
		// nor reset the count with a success.
		failOnce(f.model.Deployments[0].Health, epoch, &f.proxy.Breaker)
		failOnce(f.model.Deployments[0].Health, epoch, &f.proxy.Breaker)
		x, w, err := f.leave(arrived)
		if ue := wantError(t, err, 499, "client_closed", ""); ue.retry {
			t.Fatal("a client leaving is retryable")
		}
		wantNothingWritten(t, w)
		wantTries(t, x, 1)
		if x.Outcome != OutcomeClientClosed || x.Delivered {
			t.Fatalf("outcome %s delivered %v", x.Outcome, x.Delivered)
		}
		waitClosed(t, cancelled, "a")
		f.wantCalls(1, 0)
		f.wantHealth(0, StateClosed, 2, 2, 2)
	})

	t.Run("the client leaving during a probe leaves the circuit half-open", func(t *testing.T) {
		checkGoroutines(t)
		arrived := make(chan struct{}, 1)
		hung, cancelled := hang(nil, arrived)
		f := newFailover(t, upstreamSpec{name: "a", handler: hung, weight: 1}, upstreamSpec{name: "b", handler: answerOK, weight: 1})
		a := f.model.Deployments[0].Health
		for range 5 {
			failOnce(a, epoch, &f.proxy.Breaker)
		}
		f.clock.Set(at(30 * time.Second)) // A's probe is the next request
		x, _, err := f.leave(arrived)
		wantError(t, err, 499, "client_closed", "")
		if x.Deployment.Name() != "a/private-2025" {
			t.Fatalf("served by %s", x.Deployment.Name())
		}
		waitClosed(t, cancelled, "a")
		if s := f.health(0); s.State != StateHalfOpen || s.Requests != 5 {
			t.Fatalf("a's health after its probe's client left: %+v", s)
		}
		if _, ok := a.claimProbe(f.clock.Now()); !ok {
			t.Fatal("the probe slot was not given back")
		}
	})
}

// leave runs a request that the client abandons once the upstream has it.
func (f *failover) leave(arrived <-chan struct{}) (*Exchange, *httptest.ResponseRecorder, error) {
	f.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		x   *Exchange
		w   *httptest.ResponseRecorder
		err error
	}
	done := make(chan result, 1)
	go func() {
		x, w, err := f.forward(ctx, plainBody)
		done <- result{x, w, err}
	}()
	select {
	case <-arrived:
	case <-time.After(3 * time.Second):
		f.t.Fatal("the request never reached the upstream")
	}
	cancel()
	select {
	case r := <-done:
		return r.x, r.w, r.err
	case <-time.After(3 * time.Second):
		f.t.Fatal("Forward did not return after the client left")
	}
	return nil, nil, nil
}

func TestFailoverAllDown(t *testing.T) {
	t.Run("every deployment refusing connections is a 503", func(t *testing.T) {
		checkGoroutines(t)
		f := newFailover(t, upstreamSpec{name: "a", weight: 1}, upstreamSpec{name: "b", weight: 1})
		x, w, err := f.forward(context.Background(), plainBody)
		wantError(t, err, http.StatusServiceUnavailable, "upstream_unavailable", "")
		wantNothingWritten(t, w)
		if x.Attempts != 2 || len(x.Tries) != 2 || x.Tries[0].Deployment == x.Tries[1].Deployment || x.Delivered {
			t.Fatalf("attempts %d tries %+v delivered %v", x.Attempts, x.Tries, x.Delivered)
		}
		f.wantCalls(1, 1)
		f.wantHealth(0, StateClosed, 1, 1, 1)
		f.wantHealth(1, StateClosed, 1, 1, 1)

		// With a breaker that opens on a failure, one request each opens
		// both circuits: one at 1s, the other at 6s (one attempt a request).
		f.proxy.Breaker = Breaker{Failures: 1}
		f.proxy.Attempts = 1
		f.clock.Set(at(time.Second))
		_, _, err = f.forward(context.Background(), plainBody)
		wantError(t, err, http.StatusServiceUnavailable, "upstream_unavailable", "")
		f.clock.Set(at(6 * time.Second))
		_, _, err = f.forward(context.Background(), plainBody)
		wantError(t, err, http.StatusServiceUnavailable, "upstream_unavailable", "")
		f.wantCalls(2, 2)
		first, second := f.health(0).Until, f.health(1).Until
		if first.After(second) {
			first, second = second, first
		}
		if !first.Equal(at(31*time.Second)) || !second.Equal(at(36*time.Second)) {
			t.Fatalf("circuits reopen at %v and %v", first.Sub(epoch), second.Sub(epoch))
		}

		// Now no call is made; Retry-After is the seconds until the first
		// reopens, rounded up: 31s - 10.5s = 20.5s → 21.
		f.clock.Set(at(10*time.Second + 500*time.Millisecond))
		x, w, err = f.forward(context.Background(), plainBody)
		ue := wantError(t, err, http.StatusServiceUnavailable, "upstream_unavailable", "21")
		if !strings.Contains(ue.Message, "Retry after 21 seconds.") {
			t.Fatalf("message %q", ue.Message)
		}
		wantNothingWritten(t, w)
		if x.Attempts != 0 || len(x.Tries) != 0 || x.Deployment != nil {
			t.Fatalf("attempts %d tries %d deployment %v", x.Attempts, len(x.Tries), x.Deployment)
		}
		f.wantCalls(2, 2)

		// At 31s the first circuit's probe goes out (and fails again).
		f.clock.Set(at(31 * time.Second))
		x, _, err = f.forward(context.Background(), plainBody)
		wantError(t, err, http.StatusServiceUnavailable, "upstream_unavailable", "")
		if x.Attempts != 1 {
			t.Fatalf("attempts %d", x.Attempts)
		}
	})

	t.Run("every deployment benched by a 429 is a 429", func(t *testing.T) {
		checkGoroutines(t)
		f := newFailover(t,
			upstreamSpec{name: "a", handler: answerStatus(http.StatusTooManyRequests, "7"), weight: heavy},
			upstreamSpec{name: "b", handler: answerStatus(http.StatusTooManyRequests, "20"), weight: 1})
		x, w, err := f.forward(context.Background(), plainBody)
		// The last attempt's answer: B's.
		wantError(t, err, http.StatusTooManyRequests, "rate_limit_exceeded", "20")
		wantNothingWritten(t, w)
		wantTries(t, x, 2, "a/private-2025 429 rate_limit_exceeded", "b/private-2025 429 rate_limit_exceeded")
		f.wantCalls(1, 1)

		f.clock.Set(at(500 * time.Millisecond))
		x, w, err = f.forward(context.Background(), plainBody)
		ue := wantError(t, err, http.StatusTooManyRequests, "rate_limit_exceeded", "7")
		if ue.Type != "requests" || ue.Message != "The model's provider is rate limiting requests. Retry after 7 seconds." {
			t.Fatalf("error %+v", ue)
		}
		wantNothingWritten(t, w)
		if x.Attempts != 0 {
			t.Fatalf("attempts %d", x.Attempts)
		}
		f.wantCalls(1, 1)
	})

	t.Run("one benched by a 429 and one failing is a 503", func(t *testing.T) {
		checkGoroutines(t)
		f := newFailover(t,
			upstreamSpec{name: "a", handler: answerStatus(http.StatusTooManyRequests, "7"), weight: heavy},
			upstreamSpec{name: "b", handler: answerStatus(500, ""), weight: 1})
		f.proxy.Breaker = Breaker{Failures: 1}
		_, _, err := f.forward(context.Background(), plainBody)
		wantError(t, err, http.StatusBadGateway, "upstream_error", "")
		_, _, err = f.forward(context.Background(), plainBody)
		wantError(t, err, http.StatusServiceUnavailable, "upstream_unavailable", "7")
		f.wantCalls(1, 1)
	})
}

// The review's findings, each a test that failed before its fix.
func TestFailoverReviewFixes(t *testing.T) {
	t.Run("a request that outlives request_timeout teaches its deployment nothing and is not retried", func(t *testing.T) {
		checkGoroutines(t)
		stuck, cancelled := hang(nil, nil)
		f := newFailover(t,
			upstreamSpec{name: "a", handler: stuck, weight: heavy},
			upstreamSpec{name: "b", handler: answerOK, weight: 1})
		f.proxy.RequestTimeout = 100 * time.Millisecond
		x, w, err := f.forward(context.Background(), plainBody)
		wantError(t, err, http.StatusGatewayTimeout, "upstream_timeout", "")
		wantNothingWritten(t, w)
		wantTries(t, x, 1)
		waitClosed(t, cancelled, "a")
		f.wantCalls(1, 0)
		f.wantHealth(0, StateClosed, 0, 0, 0)
	})

	t.Run("SSE comments from the provider keep a slow stream alive", func(t *testing.T) {
		checkGoroutines(t)
		slow := func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "text/event-stream")
			rc := http.NewResponseController(w)
			io.WriteString(w, "data: "+streamChunk("Hello")+"\n\n")
			rc.Flush()
			// Five comments 40ms apart: 200ms without an event, twice
			// the idle timeout, but never 100ms without data.
			for range 5 {
				select {
				case <-r.Context().Done():
					return
				case <-time.After(40 * time.Millisecond):
				}
				io.WriteString(w, ": PROCESSING\n\n")
				rc.Flush()
			}
			io.WriteString(w, "data: "+streamChunk(" there")+"\n\ndata: [DONE]\n\n")
		}
		f := newFailover(t, upstreamSpec{name: "a", handler: slow, weight: 1, idleTimeout: 100 * time.Millisecond})
		x, w, err := f.forward(context.Background(), streamBody)
		wantServed(t, x, err, "a/private-2025", 1)
		want := publicFrame(streamChunk("Hello")) + publicFrame(streamChunk(" there")) + "data: [DONE]\n\n"
		if w.Body.String() != want || x.Outcome != OutcomeOK {
			t.Fatalf("outcome %s, client got\n%s\nwant\n%s", x.Outcome, w.Body.String(), want)
		}
		f.wantHealth(0, StateClosed, 1, 0, 0)
	})

	t.Run("a refusal after a failure leaves the failed deployment as the request's", func(t *testing.T) {
		checkGoroutines(t)
		f := newFailover(t, upstreamSpec{name: "a", handler: answerStatus(http.StatusServiceUnavailable, ""), weight: heavy})
		// b is an Anthropic deployment, whose translation refuses n: 2.
		p, err := NewProvider("b", TypeAnthropic, "http://127.0.0.1:1", "sk-b", http.DefaultClient)
		if err != nil {
			t.Fatal(err)
		}
		f.model.Deployments = append(f.model.Deployments, &Deployment{Provider: p, Model: "claude", Weight: 1, Health: new(Health), name: "b/claude"})
		x, w, err := f.forward(context.Background(), `{"model":"public","messages":[{"role":"user","content":"Hi"}],"n":2}`)
		wantError(t, err, http.StatusBadGateway, "upstream_error", "")
		wantNothingWritten(t, w)
		if x.Deployment == nil || x.Deployment.Name() != "a/private-2025" || x.Refused {
			t.Fatalf("deployment %v refused %v, want a/private-2025, not refused", x.Deployment, x.Refused)
		}
		wantTries(t, x, 1, "a/private-2025 502 upstream_error")
	})

	t.Run("a probe whose request is refused gives its claim back", func(t *testing.T) {
		p, err := NewProvider("b", TypeAnthropic, "http://127.0.0.1:1", "sk-b", http.DefaultClient)
		if err != nil {
			t.Fatal(err)
		}
		h := new(Health)
		c, err := NewCatalog([]*Model{{ID: "public", Deployments: []*Deployment{{Provider: p, Model: "claude", Health: h}}}})
		if err != nil {
			t.Fatal(err)
		}
		m, _ := c.Lookup("public")
		for range 5 {
			failOnce(h, epoch, &Breaker{})
		}
		body := `{"model":"public","messages":[{"role":"user","content":"Hi"}],"n":2}`
		req, err := openai.ScanRequest([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		x := &Exchange{Body: []byte(body), Request: &req, Model: m, Header: http.Header{}}
		proxy := &Proxy{Tokens: testCounter, Now: func() time.Time { return at(30 * time.Second) }}
		err = proxy.Forward(context.Background(), httptest.NewRecorder(), x)
		if !x.Refused || err == nil {
			t.Fatalf("refused %v, err %v", x.Refused, err)
		}
		if _, ok := h.claimProbe(at(30 * time.Second)); !ok {
			t.Fatal("the refused probe kept its claim: the deployment is wedged half-open")
		}
	})
}

// slowWriter is a client that takes its first write only after delay.
type slowWriter struct {
	*httptest.ResponseRecorder
	delay time.Duration
	once  sync.Once
}

func (w *slowWriter) Write(b []byte) (int, error) {
	w.once.Do(func() { time.Sleep(w.delay) })
	return w.ResponseRecorder.Write(b)
}
