package upstream

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"weak"

	"github.com/arcaneapi/caddy-arcane/upstream/openai"
	"github.com/arcaneapi/caddy-arcane/upstream/tokens"
)

var testCounter = tokens.NewCounter()

// exchangeFor runs body through a Proxy whose only deployment is an
// upstream answering with handler, and returns what the client got.
func exchangeFor(t *testing.T, body string, handler http.HandlerFunc) (*Exchange, *httptest.ResponseRecorder, error) {
	t.Helper()
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	x := testExchange(t, body, srv.URL+"/v1", srv.Client())
	x.Header = http.Header{"Cookie": {"secret"}}
	w := httptest.NewRecorder()
	err := (&Proxy{Tokens: testCounter}).Forward(context.Background(), w, x)
	return x, w, err
}

// testExchange is an exchange of body for the model "public", whose only
// deployment is "private-2025" at baseURL, reached through client.
func testExchange(t testing.TB, body, baseURL string, client *http.Client) *Exchange {
	t.Helper()
	p, err := NewProvider("up", TypeOpenAI, baseURL, "sk-provider", client)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewCatalog([]*Model{{ID: "public", Deployments: []*Deployment{{Provider: p, Model: "private-2025"}}}})
	if err != nil {
		t.Fatal(err)
	}
	m, _ := c.Lookup("public")
	req, err := openai.ScanRequest([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return &Exchange{Body: []byte(body), Request: &req, Model: m, Header: http.Header{}}
}

const (
	plainBody  = `{"model":"public","messages":[{"role":"user","content":"Hello, world!"}]}`
	streamBody = `{"model":"public","messages":[{"role":"user","content":"Hello"}],"stream":true}`
	usageBody  = `{"model":"public","messages":[{"role":"user","content":"Hello"}],"stream":true,"stream_options":{"include_usage":true}}`
)

func writeSSE(w http.ResponseWriter, events ...string) {
	w.Header().Set("Content-Type", "text/event-stream")
	for _, e := range events {
		io.WriteString(w, "data: "+e+"\n\n")
		w.(http.Flusher).Flush()
	}
}

const (
	chunk1     = `{"id":"c","object":"chat.completion.chunk","model":"private-2025","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}`
	chunk2     = `{"id":"c","object":"chat.completion.chunk","model":"private-2025","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`
	usageChunk = `{"id":"c","object":"chat.completion.chunk","model":"private-2025","choices":[],"usage":{"prompt_tokens":8,"completion_tokens":1,"total_tokens":9}}`
)

func TestForwardSingle(t *testing.T) {
	t.Run("the answer carries the public model and the upstream's usage", func(t *testing.T) {
		var gotAuth, gotCookie, gotBody string
		x, w, err := exchangeFor(t, plainBody, func(w http.ResponseWriter, r *http.Request) {
			gotAuth, gotCookie = r.Header.Get("Authorization"), r.Header.Get("Cookie")
			b, _ := io.ReadAll(r.Body)
			gotBody = string(b)
			io.WriteString(w, `{"id":"x","object":"chat.completion","model":"private-2025","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21,"prompt_tokens_details":{"cached_tokens":4}}}`)
		})
		if err != nil {
			t.Fatal(err)
		}
		if gotAuth != "Bearer sk-provider" || gotCookie != "" || !strings.Contains(gotBody, `"model":"private-2025"`) {
			t.Fatalf("upstream got auth %q cookie %q body %s", gotAuth, gotCookie, gotBody)
		}
		if body := w.Body.String(); !strings.Contains(body, `"model":"public"`) || strings.Contains(body, "private-2025") {
			t.Fatalf("client got %s", body)
		}
		if x.Basis != BasisUpstream || x.Usage.PromptTokens != 12 || x.Usage.CompletionTokens != 9 || x.Usage.CachedTokens != 4 {
			t.Fatalf("usage %+v basis %s", x.Usage, x.Basis)
		}
		if x.Outcome != OutcomeOK || !x.Delivered {
			t.Fatalf("outcome %s delivered %v", x.Outcome, x.Delivered)
		}
	})
	t.Run("an answer without usage is counted", func(t *testing.T) {
		x, _, err := exchangeFor(t, plainBody, func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"id":"x","object":"chat.completion","model":"private-2025","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, how are you today?"},"finish_reason":"stop"}]}`)
		})
		if err != nil {
			t.Fatal(err)
		}
		if x.Basis != BasisCounted || x.Usage.PromptTokens == 0 || x.Usage.CompletionTokens == 0 {
			t.Fatalf("usage %+v basis %s", x.Usage, x.Basis)
		}
	})
	for _, answer := range []string{"<html>", `["valid JSON, but not an answer"]`, `{"model":"private-2025",`} {
		t.Run("an answer that is not a JSON object is a 502: "+answer, func(t *testing.T) {
			_, w, err := exchangeFor(t, plainBody, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, answer) })
			var ue *Error
			if !errors.As(err, &ue) || ue.Status != http.StatusBadGateway || w.Body.Len() != 0 {
				t.Fatalf("err = %v, body %q", err, w.Body.String())
			}
		})
	}
}

func TestForwardUpstreamErrors(t *testing.T) {
	cases := []struct {
		name       string
		status     int
		body       string
		wantStatus int
		wantCode   string
		healthy    bool
	}{
		{"rejected gateway credentials are the operator's problem", 401, `{"error":{"message":"bad key"}}`, 502, "upstream_auth_failed", false},
		{"an upstream rate limit is passed on with Retry-After", 429, ``, 429, "rate_limit_exceeded", false},
		{"an upstream failure is a bad gateway", 503, ``, 502, "upstream_error", false},
		{"an upstream 404 means the deploy line is wrong", 404, ``, 502, "upstream_model_unavailable", false},
		{"an upstream 400 keeps its words, with the public model", 400, `{"error":{"message":"private-2025 does not support x","type":"invalid_request_error","param":"x","code":"bad"}}`, 400, "bad", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			x, w, err := exchangeFor(t, plainBody, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Retry-After", "7")
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			})
			var ue *Error
			if !errors.As(err, &ue) {
				t.Fatalf("err = %v", err)
			}
			if ue.Status != tc.wantStatus || ue.Code != tc.wantCode {
				t.Fatalf("got %d %s, want %d %s", ue.Status, ue.Code, tc.wantStatus, tc.wantCode)
			}
			if strings.Contains(ue.Message, "private-2025") {
				t.Fatalf("message leaks the upstream model: %s", ue.Message)
			}
			if tc.status == 429 && ue.RetryAfter != "7" {
				t.Fatalf("Retry-After = %q", ue.RetryAfter)
			}
			if w.Body.Len() != 0 {
				t.Fatalf("something was written: %q", w.Body.String())
			}
			snap := x.Deployment.Health.Snapshot(time.Now())
			if failed := snap.Failures == 1; failed == tc.healthy || snap.Requests != 1 {
				t.Fatalf("health after one such answer: %+v, want it counted as healthy=%v", snap, tc.healthy)
			}
		})
	}
}

func TestForwardStream(t *testing.T) {
	t.Run("the usage chunk is dropped when the client did not ask for it", func(t *testing.T) {
		var upstreamBody string
		x, w, err := exchangeFor(t, streamBody, func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			upstreamBody = string(b)
			writeSSE(w, chunk1, chunk2, usageChunk, "[DONE]")
		})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(upstreamBody, `"include_usage":true`) {
			t.Fatalf("include_usage not forced: %s", upstreamBody)
		}
		body := w.Body.String()
		if strings.Count(body, "data: ") != 3 || strings.Contains(body, `"usage"`) || strings.Contains(body, "private-2025") || !strings.HasSuffix(body, "data: [DONE]\n\n") {
			t.Fatalf("client got:\n%s", body)
		}
		if x.Basis != BasisUpstream || x.Usage.TotalTokens != 9 || x.Outcome != OutcomeOK {
			t.Fatalf("usage %+v basis %s outcome %s", x.Usage, x.Basis, x.Outcome)
		}
		if ct := w.Header().Get("Content-Type"); ct != "text/event-stream" {
			t.Fatalf("Content-Type %q", ct)
		}
	})
	t.Run("the usage chunk is kept when the client asked for it", func(t *testing.T) {
		_, w, err := exchangeFor(t, usageBody, func(w http.ResponseWriter, r *http.Request) {
			writeSSE(w, chunk1, chunk2, usageChunk, "[DONE]")
		})
		if err != nil {
			t.Fatal(err)
		}
		if body := w.Body.String(); strings.Count(body, "data: ") != 4 || !strings.Contains(body, `"usage":{"prompt_tokens":8`) {
			t.Fatalf("client got:\n%s", body)
		}
	})
	t.Run("a stream without usage is counted", func(t *testing.T) {
		x, _, err := exchangeFor(t, streamBody, func(w http.ResponseWriter, r *http.Request) {
			writeSSE(w, chunk1, chunk2, "[DONE]")
		})
		if err != nil {
			t.Fatal(err)
		}
		if x.Basis != BasisCounted || x.Usage.CompletionTokens != 1 || x.Usage.PromptTokens == 0 {
			t.Fatalf("usage %+v basis %s", x.Usage, x.Basis)
		}
	})
	t.Run("a stream cut by the upstream ends with an in-band error", func(t *testing.T) {
		x, w, err := exchangeFor(t, streamBody, func(w http.ResponseWriter, r *http.Request) {
			writeSSE(w, chunk1)
		})
		if err != nil {
			t.Fatal(err)
		}
		body := w.Body.String()
		if !strings.Contains(body, `"finish_reason":"error"`) || !strings.HasSuffix(body, "data: [DONE]\n\n") {
			t.Fatalf("client got:\n%s", body)
		}
		if x.Outcome != OutcomeUpstreamError || x.Basis != BasisCounted || x.Usage.CompletionTokens != 1 {
			t.Fatalf("outcome %s usage %+v basis %s", x.Outcome, x.Usage, x.Basis)
		}
	})
	t.Run("an event spread over several data lines is re-framed, its model rewritten", func(t *testing.T) {
		x, w, err := exchangeFor(t, streamBody, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: "+chunk1+"\n\ndata: {\"id\":\"c\",\ndata: \"model\":\"private-2025\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"!\"}}]}\n\ndata: [DONE]\n\n")
		})
		if err != nil {
			t.Fatal(err)
		}
		want := "data: " + strings.Replace(chunk1, "private-2025", "public", 1) + "\n\n" +
			"data: {\"id\":\"c\",\ndata: \"model\":\"public\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"!\"}}]}\n\n" +
			"data: [DONE]\n\n"
		if got := w.Body.String(); got != want {
			t.Fatalf("client got\n%q\nwant\n%q", got, want)
		}
		if x.Outcome != OutcomeOK {
			t.Fatalf("outcome %s", x.Outcome)
		}
	})
	t.Run("a stream that ends before any event is a clean error", func(t *testing.T) {
		_, w, err := exchangeFor(t, streamBody, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
		})
		var ue *Error
		if !errors.As(err, &ue) || ue.Status != http.StatusBadGateway || w.Body.Len() != 0 {
			t.Fatalf("err = %v, body %q", err, w.Body.String())
		}
	})
}

// exchangeWithIDs is exchangeFor with chosen public and provider model ids.
func exchangeWithIDs(t *testing.T, public, private, body string, handler http.HandlerFunc) (*Exchange, *httptest.ResponseRecorder, error) {
	t.Helper()
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	p, err := NewProvider("up", TypeOpenAI, srv.URL+"/v1", "", srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewCatalog([]*Model{{ID: public, Deployments: []*Deployment{{Provider: p, Model: private}}}})
	if err != nil {
		t.Fatal(err)
	}
	m, _ := c.Lookup(public)
	body = strings.Replace(body, `"model":"public"`, `"model":"`+public+`"`, 1)
	req, err := openai.ScanRequest([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	x := &Exchange{Body: []byte(body), Request: &req, Model: m, Header: http.Header{}}
	w := httptest.NewRecorder()
	err = (&Proxy{Tokens: testCounter}).Forward(context.Background(), w, x)
	return x, w, err
}

func TestForwardRewritesOnlyTheModelField(t *testing.T) {
	cases := []struct{ name, public, private string }{
		{"a public id that contains the provider's id", "mistral-large-eu", "mistral-large"},
		{"a provider id that is a common word", "gpt-5.2", "model"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			answer := `{"id":"x","object":"chat.completion","model":"` + tc.private + `","choices":[{"index":0,"message":{"role":"assistant","content":"The model says hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`
			_, w, err := exchangeWithIDs(t, tc.public, tc.private, plainBody, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, answer) })
			if err != nil {
				t.Fatal(err)
			}
			want := strings.Replace(answer, `"model":"`+tc.private+`"`, `"model":"`+tc.public+`"`, 1)
			if got := w.Body.String(); got != want {
				t.Fatalf("client got\n%s\nwant\n%s", got, want)
			}
		})
	}
}

func TestForwardRelaysAnUpstreamErrorEvent(t *testing.T) {
	// encoding/json matches the member's name in any case, and so does
	// the relay; a string error is an error too, and an error whose
	// message is not a string gets a generic one. Whatever its shape, the
	// provider's words never go out unrewritten.
	const overloaded, generic = "public is overloaded", "The model's provider reported an error."
	for _, tc := range []struct{ event, want string }{
		{`{"error":{"message":"private-2025 is overloaded","type":"overloaded_error"}}`, overloaded},
		{`{"Error":{"message":"private-2025 is overloaded","type":"overloaded_error"}}`, overloaded},
		{`{"\u0065rror":{"message":"private-2025 is overloaded"}}`, overloaded},
		{`{"error":"private-2025 is overloaded"}`, overloaded},
		{`{"error":{"message":["private-2025 is overloaded"]}}`, generic},
		{`{"error":{}}`, generic},
		{`{"error":{"message":"private-2025 is overloaded"},"ERROR":null}`, overloaded},
		{`{"ERROR":{"message":"private-2025 is down"},"error":{"message":"private-2025 is overloaded"}}`, overloaded},
	} {
		t.Run(tc.event, func(t *testing.T) {
			x, w, err := exchangeFor(t, streamBody, func(w http.ResponseWriter, r *http.Request) {
				writeSSE(w, chunk1, tc.event)
			})
			if err != nil {
				t.Fatal(err)
			}
			body := w.Body.String()
			if strings.Contains(body, "private-2025") || !strings.Contains(body, tc.want) ||
				strings.Count(body, `"error"`) != 1 || !strings.HasSuffix(body, "data: [DONE]\n\n") {
				t.Fatalf("client got:\n%s", body)
			}
			if x.Outcome != OutcomeUpstreamError {
				t.Fatalf("outcome %s", x.Outcome)
			}
		})
	}
	// Before the first event, any of them moves the request on.
	x, w, err := exchangeFor(t, streamBody, func(w http.ResponseWriter, r *http.Request) {
		writeSSE(w, `{"error":"private-2025 is overloaded"}`)
	})
	var ue *Error
	if !errors.As(err, &ue) || ue.Status != http.StatusBadGateway || w.Body.Len() != 0 || x.Delivered {
		t.Fatalf("a string error first: err %v, body %q", err, w.Body.String())
	}
	// null, false and "" are no error: the chunk is relayed as any other.
	for _, v := range []string{"null", "false", `""`} {
		_, w, err := exchangeFor(t, streamBody, func(w http.ResponseWriter, r *http.Request) {
			writeSSE(w, strings.Replace(chunk1, `{"id"`, `{"error":`+v+`,"id"`, 1), "[DONE]")
		})
		if want := "data: " + strings.Replace(strings.Replace(chunk1, `{"id"`, `{"error":`+v+`,"id"`, 1), "private-2025", "public", 1) + "\n\ndata: [DONE]\n\n"; err != nil || w.Body.String() != want {
			t.Fatalf("error %s: err %v, client got\n%s\nwant\n%s", v, err, w.Body.String(), want)
		}
	}
}

func TestForwardProviderAccountErrorsAreTheOperators(t *testing.T) {
	for _, status := range []int{http.StatusPaymentRequired, http.StatusProxyAuthRequired} {
		_, _, err := exchangeFor(t, plainBody, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(status)
			io.WriteString(w, `{"error":{"message":"Insufficient credits on account org-123"}}`)
		})
		var ue *Error
		if !errors.As(err, &ue) || ue.Status != http.StatusBadGateway || strings.Contains(ue.Message, "org-123") {
			t.Fatalf("HTTP %d: err = %v", status, err)
		}
	}
}

func TestForwardClampsRetryAfter(t *testing.T) {
	for sent, want := range map[string]string{"7": "7", "-5": "1", "999999": "3600", "soon": "1"} {
		_, _, err := exchangeFor(t, plainBody, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", sent)
			w.WriteHeader(http.StatusTooManyRequests)
		})
		var ue *Error
		if !errors.As(err, &ue) || ue.RetryAfter != want {
			t.Fatalf("Retry-After %q: got %v, want %s", sent, err, want)
		}
	}
}

