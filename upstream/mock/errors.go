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
