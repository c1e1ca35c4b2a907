package mock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestErrorRate(t *testing.T) {
	const valid = `{"model":"m",` + hello + `}`
	tests := []struct {
		name     string
		rate     float64
		bodies   []string // sent in order, cycled to 12 requests
		wantFail []int    // 1-based positions among all requests sent
	}{
		{"a rate of 0.25 fails exactly every fourth request", 0.25, []string{valid}, []int{4, 8, 12}},
		{"a rate of one third fails every third request", 1.0 / 3, []string{valid}, []int{3, 6, 9, 12}},
		{"a rate of 0 never fails", 0, []string{valid}, nil},
		{"a rate of 1 fails every request", 1, []string{valid}, []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}},
		{"a rate above 1 is clamped to 1", 7, []string{valid}, []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}},
		{"a refused request does not advance the failure schedule", 0.5, []string{valid, `{"model":"m"}`, valid}, []int{3, 6, 9, 12}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTestHandler(Config{ErrorRate: tt.rate, ReplyTokens: 2})
			var failed []int
			for i := 1; i <= 12; i++ {
				body := tt.bodies[(i-1)%len(tt.bodies)]
				if i%2 == 0 { // streamed requests follow the same schedule
					body = strings.Replace(body, `"model":"m"`, `"model":"m","stream":true`, 1)
				}
				rec := serve(h, http.MethodPost, "/v1/chat/completions", body)
				switch rec.Code {
				case http.StatusOK, http.StatusBadRequest:
				case http.StatusInternalServerError:
					failed = append(failed, i)
					if got, want := rec.Body.String(), `{"error":{"message":"mock failure","type":"server_error","param":null,"code":null}}`; got != want {
						t.Errorf("failure body %s, want %s", got, want)
					}
					if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
						t.Errorf("failure Content-Type %q", ct)
					}
				default:
					t.Fatalf("request %d: status %d", i, rec.Code)
				}
			}
			if !slices.Equal(failed, tt.wantFail) {
				t.Errorf("failed requests %v, want %v", failed, tt.wantFail)
			}
		})
	}
}

func TestBadRequests(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		wantStatus int
		wantParam  string // "" means null
		wantCode   string // "" means null
	}{
		{"a request without a model is refused", `{` + hello + `}`, 400, "", ""},
		{"an empty model is refused", `{"model":"",` + hello + `}`, 400, "", ""},
		{"a request without messages is refused", `{"model":"m"}`, 400, "messages", "missing_required_parameter"},
		{"null messages are refused as missing", `{"model":"m","messages":null}`, 400, "messages", "missing_required_parameter"},
		{"an empty messages array is refused", `{"model":"m","messages":[]}`, 400, "messages", "empty_array"},
		{"a message without a role is refused", `{"model":"m","messages":[{"role":"user","content":"a"},{"content":"b"}]}`, 400, "messages[1].role", "missing_required_parameter"},
		{"a message with an unknown role is refused", `{"model":"m","messages":[{"role":"robot","content":"b"}]}`, 400, "messages[0].role", "invalid_value"},
		{"max_tokens of zero is refused", `{"model":"m",` + hello + `,"max_tokens":0}`, 400, "max_tokens", "integer_below_min_value"},
		{"a negative max_completion_tokens is refused", `{"model":"m",` + hello + `,"max_completion_tokens":-3}`, 400, "max_completion_tokens", "integer_below_min_value"},
		{"a string max_tokens is refused as the wrong type", `{"model":"m",` + hello + `,"max_tokens":"16"}`, 400, "max_tokens", "invalid_type"},
		{"a fractional max_tokens is refused as the wrong type", `{"model":"m",` + hello + `,"max_tokens":1.5}`, 400, "max_tokens", "invalid_type"},
		{"a numeric model is refused as the wrong type", `{"model":5,` + hello + `}`, 400, "model", "invalid_type"},
		{"a string stream flag is refused as the wrong type", `{"model":"m",` + hello + `,"stream":"yes"}`, 400, "stream", "invalid_type"},
		{"numeric message content is refused as the wrong type", `{"model":"m","messages":[{"role":"user","content":42}]}`, 400, "messages.content", "invalid_type"},
		{"stream_options without stream is refused", `{"model":"m",` + hello + `,"stream_options":{"include_usage":true}}`, 400, "stream_options", ""},
		{"a body that is not an object is refused", `["model"]`, 400, "", "invalid_type"},
		{"malformed JSON is refused", `{"model":"m",`, 400, "", ""},
		{"an empty body is refused", ``, 400, "", ""},
		{"trailing garbage after the object is refused", `{"model":"m",` + hello + `} x`, 400, "", ""},
		{"a body declared over 16 MiB is refused as too large", hugeBody, 413, "", ""},
		{"a body of unknown length is refused once it passes 16 MiB", unknownLength + hugeBody, 413, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTestHandler(Config{})
			rec := httptest.NewRecorder()
			var body io.Reader = strings.NewReader(tt.body) // sets Content-Length
			if rest, ok := strings.CutPrefix(tt.body, unknownLength); ok {
				body = io.MultiReader(strings.NewReader(rest))
			}
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/chat/completions", body))
			if rec.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.wantStatus, rec.Body)
			}
			var e errorBody
			decodeStrict(t, rec.Body.Bytes(), &e)
			if e.Error.Type != "invalid_request_error" || e.Error.Message == "" {
				t.Errorf("error %s", rec.Body)
			}
			if got := deref(e.Error.Param); got != deref(nilIfEmpty(tt.wantParam)) {
				t.Errorf("param %s, want %q", got, tt.wantParam)
			}
			if got := deref(e.Error.Code); got != deref(nilIfEmpty(tt.wantCode)) {
				t.Errorf("code %s, want %q", got, tt.wantCode)
			}
			if n := h.requests.Load(); n != 0 {
				t.Errorf("a refused request was counted (%d)", n)
			}
		})
	}
}

