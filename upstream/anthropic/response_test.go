package anthropic

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/arcaneapi/caddy-arcane/upstream/openai"
)

var now = time.Unix(1767225600, 0) // 2026-01-01T00:00:00Z

func TestAppendCompletion(t *testing.T) {
	tests := []struct {
		name      string
		resp      string
		want      string
		wantUsage openai.Usage
	}{
		{
			name: "a text answer becomes a chat.completion with the public model and a chatcmpl id",
			resp: responseText,
			want: `{"id":"chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL","object":"chat.completion","created":1767225600,"model":"claude-sonnet-4-6",
				"choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?","refusal":null},"logprobs":null,"finish_reason":"stop"}],
				"usage":{"prompt_tokens":12,"completion_tokens":10,"total_tokens":22,"prompt_tokens_details":{"cached_tokens":0}}}`,
			wantUsage: openai.Usage{PromptTokens: 12, CompletionTokens: 10, TotalTokens: 22},
		},
		{
			name: "a tool call becomes tool_calls with the toolu id and the input as a JSON string, beside the text",
			resp: responseToolUse,
			want: `{"id":"chatcmpl-msg_01Aq9w938a90dw8q","object":"chat.completion","created":1767225600,"model":"claude-sonnet-4-6",
				"choices":[{"index":0,"message":{"role":"assistant","content":"I'll check the weather in Paris.","refusal":null,
					"tool_calls":[{"id":"toolu_01A09q90qw90lq917835lq9","type":"function","function":{"name":"get_weather","arguments":"{\"location\":\"Paris, France\",\"unit\":\"celsius\"}"}}]},
					"logprobs":null,"finish_reason":"tool_calls"}],
				"usage":{"prompt_tokens":384,"completion_tokens":67,"total_tokens":451,"prompt_tokens_details":{"cached_tokens":0}}}`,
			wantUsage: openai.Usage{PromptTokens: 384, CompletionTokens: 67, TotalTokens: 451},
		},
		{
			name: "parallel tool calls without text leave content null",
			resp: `{"id":"msg_01P","type":"message","role":"assistant","model":"claude-sonnet-4-6","content":[
				{"type":"tool_use","id":"toolu_01A","name":"get_weather","input":{"location":"Paris"}},
				{"type":"tool_use","id":"toolu_01B","name":"get_time","input":{}}],
				"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":90,"output_tokens":40}}`,
			want: `{"id":"chatcmpl-msg_01P","object":"chat.completion","created":1767225600,"model":"claude-sonnet-4-6",
				"choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":null,"tool_calls":[
					{"id":"toolu_01A","type":"function","function":{"name":"get_weather","arguments":"{\"location\":\"Paris\"}"}},
					{"id":"toolu_01B","type":"function","function":{"name":"get_time","arguments":"{}"}}]},"logprobs":null,"finish_reason":"tool_calls"}],
				"usage":{"prompt_tokens":90,"completion_tokens":40,"total_tokens":130,"prompt_tokens_details":{"cached_tokens":0}}}`,
			wantUsage: openai.Usage{PromptTokens: 90, CompletionTokens: 40, TotalTokens: 130},
		},
		{
			name: "text blocks are concatenated and thinking blocks dropped",
			resp: `{"id":"msg_01T","type":"message","role":"assistant","model":"claude-sonnet-4-6","content":[
				{"type":"thinking","thinking":"The user wants a haiku.","signature":"EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"},
				{"type":"text","text":"Autumn moonlight\u2014"},{"type":"redacted_thinking","data":"EmwKAhgBEgy3va3pzix"},{"type":"text","text":"\na worm digs silently"}],
				"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":20,"output_tokens":200}}`,
			want: `{"id":"chatcmpl-msg_01T","object":"chat.completion","created":1767225600,"model":"claude-sonnet-4-6",
				"choices":[{"index":0,"message":{"role":"assistant","content":"Autumn moonlight\u2014\na worm digs silently","refusal":null},"logprobs":null,"finish_reason":"stop"}],
				"usage":{"prompt_tokens":20,"completion_tokens":200,"total_tokens":220,"prompt_tokens_details":{"cached_tokens":0}}}`,
			wantUsage: openai.Usage{PromptTokens: 20, CompletionTokens: 200, TotalTokens: 220},
		},
		{
			name: "max_tokens stops with length",
			resp: `{"id":"msg_01M","type":"message","role":"assistant","model":"claude-sonnet-4-6","content":[{"type":"text","text":"Once upon a"}],"stop_reason":"max_tokens","stop_sequence":null,"usage":{"input_tokens":8,"output_tokens":3}}`,
			want: `{"id":"chatcmpl-msg_01M","object":"chat.completion","created":1767225600,"model":"claude-sonnet-4-6",
				"choices":[{"index":0,"message":{"role":"assistant","content":"Once upon a","refusal":null},"logprobs":null,"finish_reason":"length"}],
				"usage":{"prompt_tokens":8,"completion_tokens":3,"total_tokens":11,"prompt_tokens_details":{"cached_tokens":0}}}`,
			wantUsage: openai.Usage{PromptTokens: 8, CompletionTokens: 3, TotalTokens: 11},
		},
		{
			name: "a stop sequence stops with stop",
			resp: `{"id":"msg_01S","type":"message","role":"assistant","model":"claude-sonnet-4-6","content":[{"type":"text","text":"1, 2, 3, "}],"stop_reason":"stop_sequence","stop_sequence":"4","usage":{"input_tokens":14,"output_tokens":9}}`,
			want: `{"id":"chatcmpl-msg_01S","object":"chat.completion","created":1767225600,"model":"claude-sonnet-4-6",
				"choices":[{"index":0,"message":{"role":"assistant","content":"1, 2, 3, ","refusal":null},"logprobs":null,"finish_reason":"stop"}],
				"usage":{"prompt_tokens":14,"completion_tokens":9,"total_tokens":23,"prompt_tokens_details":{"cached_tokens":0}}}`,
			wantUsage: openai.Usage{PromptTokens: 14, CompletionTokens: 9, TotalTokens: 23},
		},
		{
			name: "cache reads and writes count as prompt tokens, reads as cached tokens and writes as cache-write tokens",
			resp: `{"id":"msg_01C","type":"message","role":"assistant","model":"claude-sonnet-4-6","content":[{"type":"text","text":"Per section 4.2, yes."}],"stop_reason":"end_turn","stop_sequence":null,
				"usage":{"input_tokens":21,"cache_creation_input_tokens":188086,"cache_read_input_tokens":1500,"cache_creation":{"ephemeral_5m_input_tokens":188086,"ephemeral_1h_input_tokens":0},"output_tokens":393,"service_tier":"standard"}}`,
			want: `{"id":"chatcmpl-msg_01C","object":"chat.completion","created":1767225600,"model":"claude-sonnet-4-6",
				"choices":[{"index":0,"message":{"role":"assistant","content":"Per section 4.2, yes.","refusal":null},"logprobs":null,"finish_reason":"stop"}],
				"usage":{"prompt_tokens":189607,"completion_tokens":393,"total_tokens":190000,"prompt_tokens_details":{"cached_tokens":1500,"cache_write_tokens":188086}}}`,
			wantUsage: openai.Usage{PromptTokens: 189607, CompletionTokens: 393, TotalTokens: 190000, CachedTokens: 1500, CacheWriteTokens: 188086},
		},
		{
			name: "a refusal finishes with content_filter",
			resp: `{"id":"msg_01R","type":"message","role":"assistant","model":"claude-sonnet-4-6","content":[],"stop_reason":"refusal","stop_sequence":null,"usage":{"input_tokens":30,"cache_creation_input_tokens":null,"cache_read_input_tokens":null,"output_tokens":1}}`,
			want: `{"id":"chatcmpl-msg_01R","object":"chat.completion","created":1767225600,"model":"claude-sonnet-4-6",
				"choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":null},"logprobs":null,"finish_reason":"content_filter"}],
				"usage":{"prompt_tokens":30,"completion_tokens":1,"total_tokens":31,"prompt_tokens_details":{"cached_tokens":0}}}`,
			wantUsage: openai.Usage{PromptTokens: 30, CompletionTokens: 1, TotalTokens: 31},
		},
		{
			name: "the context window running out finishes with length",
			resp: `{"id":"msg_01W","type":"message","role":"assistant","model":"claude-sonnet-4-6","content":[{"type":"text","text":"A"}],"stop_reason":"model_context_window_exceeded","usage":{"input_tokens":1,"output_tokens":1}}`,
			want: `{"id":"chatcmpl-msg_01W","object":"chat.completion","created":1767225600,"model":"claude-sonnet-4-6",
				"choices":[{"index":0,"message":{"role":"assistant","content":"A","refusal":null},"logprobs":null,"finish_reason":"length"}],
				"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2,"prompt_tokens_details":{"cached_tokens":0}}}`,
			wantUsage: openai.Usage{PromptTokens: 1, CompletionTokens: 1, TotalTokens: 2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, u, err := AppendCompletion([]byte("prefix:"), []byte(tt.resp), "claude-sonnet-4-6", now)
			if err != nil {
				t.Fatalf("AppendCompletion: %v", err)
			}
			got, ok := strings.CutPrefix(string(out), "prefix:")
			if !ok {
				t.Fatalf("dst was not appended to: %s", out)
			}
			if !jsonEqual(t, []byte(got), []byte(tt.want)) {
				t.Errorf("got  %s\nwant %s", got, compact(tt.want))
			}
			if u != tt.wantUsage {
				t.Errorf("usage %+v, want %+v", u, tt.wantUsage)
			}
			// The usage reads back the way OpenAI's does, cache writes
			// included.
			if pu, ok := openai.ParseUsage([]byte(got)); !ok || pu != tt.wantUsage {
				t.Errorf("openai.ParseUsage = %+v, %v; want %+v", pu, ok, tt.wantUsage)
			}
		})
	}
}

