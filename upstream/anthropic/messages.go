package anthropic

import (
	"encoding/json"
	"strconv"
	"strings"
	"unicode"
)

// block is one content block of a Messages API request: text, image,
// tool_use or tool_result. Only the fields of its type are set.
type block struct {
	Type         string          `json:"type"`
	Text         string          `json:"text,omitempty"`
	Source       *imageSource    `json:"source,omitempty"`
	ID           string          `json:"id,omitempty"`
	Name         string          `json:"name,omitempty"`
	Input        json.RawMessage `json:"input,omitempty"`
	ToolUseID    string          `json:"tool_use_id,omitempty"`
	Content      any             `json:"content,omitempty"` // tool_result: a string or text blocks
	CacheControl json.RawMessage `json:"cache_control,omitempty"`
}

type imageSource struct {
	Type      string `json:"type"`
	MediaType string `json:"media_type,omitempty"`
	Data      string `json:"data,omitempty"`
	URL       string `json:"url,omitempty"`
}

// turn is one message of the request. Anthropic wants user and assistant
// turns to alternate, so consecutive messages that map to one role become
// one turn.
type turn struct {
	Role    string
	Content []block
}

// MarshalJSON writes a turn of one plain text block in the string shorthand,
// as clients usually write it, and any other turn as an array of blocks.
func (t turn) MarshalJSON() ([]byte, error) {
	type long struct {
		Role    string  `json:"role"`
		Content []block `json:"content"`
	}
	type short struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	if len(t.Content) == 1 && t.Content[0].Type == "text" && t.Content[0].CacheControl == nil {
		return marshal(nil, short{t.Role, t.Content[0].Text})
	}
	return marshal(nil, long(t))
}

// Image media types Anthropic accepts in a base64 source.
var imageTypes = map[string]string{
	"image/jpeg": "image/jpeg",
	"image/jpg":  "image/jpeg", // not registered, but some clients write it
	"image/png":  "image/png",
	"image/gif":  "image/gif",
	"image/webp": "image/webp",
}

// translateMessages hoists system and developer messages into the system
// blocks and maps the others to alternating turns.
func translateMessages(raw json.RawMessage) (system []block, turns []turn, _ *RequestError) {
	if absent(raw) {
		return nil, nil, missing("messages")
	}
	msgs, err := array(raw, "messages")
	if err != nil {
		return nil, nil, err
	}
	for i, raw := range msgs {
		p := "messages[" + strconv.Itoa(i) + "]"
		m, err := object(raw, p)
		if err != nil {
			return nil, nil, err
		}
		role, err := requiredString(m["role"], p+".role")
		if err != nil {
			return nil, nil, err
		}
		var blocks []block
		switch role {
		case "system", "developer":
			texts, err := textParts(m["content"], p, false)
			if err != nil {
				return nil, nil, err
			}
			system = append(system, texts...)
			continue
		case "user":
			blocks, err = userContent(m["content"], p)
		case "assistant":
			blocks, err = assistantContent(m, p)
		case "tool":
			blocks, err = toolResult(m, p)
			role = "user"
		case "function":
			err = &RequestError{Param: p + ".role", Code: codeUnsupportedValue,
				Message: "This model does not support the deprecated 'function' role: use 'tools' and 'tool' messages."}
		default:
			err = &RequestError{Param: p + ".role", Code: codeValue,
				Message: "Invalid value for '" + p + ".role': supported values are 'system', 'developer', 'user', 'assistant' and 'tool'."}
		}
		if err != nil {
			return nil, nil, err
		}
		if len(blocks) == 0 {
			continue // Anthropic refuses empty turns; an empty message says nothing
		}
		if n := len(turns); n > 0 && turns[n-1].Role == role {
			turns[n-1].Content = append(turns[n-1].Content, blocks...)
		} else {
			turns = append(turns, turn{Role: role, Content: blocks})
		}
	}
	for i := range turns {
		if turns[i].Role == "user" {
			toolResultsFirst(turns[i].Content)
		}
	}
	turns = trimPrefill(turns)
	if len(turns) == 0 {
		return nil, nil, &RequestError{Param: "messages", Code: codeValue,
			Message: "Invalid 'messages': this model needs at least one user or assistant message with content besides the system messages."}
	}
	return system, turns, nil
}

