package mock

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

const hello = `"messages":[{"role":"user","content":"Hello, mock!"}]` // 12 bytes: 3+3+3 = 9 prompt tokens

func TestNonStreamReply(t *testing.T) {
	tests := []struct {
		name       string
		cfg        Config
		body       string
		wantTokens int
		wantFinish string
		wantPrompt int
	}{
		{"a request without limits gets the default sixteen tokens", Config{},
			`{"model":"gpt-test",` + hello + `}`, 16, "stop", 9},
		{"the configured reply length is used", Config{ReplyTokens: 3},
			`{"model":"gpt-test",` + hello + `}`, 3, "stop", 9},
		{"max_tokens below the natural length cuts the reply with finish_reason length", Config{ReplyTokens: 10},
			`{"model":"gpt-test",` + hello + `,"max_tokens":4}`, 4, "length", 9},
		{"max_completion_tokens caps the reply too", Config{ReplyTokens: 10},
			`{"model":"gpt-test",` + hello + `,"max_completion_tokens":2}`, 2, "length", 9},
		{"the smaller of max_tokens and max_completion_tokens wins", Config{ReplyTokens: 10},
			`{"model":"gpt-test",` + hello + `,"max_tokens":7,"max_completion_tokens":5}`, 5, "length", 9},
		{"a cap equal to the natural length stops naturally", Config{ReplyTokens: 5},
			`{"model":"gpt-test",` + hello + `,"max_tokens":5}`, 5, "stop", 9},
		{"a cap above the natural length stops naturally", Config{ReplyTokens: 5},
			`{"model":"gpt-test",` + hello + `,"max_tokens":500,"max_completion_tokens":null}`, 5, "stop", 9},
		{"replies longer than the word list wrap around it", Config{ReplyTokens: 40},
			`{"model":"gpt-test",` + hello + `}`, 40, "stop", 9},
		{"prompt tokens count every message and only the text of content parts", Config{ReplyTokens: 1},
			`{"model":"m","messages":[{"role":"system","content":"12345"},` +
				`{"role":"user","content":[{"type":"text","text":"abcd"},{"type":"image_url","image_url":{"url":"https://x/y.png"}}]},` +
				`{"role":"assistant","content":null,"tool_calls":[]},{"role":"tool","tool_call_id":"c","content":""}]}`,
			1, "stop", 3 + (3 + 2) + (3 + 1) + 3 + 3},
		{"unknown fields are accepted and ignored", Config{ReplyTokens: 2},
			`{"model":"gpt-test",` + hello + `,"temperature":0.2,"tools":[],"user":"u1","n":1}`, 2, "stop", 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTestHandler(tt.cfg)
			rec := serve(h, http.MethodPost, "/v1/chat/completions", tt.body)
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if cl := rec.Header().Get("Content-Length"); cl != fmt.Sprint(rec.Body.Len()) {
				t.Errorf("Content-Length %s for %d bytes", cl, rec.Body.Len())
			}
			var c completion
			decodeStrict(t, rec.Body.Bytes(), &c)
			var req struct{ Model string }
			_ = json.Unmarshal([]byte(tt.body), &req)
			if c.ID != "chatcmpl-mock-1" || c.Object != "chat.completion" || c.Created != fixedNow.Unix() || c.Model != req.Model {
				t.Errorf("head: id %q object %q created %d model %q", c.ID, c.Object, c.Created, c.Model)
			}
			if len(c.Choices) != 1 {
				t.Fatalf("%d choices", len(c.Choices))
			}
			ch := c.Choices[0]
			if ch.Index != 0 || ch.Message == nil || ch.Message.Role != "assistant" || ch.Message.Refusal != nil || string(ch.Logprobs) != "null" {
				t.Errorf("choice: %s", rec.Body)
			}
			if got, want := deref(ch.Message.Content), replyText(tt.wantTokens); got != want {
				t.Errorf("content %q, want %q", got, want)
			}
			if got := deref(ch.FinishReason); got != tt.wantFinish {
				t.Errorf("finish_reason %q, want %q", got, tt.wantFinish)
			}
			want := usage{tt.wantPrompt, tt.wantTokens, tt.wantPrompt + tt.wantTokens}
			if c.Usage == nil || *c.Usage != want {
				t.Errorf("usage %+v, want %+v", c.Usage, want)
			}
		})
	}
}