func TestNewCatalogRefusesHugeWeights(t *testing.T) {
	p := testProvider(t, "p")
	_, err := NewCatalog([]*Model{{ID: "m", Deployments: []*Deployment{
		{Provider: p, Model: "a", Weight: MaxWeight + 1}, {Provider: p, Model: "b", Weight: 1},
	}}})
	if err == nil {
		t.Fatal("accepted a weight over MaxWeight")
	}
}

func TestForwardNeverEchoesTheProviderKey(t *testing.T) {
	_, _, err := exchangeFor(t, plainBody, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":{"message":"Key sk-provider cannot use private-2025 with x","type":"invalid_request_error","param":"x","code":"bad"}}`)
	})
	var ue *Error
	if !errors.As(err, &ue) || ue.Status != http.StatusBadRequest {
		t.Fatalf("err = %v", err)
	}
	if want := "Key [REDACTED] cannot use public with x"; ue.Message != want {
		t.Fatalf("message %q, want %q", ue.Message, want)
	}
}

// TestForwardOutOfFilesIsNotTheProvidersFault checks that a gateway out of
// file descriptors answers 503 without blaming the deployment: six such
// requests in a row leave its circuit closed and its failures at zero.
func TestForwardOutOfFilesIsNotTheProvidersFault(t *testing.T) {
	emfile := &http.Client{Transport: &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", syscall.EMFILE)}
	}}}
	var m *Model
	for range 6 {
		x := testExchange(t, plainBody, "http://127.0.0.1:1/v1", emfile)
		if m != nil {
			x.Model = m // one deployment, one health, across the requests
		}
		m = x.Model
		err := (&Proxy{Tokens: testCounter}).Forward(context.Background(), httptest.NewRecorder(), x)
		var ue *Error
		if !errors.As(err, &ue) || ue.Status != http.StatusServiceUnavailable || ue.Code != "gateway_overloaded" || x.Attempts != 1 {
			t.Fatalf("err = %v (attempts %d), want one attempt and 503 gateway_overloaded", err, x.Attempts)
		}
	}
	s := m.Deployments[0].Health.Snapshot(time.Now())
	if s.State != StateClosed || s.Failures != 0 || s.ConsecutiveFailures != 0 {
		t.Fatalf("health %+v, want a closed circuit and no failure", s)
	}
}

