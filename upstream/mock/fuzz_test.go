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

// FuzzMessages feeds arbitrary bodies to the Messages API: every answer is
// a 200 in the right shape (a Message, or a stream of well-framed events
// ending in message_stop) or a 400 in Anthropic's envelope, never a panic.
func FuzzMessages(f *testing.F) {
	for _, seed := range []string{
		helloMessage(``),
		helloMessage(`,"stream":true,"stop_sequences":["ck r"]`),
		`{"model":"m","max_tokens":2,"stream":true,"system":[{"type":"text","text":"s"}],` + hello + `}`,
		withMessages(ask, toolUse2, `{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_2"}]}`),
		withMessages(ask, toolUse, toolResult, `{"role":"assistant","content":""}`),
		`{"model":"\u2028\"","max_tokens":1,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"x"}}]}],"stop_sequences":["arcane"]}`,
		helloMessage(`,"temperature":2,"tools":[{"name":"f"}],"tool_choice":{"type":"tool"}`),
		`{"model":"m","max_tokens":0,"messages":[{"role":"user","content":1}]}`,
		`[]`, `null`, ``, `{"model":"m","max_tokens":1,"messages":[]}`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		h := newTestHandler(Config{ReplyTokens: 3})
		rec := serveMessages(h, http.MethodPost, "/v1/messages", body)
		switch {
		case rec.Code == http.StatusBadRequest:
			var e anthropicError
			decodeStrict(t, rec.Body.Bytes(), &e)
			if e.Type != "error" || e.Error.Type != "invalid_request_error" || e.Error.Message == "" {
				t.Fatalf("400 body %s", rec.Body)
			}
		case rec.Code != http.StatusOK:
			t.Fatalf("status %d for %q", rec.Code, body)
		case rec.Header().Get("Content-Type") == "text/event-stream":
			evs := sseEvents(t, rec.Body.String())
			names := eventNames(evs)
			if len(names) < 6 || names[0] != "message_start" || names[len(names)-1] != "message_stop" {
				t.Fatalf("events %v", names)
			}
			if u := evs[len(evs)-2].data.Usage; u == nil || u.OutputTokens < 1 || u.OutputTokens > 3 {
				t.Fatalf("message_delta usage %+v", u)
			}
		default:
			var m anthropicMessage
			decodeStrict(t, rec.Body.Bytes(), &m)
			var req struct{ Model string }
			_ = json.Unmarshal([]byte(body), &req)
			if m.Model != req.Model || len(m.Content) != 1 || m.StopReason == nil {
				t.Fatalf("reply %s to %q", rec.Body, body)
			}
		}
	})
}
