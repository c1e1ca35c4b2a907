package mock

import (
	"net/http"
	"strconv"

	"github.com/arcaneapi/caddy-arcane/upstream/openai"
)

// apiError is an error in OpenAI's envelope:
// {"error":{"message","type","param","code"}}, where an empty param or code
// is written as null.
type apiError struct {
	status  int
	typ     string
	message string
	param   string
	code    string
}

// errMockFailure is what ErrorRate injects.
var errMockFailure = &apiError{status: http.StatusInternalServerError, typ: "server_error", message: "mock failure"}

func invalidRequest(message, param, code string) *apiError {
	return &apiError{status: http.StatusBadRequest, typ: "invalid_request_error", message: message, param: param, code: code}
}

func writeError(w http.ResponseWriter, e *apiError) {
	body := openai.MarshalError(e.message, e.typ, e.param, e.code)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(e.status)
	_, _ = w.Write(body)
}

// The Messages API answers errors in Anthropic's envelope, with its types:
// invalid_request_error (400, and 405), not_found_error (404),
// request_too_large (413), overloaded_error (529).
var (
	errOverloaded       = &apiError{status: 529, typ: "overloaded_error", message: "Overloaded"}
	errMessagesTooLarge = &apiError{status: http.StatusRequestEntityTooLarge, typ: "request_too_large", message: errTooLarge.message}
	errMessagesNotFound = &apiError{status: http.StatusNotFound, typ: "not_found_error", message: "Not Found"}
	errMessagesMethod   = &apiError{status: http.StatusMethodNotAllowed, typ: "invalid_request_error", message: "Method Not Allowed"}
	errNoVersion        = messagesInvalid("anthropic-version: header is required")
)

func messagesInvalid(message string) *apiError {
	return &apiError{status: http.StatusBadRequest, typ: "invalid_request_error", message: message}
}

// writeMessagesError writes e in Anthropic's envelope,
// {"type":"error","error":{"type","message"}}, with the x-should-retry
// header Anthropic sets: true for its 5xx and 529, false otherwise.
func writeMessagesError(w http.ResponseWriter, e *apiError) {
	b := make([]byte, 0, 64+len(e.message))
	b = append(b, `{"type":"error","error":{"type":"`...)
	b = append(b, e.typ...)
	b = append(b, `","message":`...)
	b = appendJSONString(b, e.message)
	b = append(b, "}}"...)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("X-Should-Retry", strconv.FormatBool(e.status >= 500))
	w.WriteHeader(e.status)
	_, _ = w.Write(b)
}