// TestForwardSendsTheBodyWithItsLength: the upstream request carries a
// Content-Length and the body whole, streamed or not (a provider may
// refuse a chunked request body).
func TestForwardSendsTheBodyWithItsLength(t *testing.T) {
	for _, body := range []string{plainBody, streamBody} {
		var length int64
		var te []string
		var got []byte
		_, _, err := exchangeFor(t, body, func(w http.ResponseWriter, r *http.Request) {
			length, te = r.ContentLength, r.TransferEncoding
			got, _ = io.ReadAll(r.Body)
			if strings.Contains(string(got), `"stream":true`) {
				writeSSE(w, chunk1, usageChunk, "[DONE]")
				return
			}
			io.WriteString(w, `{"id":"x","object":"chat.completion","model":"private-2025","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`)
		})
		if err != nil {
			t.Fatal(err)
		}
		if length != int64(len(got)) || length == 0 || len(te) != 0 {
			t.Fatalf("upstream got Content-Length %d, Transfer-Encoding %q, for a body of %d bytes", length, te, len(got))
		}
	}
}

// TestSentBodyLetsGoOfItsBytes: once the body has been read to its end
// and the request may no longer be sent again, nothing of sentBody holds
// the bytes, so a stream that runs for minutes does not keep its prompt.
// Before release, GetBody gives the whole body again.
func TestSentBodyLetsGoOfItsBytes(t *testing.T) {
	body := make([]byte, 1<<20)
	for i := range body {
		body[i] = byte('a' + i%26)
	}
	want := string(body)
	collected := weak.Make(&body[0])
	s := &sentBody{all: body}
	body = nil
	r := s.reader()
	if b, err := io.ReadAll(r); err != nil || string(b) != want {
		t.Fatalf("read %d bytes, %v", len(b), err)
	}
	again, err := s.getBody()
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(again); string(b) != want {
		t.Fatalf("GetBody gave %d bytes of %d", len(b), len(want))
	}
	s.release()
	if _, err := s.getBody(); err == nil {
		t.Fatal("GetBody after release gave a body")
	}
	runtime.GC()
	runtime.GC()
	if collected.Value() != nil {
		t.Fatal("the body's bytes are still reachable after it was read and released")
	}
	runtime.KeepAlive(s)
	runtime.KeepAlive(r)
	runtime.KeepAlive(again)
}

