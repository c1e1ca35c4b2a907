package anthropic

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/arcaneapi/caddy-arcane/upstream/openai"
)

// deploy is the options of a typical deployment: Claude Sonnet with its
// 64k output cap, the gateway default applying when the client sets none.
var deploy = RequestOptions{Model: "claude-sonnet-4-6-20260101", MaxTokens: 8192, MaxOutputTokens: 64000}

// jsonEqual reports whether a and b are the same JSON value.
func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("not JSON: %v: %s", err, a)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("want is not JSON: %v: %s", err, b)
	}
	return reflect.DeepEqual(x, y)
}

func TestAppendRequest(t *testing.T) {
	tests := []struct {
		name string
		opts RequestOptions
		body string
		want string
	}{
		{
			name: "a plain user message keeps its string form and gets the deployment's model and output cap",
			body: `{"model":"claude-sonnet-4-6","messages":[{"role":"user","content":"Hello"}]}`,
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":8192,"messages":[{"role":"user","content":"Hello"}]}`,
		},
		{
			name: "system and developer messages are hoisted into system in order, and a multi-turn conversation alternates",
			body: `{"model":"m","messages":[
				{"role":"system","content":"You are terse."},
				{"role":"user","content":"Hi","name":"ann"},
				{"role":"assistant","content":"Hello."},
				{"role":"developer","content":[{"type":"text","text":"Answer in French."}]},
				{"role":"user","content":"How are you?"}]}`,
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":8192,
				"system":[{"type":"text","text":"You are terse."},{"type":"text","text":"Answer in French."}],
				"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello."},{"role":"user","content":"How are you?"}]}`,
		},
		{
			name: "consecutive user messages merge into one turn, and an empty one between them disappears",
			body: `{"model":"m","messages":[{"role":"user","content":"First."},{"role":"user","content":"  "},{"role":"user","content":[{"type":"text","text":"Second."},{"type":"text","text":""}]}]}`,
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":8192,"messages":[{"role":"user","content":[{"type":"text","text":"First."},{"type":"text","text":"Second."}]}]}`,
		},
		{
			name: "images by base64 data URL and by https URL become image blocks, detail dropped",
			body: `{"model":"m","messages":[{"role":"user","content":[
				{"type":"text","text":"Compare these."},
				{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo=","detail":"high"}},
				{"type":"image_url","image_url":{"url":"https://example.com/cat.jpg"}},
				{"type":"image_url","image_url":"data:image/jpg;base64,/9j/4AAQ"}]}]}`,
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":8192,"messages":[{"role":"user","content":[
				{"type":"text","text":"Compare these."},
				{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}},
				{"type":"image","source":{"type":"url","url":"https://example.com/cat.jpg"}},
				{"type":"image","source":{"type":"base64","media_type":"image/jpeg","data":"/9j/4AAQ"}}]}]}`,
		},
		{
			name: "cache_control on content parts is passed on for Anthropic's prompt cache",
			body: `{"model":"m","messages":[{"role":"system","content":[{"type":"text","text":"A long manual.","cache_control":{"type":"ephemeral"}}]},{"role":"user","content":[{"type":"text","text":"Q","cache_control":{"type":"ephemeral","ttl":"1h"}}]}]}`,
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":8192,"system":[{"type":"text","text":"A long manual.","cache_control":{"type":"ephemeral"}}],
				"messages":[{"role":"user","content":[{"type":"text","text":"Q","cache_control":{"type":"ephemeral","ttl":"1h"}}]}]}`,
		},
		{
			name: "max_completion_tokens wins over max_tokens",
			body: `{"model":"m","messages":[{"role":"user","content":"Hi"}],"max_tokens":100,"max_completion_tokens":200}`,
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":200,"messages":[{"role":"user","content":"Hi"}]}`,
		},
		{
			name: "max_tokens is taken when max_completion_tokens is null",
			body: `{"model":"m","messages":[{"role":"user","content":"Hi"}],"max_tokens":100,"max_completion_tokens":null}`,
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":100,"messages":[{"role":"user","content":"Hi"}]}`,
		},
		{
			name: "a client's max_tokens above the model's cap is lowered to it",
			body: `{"model":"m","messages":[{"role":"user","content":"Hi"}],"max_tokens":1000000}`,
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":64000,"messages":[{"role":"user","content":"Hi"}]}`,
		},
		{
			name: "without options a request still gets DefaultMaxTokens, never 0",
			opts: RequestOptions{Model: "claude-haiku-4-5"},
			body: `{"model":"m","messages":[{"role":"user","content":"Hi"}]}`,
			want: `{"model":"claude-haiku-4-5","max_tokens":4096,"messages":[{"role":"user","content":"Hi"}]}`,
		},
		{
			name: "the default output cap is lowered to the model's cap",
			opts: RequestOptions{Model: "claude-haiku-4-5", MaxTokens: 10000, MaxOutputTokens: 2048},
			body: `{"model":"m","messages":[{"role":"user","content":"Hi"}]}`,
			want: `{"model":"claude-haiku-4-5","max_tokens":2048,"messages":[{"role":"user","content":"Hi"}]}`,
		},
		{
			name: "temperature above 1 is clamped to 1",
			body: `{"model":"m","messages":[{"role":"user","content":"Hi"}],"temperature":1.7}`,
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":8192,"messages":[{"role":"user","content":"Hi"}],"temperature":1}`,
		},
		{
			name: "temperature and top_p within Anthropic's range pass",
			body: `{"model":"m","messages":[{"role":"user","content":"Hi"}],"temperature":0,"top_p":0.9}`,
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":8192,"messages":[{"role":"user","content":"Hi"}],"temperature":0,"top_p":0.9}`,
		},
		{
			name: "top_p 1, a no-op newer models refuse beside temperature, is left out",
			body: `{"model":"m","messages":[{"role":"user","content":"Hi"}],"temperature":0.7,"top_p":1}`,
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":8192,"messages":[{"role":"user","content":"Hi"}],"temperature":0.7}`,
		},
		{
			name: "a stop string becomes a stop sequence",
			body: `{"model":"m","messages":[{"role":"user","content":"Count"}],"stop":"10"}`,
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":8192,"messages":[{"role":"user","content":"Count"}],"stop_sequences":["10"]}`,
		},
		{
			name: "a stop array becomes stop sequences without the blank ones",
			body: `{"model":"m","messages":[{"role":"user","content":"Count"}],"stop":["\n\n"," ","END",""]}`,
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":8192,"messages":[{"role":"user","content":"Count"}],"stop_sequences":["END"]}`,
		},
		{
			name: "stream comes from the options, stream_options is dropped",
			opts: RequestOptions{Model: "claude-sonnet-4-6-20260101", MaxTokens: 8192, Stream: true},
			body: `{"model":"m","messages":[{"role":"user","content":"Hi"}],"stream":true,"stream_options":{"include_usage":true}}`,
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":8192,"messages":[{"role":"user","content":"Hi"}],"stream":true}`,
		},
		{
			name: "parameters that only tune or label the request are dropped",
			body: `{"model":"m","messages":[{"role":"user","content":"Hi"}],"frequency_penalty":0.5,"presence_penalty":0.1,"seed":7,"logit_bias":{},"logprobs":false,"top_logprobs":0,"n":1,
				"response_format":{"type":"text"},"modalities":["text"],"reasoning_effort":"low","store":false,"metadata":{"k":"v"},"service_tier":"auto","prompt_cache_key":"p","x_vendor":1}`,
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":8192,"messages":[{"role":"user","content":"Hi"}]}`,
		},
		{
			name: "user becomes metadata.user_id",
			body: `{"model":"m","messages":[{"role":"user","content":"Hi"}],"user":"user-8d9f2c"}`,
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":8192,"messages":[{"role":"user","content":"Hi"}],"metadata":{"user_id":"user-8d9f2c"}}`,
		},
		{
			name: "safety_identifier wins over user",
			body: `{"model":"m","messages":[{"role":"user","content":"Hi"}],"user":"u1","safety_identifier":"sid-42"}`,
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":8192,"messages":[{"role":"user","content":"Hi"}],"metadata":{"user_id":"sid-42"}}`,
		},
		{
			name: "a user that is an email address is dropped, as Anthropic refuses personal data",
			body: `{"model":"m","messages":[{"role":"user","content":"Hi"}],"user":"ann@example.com"}`,
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":8192,"messages":[{"role":"user","content":"Hi"}]}`,
		},
		{
			name: "a user that is a phone number is dropped",
			body: `{"model":"m","messages":[{"role":"user","content":"Hi"}],"user":"+1 (555) 010-9999"}`,
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":8192,"messages":[{"role":"user","content":"Hi"}]}`,
		},
		{
			name: "a user that is bare digits is taken for a database id and kept",
			body: `{"model":"m","messages":[{"role":"user","content":"Hi"}],"user":"100234567"}`,
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":8192,"messages":[{"role":"user","content":"Hi"}],"metadata":{"user_id":"100234567"}}`,
		},
		{
			name: "a leading assistant message is kept as a prefill, and a final one loses its trailing white space",
			body: `{"model":"m","messages":[{"role":"assistant","content":"Welcome!"},{"role":"user","content":"Write JSON."},{"role":"assistant","content":"{\n  "}]}`,
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":8192,"messages":[{"role":"assistant","content":"Welcome!"},{"role":"user","content":"Write JSON."},{"role":"assistant","content":"{"}]}`,
		},
		{
			name: "function tools map to input_schema, a tool without parameters takes no arguments, strict is dropped",
			body: `{"model":"m","messages":[{"role":"user","content":"Weather?"}],"tools":[
				{"type":"function","function":{"name":"get_weather","description":"Current weather","parameters":{"type":"object","properties":{"location":{"type":"string"}},"required":["location"]},"strict":true}},
				{"type":"function","function":{"name":"get_time"}}]}`,
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":8192,"messages":[{"role":"user","content":"Weather?"}],"tools":[
				{"name":"get_weather","description":"Current weather","input_schema":{"type":"object","properties":{"location":{"type":"string"}},"required":["location"]}},
				{"name":"get_time","input_schema":{"type":"object"}}]}`,
		},
		{
			name: "tool_choice auto maps to auto",
			body: `{"model":"m","messages":[{"role":"user","content":"Hi"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"auto"}`,
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":8192,"messages":[{"role":"user","content":"Hi"}],"tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":{"type":"auto"}}`,
		},
		{
			name: "tool_choice required maps to any",
			body: `{"model":"m","messages":[{"role":"user","content":"Hi"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"required"}`,
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":8192,"messages":[{"role":"user","content":"Hi"}],"tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":{"type":"any"}}`,
		},
		{
			name: "tool_choice none maps to none",
			body: `{"model":"m","messages":[{"role":"user","content":"Hi"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"none","parallel_tool_calls":false}`,
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":8192,"messages":[{"role":"user","content":"Hi"}],"tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":{"type":"none"}}`,
		},
		{
			name: "a named function maps to tool, and parallel_tool_calls false disables parallel use on it",
			body: `{"model":"m","messages":[{"role":"user","content":"Hi"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"f"}},"parallel_tool_calls":false}`,
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":8192,"messages":[{"role":"user","content":"Hi"}],"tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":{"type":"tool","name":"f","disable_parallel_tool_use":true}}`,
		},
		{
			name: "parallel_tool_calls false without a tool_choice disables parallel use on auto",
			body: `{"model":"m","messages":[{"role":"user","content":"Hi"}],"tools":[{"type":"function","function":{"name":"f"}}],"parallel_tool_calls":false}`,
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":8192,"messages":[{"role":"user","content":"Hi"}],"tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":{"type":"auto","disable_parallel_tool_use":true}}`,
		},
		{
			name: "tool_choice auto without tools is left out",
			body: `{"model":"m","messages":[{"role":"user","content":"Hi"}],"tools":[],"tool_choice":"auto","parallel_tool_calls":true}`,
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":8192,"messages":[{"role":"user","content":"Hi"}]}`,
		},
		{
			name: "a tool call round trip: tool_calls become tool_use blocks and consecutive tool messages one user turn of results, before the user's text",
			body: `{"model":"m","messages":[
				{"role":"user","content":"Weather in Paris and Tokyo?"},
				{"role":"assistant","content":null,"tool_calls":[
					{"id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","type":"function","function":{"name":"get_weather","arguments":"{\"location\": \"Paris\"}"}},
					{"id":"call_Tokyo","type":"function","function":{"name":"get_weather","arguments":"{\"location\":\"Tokyo\"}"}}]},
				{"role":"tool","tool_call_id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","content":"18°C, sunny"},
				{"role":"tool","tool_call_id":"call_Tokyo","content":[{"type":"text","text":"24°C, "},{"type":"text","text":"rain"}]},
				{"role":"user","content":"Which is warmer?"}],
				"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"location":{"type":"string"}}}}}]}`,
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":8192,"messages":[
				{"role":"user","content":"Weather in Paris and Tokyo?"},
				{"role":"assistant","content":[
					{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{"location":"Paris"}},
					{"type":"tool_use","id":"call_Tokyo","name":"get_weather","input":{"location":"Tokyo"}}]},
				{"role":"user","content":[
					{"type":"tool_result","tool_use_id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","content":"18°C, sunny"},
					{"type":"tool_result","tool_use_id":"call_Tokyo","content":[{"type":"text","text":"24°C, "},{"type":"text","text":"rain"}]},
					{"type":"text","text":"Which is warmer?"}]}],
				"tools":[{"name":"get_weather","input_schema":{"type":"object","properties":{"location":{"type":"string"}}}}]}`,
		},
		{
			name: "assistant text and tool calls stay in order, empty arguments mean no arguments, and an empty tool result has no content",
			body: `{"model":"m","messages":[{"role":"user","content":"Time?"},
				{"role":"assistant","content":"Checking.","tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_time","arguments":""}}]},
				{"role":"tool","tool_call_id":"call_1","content":""}]}`,
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":8192,"messages":[{"role":"user","content":"Time?"},
				{"role":"assistant","content":[{"type":"text","text":"Checking."},{"type":"tool_use","id":"call_1","name":"get_time","input":{}}]},
				{"role":"user","content":[{"type":"tool_result","tool_use_id":"call_1"}]}]}`,
		},
		{
			name: "tool call ids from other providers are made acceptable the same way in the call and the result",
			body: `{"model":"m","messages":[{"role":"user","content":"Go"},
				{"role":"assistant","tool_calls":[{"id":"functions.search:0","type":"function","function":{"name":"search","arguments":"{}"}}]},
				{"role":"tool","tool_call_id":"functions.search:0","content":"none"}]}`,
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":8192,"messages":[{"role":"user","content":"Go"},
				{"role":"assistant","content":[{"type":"tool_use","id":"functions_search_0","name":"search","input":{}}]},
				{"role":"user","content":[{"type":"tool_result","tool_use_id":"functions_search_0","content":"none"}]}]}`,
		},
		{
			name: "an assistant refusal is sent as its text",
			body: `{"model":"m","messages":[{"role":"user","content":"Do X"},{"role":"assistant","content":null,"refusal":"I can't help with that."},{"role":"user","content":[{"type":"text","text":"Why?"}]}]}`,
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":8192,"messages":[{"role":"user","content":"Do X"},{"role":"assistant","content":"I can't help with that."},{"role":"user","content":"Why?"}]}`,
		},
		{
			name: "invalid UTF-8, in text or in a value passed on raw, is replaced as encoding/json replaces it",
			body: "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\xffb\",\"cache_control\":{\"type\":\"ephemeral\",\"x\":\"\x83\"}}]}]," +
				"\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\",\"description\":\"\xc3(\"}}}]}",
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":8192,"messages":[{"role":"user","content":[{"type":"text","text":"a\ufffdb","cache_control":{"type":"ephemeral","x":"\ufffd"}}]}],
				"tools":[{"name":"f","input_schema":{"type":"object","description":"\ufffd("}}]}`,
		},
		{
			name: "text with characters HTML escapes would touch is sent as it is",
			body: `{"model":"m","messages":[{"role":"user","content":"a < b && c > d \u2028"}]}`,
			want: `{"model":"claude-sonnet-4-6-20260101","max_tokens":8192,"messages":[{"role":"user","content":"a < b && c > d \u2028"}]}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.opts
			if opts.Model == "" {
				opts = deploy
			}
			if _, err := openai.ScanRequest([]byte(tt.body)); err != nil {
				t.Fatalf("the gateway would refuse the body before: %v", err)
			}
			out, err := AppendRequest([]byte("prefix:"), []byte(tt.body), opts)
			if err != nil {
				t.Fatalf("AppendRequest: %v", err)
			}
			got, ok := strings.CutPrefix(string(out), "prefix:")
			if !ok {
				t.Fatalf("dst was not appended to: %s", got)
			}
			if !jsonEqual(t, []byte(got), []byte(tt.want)) {
				t.Errorf("got  %s\nwant %s", got, compact(tt.want))
			}
			if !utf8.ValidString(got) {
				t.Errorf("invalid UTF-8 in %q", got)
			}
			if strings.Contains(got, `\u003c`) {
				t.Errorf("HTML-escaped output: %s", got)
			}
		})
	}
}

