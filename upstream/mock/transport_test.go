package mock

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"
)

const mockURL = "http://mock.invalid/v1/chat/completions"

// tracked wraps a handler and closes done when it returns.
type tracked struct {
	h    http.Handler
	done chan struct{}
}

func track(h http.Handler) *tracked { return &tracked{h: h, done: make(chan struct{})} }

func (t *tracked) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer close(t.done)
	t.h.ServeHTTP(w, r)
}

// wait fails the test unless the handler has returned or returns soon.
func (t *tracked) wait(tb testing.TB) {
	tb.Helper()
	select {
	case <-t.done:
	case <-time.After(10 * time.Second):
		tb.Fatal("the handler is still running")
	}
}

// noLeaks fails the test unless the goroutine count drops back to base.
func noLeaks(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, want %d:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		runtime.Gosched()
	}
}

func post(t *testing.T, c *http.Client, ctx context.Context, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, mockURL, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// readEvent reads one SSE event, blank line included.
func readEvent(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	var ev strings.Builder
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading an event: %v (got %q)", err, ev.String()+line)
		}
		ev.WriteString(line)
		if line == "\n" {
			return ev.String()
		}
	}
}

func TestTransportWithClient(t *testing.T) {
	tests := []struct {
		name string
		body string
		want func(t *testing.T, resp *http.Response, body []byte)
	}{
		{"a non-stream reply arrives whole with its length", `{"model":"gpt-test",` + hello + `}`,
			func(t *testing.T, resp *http.Response, body []byte) {
				if resp.StatusCode != 200 || resp.Status != "200 OK" || resp.ContentLength != int64(len(body)) {
					t.Errorf("status %q length %d for %d bytes", resp.Status, resp.ContentLength, len(body))
				}
				var c completion
				decodeStrict(t, body, &c)
				if deref(c.Choices[0].Message.Content) != "arcane mock reply" || *c.Usage != (usage{9, 3, 12}) {
					t.Errorf("reply %s", body)
				}
			}},
		{"a stream arrives byte for byte as the handler wrote it", `{"model":"gpt-test",` + hello + `,"stream":true,"stream_options":{"include_usage":true}}`,
			func(t *testing.T, resp *http.Response, body []byte) {
				if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" || resp.ContentLength != -1 {
					t.Errorf("status %d type %q length %d", resp.StatusCode, resp.Header.Get("Content-Type"), resp.ContentLength)
				}
				if string(body) != wire3 {
					t.Errorf("stream:\n%s\nwant:\n%s", body, wire3)
				}
			}},
		{"an error keeps its status and envelope", `{"model":"gpt-test","messages":[]}`,
			func(t *testing.T, resp *http.Response, body []byte) {
				var e errorBody
				decodeStrict(t, body, &e)
				if resp.StatusCode != 400 || resp.Status != "400 Bad Request" || deref(e.Error.Code) != "empty_array" {
					t.Errorf("status %q body %s", resp.Status, body)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := track(newTestHandler(Config{ReplyTokens: 3}))
			c := &http.Client{Transport: &Transport{Handler: h}}
			resp := post(t, c, context.Background(), tt.body)
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatalf("reading the body: %v", err)
			}
			tt.want(t, resp, body)
			h.wait(t)
		})
	}
}

