package mock

import (
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"strings"
)

// anthropicVersions are the values of the anthropic-version header the API
// accepts; both SDKs send 2023-06-01.
var anthropicVersions = map[string]bool{"2023-06-01": true, "2023-01-01": true}

// messagesRequest is what the mock reads of an Anthropic Messages request.
// It checks what a translating gateway most often gets wrong (a missing
// max_tokens, roles, empty content, tool_use input sent as a string,
// tool_use and tool_result pairing, OpenAI's part types leaking through,
// temperatures above 1); other fields are accepted and ignored.
type messagesRequest struct {
	Model         string       `json:"model"`
	MaxTokens     *int         `json:"max_tokens"`
	Messages      []message    `json:"messages"`
	System        systemPrompt `json:"system"`
	Stream        bool         `json:"stream"`
	Temperature   *float64     `json:"temperature"`
	TopP          *float64     `json:"top_p"`
	StopSequences []string     `json:"stop_sequences"`
	Tools         []tool       `json:"tools"`
	ToolChoice    *toolChoice  `json:"tool_choice"`
}

type message struct {
	Role    string         `json:"role"`
	Content messageContent `json:"content"`
}

// messageContent is a message's content: a string, or an array of blocks.
type messageContent struct {
	set    bool           // false when absent or null
	text   int            // bytes of text: the string, or the blocks' text
	empty  bool           // "" or []
	blocks []contentBlock // nil for a string
}

func (c *messageContent) UnmarshalJSON(b []byte) error {
	switch b[0] {
	case 'n':
		*c = messageContent{}
	case '"':
		var t textContent
		if err := t.UnmarshalJSON(b); err != nil {
			return err
		}
		*c = messageContent{set: true, text: int(t), empty: t == 0}
	case '[':
		var blocks []contentBlock
		if err := json.Unmarshal(b, &blocks); err != nil {
			return err
		}
		n := 0
		for _, bl := range blocks {
			if bl.Text != nil {
				n += len(*bl.Text)
			}
			n += int(bl.Content) // a tool_result's text
		}
		*c = messageContent{set: true, text: n, empty: len(blocks) == 0, blocks: blocks}
	default:
		return &json.UnmarshalTypeError{Value: jsonKind(b[0]), Type: reflect.TypeFor[[]any]()}
	}
	return nil
}

// contentBlock holds the fields of every block type the mock checks.
type contentBlock struct {
	Type      string       `json:"type"`
	Text      *string      `json:"text"`        // text
	Source    *blockSource `json:"source"`      // image, document
	ID        string       `json:"id"`          // tool_use
	Name      string       `json:"name"`        // tool_use
	Input     jsonValue    `json:"input"`       // tool_use: an object
	ToolUseID string       `json:"tool_use_id"` // tool_result
	Content   textContent  `json:"content"`     // tool_result: a string or blocks
}

type blockSource struct {
	Type      string `json:"type"`
	MediaType string `json:"media_type"`
	Data      string `json:"data"`
	URL       string `json:"url"`
}

// jsonValue records only the first byte of a JSON value: its kind. The
// zero value means absent.
type jsonValue byte

func (v *jsonValue) UnmarshalJSON(b []byte) error { *v = jsonValue(b[0]); return nil }

// blockTypes are the content block types a request may carry. OpenAI's
// part types (image_url, input_text, ...) are not among them: a gateway
// that forwards them untranslated is refused, as Anthropic refuses it.
var blockTypes = map[string]bool{
	"text": true, "image": true, "document": true, "search_result": true,
	"tool_use": true, "tool_result": true, "thinking": true, "redacted_thinking": true,
	"server_tool_use": true, "web_search_tool_result": true, "web_fetch_tool_result": true,
	"code_execution_tool_result": true, "mcp_tool_use": true, "mcp_tool_result": true,
	"container_upload": true,
}

var imageMediaTypes = map[string]bool{"image/jpeg": true, "image/png": true, "image/gif": true, "image/webp": true}

// systemPrompt is the top-level system: a string or an array of text
// blocks.
type systemPrompt struct {
	set    bool
	text   int
	blocks []contentBlock // nil for a string
}

func (s *systemPrompt) UnmarshalJSON(b []byte) error {
	var c messageContent
	if err := c.UnmarshalJSON(b); err != nil {
		return err
	}
	*s = systemPrompt{set: c.set, text: c.text, blocks: c.blocks}
	return nil
}

type tool struct {
	Type        string `json:"type"` // "", "custom", or a server tool's versioned type
	Name        string `json:"name"`
	InputSchema *struct {
		Type string `json:"type"`
	} `json:"input_schema"`
}