func compact(s string) string {
	var v any
	if json.Unmarshal([]byte(s), &v) != nil {
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func TestAppendRequestRefuses(t *testing.T) {
	const user = `{"role":"user","content":"Hi"}`
	tests := []struct {
		name, body, param, code string
	}{
		{"a body that is not a JSON object", `[1]`, "", ""},
		{"more than one choice", `{"model":"m","messages":[` + user + `],"n":2}`, "n", codeUnsupportedValue},
		{"log probabilities", `{"model":"m","messages":[` + user + `],"logprobs":true}`, "logprobs", codeUnsupportedParam},
		{"top log probabilities", `{"model":"m","messages":[` + user + `],"top_logprobs":3}`, "top_logprobs", codeUnsupportedParam},
		{"token biases", `{"model":"m","messages":[` + user + `],"logit_bias":{"50256":-100}}`, "logit_bias", codeUnsupportedParam},
		{"a JSON schema response format", `{"model":"m","messages":[` + user + `],"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{}}}}`, "response_format", codeUnsupportedValue},
		{"a JSON object response format", `{"model":"m","messages":[` + user + `],"response_format":{"type":"json_object"}}`, "response_format", codeUnsupportedValue},
		{"audio output", `{"model":"m","messages":[` + user + `],"modalities":["text","audio"],"audio":{"voice":"alloy","format":"wav"}}`, "audio", codeUnsupportedParam},
		{"the audio modality", `{"model":"m","messages":[` + user + `],"modalities":["text","audio"]}`, "modalities[1]", codeUnsupportedValue},
		{"web search", `{"model":"m","messages":[` + user + `],"web_search_options":{}}`, "web_search_options", codeUnsupportedParam},
		{"deprecated functions", `{"model":"m","messages":[` + user + `],"functions":[{"name":"f"}]}`, "functions", codeUnsupportedParam},
		{"an audio content part", `{"model":"m","messages":[{"role":"system","content":"s"},{"role":"assistant","content":"a"},{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"UklGR","format":"wav"}}]}]}`, "messages[2].content[0].type", codeUnsupportedValue},
		{"a file content part", `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"Read"},{"type":"file","file":{"file_id":"file-1"}}]}]}`, "messages[0].content[1].type", codeUnsupportedValue},
		{"an image in a system message", `{"model":"m","messages":[{"role":"system","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]},` + user + `]}`, "messages[0].content[0].type", codeUnsupportedValue},
		{"an image by ftp URL", `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"ftp://x/y.png"}}]}]}`, "messages[0].content[1].image_url.url", codeValue},
		{"a data URL that is not base64", `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png,abc"}}]}]}`, "messages[0].content[0].image_url.url", codeValue},
		{"an image type Anthropic does not take", `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/tiff;base64,SUkq"}}]}]}`, "messages[0].content[0].image_url.url", codeUnsupportedValue},
		{"an image part without image_url", `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}`, "messages[0].content[0].image_url", codeMissing},
		{"a text part without text", `{"model":"m","messages":[{"role":"user","content":[{"type":"text"}]}]}`, "messages[0].content[0].text", codeMissing},
		{"tool call arguments that are not JSON", `{"model":"m","messages":[` + user + `,{"role":"assistant","tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":"}}]}]}`, "messages[1].tool_calls[0].function.arguments", codeValue},
		{"tool call arguments that are not an object", `{"model":"m","messages":[` + user + `,{"role":"assistant","tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"[1]"}}]}]}`, "messages[1].tool_calls[0].function.arguments", codeValue},
		{"a tool call without an id", `{"model":"m","messages":[` + user + `,{"role":"assistant","tool_calls":[{"type":"function","function":{"name":"f","arguments":"{}"}}]}]}`, "messages[1].tool_calls[0].id", codeMissing},
		{"a custom tool call", `{"model":"m","messages":[` + user + `,{"role":"assistant","tool_calls":[{"id":"c","type":"custom","custom":{"name":"f","input":"x"}}]}]}`, "messages[1].tool_calls[0].type", codeUnsupportedValue},
		{"a deprecated function_call", `{"model":"m","messages":[` + user + `,{"role":"assistant","content":null,"function_call":{"name":"f","arguments":"{}"}}]}`, "messages[1].function_call", codeUnsupportedParam},
		{"a tool message without tool_call_id", `{"model":"m","messages":[` + user + `,{"role":"tool","content":"x"}]}`, "messages[1].tool_call_id", codeMissing},
		{"a tool message with an image", `{"model":"m","messages":[` + user + `,{"role":"tool","tool_call_id":"c","content":[{"type":"image_url","image_url":{"url":"https://x"}}]}]}`, "messages[1].content[0].type", codeUnsupportedValue},
		{"the function role", `{"model":"m","messages":[{"role":"function","name":"f","content":"x"}]}`, "messages[0].role", codeUnsupportedValue},
		{"only system messages", `{"model":"m","messages":[{"role":"system","content":"Be brief."}]}`, "messages", codeValue},
		{"a custom tool", `{"model":"m","messages":[` + user + `],"tools":[{"type":"custom","custom":{"name":"f"}}]}`, "tools[0].type", codeUnsupportedValue},
		{"a tool without a name", `{"model":"m","messages":[` + user + `],"tools":[{"type":"function","function":{"parameters":{}}}]}`, "tools[0].function.name", codeMissing},
		{"tool parameters that are not an object", `{"model":"m","messages":[` + user + `],"tools":[{"type":"function","function":{"name":"f","parameters":"x"}}]}`, "tools[0].function.parameters", codeType},
		{"an unknown tool_choice", `{"model":"m","messages":[` + user + `],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"sometimes"}`, "tool_choice", codeValue},
		{"an allowed_tools tool_choice", `{"model":"m","messages":[` + user + `],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"allowed_tools","allowed_tools":{"mode":"auto","tools":[]}}}`, "tool_choice.type", codeUnsupportedValue},
		{"a named tool_choice without a name", `{"model":"m","messages":[` + user + `],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{}}}`, "tool_choice.function.name", codeMissing},
		{"a required tool call without tools", `{"model":"m","messages":[` + user + `],"tool_choice":"required"}`, "tool_choice", codeValue},
		{"a stop that is a number", `{"model":"m","messages":[` + user + `],"stop":5}`, "stop", codeType},
		{"a stop entry that is not a string", `{"model":"m","messages":[` + user + `],"stop":["a",1]}`, "stop[1]", codeType},
		{"a temperature beyond 2", `{"model":"m","messages":[` + user + `],"temperature":2.5}`, "temperature", codeValue},
		{"a max_tokens that is not an integer", `{"model":"m","messages":[` + user + `],"max_tokens":"5"}`, "max_tokens", codeType},
		{"a max_completion_tokens of 0", `{"model":"m","messages":[` + user + `],"max_completion_tokens":0}`, "max_completion_tokens", codeValue},
		{"parallel_tool_calls that is not a boolean", `{"model":"m","messages":[` + user + `],"parallel_tool_calls":"no"}`, "parallel_tool_calls", codeType},
		{"a user that is not a string", `{"model":"m","messages":[` + user + `],"user":5}`, "user", codeType},
		{"an unknown role", `{"model":"m","messages":[{"role":"critic","content":"x"}]}`, "messages[0].role", codeValue},
	}
	for _, tt := range tests {
		t.Run("refuses "+tt.name, func(t *testing.T) {
			out, err := AppendRequest([]byte("x"), []byte(tt.body), deploy)
			var re *RequestError
			if !errors.As(err, &re) {
				t.Fatalf("err = %v (%T), want a *RequestError; output %s", err, err, out)
			}
			if re.Param != tt.param || re.Code != tt.code {
				t.Errorf("param %q code %q, want %q %q (%s)", re.Param, re.Code, tt.param, tt.code, re.Message)
			}
			if re.Message == "" || re.Error() != re.Message {
				t.Errorf("message %q, Error() %q", re.Message, re.Error())
			}
			if string(out) != "x" {
				t.Errorf("dst changed to %q", out)
			}
		})
	}
}