func TestReplyTextIsFixed(t *testing.T) {
	if got, want := replyText(3), "arcane mock reply"; got != want {
		t.Errorf("three tokens read %q, want %q", got, want)
	}
	if got := word(16); got != " arcane" {
		t.Errorf("token 16 is %q, want the first word again with its space", got)
	}
}

func TestModelIsEchoedExactly(t *testing.T) {
	for _, model := range []string{"gpt-4o-mini", `we"ird\model`, "tab\there", "line\u2028sep", "ünïcødé/模型", "<html>&"} {
		t.Run("model "+model+" comes back unchanged in both modes", func(t *testing.T) {
			m, _ := json.Marshal(model)
			h := newTestHandler(Config{ReplyTokens: 2})
			rec := serve(h, http.MethodPost, "/v1/chat/completions", `{"model":`+string(m)+`,`+hello+`}`)
			var c completion
			decodeStrict(t, rec.Body.Bytes(), &c)
			if c.Model != model {
				t.Errorf("non-stream model %q, want %q", c.Model, model)
			}
			rec = serve(h, http.MethodPost, "/v1/chat/completions", `{"model":`+string(m)+`,`+hello+`,"stream":true}`)
			for _, p := range sseData(t, rec.Body.String()) {
				if p == "[DONE]" {
					continue
				}
				var c completion
				decodeStrict(t, []byte(p), &c)
				if c.Model != model {
					t.Errorf("chunk model %q, want %q", c.Model, model)
				}
			}
		})
	}
}

func TestStream(t *testing.T) {
	tests := []struct {
		name         string
		cfg          Config
		extra        string
		wantTokens   int
		wantFinish   string
		includeUsage bool
	}{
		{"a plain stream sends role, one chunk per token, finish and DONE without usage", Config{ReplyTokens: 5}, ``, 5, "stop", false},
		{"include_usage false sends no usage chunk", Config{ReplyTokens: 3}, `,"stream_options":{"include_usage":false}`, 3, "stop", false},
		{"stream_options null sends no usage chunk", Config{ReplyTokens: 3}, `,"stream_options":null`, 3, "stop", false},
		{"include_usage adds the usage chunk before DONE and null usage elsewhere", Config{ReplyTokens: 3}, `,"stream_options":{"include_usage":true}`, 3, "stop", true},
		{"a capped stream ends with finish_reason length", Config{ReplyTokens: 8}, `,"max_tokens":2,"stream_options":{"include_usage":true}`, 2, "length", true},
		{"a one-token stream still has every frame", Config{}, `,"max_completion_tokens":1`, 1, "length", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTestHandler(tt.cfg)
			rec := serve(h, http.MethodPost, "/chat/completions", `{"model":"gpt-test",`+hello+`,"stream":true`+tt.extra+`}`)
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			if ct, cc := rec.Header().Get("Content-Type"), rec.Header().Get("Cache-Control"); ct != "text/event-stream" || cc != "no-cache" {
				t.Errorf("Content-Type %q Cache-Control %q", ct, cc)
			}
			if !rec.Flushed {
				t.Error("the stream was never flushed")
			}
			payloads := sseData(t, rec.Body.String())
			want := tt.wantTokens + 3 // role, tokens, finish, [DONE]
			if tt.includeUsage {
				want++
			}
			if len(payloads) != want {
				t.Fatalf("%d events, want %d:\n%s", len(payloads), want, rec.Body)
			}
			if payloads[len(payloads)-1] != "[DONE]" {
				t.Errorf("last event %q, want [DONE]", payloads[len(payloads)-1])
			}
			var text strings.Builder
			for i, p := range payloads[:len(payloads)-1] {
				var raw map[string]json.RawMessage
				decodeStrict(t, []byte(p), &raw)
				u, hasUsage := raw["usage"]
				var c completion
				decodeStrict(t, []byte(p), &c)
				if c.ID != "chatcmpl-mock-1" || c.Object != "chat.completion.chunk" || c.Created != fixedNow.Unix() || c.Model != "gpt-test" {
					t.Errorf("event %d head: %s", i, p)
				}
				last := tt.includeUsage && i == len(payloads)-2
				switch {
				case !tt.includeUsage && hasUsage:
					t.Errorf("event %d has usage though include_usage is off: %s", i, p)
				case tt.includeUsage && !last && string(u) != "null":
					t.Errorf("event %d usage is %s, want null", i, u)
				}
				if last {
					wantUsage := usage{9, tt.wantTokens, 9 + tt.wantTokens}
					if len(c.Choices) != 0 || string(raw["choices"]) != "[]" || c.Usage == nil || *c.Usage != wantUsage {
						t.Errorf("usage chunk %s, want empty choices and %+v", p, wantUsage)
					}
					continue
				}
				if len(c.Choices) != 1 || c.Choices[0].Index != 0 || string(c.Choices[0].Logprobs) != "null" {
					t.Fatalf("event %d choices: %s", i, p)
				}
				ch := c.Choices[0]
				switch {
				case i == 0:
					if !maps(ch.Delta, map[string]string{"role": "assistant", "content": ""}) || ch.FinishReason != nil {
						t.Errorf("first chunk %s, want the role delta", p)
					}
				case i <= tt.wantTokens:
					content, ok := ch.Delta["content"]
					if !ok || len(ch.Delta) != 1 || ch.FinishReason != nil {
						t.Errorf("token chunk %d: %s", i, p)
					}
					if content != word(i-1) {
						t.Errorf("token %d is %q, want %q", i-1, content, word(i-1))
					}
					text.WriteString(content)
				default:
					if len(ch.Delta) != 0 || deref(ch.FinishReason) != tt.wantFinish {
						t.Errorf("finish chunk %s, want empty delta and %q", p, tt.wantFinish)
					}
				}
			}
			if text.String() != replyText(tt.wantTokens) {
				t.Errorf("streamed text %q", text.String())
			}
		})
	}
}