// TestForwardSurvivesHTTP2ClosingTheBodyWhileItIsRead: HTTP/2 closes a
// request's body from a goroutine of its own while its writer may be
// reading it: on an answer that comes before the whole body was sent, and
// when the request ends (the client left). A stream's long prompt, sent
// through its releasing reader, must neither race (this package runs
// under -race in make test) nor crash the gateway.
func TestForwardSurvivesHTTP2ClosingTheBodyWhileItIsRead(t *testing.T) {
	var proto atomic.Int32
	started := make(chan struct{}, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proto.Store(int32(r.ProtoMajor))
		io.CopyN(io.Discard, r.Body, 200<<10)
		if !strings.HasPrefix(r.URL.Path, "/hold/") {
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			io.WriteString(w, `{"error":{"message":"too large","type":"invalid_request_error"}}`)
			return
		}
		select {
		case started <- struct{}{}:
		default:
		}
		<-r.Context().Done()
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	body := `{"model":"public","stream":true,"messages":[{"role":"user","content":"` + strings.Repeat("a", 8<<20) + `"}]}`

	t.Run("an answer before the whole body", func(t *testing.T) {
		for range 5 {
			x := testExchange(t, body, srv.URL+"/v1", srv.Client())
			err := (&Proxy{Tokens: testCounter}).Forward(context.Background(), httptest.NewRecorder(), x)
			if err == nil {
				t.Fatal("a 413 from the provider was not an error")
			}
			if proto.Load() != 2 {
				t.Fatalf("the upstream was reached over HTTP/%d, not HTTP/2", proto.Load())
			}
		}
	})
	t.Run("the client leaves during the upload", func(t *testing.T) {
		for range 5 {
			x := testExchange(t, body, srv.URL+"/hold/v1", srv.Client())
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				<-started
				cancel()
			}()
			if err := (&Proxy{Tokens: testCounter}).Forward(ctx, httptest.NewRecorder(), x); err == nil {
				t.Fatal("a request whose client left was not an error")
			}
			cancel()
		}
	})
}
