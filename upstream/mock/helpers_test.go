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

// The Messages API's helpers.

// helloMessage is a Messages request body with max_tokens 1024 and extra
// members spliced in; its prompt is 9 tokens, as hello's is.
func helloMessage(extra string) string {
	return `{"model":"claude-test","max_tokens":1024,` + hello + extra + `}`
}

// newMessagesRequest is a request as Anthropic's SDKs send it.
func newMessagesRequest(method, path, body string) *http.Request {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Api-Key", "sk-ant-test")
	req.Header.Set("Anthropic-Version", "2023-06-01")
	return req
}

func serveMessages(h http.Handler, method, path, body string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, newMessagesRequest(method, path, body))
	return rec
}

// anthropicMessage is a Message: a whole reply, or message_start's.
type anthropicMessage struct {
	ID      string `json:"id"`
	Type    string `json:"type"`
	Role    string `json:"role"`
	Model   string `json:"model"`
	Content []struct {
		Type string  `json:"type"`
		Text *string `json:"text"`
	} `json:"content"`
	StopReason   *string        `json:"stop_reason"`
	StopSequence *string        `json:"stop_sequence"`
	Usage        anthropicUsage `json:"usage"`
}

type anthropicUsage struct {
	InputTokens              int `json:"input_tokens"`
	CacheCreationInputTokens int `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int `json:"cache_read_input_tokens"`
	OutputTokens             int `json:"output_tokens"`
}

// anthropicEvent is the data of any event of a Messages stream.
type anthropicEvent struct {
	Type         string             `json:"type"`
	Message      *anthropicMessage  `json:"message"`
	Index        *int               `json:"index"`
	ContentBlock map[string]string  `json:"content_block"`
	Delta        map[string]*string `json:"delta"`
	Usage        *struct {
		OutputTokens int `json:"output_tokens"`
	} `json:"usage"`
}

type anthropicError struct {
	Type  string `json:"type"`
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
}

// sseEvent is one event of a Messages stream.
type sseEvent struct {
	name string
	data anthropicEvent
}

// sseEvents checks Anthropic's framing (every event an `event:` line, a
// `data:` line whose JSON type is the event's name, and a blank line;
// nothing else) and returns the events.
func sseEvents(t *testing.T, body string) []sseEvent {
	t.Helper()
	if !strings.HasSuffix(body, "\n\n") {
		t.Fatalf("stream does not end with a blank line: %q", body)
	}
	var out []sseEvent
	for _, ev := range strings.Split(strings.TrimSuffix(body, "\n\n"), "\n\n") {
		nameLine, dataLine, ok := strings.Cut(ev, "\n")
		name, ok1 := strings.CutPrefix(nameLine, "event: ")
		data, ok2 := strings.CutPrefix(dataLine, "data: ")
		if !ok || !ok1 || !ok2 || strings.ContainsAny(data, "\r\n") || strings.ContainsAny(name, "\r") {
			t.Fatalf("event is not one event line and one data line: %q", ev)
		}
		var e anthropicEvent
		decodeStrict(t, []byte(data), &e)
		if e.Type != name {
			t.Fatalf("event %q carries data of type %q", name, e.Type)
		}
		out = append(out, sseEvent{name, e})
	}
	return out
}

func eventNames(evs []sseEvent) []string {
	names := make([]string, len(evs))
	for i, e := range evs {
		names[i] = e.name
	}
	return names
}
