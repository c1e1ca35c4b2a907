package mock

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

var fixedNow = time.Unix(1700000000, 0)

// newTestHandler returns a handler with a fixed clock whose sleeps return
// at once, recording nothing.
func newTestHandler(cfg Config) *Handler {
	h := NewHandler(cfg)
	h.now = func() time.Time { return fixedNow }
	h.sleep = func(ctx context.Context, _ time.Duration) error { return ctx.Err() }
	return h
}

func serve(h http.Handler, method, path, body string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	h.ServeHTTP(rec, req)
	return rec
}

// completion is a chat.completion or a chat.completion.chunk.
type completion struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []struct {
		Index   int `json:"index"`
		Message *struct {
			Role    string  `json:"role"`
			Content *string `json:"content"`
			Refusal *string `json:"refusal"`
		} `json:"message"`
		Delta        map[string]string `json:"delta"`
		Logprobs     json.RawMessage   `json:"logprobs"`
		FinishReason *string           `json:"finish_reason"`
	} `json:"choices"`
	Usage *usage `json:"usage"`
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

type errorBody struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

func decodeStrict(t *testing.T, data []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decoding %s: %v", data, err)
	}
}

// sseData checks OpenAI's framing (every event one `data: ` line and a
// blank line, nothing else) and returns the events' payloads.
func sseData(t *testing.T, body string) []string {
	t.Helper()
	if !strings.HasSuffix(body, "\n\n") {
		t.Fatalf("stream does not end with a blank line: %q", body)
	}
	var out []string
	for _, ev := range strings.Split(strings.TrimSuffix(body, "\n\n"), "\n\n") {
		payload, ok := strings.CutPrefix(ev, "data: ")
		if !ok || strings.ContainsAny(payload, "\r\n") {
			t.Fatalf("event is not one data line: %q", ev)
		}
		out = append(out, payload)
	}
	return out
}

// replyText is the text of an n-token reply.
func replyText(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString(word(i))
	}
	return b.String()
}

func deref(p *string) string {
	if p == nil {
		return "<null>"
	}
	return *p
}
