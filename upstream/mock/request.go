package mock

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// maxBodyBytes bounds a request body; larger ones get a 413.
const maxBodyBytes = 16 << 20

// chatRequest is what the mock reads of a chat completion request. Other
// fields are accepted and ignored.
type chatRequest struct {
	Model               string         `json:"model"`
	Messages            []chatMessage  `json:"messages"`
	Stream              bool           `json:"stream"`
	StreamOptions       *streamOptions `json:"stream_options"`
	MaxTokens           *int           `json:"max_tokens"`
	MaxCompletionTokens *int           `json:"max_completion_tokens"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type chatMessage struct {
	Role    string      `json:"role"`
	Content textContent `json:"content"`
}

// textContent is a message's content reduced to what prompt_tokens needs:
// the number of bytes of text it holds (a string, or the text parts of an
// array of content parts; images, audio and files count nothing).
type textContent int

func (c *textContent) UnmarshalJSON(b []byte) error {
	switch b[0] {
	case 'n': // null: an assistant message with tool_calls only
		*c = 0
	case '"':
		if plainASCII(b) { // the common case: no escapes to decode
			*c = textContent(len(b) - 2)
			return nil
		}
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*c = textContent(len(s))
	case '[':
		var parts []struct {
			Text string `json:"text"`
		}
		if err := json.Unmarshal(b, &parts); err != nil {
			return err
		}
		n := 0
		for _, p := range parts {
			n += len(p.Text)
		}
		*c = textContent(n)
	default:
		return &json.UnmarshalTypeError{Value: jsonKind(b[0]), Type: reflect.TypeFor[string]()}
	}
	return nil
}

// plainASCII reports whether a JSON string literal is printable ASCII
// without escapes, so its text is its bytes between the quotes.
func plainASCII(lit []byte) bool {
	for _, c := range lit[1 : len(lit)-1] {
		if c == '\\' || c >= 0x80 {
			return false
		}
	}
	return true
}

var roles = map[string]bool{"system": true, "developer": true, "user": true, "assistant": true, "tool": true, "function": true}

// decode parses and checks a request held in body, refusing what OpenAI
// refuses with the same status, param and code.
func (req *chatRequest) decode(body []byte) *apiError {
	if err := json.Unmarshal(body, req); err != nil {
		return decodeError(err)
	}
	if req.Model == "" {
		return invalidRequest("you must provide a model parameter", "", "")
	}
	if req.Messages == nil {
		return invalidRequest("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
	}
	if len(req.Messages) == 0 {
		return invalidRequest("Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.", "messages", "empty_array")
	}
	for i, m := range req.Messages {
		if roles[m.Role] {
			continue
		}
		param := "messages[" + strconv.Itoa(i) + "].role"
		if m.Role == "" {
			return invalidRequest("Missing required parameter: '"+param+"'.", param, "missing_required_parameter")
		}
		return invalidRequest("Invalid value: '"+m.Role+"'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'.", param, "invalid_value")
	}
	for _, f := range [...]struct {
		name string
		v    *int
	}{{"max_tokens", req.MaxTokens}, {"max_completion_tokens", req.MaxCompletionTokens}} {
		if f.v != nil && *f.v < 1 {
			return invalidRequest("Invalid '"+f.name+"': integer below minimum value. Expected a value >= 1, but got "+strconv.Itoa(*f.v)+" instead.", f.name, "integer_below_min_value")
		}
	}
	if req.StreamOptions != nil && !req.Stream {
		return invalidRequest("The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options", "")
	}
	return nil
}

func decodeError(err error) *apiError {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		if typeErr.Field == "" {
			return invalidRequest("Invalid type for the request body: expected an object, but got "+typeErr.Value+" instead.", "", "invalid_type")
		}
		return invalidRequest("Invalid type for '"+typeErr.Field+"': expected "+kindName(typeErr.Type)+", but got "+typeErr.Value+" instead.", typeErr.Field, "invalid_type")
	}
	return invalidRequest("We could not parse the JSON body of your request. The API expects a JSON payload, but what was sent was not valid JSON.", "", "")
}

func jsonKind(c byte) string {
	switch c {
	case '{':
		return "object"
	case 't', 'f':
		return "bool"
	default:
		return "number"
	}
}

func kindName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int64:
		return "an integer"
	case reflect.Slice:
		return "an array"
	default:
		return "an object"
	}
}

var errTooLarge = &apiError{status: http.StatusRequestEntityTooLarge, typ: "invalid_request_error",
	message: "Request body too large: the limit is " + strconv.Itoa(maxBodyBytes) + " bytes."}

// readBody appends the request body to buf, refusing bodies over
// maxBodyBytes with a 413.
func readBody(w http.ResponseWriter, r *http.Request, buf []byte) ([]byte, *apiError) {
	if r.ContentLength > maxBodyBytes {
		return buf, errTooLarge
	}
	if r.ContentLength >= 0 {
		buf = slices.Grow(buf, int(r.ContentLength)+1) // +1: room to read the EOF
	}
	body := http.MaxBytesReader(w, r.Body, maxBodyBytes)
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, cap(buf)) // double
		}
		n, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			var maxErr *http.MaxBytesError
			if errors.As(err, &maxErr) {
				return buf, errTooLarge
			}
			return buf, invalidRequest("Could not read the request body: "+strings.TrimPrefix(err.Error(), "http: "), "", "")
		}
	}
}

// promptTokens is the mock's own definition of a prompt's size, not any
// real tokenizer's: 3 tokens of reply priming, plus for each message 3
// tokens of framing and one token per started 4 bytes of its text. It
// mirrors the shape of OpenAI's accounting (a per-message overhead plus
// roughly 4 bytes of English per token) so usage looks plausible and is
// exactly predictable in tests.
func (req *chatRequest) promptTokens() int {
	n := 3
	for _, m := range req.Messages {
		n += 3 + (int(m.Content)+3)/4
	}
	return n
}

// replyLength is the number of tokens the reply has and why it ends there.
func (req *chatRequest) replyLength(natural int) (tokens int, finish string) {
	limit := natural
	for _, v := range [...]*int{req.MaxTokens, req.MaxCompletionTokens} {
		if v != nil && *v < limit {
			limit = *v
		}
	}
	if limit < natural {
		return limit, "length"
	}
	return natural, "stop"
}