// textParts reads a content that may only hold text: a string or an array
// of text parts (refusal parts too, as text, for an assistant).
func textParts(raw json.RawMessage, p string, refusals bool) ([]block, *RequestError) {
	if absent(raw) {
		return nil, nil
	}
	if raw[0] == '"' {
		s, _ := rawString(raw)
		return appendText(nil, s, nil), nil
	}
	parts, err := array(raw, p+".content")
	if err != nil {
		return nil, wrongType(raw, p+".content", "a string or an array of content parts")
	}
	var blocks []block
	for j, raw := range parts {
		pp := p + ".content[" + strconv.Itoa(j) + "]"
		part, typ, err := contentPart(raw, pp)
		if err != nil {
			return nil, err
		}
		switch {
		case typ == "text":
			if blocks, err = textPart(blocks, part, pp); err != nil {
				return nil, err
			}
		case typ == "refusal" && refusals:
			s, err := requiredString(part["refusal"], pp+".refusal")
			if err != nil {
				return nil, err
			}
			blocks = appendText(blocks, s, nil)
		default:
			return nil, unsupportedPart(pp, typ)
		}
	}
	return blocks, nil
}

// userContent reads a user message's content: text and images.
func userContent(raw json.RawMessage, p string) ([]block, *RequestError) {
	if absent(raw) {
		return nil, missing(p + ".content")
	}
	if raw[0] == '"' {
		s, _ := rawString(raw)
		return appendText(nil, s, nil), nil
	}
	parts, err := array(raw, p+".content")
	if err != nil {
		return nil, wrongType(raw, p+".content", "a string or an array of content parts")
	}
	var blocks []block
	for j, raw := range parts {
		pp := p + ".content[" + strconv.Itoa(j) + "]"
		part, typ, err := contentPart(raw, pp)
		if err != nil {
			return nil, err
		}
		switch typ {
		case "text":
			blocks, err = textPart(blocks, part, pp)
		case "image_url":
			blocks, err = imagePart(blocks, part, pp)
		default:
			err = unsupportedPart(pp, typ)
		}
		if err != nil {
			return nil, err
		}
	}
	return blocks, nil
}

// contentPart decodes a content part and its type.
func contentPart(raw json.RawMessage, pp string) (map[string]json.RawMessage, string, *RequestError) {
	part, err := object(raw, pp)
	if err != nil {
		return nil, "", err
	}
	typ, err := requiredString(part["type"], pp+".type")
	return part, typ, err
}

func unsupportedPart(pp, typ string) *RequestError {
	return &RequestError{Param: pp + ".type", Code: codeUnsupportedValue,
		Message: "This model does not support content parts of type '" + typ + "' here: use 'text' (and 'image_url' in user messages)."}
}

func textPart(blocks []block, part map[string]json.RawMessage, pp string) ([]block, *RequestError) {
	s, err := requiredString(part["text"], pp+".text")
	if err != nil {
		return nil, err
	}
	cc, err := cacheControl(part, pp)
	if err != nil {
		return nil, err
	}
	return appendText(blocks, s, cc), nil
}

// appendText appends a text block unless s is blank: Anthropic refuses text
// blocks that are empty or hold only white space.
func appendText(blocks []block, s string, cc json.RawMessage) []block {
	if strings.TrimSpace(s) == "" {
		return blocks
	}
	return append(blocks, block{Type: "text", Text: s, CacheControl: cc})
}