func TestFinishReasons(t *testing.T) {
	for stop, want := range map[string]string{
		"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
		"pause_turn": "stop", "refusal": "content_filter", "model_context_window_exceeded": "length",
		"": "stop", "something_new": "stop",
	} {
		if got := finishReason([]byte(stop)); got != want {
			t.Errorf("finishReason(%q) = %q, want %q", stop, got, want)
		}
	}
}

func TestAppendCompletionRefusesWhatIsNotAMessage(t *testing.T) {
	for _, resp := range []string{
		`{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`,
		`{"id":"chatcmpl-1","object":"chat.completion","choices":[]}`,
		`not json`,
		``,
		`{"type":"message","content":"text"}`,
	} {
		out, _, err := AppendCompletion([]byte("x"), []byte(resp), "m", now)
		if !errors.Is(err, ErrNotMessage) {
			t.Errorf("%s: err = %v, want ErrNotMessage", resp, err)
		}
		if string(out) != "x" {
			t.Errorf("%s: dst changed to %q", resp, out)
		}
	}
}

func TestParseError(t *testing.T) {
	tests := []struct {
		name, body, typ, msg string
		ok                   bool
	}{
		{"an overloaded error", `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}`, "overloaded_error", "Overloaded", true},
		{"an authentication error", `{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}`, "authentication_error", "invalid x-api-key", true},
		{"an error without a message", `{"type":"error","error":{"type":"api_error"}}`, "api_error", "", true},
		{"an error without a type", `{"type":"error","error":{"message":"x"}}`, "", "x", false},
		{"a message", responseText, "", "", false},
		{"an HTML page from a proxy", `<html><body>502 Bad Gateway</body></html>`, "", "", false},
		{"an error that is a string", `{"type":"error","error":"boom"}`, "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			typ, msg, ok := ParseError([]byte(tt.body))
			if typ != tt.typ || msg != tt.msg || ok != tt.ok {
				t.Errorf("ParseError = %q, %q, %v; want %q, %q, %v", typ, msg, ok, tt.typ, tt.msg, tt.ok)
			}
		})
	}
}