func TestTransportEndsTheHandler(t *testing.T) {
	// blockingSleep waits for the client to go away, however long the pause.
	blockingSleep := func(ctx context.Context, _ time.Duration) error {
		<-ctx.Done()
		return ctx.Err()
	}
	tests := []struct {
		name  string
		paced bool
		end   func(t *testing.T, resp *http.Response, cancel context.CancelFunc)
	}{
		{"closing the body after two chunks interrupts a paced stream's wait", true,
			func(t *testing.T, resp *http.Response, _ context.CancelFunc) { resp.Body.Close() }},
		{"closing the body after two chunks fails an unpaced stream's next write", false,
			func(t *testing.T, resp *http.Response, _ context.CancelFunc) { resp.Body.Close() }},
		{"cancelling the request after two chunks ends the stream with the context's error", true,
			func(t *testing.T, resp *http.Response, cancel context.CancelFunc) {
				cancel()
				if _, err := io.ReadAll(resp.Body); !errors.Is(err, context.Canceled) {
					t.Errorf("reading after cancel: %v, want context.Canceled", err)
				}
				resp.Body.Close()
			}},
		{"reading to EOF ends the handler", false,
			func(t *testing.T, resp *http.Response, _ context.CancelFunc) {
				rest, err := io.ReadAll(resp.Body)
				if err != nil || !strings.HasSuffix(string(rest), "data: [DONE]\n\n") {
					t.Errorf("rest of the stream %q, %v", rest, err)
				}
				resp.Body.Close()
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := runtime.NumGoroutine()
			mh := newTestHandler(Config{ReplyTokens: 8})
			if tt.paced {
				mh = newTestHandler(Config{ReplyTokens: 8, TokensPerSecond: 10})
				mh.sleep = blockingSleep
			}
			h := track(mh)
			c := &http.Client{Transport: &Transport{Handler: h}}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			resp := post(t, c, ctx, `{"model":"m",`+hello+`,"stream":true}`)
			r := bufio.NewReader(resp.Body)
			if ev := readEvent(t, r); !strings.Contains(ev, `"role":"assistant"`) {
				t.Fatalf("first event %q", ev)
			}
			if ev := readEvent(t, r); !strings.Contains(ev, `"content":"arcane"`) {
				t.Fatalf("second event %q", ev)
			}
			tt.end(t, resp, cancel)
			h.wait(t)
			cancel()
			noLeaks(t, base)
		})
	}
}

func TestTransportStreamsAsTheHandlerFlushes(t *testing.T) {
	release := make(chan struct{})
	h := track(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: one\n\n")
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Errorf("ResponseController.Flush: %v", err)
		}
		<-release // the client must see "one" while the handler is still here
		_, _ = io.WriteString(w, "data: two\n\n")
		w.(http.Flusher).Flush()
	}))
	c := &http.Client{Transport: &Transport{Handler: h}}
	resp := post(t, c, context.Background(), "")
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	if ev := readEvent(t, r); ev != "data: one\n\n" {
		t.Fatalf("first event %q", ev)
	}
	close(release)
	if rest, err := io.ReadAll(r); err != nil || string(rest) != "data: two\n\n" {
		t.Errorf("rest %q, %v", rest, err)
	}
	h.wait(t)
}

func TestTransportHandlerEdgeCases(t *testing.T) {
	tests := []struct {
		name       string
		handler    http.HandlerFunc
		wantRTErr  string // RoundTrip's error
		wantStatus int
		wantBody   string
		wantErr    string // reading the body
		wantHeader string // X-Test
	}{
		{"a handler that writes nothing answers 200 with an empty body",
			func(http.ResponseWriter, *http.Request) {}, "", 200, "", "", ""},
		{"a panic before the headers is an error from RoundTrip",
			func(http.ResponseWriter, *http.Request) { panic("boom") }, "mock: handler panicked: boom", 0, "", "", ""},
		{"a panic after a flush cuts the body with an error",
			func(w http.ResponseWriter, _ *http.Request) {
				_, _ = io.WriteString(w, "partial")
				w.(http.Flusher).Flush()
				panic(http.ErrAbortHandler)
			}, "", 200, "partial", "mock: handler aborted the response", ""},
		{"headers changed after WriteHeader are not sent",
			func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("X-Test", "before")
				w.WriteHeader(http.StatusTeapot)
				w.Header().Set("X-Test", "after")
				_, _ = io.WriteString(w, "tea")
			}, "", http.StatusTeapot, "tea", "", "before"},
		{"an informational status is not the response's status",
			func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(http.StatusEarlyHints)
				w.WriteHeader(http.StatusAccepted)
			}, "", http.StatusAccepted, "", "", ""},
		{"an unflushed body arrives when the handler returns",
			func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, strings.Repeat("x", 10000)) },
			"", 200, strings.Repeat("x", 10000), "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := runtime.NumGoroutine()
			h := track(tt.handler)
			resp, err := (&Transport{Handler: h}).RoundTrip(mustRequest(t, context.Background(), ""))
			if tt.wantRTErr != "" {
				if err == nil || err.Error() != tt.wantRTErr {
					t.Fatalf("RoundTrip error %v, want %q", err, tt.wantRTErr)
				}
				h.wait(t)
				noLeaks(t, base)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus || string(body) != tt.wantBody || resp.Header.Get("X-Test") != tt.wantHeader {
				t.Errorf("status %d body %q X-Test %q", resp.StatusCode, body, resp.Header.Get("X-Test"))
			}
			if (err == nil && tt.wantErr != "") || (err != nil && err.Error() != tt.wantErr) {
				t.Errorf("body error %v, want %q", err, tt.wantErr)
			}
			h.wait(t)
			noLeaks(t, base)
		})
	}
}

