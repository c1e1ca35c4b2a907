package caddymodule

import (
	"net/http"

	"go.uber.org/zap"

	"github.com/arcaneapi/caddy-arcane/upstream/openai"
)

// apiError is an error a client sees, in OpenAI's envelope:
// {"error":{"message","type","param","code"}}. Handlers write it themselves,
// so its body holds whatever the operator's handle_errors says.
type apiError struct {
	Status  int
	Type    string
	Code    string
	Message string
	Param   string
}

var (
	errServer = apiError{Status: http.StatusInternalServerError, Type: "server_error", Code: "", Message: "The server had an error while processing your request. Retry with backoff; if it persists, contact the operator."}
	// errOverloaded refuses a request that waited overload_wait for the
	// gateway's settlements to catch up with the disk (Balance.hold).
	errOverloaded = apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "gateway_overloaded",
		Message: "The gateway is overloaded: it is behind on recording charges. Retry with backoff."}
)

// writeError sends e and records its code in the access log line, so
// refusals stay visible in logs and metrics.
func writeError(w http.ResponseWriter, r *http.Request, e apiError) {
	if extra := accessLogFields(r); extra != nil {
		code := e.Code
		if code == "" {
			code = e.Type
		}
		extra.Set(zap.String("arcane_error", code))
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(e.Status)
	_, _ = w.Write(append(openai.MarshalError(e.Message, e.Type, e.Param, e.Code), '\n'))
}