type toolChoice struct {
	Type string `json:"type"`
	Name string `json:"name"`
}

// decode parses and checks a Messages request held in body, refusing what
// Anthropic refuses, with messages in its style (`field.path: what`).
//
// One deliberate difference: Anthropic now accepts max_tokens 0 (warm the
// prompt cache, generate nothing); the mock refuses it, so a gateway that
// sends 0 by accident fails loudly in tests instead of billing an empty
// reply.
func (req *messagesRequest) decode(body []byte) *apiError {
	if err := json.Unmarshal(body, req); err != nil {
		return messagesDecodeError(err)
	}
	switch {
	case req.Model == "":
		return messagesInvalid("model: Field required")
	case req.MaxTokens == nil:
		return messagesInvalid("max_tokens: Field required")
	case *req.MaxTokens < 1:
		return messagesInvalid("max_tokens: Input should be greater than or equal to 1")
	case req.Messages == nil:
		return messagesInvalid("messages: Field required")
	case len(req.Messages) == 0:
		return messagesInvalid("messages: List should have at least 1 item after validation, not 0")
	}
	if e := checkRange("temperature", req.Temperature); e != nil {
		return e
	}
	if e := checkRange("top_p", req.TopP); e != nil {
		return e
	}
	for i, s := range req.StopSequences {
		if strings.TrimSpace(s) == "" {
			return messagesInvalid("stop_sequences." + strconv.Itoa(i) + ": stop sequences must contain non-whitespace characters")
		}
	}
	for i, b := range req.System.blocks {
		at := "system." + strconv.Itoa(i)
		if b.Type != "text" {
			return messagesInvalid(at + ".type: Input should be 'text'")
		}
		if e := checkBlock(at, &b); e != nil {
			return e
		}
	}
	for i, m := range req.Messages {
		at := "messages." + strconv.Itoa(i)
		switch {
		case m.Role != "user" && m.Role != "assistant":
			return messagesInvalid(at + ".role: Input should be 'user' or 'assistant'")
		case !m.Content.set:
			return messagesInvalid(at + ".content: Field required")
		case m.Content.empty && !(i == len(req.Messages)-1 && m.Role == "assistant"):
			return messagesInvalid(at + ": all messages must have non-empty content except for the optional final assistant message")
		}
		for j := range m.Content.blocks {
			if e := checkBlock(at+".content."+strconv.Itoa(j), &m.Content.blocks[j]); e != nil {
				return e
			}
		}
	}
	if e := req.checkToolPairing(); e != nil {
		return e
	}
	for i, t := range req.Tools {
		at := "tools." + strconv.Itoa(i)
		if t.Type != "" && t.Type != "custom" {
			continue // a server tool (web_search_20250305, bash_20250124, ...)
		}
		switch {
		case !validToolName(t.Name):
			return messagesInvalid(at + ".custom.name: String should match pattern '^[a-zA-Z0-9_-]{1,128}$'")
		case t.InputSchema == nil:
			return messagesInvalid(at + ".custom.input_schema: Field required")
		case t.InputSchema.Type != "object":
			return messagesInvalid(at + ".custom.input_schema.type: Input should be 'object'")
		}
	}
	if tc := req.ToolChoice; tc != nil {
		switch tc.Type {
		case "auto", "any", "none":
		case "tool":
			if tc.Name == "" {
				return messagesInvalid("tool_choice.tool.name: Field required")
			}
		default:
			return messagesInvalid("tool_choice: Input tag '" + tc.Type + "' found using 'type' does not match any of the expected tags: 'auto', 'any', 'tool', 'none'")
		}
	}
	return nil
}

func checkRange(name string, v *float64) *apiError {
	switch {
	case v == nil:
		return nil
	case *v < 0:
		return messagesInvalid(name + ": Input should be greater than or equal to 0")
	case *v > 1:
		return messagesInvalid(name + ": Input should be less than or equal to 1")
	}
	return nil
}