func mustRequest(t *testing.T, ctx context.Context, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, mockURL+"?x=1", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func TestTransportCancelBeforeHeaders(t *testing.T) {
	base := runtime.NumGoroutine()
	started := make(chan struct{})
	h := track(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done() // a slow upstream that honours cancellation
	}))
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-started; cancel() }()
	_, err := (&Transport{Handler: h}).RoundTrip(mustRequest(t, ctx, ""))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("RoundTrip error %v, want context.Canceled", err)
	}
	h.wait(t)
	noLeaks(t, base)
}

// closeRecorder notes that it was closed.
type closeRecorder struct {
	io.Reader
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }

func TestTransportGivesTheHandlerAServerRequest(t *testing.T) {
	var seen *http.Request
	var seenBody string
	h := track(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r
		b, _ := io.ReadAll(r.Body)
		seenBody = string(b)
		r.Header.Set("X-Changed", "by the handler")
	}))
	req := mustRequest(t, context.Background(), "")
	body := &closeRecorder{Reader: strings.NewReader(`{"hello":1}`)}
	req.Body = body
	req.Header.Set("Authorization", "Bearer sk-test")
	resp, err := (&Transport{Handler: h}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	h.wait(t)
	if seen.Method != http.MethodPost || seen.URL.Path != "/v1/chat/completions" || seen.RequestURI != "/v1/chat/completions?x=1" ||
		seen.Host != "mock.invalid" || seen.Header.Get("Authorization") != "Bearer sk-test" || seenBody != `{"hello":1}` {
		t.Errorf("handler saw %s %s %q host %q auth %q body %q", seen.Method, seen.URL.Path, seen.RequestURI, seen.Host, seen.Header.Get("Authorization"), seenBody)
	}
	if req.Header.Get("X-Changed") != "" {
		t.Error("the handler's change to its request leaked into the caller's")
	}
	if !body.closed {
		t.Error("the request body was not closed")
	}
	if resp.Request != req {
		t.Error("the response does not point at the caller's request")
	}
}

func TestTransportWithoutHandler(t *testing.T) {
	body := &closeRecorder{Reader: strings.NewReader("")}
	req := mustRequest(t, context.Background(), "")
	req.Body = body
	if _, err := (&Transport{}).RoundTrip(req); err == nil || !body.closed {
		t.Errorf("RoundTrip without a handler: %v, body closed %v", err, body.closed)
	}
}

func TestTransportEmptyResponseIsNeverMistakenForCancellation(t *testing.T) {
	// A handler that writes no body finishes, and ends its context, at
	// about the moment RoundTrip looks at both.
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	tr := &Transport{Handler: h}
	for i := range 2000 {
		resp, err := tr.RoundTrip(mustRequest(t, context.Background(), ""))
		if err != nil {
			t.Fatalf("round trip %d: %v", i, err)
		}
		if b, err := io.ReadAll(resp.Body); err != nil || len(b) != 0 || resp.StatusCode != http.StatusNoContent {
			t.Fatalf("round trip %d: status %d body %q err %v", i, resp.StatusCode, b, err)
		}
		resp.Body.Close()
	}
}

