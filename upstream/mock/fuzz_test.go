package mock

import (
	"encoding/json"
	"net/http"
	"testing"
)

// FuzzChatCompletions feeds arbitrary bodies to the handler: every answer
// is a 200 in the right shape or an OpenAI-style 400, never a panic.
func FuzzChatCompletions(f *testing.F) {
	for _, seed := range []string{
		`{"model":"m",` + hello + `}`,
		`{"model":"m",` + hello + `,"stream":true,"stream_options":{"include_usage":true},"max_tokens":2}`,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`,
		`{"model":"\u2028\"","messages":[{"role":"tool","content":null}],"max_completion_tokens":1}`,
		`{"model":"m","messages":[{"role":"user","content":1}]}`,
		`[]`, `null`, ``, `{"model":"m","messages":[]}`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		h := newTestHandler(Config{ReplyTokens: 3})
		rec := serve(h, http.MethodPost, "/v1/chat/completions", body)
		switch {
		case rec.Code == http.StatusBadRequest:
			var e errorBody
			decodeStrict(t, rec.Body.Bytes(), &e)
			if e.Error.Type != "invalid_request_error" || e.Error.Message == "" {
				t.Fatalf("400 body %s", rec.Body)
			}
		case rec.Code != http.StatusOK:
			t.Fatalf("status %d for %q", rec.Code, body)
		case rec.Header().Get("Content-Type") == "text/event-stream":
			payloads := sseData(t, rec.Body.String())
			if payloads[len(payloads)-1] != "[DONE]" {
				t.Fatalf("stream does not end with [DONE]: %s", rec.Body)
			}
			for _, p := range payloads[:len(payloads)-1] {
				var c completion
				decodeStrict(t, []byte(p), &c)
			}
		default:
			var c completion
			decodeStrict(t, rec.Body.Bytes(), &c)
			var req struct{ Model string }
			_ = json.Unmarshal([]byte(body), &req)
			if c.Model != req.Model {
				t.Fatalf("model %q echoed as %q", req.Model, c.Model)
			}
		}
	})
}