// unknownLength marks a body sent without a Content-Length.
const unknownLength = "\x00unknown length\x00"

// hugeBody is one byte over the limit.
var hugeBody = `{"model":"m","pad":"` + strings.Repeat("x", maxBodyBytes-21) + `"}`

func nilIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func TestRouting(t *testing.T) {
	tests := []struct {
		name       string
		method     string
		path       string
		wantStatus int
		wantAllow  string
		wantMsg    string
	}{
		{"chat completions answer under /v1", http.MethodPost, "/v1/chat/completions", 200, "", ""},
		{"chat completions answer without a base path", http.MethodPost, "/chat/completions", 200, "", ""},
		{"chat completions answer under any base path", http.MethodPost, "/openai/deployments/x/chat/completions", 200, "", ""},
		{"models are listed under /v1", http.MethodGet, "/v1/models", 200, "", ""},
		{"models are listed without a base path", http.MethodGet, "/models", 200, "", ""},
		{"GET on chat completions is not allowed", http.MethodGet, "/v1/chat/completions", 405, "POST", "Invalid method for URL (GET /v1/chat/completions)"},
		{"POST on models is not allowed", http.MethodPost, "/v1/models", 405, "GET", "Invalid method for URL (POST /v1/models)"},
		{"an unknown path is not found", http.MethodPost, "/v1/completions", 404, "", "Invalid URL (POST /v1/completions)"},
		{"a near miss with a trailing slash is not found", http.MethodPost, "/v1/chat/completions/", 404, "", "Invalid URL (POST /v1/chat/completions/)"},
		{"the root is not found", http.MethodGet, "/", 404, "", "Invalid URL (GET /)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTestHandler(Config{ReplyTokens: 1})
			rec := serve(h, tt.method, tt.path, `{"model":"m",`+hello+`}`)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.wantStatus, rec.Body)
			}
			if got := rec.Header().Get("Allow"); got != tt.wantAllow {
				t.Errorf("Allow %q, want %q", got, tt.wantAllow)
			}
			if tt.wantStatus == 200 {
				return
			}
			var e errorBody
			decodeStrict(t, rec.Body.Bytes(), &e)
			if e.Error.Message != tt.wantMsg || e.Error.Type != "invalid_request_error" || e.Error.Param != nil || e.Error.Code != nil {
				t.Errorf("error %s, want message %q", rec.Body, tt.wantMsg)
			}
		})
	}
}

func TestModelsList(t *testing.T) {
	rec := serve(newTestHandler(Config{}), http.MethodGet, "/v1/models", "")
	want := `{"object":"list","data":[{"id":"mock","object":"model","created":1700000000,"owned_by":"arcane"}]}`
	if rec.Body.String() != want || rec.Header().Get("Content-Type") != "application/json" {
		t.Errorf("models %s (%s), want %s", rec.Body, rec.Header().Get("Content-Type"), want)
	}
}

// sleepCall is one wait: how long, and how many events the client had
// been sent when it began.
type sleepCall struct {
	d      time.Duration
	events int
}