func maps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// wire3 is the exact output of a three-token stream with include_usage.
const wire3 = `data: {"id":"chatcmpl-mock-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-test","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-mock-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-test","choices":[{"index":0,"delta":{"content":"arcane"},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-mock-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-test","choices":[{"index":0,"delta":{"content":" mock"},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-mock-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-test","choices":[{"index":0,"delta":{"content":" reply"},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-mock-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-test","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}

data: {"id":"chatcmpl-mock-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-test","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}

data: [DONE]

`

// wire3Plain is the same stream without include_usage.
const wire3Plain = `data: {"id":"chatcmpl-mock-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-test","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}

data: {"id":"chatcmpl-mock-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-test","choices":[{"index":0,"delta":{"content":"arcane"},"logprobs":null,"finish_reason":null}]}

data: {"id":"chatcmpl-mock-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-test","choices":[{"index":0,"delta":{"content":" mock"},"logprobs":null,"finish_reason":null}]}

data: {"id":"chatcmpl-mock-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-test","choices":[{"index":0,"delta":{"content":" reply"},"logprobs":null,"finish_reason":null}]}

data: {"id":"chatcmpl-mock-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-test","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}

data: [DONE]

`

func TestStreamWireBytes(t *testing.T) {
	tests := []struct {
		name  string
		extra string
		want  string
	}{
		{"a three-token stream with include_usage is byte for byte OpenAI's framing", `,"stream_options":{"include_usage":true}`, wire3},
		{"a three-token stream without include_usage has no usage member at all", ``, wire3Plain},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTestHandler(Config{ReplyTokens: 3})
			rec := serve(h, http.MethodPost, "/v1/chat/completions", `{"model":"gpt-test",`+hello+`,"stream":true`+tt.extra+`}`)
			if got := rec.Body.String(); got != tt.want {
				t.Errorf("wire output:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestContentCountsDecodedTextBytes(t *testing.T) {
	tests := []struct {
		name string
		json string
		want int
	}{
		{"a plain string counts its bytes", `"abcd"`, 4},
		{"an escaped quote counts once", `"a\"b"`, 3},
		{"an escaped newline counts once", `"a\nb"`, 3},
		{"a unicode escape counts its UTF-8 bytes", `"\u00e9"`, 2},
		{"raw UTF-8 counts its bytes", `"é模"`, 5},
		{"null counts nothing", `null`, 0},
		{"text parts add up and other parts count nothing", `[{"type":"text","text":"ab"},{"type":"image_url","image_url":{"url":"data:x"}},{"type":"text","text":"\n"}]`, 3},
		{"an empty part list counts nothing", `[]`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c textContent
			if err := json.Unmarshal([]byte(tt.json), &c); err != nil || int(c) != tt.want {
				t.Errorf("got %d, %v; want %d", c, err, tt.want)
			}
		})
	}
}