func TestTransportMessages(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		body string
		want func(t *testing.T, resp *http.Response, body []byte)
	}{
		{"a Message arrives whole with its length", Config{ReplyTokens: 3}, helloMessage(``),
			func(t *testing.T, resp *http.Response, body []byte) {
				if resp.StatusCode != 200 || resp.ContentLength != int64(len(body)) || resp.Header.Get("Request-Id") != "req_mock_1" || string(body) != messagesReply3 {
					t.Errorf("status %q length %d headers %v body:\n%s\nwant:\n%s", resp.Status, resp.ContentLength, resp.Header, body, messagesReply3)
				}
			}},
		{"a Messages stream arrives byte for byte as the handler wrote it", Config{ReplyTokens: 3}, helloMessage(`,"stream":true`),
			func(t *testing.T, resp *http.Response, body []byte) {
				if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" || resp.ContentLength != -1 {
					t.Errorf("status %d type %q length %d", resp.StatusCode, resp.Header.Get("Content-Type"), resp.ContentLength)
				}
				if string(body) != messagesWire3 {
					t.Errorf("stream:\n%s\nwant:\n%s", body, messagesWire3)
				}
			}},
		{"a refusal keeps its status and Anthropic's envelope", Config{}, `{"model":"m",` + hello + `}`,
			func(t *testing.T, resp *http.Response, body []byte) {
				var e anthropicError
				decodeStrict(t, body, &e)
				if resp.StatusCode != 400 || e.Error.Type != "invalid_request_error" || e.Error.Message != "max_tokens: Field required" {
					t.Errorf("status %q body %s", resp.Status, body)
				}
			}},
		{"an injected failure is a 529 overloaded_error the client may retry", Config{ErrorRate: 1}, helloMessage(`,"stream":true`),
			func(t *testing.T, resp *http.Response, body []byte) {
				var e anthropicError
				decodeStrict(t, body, &e)
				if resp.StatusCode != 529 || e.Error.Type != "overloaded_error" || resp.Header.Get("X-Should-Retry") != "true" {
					t.Errorf("status %q headers %v body %s", resp.Status, resp.Header, body)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := track(newTestHandler(tt.cfg))
			c := &http.Client{Transport: &Transport{Handler: h}}
			req, err := http.NewRequest(http.MethodPost, "http://mock.invalid/v1/messages", strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("X-Api-Key", "sk-ant-test")
			req.Header.Set("Anthropic-Version", "2023-06-01")
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatalf("reading the body: %v", err)
			}
			tt.want(t, resp, body)
			h.wait(t)
		})
	}
}

func TestTransportEndsAMessagesStream(t *testing.T) {
	base := runtime.NumGoroutine()
	mh := newTestHandler(Config{ReplyTokens: 8, TokensPerSecond: 10})
	mh.sleep = func(ctx context.Context, _ time.Duration) error { // a long pause, unless the client leaves
		<-ctx.Done()
		return ctx.Err()
	}
	h := track(mh)
	c := &http.Client{Transport: &Transport{Handler: h}}
	req, _ := http.NewRequest(http.MethodPost, "http://mock.invalid/v1/messages", strings.NewReader(helloMessage(`,"stream":true`)))
	req.Header.Set("Anthropic-Version", "2023-06-01")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(resp.Body)
	for _, want := range []string{"message_start", "content_block_start", "ping", "content_block_delta"} {
		if ev := readEvent(t, r); !strings.HasPrefix(ev, "event: "+want+"\n") {
			t.Fatalf("event %q, want %s", ev, want)
		}
	}
	resp.Body.Close() // while the mock waits before the second token
	h.wait(t)
	noLeaks(t, base)
}
