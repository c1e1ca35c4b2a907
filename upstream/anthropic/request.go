package anthropic

import (
	"encoding/json"
	"strconv"
	"strings"
)

// Version is the anthropic-version header value the gateway sends.
const Version = "2023-06-01"

// DefaultMaxTokens is the output cap sent when neither the client nor
// RequestOptions gives one: Anthropic requires max_tokens, and 0 would ask
// for no output at all.
const DefaultMaxTokens = 4096

// RequestOptions say what the translated request must carry.
type RequestOptions struct {
	// Model is the deployment's model id (it goes in "model").
	Model string
	// MaxTokens is the output cap when the client set neither
	// max_completion_tokens nor max_tokens: the model's max_output_tokens
	// or the gateway default. It should be > 0; if it is not,
	// DefaultMaxTokens applies. MaxOutputTokens, when > 0, is the model's
	// cap: a client's larger value is lowered to it.
	MaxTokens, MaxOutputTokens int64
	// Stream asks for server-sent events.
	Stream bool
}

// RequestError is a client request that cannot be translated: the proxy
// answers it with 400 and OpenAI's error envelope. Param names the field the
// way OpenAI does ("messages[2].content[0].type"), "" for the body as a whole;
// Code is "invalid_type", "invalid_value", "missing_required_parameter",
// "unsupported_parameter" or "unsupported_value" ("" when the body is not a
// JSON object); Message is for the client.
type RequestError struct{ Param, Code, Message string }

// Error returns the message meant for the client.
func (e *RequestError) Error() string { return e.Message }

// Codes of RequestError, after OpenAI's.
const (
	codeType             = "invalid_type"
	codeValue            = "invalid_value"
	codeMissing          = "missing_required_parameter"
	codeUnsupportedParam = "unsupported_parameter"
	codeUnsupportedValue = "unsupported_value"
)

// request is the Messages API body, in the order Anthropic documents it.
type request struct {
	Model         string           `json:"model"`
	MaxTokens     int64            `json:"max_tokens"`
	System        []block          `json:"system,omitempty"`
	Messages      []turn           `json:"messages"`
	Temperature   *float64         `json:"temperature,omitempty"`
	TopP          *float64         `json:"top_p,omitempty"`
	StopSequences []string         `json:"stop_sequences,omitempty"`
	Stream        bool             `json:"stream,omitempty"`
	Tools         []tool           `json:"tools,omitempty"`
	ToolChoice    *toolChoice      `json:"tool_choice,omitempty"`
	Metadata      *requestMetadata `json:"metadata,omitempty"`
}

type requestMetadata struct {
	UserID string `json:"user_id"`
}

// refusedParams are OpenAI parameters the gateway refuses for Anthropic
// models when they ask for something: silently dropping them would change
// the answer the client gets, or its shape.
var refusedParams = [...]struct{ name, why string }{
	{"audio", "audio output"},
	{"functions", "the deprecated 'functions' (use 'tools')"},
	{"function_call", "the deprecated 'function_call' (use 'tool_choice')"},
	{"web_search_options", "web search"},
}

// AppendRequest appends the Messages API body for body, an OpenAI chat
// completions request that openai.ScanRequest has already accepted. Every
// error it returns is a *RequestError. The mapping is described in the
// package documentation.
func AppendRequest(dst, body []byte, o RequestOptions) ([]byte, error) {
	req, err := translate(body, o)
	if err != nil {
		return dst, err
	}
	out, merr := marshal(dst, req)
	if merr != nil { // unreachable: every raw value was validated
		return dst, &RequestError{Message: "The request could not be translated for this model's provider."}
	}
	return out, nil
}

