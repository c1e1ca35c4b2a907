package mock

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Message lists used below.
const (
	toolUse    = `{"role":"assistant","content":[{"type":"text","text":"Let me look."},{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}}]}`
	toolUse2   = `{"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"f","input":{}},{"type":"tool_use","id":"toolu_2","name":"g","input":{}}]}`
	toolResult = `{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"18°C"}]}`
	ask        = `{"role":"user","content":"Weather in Paris?"}`
)

func withMessages(msgs ...string) string {
	return `{"model":"claude-test","max_tokens":64,"messages":[` + strings.Join(msgs, ",") + `]}`
}

func TestMessagesBadRequests(t *testing.T) {
	tests := []struct {
		name       string
		header     http.Header // replaces the SDK's headers when set
		body       string
		wantStatus int
		wantType   string
		wantMsg    string
	}{
		{"a request without anthropic-version is refused as Anthropic refuses it", http.Header{"X-Api-Key": {"k"}},
			helloMessage(``), 400, "invalid_request_error", "anthropic-version: header is required"},
		{"an unknown anthropic-version is refused", http.Header{"Anthropic-Version": {"2024-13-01"}},
			helloMessage(``), 400, "invalid_request_error", "anthropic-version: not a supported version; send 2023-06-01"},
		{"a request without a model is refused", nil, `{"max_tokens":8,` + hello + `}`, 400, "invalid_request_error", "model: Field required"},
		{"a request without max_tokens is refused", nil, `{"model":"m",` + hello + `}`, 400, "invalid_request_error", "max_tokens: Field required"},
		{"max_tokens of zero is refused by the mock, though Anthropic now reads it as cache warming", nil,
			`{"model":"m","max_tokens":0,` + hello + `}`, 400, "invalid_request_error", "max_tokens: Input should be greater than or equal to 1"},
		{"a string max_tokens is refused as the wrong type", nil, `{"model":"m","max_tokens":"8",` + hello + `}`, 400, "invalid_request_error", "max_tokens: Input should be a valid integer"},
		{"a fractional max_tokens is refused as the wrong type", nil, `{"model":"m","max_tokens":1.5,` + hello + `}`, 400, "invalid_request_error", "max_tokens: Input should be a valid integer"},
		{"a request without messages is refused", nil, `{"model":"m","max_tokens":8}`, 400, "invalid_request_error", "messages: Field required"},
		{"an empty messages array is refused", nil, `{"model":"m","max_tokens":8,"messages":[]}`, 400, "invalid_request_error", "messages: List should have at least 1 item after validation, not 0"},
		{"a system role in messages is refused: system is a top-level field", nil,
			withMessages(`{"role":"system","content":"Be brief."}`, ask), 400, "invalid_request_error", "messages.0.role: Input should be 'user' or 'assistant'"},
		{"OpenAI's tool role is refused", nil,
			withMessages(ask, `{"role":"tool","content":"x"}`), 400, "invalid_request_error", "messages.1.role: Input should be 'user' or 'assistant'"},
		{"a message without content is refused", nil, withMessages(`{"role":"user"}`), 400, "invalid_request_error", "messages.0.content: Field required"},
		{"null content is refused as missing", nil, withMessages(`{"role":"user","content":null}`), 400, "invalid_request_error", "messages.0.content: Field required"},
		{"numeric content is refused as the wrong type", nil, withMessages(`{"role":"user","content":42}`), 400, "invalid_request_error", "messages.content: Input should be a valid list"},
		{"an empty user message is refused", nil, withMessages(`{"role":"user","content":""}`), 400, "invalid_request_error",
			"messages.0: all messages must have non-empty content except for the optional final assistant message"},
		{"an empty assistant message that is not the last is refused", nil, withMessages(ask, `{"role":"assistant","content":[]}`, ask), 400, "invalid_request_error",
			"messages.1: all messages must have non-empty content except for the optional final assistant message"},
		{"an empty text block is refused", nil, withMessages(`{"role":"user","content":[{"type":"text","text":""}]}`), 400, "invalid_request_error",
			"messages.0.content.0.text: text content blocks must be non-empty"},
		{"a text block without text is refused", nil, withMessages(`{"role":"user","content":[{"type":"text"}]}`), 400, "invalid_request_error",
			"messages.0.content.0.text: Field required"},
		{"a block without a type is refused", nil, withMessages(`{"role":"user","content":[{"text":"hi"}]}`), 400, "invalid_request_error",
			"messages.0.content.0.type: Field required"},
		{"OpenAI's image_url part is refused untranslated", nil,
			withMessages(`{"role":"user","content":[{"type":"text","text":"see"},{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}`), 400, "invalid_request_error",
			"messages.0.content.1: Input tag 'image_url' found using 'type' does not match any of the expected tags: 'text', 'image', 'document', 'tool_use', 'tool_result', ..."},
		{"an image without a source is refused", nil, withMessages(`{"role":"user","content":[{"type":"image"}]}`), 400, "invalid_request_error",
			"messages.0.content.0.source: Field required"},
		{"a base64 image of an unsupported media type is refused", nil,
			withMessages(`{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/bmp","data":"Qk0="}}]}`), 400, "invalid_request_error",
			"messages.0.content.0.source.base64.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"},
		{"a base64 image without data is refused", nil,
			withMessages(`{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png"}}]}`), 400, "invalid_request_error",
			"messages.0.content.0.source.base64.data: Field required"},
		{"an image source of an unknown type is refused", nil,
			withMessages(`{"role":"user","content":[{"type":"image","source":{"type":"data_url","url":"data:x"}}]}`), 400, "invalid_request_error",
			"messages.0.content.0.source: Input tag 'data_url' found using 'type' does not match any of the expected tags: 'base64', 'url', 'file'"},
		{"a tool_use whose input is OpenAI's arguments string is refused", nil,
			withMessages(ask, `{"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"f","input":"{\"a\":1}"}]}`), 400, "invalid_request_error",
			"messages.1.content.0.input: Input should be a valid dictionary"},
		{"a tool_use without input is refused", nil,
			withMessages(ask, `{"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"f"}]}`), 400, "invalid_request_error",
			"messages.1.content.0.input: Field required"},
		{"a tool_use without an id is refused", nil,
			withMessages(ask, `{"role":"assistant","content":[{"type":"tool_use","name":"f","input":{}}]}`), 400, "invalid_request_error",
			"messages.1.content.0.id: Field required"},
		{"a tool_result without tool_use_id is refused", nil,
			withMessages(ask, toolUse, `{"role":"user","content":[{"type":"tool_result","content":"x"}]}`), 400, "invalid_request_error",
			"messages.2.content.0.tool_use_id: Field required"},
		{"a tool_use answered by plain text is refused", nil, withMessages(ask, toolUse, ask), 400, "invalid_request_error",
			"messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_1. Each `tool_use` block must have a corresponding `tool_result` block in the next message."},
		{"a parallel tool call answered only in part is refused, naming the unanswered id", nil,
			withMessages(ask, toolUse2, toolResult), 400, "invalid_request_error",
			"messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_2. Each `tool_use` block must have a corresponding `tool_result` block in the next message."},
		{"a tool_result answering no tool_use is refused", nil, withMessages(ask, `{"role":"assistant","content":"Hi"}`, toolResult), 400, "invalid_request_error",
			"messages.2.content.0: unexpected `tool_use_id` found in `tool_result` blocks: toolu_1. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."},
		{"a tool_result two turns after its tool_use is refused", nil, withMessages(ask, toolUse, toolResult, `{"role":"assistant","content":"ok"}`, toolResult), 400, "invalid_request_error",
			"messages.4.content.0: unexpected `tool_use_id` found in `tool_result` blocks: toolu_1. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."},
		{"a system block that is not text is refused", nil, `{"model":"m","max_tokens":8,"system":[{"type":"image","source":{"type":"url","url":"u"}}],` + hello + `}`, 400, "invalid_request_error",
			"system.0.type: Input should be 'text'"},
		{"a numeric system prompt is refused as the wrong type", nil, `{"model":"m","max_tokens":8,"system":1,` + hello + `}`, 400, "invalid_request_error",
			"system: Input should be a valid list"},
		{"a temperature above 1 is refused: Anthropic's range is narrower than OpenAI's", nil, helloMessage(`,"temperature":1.5`), 400, "invalid_request_error",
			"temperature: Input should be less than or equal to 1"},
		{"a negative temperature is refused", nil, helloMessage(`,"temperature":-0.1`), 400, "invalid_request_error",
			"temperature: Input should be greater than or equal to 0"},
		{"a top_p above 1 is refused", nil, helloMessage(`,"top_p":2`), 400, "invalid_request_error", "top_p: Input should be less than or equal to 1"},
		{"a string stop_sequences is refused as the wrong type", nil, helloMessage(`,"stop_sequences":"END"`), 400, "invalid_request_error",
			"stop_sequences: Input should be a valid list"},
		{"a whitespace-only stop sequence is refused", nil, helloMessage(`,"stop_sequences":["END"," \n"]`), 400, "invalid_request_error",
			"stop_sequences.1: stop sequences must contain non-whitespace characters"},
		{"a string stream flag is refused as the wrong type", nil, helloMessage(`,"stream":"yes"`), 400, "invalid_request_error", "stream: Input should be a valid boolean"},
		{"a tool without input_schema is refused", nil, helloMessage(`,"tools":[{"name":"f","description":"d"}]`), 400, "invalid_request_error",
			"tools.0.custom.input_schema: Field required"},
		{"a tool whose input_schema is not an object schema is refused", nil, helloMessage(`,"tools":[{"name":"f","input_schema":{}}]`), 400, "invalid_request_error",
			"tools.0.custom.input_schema.type: Input should be 'object'"},
		{"an OpenAI-shaped tool is refused untranslated", nil, helloMessage(`,"tools":[{"type":"custom","function":{"name":"f","parameters":{"type":"object"}}}]`), 400, "invalid_request_error",
			"tools.0.custom.name: String should match pattern '^[a-zA-Z0-9_-]{1,128}$'"},
		{"a tool name with a dot is refused", nil, helloMessage(`,"tools":[{"name":"a.b","input_schema":{"type":"object"}}]`), 400, "invalid_request_error",
			"tools.0.custom.name: String should match pattern '^[a-zA-Z0-9_-]{1,128}$'"},
		{"OpenAI's tool_choice required is refused", nil, helloMessage(`,"tool_choice":{"type":"required"}`), 400, "invalid_request_error",
			"tool_choice: Input tag 'required' found using 'type' does not match any of the expected tags: 'auto', 'any', 'tool', 'none'"},
		{"a string tool_choice is refused as the wrong type", nil, helloMessage(`,"tool_choice":"auto"`), 400, "invalid_request_error",
			"tool_choice: Input should be a valid dictionary"},
		{"tool_choice tool without a name is refused", nil, helloMessage(`,"tool_choice":{"type":"tool"}`), 400, "invalid_request_error",
			"tool_choice.tool.name: Field required"},
		{"a body that is not an object is refused", nil, `["model"]`, 400, "invalid_request_error", "Input should be a valid dictionary"},
		{"malformed JSON is refused", nil, `{"model":"m",`, 400, "invalid_request_error", "There was an error parsing the body: the request body is not valid JSON"},
		{"an empty body is refused", nil, ``, 400, "invalid_request_error", "There was an error parsing the body: the request body is not valid JSON"},
		{"a body declared over 16 MiB is refused as request_too_large", nil, hugeBody, 413, "request_too_large", errTooLarge.message},
		{"a body of unknown length is refused once it passes 16 MiB", nil, unknownLength + hugeBody, 413, "request_too_large", errTooLarge.message},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTestHandler(Config{})
			var body io.Reader = strings.NewReader(tt.body) // sets Content-Length
			if rest, ok := strings.CutPrefix(tt.body, unknownLength); ok {
				body = io.MultiReader(strings.NewReader(rest))
			}
			req := httptest.NewRequest(http.MethodPost, "/v1/messages", body)
			req.Header = http.Header{"Anthropic-Version": {"2023-06-01"}, "X-Api-Key": {"k"}}
			if tt.header != nil {
				req.Header = tt.header
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.wantStatus, rec.Body)
			}
			var e anthropicError
			decodeStrict(t, rec.Body.Bytes(), &e)
			if e.Type != "error" || e.Error.Type != tt.wantType || e.Error.Message != tt.wantMsg {
				t.Errorf("error %s\nwant type %q message %q", rec.Body, tt.wantType, tt.wantMsg)
			}
			if ct, retry := rec.Header().Get("Content-Type"), rec.Header().Get("X-Should-Retry"); ct != "application/json" || retry != "false" {
				t.Errorf("Content-Type %q x-should-retry %q", ct, retry)
			}
			if n := h.requests.Load(); n != 0 {
				t.Errorf("a refused request was counted (%d)", n)
			}
		})
	}
}