func TestPacing(t *testing.T) {
	const ttft, rate, iv = 250 * time.Millisecond, 50, 20 * time.Millisecond
	tests := []struct {
		name   string
		cfg    Config
		stream bool
		want   []sleepCall
	}{
		{"a stream waits TTFT after the role chunk, then one interval before each later token",
			Config{TimeToFirstToken: ttft, TokensPerSecond: rate, ReplyTokens: 4}, true,
			[]sleepCall{{ttft, 1}, {iv, 2}, {iv, 3}, {iv, 4}}},
		{"a stream with only a TTFT waits once",
			Config{TimeToFirstToken: ttft, ReplyTokens: 4}, true, []sleepCall{{ttft, 1}}},
		{"a stream with only a rate waits between tokens, not before the first",
			Config{TokensPerSecond: rate, ReplyTokens: 3}, true, []sleepCall{{iv, 2}, {iv, 3}}},
		{"an unpaced stream never waits", Config{ReplyTokens: 4}, true, nil},
		{"a non-stream reply waits once, as long as the stream would have taken",
			Config{TimeToFirstToken: ttft, TokensPerSecond: rate, ReplyTokens: 4}, false, []sleepCall{{ttft + 3*iv, 0}}},
		{"an unpaced non-stream reply never waits", Config{ReplyTokens: 4}, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTestHandler(tt.cfg)
			rec := httptest.NewRecorder()
			var calls []sleepCall
			h.sleep = func(ctx context.Context, d time.Duration) error {
				calls = append(calls, sleepCall{d, strings.Count(rec.Body.String(), "\n\n")})
				return nil
			}
			body := `{"model":"m",` + hello + fmt.Sprintf(`,"stream":%v}`, tt.stream)
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(body)))
			if rec.Code != 200 {
				t.Fatalf("status %d", rec.Code)
			}
			if !slices.Equal(calls, tt.want) {
				t.Errorf("sleeps %v, want %v", calls, tt.want)
			}
		})
	}
}

func TestClientGoneStopsTheReply(t *testing.T) {
	tests := []struct {
		name       string
		stream     bool
		wantEvents int
	}{
		{"a stream stops at once when the client leaves during a pause", true, 1},
		{"a non-stream reply is never written when the client leaves during the wait", false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTestHandler(Config{TimeToFirstToken: time.Second, ReplyTokens: 4})
			ctx, cancel := context.WithCancel(context.Background())
			h.sleep = func(ctx context.Context, _ time.Duration) error {
				cancel() // the client hangs up while the mock waits
				return ctx.Err()
			}
			rec := httptest.NewRecorder()
			body := `{"model":"m",` + hello + fmt.Sprintf(`,"stream":%v}`, tt.stream)
			req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/v1/chat/completions", strings.NewReader(body))
			h.ServeHTTP(rec, req)
			if got := strings.Count(rec.Body.String(), "\n\n"); got != tt.wantEvents {
				t.Errorf("%d events written, want %d: %q", got, tt.wantEvents, rec.Body)
			}
			if !tt.stream && rec.Body.Len() != 0 {
				t.Errorf("body written after the client left: %q", rec.Body)
			}
		})
	}
}

// failingWriter accepts ok writes, then fails every one.
type failingWriter struct {
	header http.Header
	ok     int
	writes int
}

func (w *failingWriter) Header() http.Header { return w.header }
func (w *failingWriter) WriteHeader(int)     {}
func (w *failingWriter) Write(p []byte) (int, error) {
	w.writes++
	if w.writes > w.ok {
		return 0, errors.New("connection reset")
	}
	return len(p), nil
}

func TestStreamStopsAtTheFirstFailedWrite(t *testing.T) {
	h := newTestHandler(Config{ReplyTokens: 10})
	w := &failingWriter{header: make(http.Header), ok: 2}
	h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(`{"model":"m",`+hello+`,"stream":true}`)))
	if w.writes != 3 {
		t.Errorf("%d writes, want 2 good ones and the failed one", w.writes)
	}
}

func TestSleepTimer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if err := sleepTimer(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("sleep with a cancelled context returned %v", err)
	}
	if err := sleepTimer(context.Background(), time.Nanosecond); err != nil {
		t.Errorf("a short sleep returned %v", err)
	}
	// The pooled timer from the cancelled sleep must not fire early.
	if err := sleepTimer(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("a second cancelled sleep returned %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("sleeps took %v", d)
	}
}

func TestNewHandlerClampsConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want Config
		iv   time.Duration
	}{
		{"the zero config means sixteen tokens, no waits, no failures", Config{}, Config{ReplyTokens: 16}, 0},
		{"negative values become defaults", Config{TimeToFirstToken: -1, TokensPerSecond: -5, ReplyTokens: -2, ErrorRate: -0.5},
			Config{TokensPerSecond: -5, ReplyTokens: 16}, 0},
		{"a rate sets the interval between tokens", Config{TokensPerSecond: 4, ReplyTokens: 3}, Config{TokensPerSecond: 4, ReplyTokens: 3}, 250 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHandler(tt.cfg)
			if h.cfg != tt.want || h.interval != tt.iv {
				t.Errorf("config %+v interval %v, want %+v %v", h.cfg, h.interval, tt.want, tt.iv)
			}
		})
	}
}