// cacheControl passes on a part's cache_control, the prompt caching marker
// that clients of Anthropic models through OpenAI-compatible gateways put on
// content parts.
func cacheControl(part map[string]json.RawMessage, pp string) (json.RawMessage, *RequestError) {
	raw := part["cache_control"]
	if absent(raw) {
		return nil, nil
	}
	if raw[0] != '{' {
		return nil, wrongType(raw, pp+".cache_control", "an object")
	}
	return raw, nil
}

// imagePart maps image_url: a base64 data URL becomes a base64 source, an
// http(s) URL a url source. detail has no equivalent and is dropped.
func imagePart(blocks []block, part map[string]json.RawMessage, pp string) ([]block, *RequestError) {
	raw := part["image_url"]
	url, param := "", pp+".image_url"
	if len(raw) > 0 && raw[0] == '"' { // a bare URL, as some clients send it
		url, _ = rawString(raw)
	} else {
		img, err := requiredObject(raw, param)
		if err != nil {
			return nil, err
		}
		param += ".url"
		if url, err = requiredString(img["url"], param); err != nil {
			return nil, err
		}
	}
	src, err := imageSourceOf(url, param)
	if err != nil {
		return nil, err
	}
	cc, err := cacheControl(part, pp)
	if err != nil {
		return nil, err
	}
	return append(blocks, block{Type: "image", Source: src, CacheControl: cc}), nil
}

func imageSourceOf(url, param string) (*imageSource, *RequestError) {
	scheme, rest, _ := strings.Cut(url, ":")
	switch strings.ToLower(scheme) {
	case "http", "https":
		return &imageSource{Type: "url", URL: url}, nil
	case "data":
	default:
		return nil, &RequestError{Param: param, Code: codeValue,
			Message: "Invalid '" + param + "': expected an http(s) URL or a base64 data URL of an image."}
	}
	meta, data, ok := strings.Cut(rest, ",")
	params := strings.Split(meta, ";")
	base64 := false
	for _, p := range params[1:] {
		base64 = base64 || strings.EqualFold(strings.TrimSpace(p), "base64")
	}
	if !ok || !base64 || data == "" {
		return nil, &RequestError{Param: param, Code: codeValue,
			Message: "Invalid '" + param + "': a data URL must be base64, as in data:image/png;base64,..."}
	}
	mediaType, known := imageTypes[strings.ToLower(strings.TrimSpace(params[0]))]
	if !known {
		return nil, &RequestError{Param: param, Code: codeUnsupportedValue,
			Message: "This model accepts images of type image/jpeg, image/png, image/gif and image/webp only."}
	}
	return &imageSource{Type: "base64", MediaType: mediaType, Data: data}, nil
}

// assistantContent maps an assistant message: its text, then a tool_use
// block for each tool call. A refusal stands in for text when there is none.
func assistantContent(m map[string]json.RawMessage, p string) ([]block, *RequestError) {
	if !absent(m["function_call"]) {
		return nil, &RequestError{Param: p + ".function_call", Code: codeUnsupportedParam,
			Message: "This model does not support the deprecated 'function_call': use 'tool_calls'."}
	}
	blocks, err := textParts(m["content"], p, true)
	if err != nil {
		return nil, err
	}
	if len(blocks) == 0 && !absent(m["refusal"]) {
		s, err := requiredString(m["refusal"], p+".refusal")
		if err != nil {
			return nil, err
		}
		blocks = appendText(blocks, s, nil)
	}
	raw := m["tool_calls"]
	if absent(raw) {
		return blocks, nil
	}
	calls, err := array(raw, p+".tool_calls")
	if err != nil {
		return nil, err
	}
	for j, raw := range calls {
		b, err := toolUse(raw, p+".tool_calls["+strconv.Itoa(j)+"]")
		if err != nil {
			return nil, err
		}
		blocks = append(blocks, b)
	}
	return blocks, nil
}