func translate(body []byte, o RequestOptions) (*request, *RequestError) {
	// Values passed on raw (schemas, cache_control) must not carry invalid
	// UTF-8 to the upstream.
	body = validUTF8(body)
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil || top == nil {
		return nil, &RequestError{Message: "We could not parse the JSON body of your request: it must be one valid JSON object."}
	}
	for _, p := range refusedParams {
		if !absent(top[p.name]) {
			return nil, &RequestError{Param: p.name, Code: codeUnsupportedParam,
				Message: "This model does not support " + p.why + "."}
		}
	}
	if err := refuseUnsupported(top); err != nil {
		return nil, err
	}

	req := &request{Model: o.Model, Stream: o.Stream}
	var err *RequestError
	if req.System, req.Messages, err = translateMessages(top["messages"]); err != nil {
		return nil, err
	}
	if req.MaxTokens, err = maxTokens(top, o); err != nil {
		return nil, err
	}
	if req.Temperature, err = optionalNumber(top["temperature"], "temperature", 2); err != nil {
		return nil, err
	}
	if req.Temperature != nil && *req.Temperature > 1 {
		one := 1.0 // Anthropic's range is 0-1; 1 is its default and its most random
		req.Temperature = &one
	}
	if req.TopP, err = optionalNumber(top["top_p"], "top_p", 1); err != nil {
		return nil, err
	}
	if req.TopP != nil && *req.TopP == 1 {
		// 1 is top_p's default, a no-op; newer Claude models refuse
		// temperature and top_p together, and clients send top_p 1
		// alongside a temperature by habit.
		req.TopP = nil
	}
	if req.StopSequences, err = stopSequences(top["stop"]); err != nil {
		return nil, err
	}
	if req.Tools, err = translateTools(top["tools"]); err != nil {
		return nil, err
	}
	if req.ToolChoice, err = translateToolChoice(top["tool_choice"], len(req.Tools) > 0); err != nil {
		return nil, err
	}
	parallel, err := optionalBool(top["parallel_tool_calls"], "parallel_tool_calls")
	if err != nil {
		return nil, err
	}
	if parallel != nil && !*parallel && len(req.Tools) > 0 {
		if req.ToolChoice == nil {
			req.ToolChoice = &toolChoice{Type: "auto"}
		}
		if req.ToolChoice.Type != "none" {
			req.ToolChoice.DisableParallelToolUse = true
		}
	}
	if req.Metadata, err = userID(top); err != nil {
		return nil, err
	}
	return req, nil
}

// refuseUnsupported refuses values of OpenAI parameters that ask for what
// Anthropic cannot give: several choices, log probabilities, a JSON
// response format, audio output, token biases.
func refuseUnsupported(top map[string]json.RawMessage) *RequestError {
	if raw := top["n"]; !absent(raw) {
		n, err := integer(raw, "n")
		if err != nil {
			return err
		}
		if n != 1 {
			return &RequestError{Param: "n", Code: codeUnsupportedValue,
				Message: "This model supports only n=1: it generates one choice per request."}
		}
	}
	if b, err := optionalBool(top["logprobs"], "logprobs"); err != nil {
		return err
	} else if b != nil && *b {
		return &RequestError{Param: "logprobs", Code: codeUnsupportedParam,
			Message: "This model does not return log probabilities: set 'logprobs' to false or leave it out."}
	}
	if raw := top["top_logprobs"]; !absent(raw) && string(raw) != "0" {
		return &RequestError{Param: "top_logprobs", Code: codeUnsupportedParam,
			Message: "This model does not return log probabilities: leave 'top_logprobs' out."}
	}
	if raw := top["logit_bias"]; !absent(raw) {
		m, err := object(raw, "logit_bias")
		if err != nil {
			return err
		}
		if len(m) > 0 {
			return &RequestError{Param: "logit_bias", Code: codeUnsupportedParam,
				Message: "This model does not support 'logit_bias': its tokens are not OpenAI's."}
		}
	}
	if raw := top["response_format"]; !absent(raw) {
		m, err := object(raw, "response_format")
		if err != nil {
			return err
		}
		typ, err := requiredString(m["type"], "response_format.type")
		if err != nil {
			return err
		}
		if typ != "text" {
			return &RequestError{Param: "response_format", Code: codeUnsupportedValue,
				Message: "This model does not support 'response_format' of type '" + typ + "': only 'text'. Describe the JSON you want in the prompt, or use a tool."}
		}
	}
	if raw := top["modalities"]; !absent(raw) {
		items, err := array(raw, "modalities")
		if err != nil {
			return err
		}
		for i, it := range items {
			p := "modalities[" + strconv.Itoa(i) + "]"
			m, err := requiredString(it, p)
			if err != nil {
				return err
			}
			if m != "text" {
				return &RequestError{Param: p, Code: codeUnsupportedValue,
					Message: "This model supports only the 'text' output modality."}
			}
		}
	}
	return nil
}

