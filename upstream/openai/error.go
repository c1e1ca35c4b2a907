package openai

import "errors"

// RequestError is a request the gateway refuses with 400 before anything is
// reserved, held or sent. Param names the offending parameter the way OpenAI
// does ("messages[2].role", "stream_options.include_usage"); it is "" when
// the body as a whole is wrong. Code is one of "" (the body is not JSON),
// "invalid_type", "invalid_value", "missing_required_parameter" or
// "duplicate_parameter"; Message is for the client.
type RequestError struct {
	Param   string
	Message string
	Code    string
}

// Error returns the message meant for the client.
func (e *RequestError) Error() string { return e.Message }

// Codes of RequestError, after OpenAI's.
const (
	codeType      = "invalid_type"
	codeValue     = "invalid_value"
	codeMissing   = "missing_required_parameter"
	codeDuplicate = "duplicate_parameter"
)

func malformed() *RequestError {
	return &RequestError{Message: "We could not parse the JSON body of your request: it must be one valid JSON object."}
}

func missing(param string) *RequestError {
	return &RequestError{Param: param, Code: codeMissing, Message: "Missing required parameter: '" + param + "'."}
}

func duplicate(param string) *RequestError {
	return &RequestError{Param: param, Code: codeDuplicate,
		Message: "Duplicate parameter '" + param + "': a key may appear only once."}
}

func wrongType(b []byte, v span, param, want string) *RequestError {
	return &RequestError{Param: param, Code: codeType,
		Message: "Invalid type for '" + param + "': expected " + want + ", but got " + kindOf(b, v) + " instead."}
}

// kindOf names the type of the value at v for an error message.
func kindOf(b []byte, v span) string {
	switch b[v.start] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	if _, err := parseCount(b[v.start:v.end]); errors.Is(err, errNotInteger) {
		return "a decimal"
	}
	return "an integer"
}