// toolUse maps one assistant tool call. Its arguments, a string of JSON,
// become the block's input object; empty arguments mean no arguments.
func toolUse(raw json.RawMessage, p string) (block, *RequestError) {
	c, err := object(raw, p)
	if err != nil {
		return block{}, err
	}
	if raw := c["type"]; !absent(raw) {
		typ, err := requiredString(raw, p+".type")
		if err != nil {
			return block{}, err
		}
		if typ != "function" {
			return block{}, &RequestError{Param: p + ".type", Code: codeUnsupportedValue,
				Message: "This model supports only tool calls of type 'function', not '" + typ + "'."}
		}
	}
	id, err := nonEmptyString(c["id"], p+".id")
	if err != nil {
		return block{}, err
	}
	fn, err := requiredObject(c["function"], p+".function")
	if err != nil {
		return block{}, err
	}
	name, err := nonEmptyString(fn["name"], p+".function.name")
	if err != nil {
		return block{}, err
	}
	input := json.RawMessage(`{}`)
	if raw := fn["arguments"]; !absent(raw) {
		args, err := requiredString(raw, p+".function.arguments")
		if err != nil {
			return block{}, err
		}
		if args = strings.TrimSpace(args); args != "" {
			if !json.Valid([]byte(args)) || args[0] != '{' {
				return block{}, &RequestError{Param: p + ".function.arguments", Code: codeValue,
					Message: "Invalid '" + p + ".function.arguments': expected a JSON object in a string."}
			}
			input = json.RawMessage(args)
		}
	}
	return block{Type: "tool_use", ID: toolID(id), Name: name, Input: input}, nil
}

// toolResult maps a tool message to a tool_result block, which goes in a
// user turn.
func toolResult(m map[string]json.RawMessage, p string) ([]block, *RequestError) {
	id, err := nonEmptyString(m["tool_call_id"], p+".tool_call_id")
	if err != nil {
		return nil, err
	}
	raw := m["content"]
	if absent(raw) {
		return nil, missing(p + ".content")
	}
	b := block{Type: "tool_result", ToolUseID: toolID(id)}
	if raw[0] == '"' {
		if s, _ := rawString(raw); s != "" {
			b.Content = s
		}
		return []block{b}, nil
	}
	texts, err := textParts(raw, p, false)
	if err != nil {
		return nil, err
	}
	if len(texts) > 0 {
		b.Content = texts
	}
	return []block{b}, nil
}

// toolID makes a tool call id acceptable to Anthropic, which allows only
// letters, digits, '_' and '-'. Ids from OpenAI (call_...) and Anthropic
// (toolu_...) pass unchanged; others, replayed from another provider's
// history, have each other byte replaced by '_'. The same id maps the same
// way in the tool_use and the tool_result, so the pair still matches.
func toolID(id string) string {
	for i := 0; i < len(id); i++ {
		if !idByte(id[i]) {
			b := []byte(id)
			for j := i; j < len(b); j++ {
				if !idByte(b[j]) {
					b[j] = '_'
				}
			}
			return string(b)
		}
	}
	return id
}

func idByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// toolResultsFirst moves a user turn's tool_result blocks before its other
// blocks, keeping their order: Anthropic wants the results of the previous
// turn's tool calls to open the turn that answers them.
func toolResultsFirst(blocks []block) {
	n := 0
	for i := range blocks {
		if blocks[i].Type == "tool_result" {
			b := blocks[i]
			copy(blocks[n+1:i+1], blocks[n:i])
			blocks[n] = b
			n++
		}
	}
}

// trimPrefill trims trailing white space from a final assistant turn that
// ends in text, a prefill Anthropic refuses otherwise, dropping the block or
// the turn if nothing is left.
func trimPrefill(turns []turn) []turn {
	n := len(turns)
	if n == 0 || turns[n-1].Role != "assistant" {
		return turns
	}
	t := &turns[n-1]
	last := &t.Content[len(t.Content)-1]
	if last.Type != "text" {
		return turns
	}
	last.Text = strings.TrimRightFunc(last.Text, unicode.IsSpace)
	if last.Text == "" {
		t.Content = t.Content[:len(t.Content)-1]
	}
	if len(t.Content) == 0 {
		return turns[:n-1]
	}
	return turns
}
