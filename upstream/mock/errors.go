package mock

import (
	"encoding/json"
	"net/http"
	"strconv"
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

type errorEnvelope struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, e *apiError) {
	var env errorEnvelope
	env.Error.Message = e.message
	env.Error.Type = e.typ
	if e.param != "" {
		env.Error.Param = &e.param
	}
	if e.code != "" {
		env.Error.Code = &e.code
	}
	body, _ := json.Marshal(&env) // cannot fail: strings and pointers to strings
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(e.status)
	_, _ = w.Write(body)
}