func TestMessagesAcceptedRequests(t *testing.T) {
	tests := []struct {
		name   string
		header http.Header // replaces the SDK's headers when set
		body   string
	}{
		{"a request without x-api-key is served: the mock has no keys to check", http.Header{"Anthropic-Version": {"2023-06-01"}}, helloMessage(``)},
		{"the older anthropic-version 2023-01-01 is accepted", http.Header{"Anthropic-Version": {"2023-01-01"}}, helloMessage(``)},
		{"a tool call and its result round trip", nil, withMessages(ask, toolUse, toolResult)},
		{"parallel tool calls answered in one message in any order", nil,
			withMessages(ask, toolUse2, `{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_2","content":[{"type":"text","text":"b"}]},{"type":"tool_result","tool_use_id":"toolu_1","content":"a","is_error":true},{"type":"text","text":"thanks"}]}`)},
		{"tool results split over consecutive user messages count as one turn", nil,
			withMessages(ask, toolUse2, `{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1"}]}`, `{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_2"}]}`)},
		{"a final assistant turn with tool_use awaits its results", nil, withMessages(ask, toolUse)},
		{"consecutive same-role turns are accepted, as the API combines them", nil, withMessages(ask, ask, `{"role":"assistant","content":"a"}`, `{"role":"assistant","content":"b"}`)},
		{"a conversation may start with the assistant", nil, withMessages(`{"role":"assistant","content":"Hi"}`, ask)},
		{"an empty final assistant message is a prefill", nil, withMessages(ask, `{"role":"assistant","content":""}`)},
		{"images by URL and base64 and documents are accepted", nil, withMessages(`{"role":"user","content":[` +
			`{"type":"image","source":{"type":"url","url":"https://x/y.png"}},` +
			`{"type":"image","source":{"type":"base64","media_type":"image/webp","data":"UklG"}},` +
			`{"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVBE"}},` +
			`{"type":"text","text":"Describe these."}]}`)},
		{"thinking blocks passed back are accepted", nil, withMessages(ask, `{"role":"assistant","content":[{"type":"thinking","thinking":"hm","signature":"sig"},{"type":"text","text":"ok"}]}`, ask)},
		{"temperature and top_p at the ends of their range are accepted", nil, helloMessage(`,"temperature":1,"top_p":0`)},
		{"server tools are accepted without an input schema", nil, helloMessage(`,"tools":[{"type":"web_search_20250305","name":"web_search","max_uses":3},{"type":"custom","name":"f-1_x","input_schema":{"type":"object","properties":{}}}]`)},
		{"every tool_choice type is accepted", nil, helloMessage(`,"tool_choice":{"type":"any","disable_parallel_tool_use":true}`)},
		{"tool_choice tool with a name is accepted", nil, helloMessage(`,"tool_choice":{"type":"tool","name":"f"}`)},
		{"null optional fields are accepted", nil, helloMessage(`,"system":null,"temperature":null,"stop_sequences":null,"tools":null,"tool_choice":null`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := newMessagesRequest(http.MethodPost, "/v1/messages", tt.body)
			if tt.header != nil {
				req.Header = tt.header
			}
			rec := httptest.NewRecorder()
			newTestHandler(Config{ReplyTokens: 2}).ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			var m anthropicMessage
			decodeStrict(t, rec.Body.Bytes(), &m)
		})
	}
}