// maxTokens is max_completion_tokens, else max_tokens, lowered to the
// model's cap; else the configured default.
func maxTokens(top map[string]json.RawMessage, o RequestOptions) (int64, *RequestError) {
	for _, name := range [...]string{"max_completion_tokens", "max_tokens"} {
		raw := top[name]
		if absent(raw) {
			continue
		}
		n, err := integer(raw, name)
		if err != nil {
			return 0, err
		}
		if n < 1 {
			return 0, &RequestError{Param: name, Code: codeValue,
				Message: "Invalid '" + name + "': expected an integer from 1 to 9223372036854775807."}
		}
		if o.MaxOutputTokens > 0 && n > o.MaxOutputTokens {
			n = o.MaxOutputTokens
		}
		return n, nil
	}
	n := o.MaxTokens
	if n <= 0 {
		n = DefaultMaxTokens
	}
	if o.MaxOutputTokens > 0 && n > o.MaxOutputTokens {
		n = o.MaxOutputTokens
	}
	return n, nil
}

// stopSequences wraps a string in an array and drops entries that are empty
// or white space only, which Anthropic refuses.
func stopSequences(raw json.RawMessage) ([]string, *RequestError) {
	if absent(raw) {
		return nil, nil
	}
	if raw[0] == '"' {
		s, _ := rawString(raw)
		if strings.TrimSpace(s) == "" {
			return nil, nil
		}
		return []string{s}, nil
	}
	if raw[0] != '[' {
		return nil, wrongType(raw, "stop", "a string or an array of strings")
	}
	items, err := array(raw, "stop")
	if err != nil {
		return nil, err
	}
	var out []string
	for i, it := range items {
		s, err := requiredString(it, "stop["+strconv.Itoa(i)+"]")
		if err != nil {
			return nil, err
		}
		if strings.TrimSpace(s) != "" {
			out = append(out, s)
		}
	}
	return out, nil
}

// userID maps safety_identifier, else user, to metadata.user_id. Anthropic
// refuses ids that look like personal data; those are dropped rather than
// fail a request over an abuse-tracking hint.
func userID(top map[string]json.RawMessage) (*requestMetadata, *RequestError) {
	for _, name := range [...]string{"safety_identifier", "user"} {
		raw := top[name]
		if absent(raw) {
			continue
		}
		s, err := requiredString(raw, name)
		if err != nil {
			return nil, err
		}
		if s == "" || looksPersonal(s) {
			return nil, nil
		}
		return &requestMetadata{UserID: s}, nil
	}
	return nil, nil
}

// looksPersonal reports whether id looks like an email address or a phone
// number: 7 or more digits written with a leading '+' or with separators.
// Bare digits are taken for the database id they usually are.
func looksPersonal(id string) bool {
	if strings.Contains(id, "@") {
		return true
	}
	digits, marks := 0, 0
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case c >= '0' && c <= '9':
			digits++
		case c == '+' || c == '-' || c == ' ' || c == '(' || c == ')' || c == '.':
			marks++
		default:
			return false
		}
	}
	return digits >= 7 && marks > 0
}