// checkBlock checks one content block found at the path at.
func checkBlock(at string, b *contentBlock) *apiError {
	if b.Type == "" {
		return messagesInvalid(at + ".type: Field required")
	}
	if !blockTypes[b.Type] {
		return messagesInvalid(at + ": Input tag '" + b.Type + "' found using 'type' does not match any of the expected tags: 'text', 'image', 'document', 'tool_use', 'tool_result', ...")
	}
	switch b.Type {
	case "text":
		if b.Text == nil {
			return messagesInvalid(at + ".text: Field required")
		}
		if *b.Text == "" {
			return messagesInvalid(at + ".text: text content blocks must be non-empty")
		}
	case "image":
		s := b.Source
		switch {
		case s == nil:
			return messagesInvalid(at + ".source: Field required")
		case s.Type == "base64" && !imageMediaTypes[s.MediaType]:
			return messagesInvalid(at + ".source.base64.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'")
		case s.Type == "base64" && s.Data == "":
			return messagesInvalid(at + ".source.base64.data: Field required")
		case s.Type == "url" && s.URL == "":
			return messagesInvalid(at + ".source.url.url: Field required")
		case s.Type != "base64" && s.Type != "url" && s.Type != "file":
			return messagesInvalid(at + ".source: Input tag '" + s.Type + "' found using 'type' does not match any of the expected tags: 'base64', 'url', 'file'")
		}
	case "tool_use":
		switch {
		case b.ID == "":
			return messagesInvalid(at + ".id: Field required")
		case b.Name == "":
			return messagesInvalid(at + ".name: Field required")
		case b.Input == 0:
			return messagesInvalid(at + ".input: Field required")
		case b.Input != '{':
			return messagesInvalid(at + ".input: Input should be a valid dictionary")
		}
	case "tool_result":
		if b.ToolUseID == "" {
			return messagesInvalid(at + ".tool_use_id: Field required")
		}
	}
	return nil
}

// checkToolPairing enforces Anthropic's rule that the turn after one with
// tool_use blocks answers each of them with a tool_result, and that every
// tool_result answers a tool_use of the turn before. A turn is a run of
// messages with the same role: the API combines consecutive ones.
func (req *messagesRequest) checkToolPairing() *apiError {
	var prevUses []string // tool_use ids of the previous turn
	msgs := req.Messages
	for start := 0; start < len(msgs); {
		end := start + 1
		for end < len(msgs) && msgs[end].Role == msgs[start].Role {
			end++
		}
		var uses []string
		answered := 0
		for i := start; i < end; i++ {
			for j, b := range msgs[i].Content.blocks {
				switch b.Type {
				case "tool_use":
					uses = append(uses, b.ID)
				case "tool_result":
					k := indexOf(prevUses, b.ToolUseID)
					if k < 0 {
						return messagesInvalid("messages." + strconv.Itoa(i) + ".content." + strconv.Itoa(j) +
							": unexpected `tool_use_id` found in `tool_result` blocks: " + b.ToolUseID +
							". Each `tool_result` block must have a corresponding `tool_use` block in the previous message.")
					}
					prevUses[k] = "" // answered
					answered++
				}
			}
		}
		if answered < len(prevUses) {
			var missing []string
			for _, id := range prevUses {
				if id != "" {
					missing = append(missing, id)
				}
			}
			return messagesInvalid("messages." + strconv.Itoa(start-1) +
				": `tool_use` ids were found without `tool_result` blocks immediately after: " + strings.Join(missing, ", ") +
				". Each `tool_use` block must have a corresponding `tool_result` block in the next message.")
		}
		prevUses = uses
		start = end
	}
	return nil // a final turn's tool_use blocks await their results
}

func indexOf(ids []string, id string) int {
	for i, v := range ids {
		if v == id && v != "" {
			return i
		}
	}
	return -1
}

func validToolName(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func messagesDecodeError(err error) *apiError {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		if typeErr.Field == "" {
			return messagesInvalid("Input should be a valid dictionary")
		}
		return messagesInvalid(typeErr.Field + ": Input should be " + pydanticKind(typeErr.Type))
	}
	return messagesInvalid("There was an error parsing the body: the request body is not valid JSON")
}

// pydanticKind names a Go type as Anthropic's validation errors name the
// JSON type they wanted.
func pydanticKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a valid string"
	case reflect.Bool:
		return "a valid boolean"
	case reflect.Int, reflect.Int64:
		return "a valid integer"
	case reflect.Float64:
		return "a valid number"
	case reflect.Slice:
		return "a valid list"
	default:
		return "a valid dictionary"
	}
}

// promptTokens counts like chatRequest.promptTokens, with the system
// prompt as one more message, so an OpenAI request and its translation
// (system messages hoisted into system) report the same input tokens.
func (req *messagesRequest) promptTokens() int {
	n := 3
	if req.System.set {
		n += 3 + (req.System.text+3)/4
	}
	for _, m := range req.Messages {
		n += 3 + (m.Content.text+3)/4
	}
	return n
}
