package mock

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestOverRealHTTP(t *testing.T) {
	tests := []struct {
		name      string
		path      string
		body      string
		anthropic bool // send anthropic-version
		want      string
	}{
		{"a stream over a socket is byte for byte the in-process one", "/v1/chat/completions",
			`{"model":"gpt-test",` + hello + `,"stream":true,"stream_options":{"include_usage":true}}`, false, wire3},
		{"a Messages stream over a socket is byte for byte the in-process one", "/v1/messages",
			helloMessage(`,"stream":true`), true, messagesWire3},
		{"a Message over a socket is the in-process one", "/v1/messages", helloMessage(``), true, messagesReply3},
		{"a non-stream reply over a socket is the in-process one", "/chat/completions",
			`{"model":"gpt-test",` + hello + `}`, false,
			`{"id":"chatcmpl-mock-1","object":"chat.completion","created":1700000000,"model":"gpt-test","choices":[{"index":0,"message":{"role":"assistant","content":"arcane mock reply","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(newTestHandler(Config{ReplyTokens: 3}))
			defer srv.Close()
			req, err := http.NewRequest(http.MethodPost, srv.URL+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			if tt.anthropic {
				req.Header.Set("Anthropic-Version", "2023-06-01")
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 || string(body) != tt.want {
				t.Errorf("status %d, err %v, body:\n%s\nwant:\n%s", resp.StatusCode, err, body, tt.want)
			}
		})
	}
}

func TestOverRealHTTPClientDisconnectEndsTheHandler(t *testing.T) {
	mh := newTestHandler(Config{ReplyTokens: 8, TimeToFirstToken: time.Hour})
	mh.sleep = func(ctx context.Context, _ time.Duration) error { // an hour, unless the client leaves
		<-ctx.Done()
		return ctx.Err()
	}
	h := track(mh)
	srv := httptest.NewServer(h)
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"m",`+hello+`,"stream":true}`))
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if ev := readEvent(t, bufio.NewReader(resp.Body)); !strings.Contains(ev, `"role":"assistant"`) {
		t.Fatalf("first event %q", ev)
	}
	cancel() // hang up during the time to first token
	resp.Body.Close()
	h.wait(t)
}
