package mock

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMessagesNonStreamReply(t *testing.T) {
	tests := []struct {
		name       string
		cfg        Config
		body       string
		wantText   string
		wantTokens int
		wantStop   string
		wantSeq    string // "" means null
		wantInput  int
	}{
		{"a request without limits gets the default sixteen tokens", Config{},
			helloMessage(``), replyText(16), 16, "end_turn", "", 9},
		{"the configured reply length is used", Config{ReplyTokens: 3},
			helloMessage(``), "arcane mock reply", 3, "end_turn", "", 9},
		{"max_tokens below the natural length cuts the reply with stop_reason max_tokens", Config{ReplyTokens: 10},
			`{"model":"claude-test","max_tokens":4,` + hello + `}`, replyText(4), 4, "max_tokens", "", 9},
		{"max_tokens equal to the natural length ends the turn", Config{ReplyTokens: 5},
			`{"model":"claude-test","max_tokens":5,` + hello + `}`, replyText(5), 5, "end_turn", "", 9},
		{"replies longer than the word list wrap around it", Config{ReplyTokens: 40},
			helloMessage(``), replyText(40), 40, "end_turn", "", 9},
		{"a stop sequence inside a word cuts the text before it and counts the token that completed it", Config{ReplyTokens: 8},
			helloMessage(`,"stop_sequences":["ck r"]`), "arcane mo", 3, "stop_sequence", "ck r", 9},
		{"a stop sequence at a word boundary delivers the words before it", Config{ReplyTokens: 8},
			helloMessage(`,"stop_sequences":[" reply"]`), "arcane mock", 3, "stop_sequence", " reply", 9},
		{"the stop sequence completed first wins, whatever its place in the list", Config{ReplyTokens: 8},
			helloMessage(`,"stop_sequences":["streams one","mock"]`), "arcane ", 2, "stop_sequence", "mock", 9},
		{"a stop sequence at the very start leaves an empty text block", Config{ReplyTokens: 8},
			helloMessage(`,"stop_sequences":["arc"]`), "", 1, "stop_sequence", "arc", 9},
		{"a stop sequence the reply never reaches changes nothing", Config{ReplyTokens: 3},
			helloMessage(`,"stop_sequences":["streams","\n\nHuman:"]`), "arcane mock reply", 3, "end_turn", "", 9},
		{"a stop sequence past max_tokens is never generated", Config{ReplyTokens: 8},
			`{"model":"claude-test","max_tokens":2,"stop_sequences":["reply"],` + hello + `}`, "arcane mock", 2, "max_tokens", "", 9},
		{"a stop sequence in a wrapped reply is found in its second round", Config{ReplyTokens: 20},
			helloMessage(`,"stop_sequences":["relay arcane"]`), replyText(15) + " ", 17, "stop_sequence", "relay arcane", 9},
		{"stop sequences with characters to escape are accepted", Config{ReplyTokens: 2},
			helloMessage(`,"stop_sequences":["\"\u2028"]`), "arcane mock", 2, "end_turn", "", 9},
		{"the system prompt counts as one more message", Config{ReplyTokens: 1},
			`{"model":"m","max_tokens":1,"system":"12345",` + hello + `}`, "arcane", 1, "end_turn", "", 9 + 3 + 2},
		{"a system prompt of text blocks counts their text", Config{ReplyTokens: 1},
			`{"model":"m","max_tokens":1,"system":[{"type":"text","text":"1234"},{"type":"text","text":"5","cache_control":{"type":"ephemeral"}}],` + hello + `}`,
			"arcane", 1, "end_turn", "", 9 + 3 + 2},
		{"prompt tokens count text blocks and tool results, not images or tool inputs", Config{ReplyTokens: 1},
			`{"model":"m","max_tokens":1,"messages":[` +
				`{"role":"user","content":[{"type":"text","text":"abcd"},{"type":"image","source":{"type":"url","url":"https://x/y.png"}}]},` +
				`{"role":"assistant","content":[{"type":"text","text":"ok"},{"type":"tool_use","id":"toolu_1","name":"f","input":{"long":"ignored"}}]},` +
				`{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"12345678"}]},` +
				`{"role":"assistant","content":""}]}`,
			"arcane", 1, "end_turn", "", 3 + (3 + 1) + (3 + 1) + (3 + 2) + 3},
		{"unknown fields and tools are accepted and ignored", Config{ReplyTokens: 2},
			helloMessage(`,"temperature":0.2,"top_k":5,"metadata":{"user_id":"u1"},"tools":[{"name":"get_weather","input_schema":{"type":"object"}}],"tool_choice":{"type":"auto"}`),
			"arcane mock", 2, "end_turn", "", 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTestHandler(tt.cfg)
			rec := serveMessages(h, http.MethodPost, "/v1/messages", tt.body)
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			hdr := rec.Header()
			if hdr.Get("Content-Type") != "application/json" || hdr.Get("Content-Length") != fmt.Sprint(rec.Body.Len()) || hdr.Get("Request-Id") != "req_mock_1" {
				t.Errorf("headers %v for %d bytes", hdr, rec.Body.Len())
			}
			var m anthropicMessage
			decodeStrict(t, rec.Body.Bytes(), &m)
			var req struct{ Model string }
			_ = json.Unmarshal([]byte(tt.body), &req)
			if m.ID != "msg_mock_1" || m.Type != "message" || m.Role != "assistant" || m.Model != req.Model {
				t.Errorf("head: id %q type %q role %q model %q", m.ID, m.Type, m.Role, m.Model)
			}
			if len(m.Content) != 1 || m.Content[0].Type != "text" || deref(m.Content[0].Text) != tt.wantText {
				t.Errorf("content %s, want one text block %q", rec.Body, tt.wantText)
			}
			if deref(m.StopReason) != tt.wantStop || deref(m.StopSequence) != deref(nilIfEmpty(tt.wantSeq)) {
				t.Errorf("stop_reason %s stop_sequence %s, want %s %q", deref(m.StopReason), deref(m.StopSequence), tt.wantStop, tt.wantSeq)
			}
			if want := (anthropicUsage{InputTokens: tt.wantInput, OutputTokens: tt.wantTokens}); m.Usage != want {
				t.Errorf("usage %+v, want %+v", m.Usage, want)
			}
		})
	}
}

func TestMessagesStream(t *testing.T) {
	tests := []struct {
		name       string
		cfg        Config
		body       string
		wantDeltas []string
		wantTokens int
		wantStop   string
		wantSeq    string // "" means null
	}{
		{"a stream sends one text delta per token and ends the turn", Config{ReplyTokens: 5},
			helloMessage(`,"stream":true`), []string{"arcane", " mock", " reply", " streams", " one"}, 5, "end_turn", ""},
		{"a capped stream ends with stop_reason max_tokens", Config{ReplyTokens: 8},
			`{"model":"claude-test","max_tokens":2,"stream":true,` + hello + `}`, []string{"arcane", " mock"}, 2, "max_tokens", ""},
		{"a one-token stream still has every event", Config{},
			`{"model":"claude-test","max_tokens":1,"stream":true,` + hello + `}`, []string{"arcane"}, 1, "max_tokens", ""},
		{"a stop sequence cuts the last delta and names itself in message_delta", Config{ReplyTokens: 8},
			helloMessage(`,"stream":true,"stop_sequences":["ck r"]`), []string{"arcane", " mo"}, 3, "stop_sequence", "ck r"},
		{"a stop sequence at a word boundary sends no empty delta", Config{ReplyTokens: 8},
			helloMessage(`,"stream":true,"stop_sequences":[" reply"]`), []string{"arcane", " mock"}, 3, "stop_sequence", " reply"},
		{"a stop sequence at the very start leaves the text block without deltas", Config{ReplyTokens: 8},
			helloMessage(`,"stream":true,"stop_sequences":["arcane"]`), nil, 1, "stop_sequence", "arcane"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTestHandler(tt.cfg)
			rec := serveMessages(h, http.MethodPost, "/v1/messages", tt.body)
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			hdr := rec.Header()
			if hdr.Get("Content-Type") != "text/event-stream" || hdr.Get("Cache-Control") != "no-cache" || hdr.Get("Request-Id") != "req_mock_1" || hdr.Get("Content-Length") != "" {
				t.Errorf("headers %v", hdr)
			}
			if !rec.Flushed {
				t.Error("the stream was never flushed")
			}
			evs := sseEvents(t, rec.Body.String())
			want := []string{"message_start", "content_block_start", "ping"}
			for range tt.wantDeltas {
				want = append(want, "content_block_delta")
			}
			want = append(want, "content_block_stop", "message_delta", "message_stop")
			if got := eventNames(evs); !slices.Equal(got, want) {
				t.Fatalf("events %v, want %v", got, want)
			}

			start := evs[0].data.Message
			if start == nil || start.ID != "msg_mock_1" || start.Type != "message" || start.Role != "assistant" || start.Model != "claude-test" ||
				start.Content == nil || len(start.Content) != 0 || start.StopReason != nil || start.StopSequence != nil {
				t.Errorf("message_start %+v, want the message with empty content and null stops", start)
			}
			if want := (anthropicUsage{InputTokens: 9, OutputTokens: 1}); start != nil && start.Usage != want {
				t.Errorf("message_start usage %+v, want %+v", start.Usage, want)
			}
			if e := evs[1].data; e.Index == nil || *e.Index != 0 || !maps(e.ContentBlock, map[string]string{"type": "text", "text": ""}) {
				t.Errorf("content_block_start %+v", e)
			}
			var deltas []string
			for _, ev := range evs[3 : 3+len(tt.wantDeltas)] {
				e := ev.data
				if e.Index == nil || *e.Index != 0 || len(e.Delta) != 2 || deref(e.Delta["type"]) != "text_delta" || e.Delta["text"] == nil {
					t.Fatalf("content_block_delta %+v", e)
				}
				deltas = append(deltas, *e.Delta["text"])
			}
			if !slices.Equal(deltas, tt.wantDeltas) {
				t.Errorf("deltas %q, want %q", deltas, tt.wantDeltas)
			}
			if e := evs[len(evs)-3].data; e.Index == nil || *e.Index != 0 {
				t.Errorf("content_block_stop %+v", e)
			}
			md := evs[len(evs)-2].data
			if len(md.Delta) != 2 || deref(md.Delta["stop_reason"]) != tt.wantStop || deref(md.Delta["stop_sequence"]) != deref(nilIfEmpty(tt.wantSeq)) {
				t.Errorf("message_delta delta %v, want %s and %q", md.Delta, tt.wantStop, tt.wantSeq)
			}
			if md.Usage == nil || md.Usage.OutputTokens != tt.wantTokens {
				t.Errorf("message_delta usage %+v, want %d output tokens", md.Usage, tt.wantTokens)
			}
		})
	}
}

// messagesWire3 is the exact output of a three-token Messages stream.
const messagesWire3 = `event: message_start
data: {"type":"message_start","message":{"id":"msg_mock_1","type":"message","role":"assistant","model":"claude-test","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":9,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type":"ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"arcane"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" mock"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" reply"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":3}}

event: message_stop
data: {"type":"message_stop"}

`

// messagesReply3 is the exact non-stream reply of three tokens.
const messagesReply3 = `{"id":"msg_mock_1","type":"message","role":"assistant","model":"claude-test","content":[{"type":"text","text":"arcane mock reply"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":9,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":3}}`

func TestMessagesWireBytes(t *testing.T) {
	tests := []struct {
		name string
		body string
		want string
	}{
		{"a three-token stream is byte for byte Anthropic's framing", helloMessage(`,"stream":true`), messagesWire3},
		{"a three-token reply is byte for byte Anthropic's Message", helloMessage(``), messagesReply3},
		{"the stop sequence that matched is written as a JSON string", helloMessage(`,"stop_sequences":["mock\"\u2028"," reply"]`),
			strings.NewReplacer(`"arcane mock reply"`, `"arcane mock"`, `"end_turn"`, `"stop_sequence"`, `"stop_sequence":null`, `"stop_sequence":" reply"`).Replace(messagesReply3)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTestHandler(Config{ReplyTokens: 3})
			rec := serveMessages(h, http.MethodPost, "/v1/messages", tt.body)
			if got := rec.Body.String(); got != tt.want {
				t.Errorf("wire output:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestMessagesModelIsEchoedExactly(t *testing.T) {
	for _, model := range []string{"claude-sonnet-4-6", `we"ird\model`, "tab\there", "line\u2028sep", "ünïcødé/模型", "<html>&"} {
		t.Run("model "+model+" comes back unchanged in both modes", func(t *testing.T) {
			m, _ := json.Marshal(model)
			h := newTestHandler(Config{ReplyTokens: 2})
			body := `{"model":` + string(m) + `,"max_tokens":8,` + hello
			rec := serveMessages(h, http.MethodPost, "/v1/messages", body+`}`)
			var msg anthropicMessage
			decodeStrict(t, rec.Body.Bytes(), &msg)
			if msg.Model != model {
				t.Errorf("non-stream model %q, want %q", msg.Model, model)
			}
			rec = serveMessages(h, http.MethodPost, "/v1/messages", body+`,"stream":true}`)
			if start := sseEvents(t, rec.Body.String())[0].data.Message; start == nil || start.Model != model {
				t.Errorf("message_start %+v, want model %q", start, model)
			}
		})
	}
}

func TestMessagesPacing(t *testing.T) {
	const ttft, rate, iv = 250 * time.Millisecond, 50, 20 * time.Millisecond
	tests := []struct {
		name  string
		cfg   Config
		extra string
		want  []sleepCall
	}{
		{"a stream waits TTFT after message_start, content_block_start and ping, then one interval before each later token",
			Config{TimeToFirstToken: ttft, TokensPerSecond: rate, ReplyTokens: 4}, `,"stream":true`,
			[]sleepCall{{ttft, 3}, {iv, 4}, {iv, 5}, {iv, 6}}},
		{"a stream with only a TTFT waits once", Config{TimeToFirstToken: ttft, ReplyTokens: 4}, `,"stream":true`, []sleepCall{{ttft, 3}}},
		{"a stream with only a rate waits between tokens, not before the first",
			Config{TokensPerSecond: rate, ReplyTokens: 3}, `,"stream":true`, []sleepCall{{iv, 4}, {iv, 5}}},
		{"a stream cut by a stop sequence still paces the tokens it generated and did not send",
			Config{TokensPerSecond: rate, ReplyTokens: 8}, `,"stream":true,"stop_sequences":[" reply"]`, []sleepCall{{iv, 4}, {iv, 5}}},
		{"an unpaced stream never waits", Config{ReplyTokens: 4}, `,"stream":true`, nil},
		{"a non-stream reply waits once, as long as the stream would have taken",
			Config{TimeToFirstToken: ttft, TokensPerSecond: rate, ReplyTokens: 4}, ``, []sleepCall{{ttft + 3*iv, 0}}},
		{"an unpaced non-stream reply never waits", Config{ReplyTokens: 4}, ``, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTestHandler(tt.cfg)
			rec := httptest.NewRecorder()
			var calls []sleepCall
			h.sleep = func(ctx context.Context, d time.Duration) error {
				calls = append(calls, sleepCall{d, strings.Count(rec.Body.String(), "\n\n")})
				return nil
			}
			h.ServeHTTP(rec, newMessagesRequest(http.MethodPost, "/v1/messages", helloMessage(tt.extra)))
			if rec.Code != 200 {
				t.Fatalf("status %d", rec.Code)
			}
			if !slices.Equal(calls, tt.want) {
				t.Errorf("sleeps %v, want %v", calls, tt.want)
			}
		})
	}
}

func TestMessagesClientGoneStopsTheReply(t *testing.T) {
	tests := []struct {
		name       string
		stream     bool
		wantEvents int
	}{
		{"a stream stops at once when the client leaves during the time to first token", true, 3},
		{"a non-stream reply is never written when the client leaves during the wait", false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTestHandler(Config{TimeToFirstToken: time.Second, ReplyTokens: 4})
			ctx, cancel := context.WithCancel(context.Background())
			h.sleep = func(ctx context.Context, _ time.Duration) error {
				cancel() // the client hangs up while the mock waits
				return ctx.Err()
			}
			rec := httptest.NewRecorder()
			req := newMessagesRequest(http.MethodPost, "/v1/messages", helloMessage(fmt.Sprintf(`,"stream":%v`, tt.stream)))
			h.ServeHTTP(rec, req.WithContext(ctx))
			if got := strings.Count(rec.Body.String(), "\n\n"); got != tt.wantEvents {
				t.Errorf("%d events written, want %d: %q", got, tt.wantEvents, rec.Body)
			}
			if !tt.stream && rec.Body.Len() != 0 {
				t.Errorf("body written after the client left: %q", rec.Body)
			}
		})
	}
}

func TestMessagesStreamStopsAtTheFirstFailedWrite(t *testing.T) {
	h := newTestHandler(Config{ReplyTokens: 10})
	w := &failingWriter{header: make(http.Header), ok: 4}
	h.ServeHTTP(w, newMessagesRequest(http.MethodPost, "/v1/messages", helloMessage(`,"stream":true`)))
	if w.writes != 5 {
		t.Errorf("%d writes, want 4 good ones and the failed one", w.writes)
	}
}

func TestMessagesErrorRate(t *testing.T) {
	tests := []struct {
		name     string
		rate     float64
		bodies   []string // sent in order, cycled to 12 requests; "chat:" ones to /v1/chat/completions
		wantFail []int    // 1-based positions among all requests sent
	}{
		{"a rate of 0.25 fails exactly every fourth request with a 529", 0.25, []string{helloMessage(``)}, []int{4, 8, 12}},
		{"a rate of 1 fails every request", 1, []string{helloMessage(``)}, []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}},
		{"a rate of 0 never fails", 0, []string{helloMessage(``)}, nil},
		{"a refused request does not advance the failure schedule", 0.5,
			[]string{helloMessage(``), `{"model":"m",` + hello + `}`, helloMessage(``)}, []int{3, 6, 9, 12}},
		{"chat completions and messages share one schedule, each failing in its own API's way", 1.0 / 3,
			[]string{helloMessage(``), "chat:" + `{"model":"m",` + hello + `}`}, []int{3, 6, 9, 12}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTestHandler(Config{ErrorRate: tt.rate, ReplyTokens: 2})
			var failed []int
			for i := 1; i <= 12; i++ {
				body := tt.bodies[(i-1)%len(tt.bodies)]
				if i%3 == 0 { // streamed requests follow the same schedule
					body = strings.Replace(body, `"model":"`, `"stream":true,"model":"`, 1)
				}
				if chat, ok := strings.CutPrefix(body, "chat:"); ok {
					rec := serve(h, http.MethodPost, "/v1/chat/completions", chat)
					if rec.Code == http.StatusInternalServerError && strings.HasPrefix(rec.Body.String(), `{"error":`) {
						failed = append(failed, i)
					} else if rec.Code != http.StatusOK {
						t.Fatalf("chat request %d: status %d", i, rec.Code)
					}
					continue
				}
				rec := serveMessages(h, http.MethodPost, "/v1/messages", body)
				switch rec.Code {
				case http.StatusOK, http.StatusBadRequest:
				case 529:
					failed = append(failed, i)
					want := `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`
					if got := rec.Body.String(); got != want {
						t.Errorf("failure body %s, want %s", got, want)
					}
					if ct, retry := rec.Header().Get("Content-Type"), rec.Header().Get("X-Should-Retry"); ct != "application/json" || retry != "true" {
						t.Errorf("failure Content-Type %q x-should-retry %q", ct, retry)
					}
				default:
					t.Fatalf("request %d: status %d", i, rec.Code)
				}
			}
			if !slices.Equal(failed, tt.wantFail) {
				t.Errorf("failed requests %v, want %v", failed, tt.wantFail)
			}
		})
	}
}

func TestMessagesRouting(t *testing.T) {
	tests := []struct {
		name       string
		method     string
		path       string
		wantStatus int
		wantAllow  string
		wantType   string // the Anthropic error type; "" for a 200
	}{
		{"messages answer under /v1", http.MethodPost, "/v1/messages", 200, "", ""},
		{"messages answer without a base path", http.MethodPost, "/messages", 200, "", ""},
		{"messages answer under any base path", http.MethodPost, "/anthropic/v1/messages", 200, "", ""},
		{"GET on messages is not allowed", http.MethodGet, "/v1/messages", 405, "POST", "invalid_request_error"},
		{"an unknown path is not found in Anthropic's envelope", http.MethodPost, "/v1/complete", 404, "", "not_found_error"},
		{"count_tokens is not served", http.MethodPost, "/v1/messages/count_tokens", 404, "", "not_found_error"},
		{"a near miss with a trailing slash is not found", http.MethodPost, "/v1/messages/", 404, "", "not_found_error"},
		{"POST on models is not allowed in Anthropic's envelope", http.MethodPost, "/v1/models", 405, "GET", "invalid_request_error"},
		{"GET on chat completions is not allowed in Anthropic's envelope", http.MethodGet, "/v1/chat/completions", 405, "POST", "invalid_request_error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTestHandler(Config{ReplyTokens: 1})
			rec := serveMessages(h, tt.method, tt.path, helloMessage(``))
			if rec.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.wantStatus, rec.Body)
			}
			if got := rec.Header().Get("Allow"); got != tt.wantAllow {
				t.Errorf("Allow %q, want %q", got, tt.wantAllow)
			}
			if tt.wantStatus == 200 {
				return
			}
			var e anthropicError
			decodeStrict(t, rec.Body.Bytes(), &e)
			if e.Type != "error" || e.Error.Type != tt.wantType || e.Error.Message == "" {
				t.Errorf("error %s, want type %q", rec.Body, tt.wantType)
			}
		})
	}
}

func TestModelsListForAnthropicClients(t *testing.T) {
	rec := serveMessages(newTestHandler(Config{}), http.MethodGet, "/v1/models", "")
	want := `{"data":[{"type":"model","id":"mock","display_name":"Mock","created_at":"2023-11-14T22:13:20Z"}],"has_more":false,"first_id":"mock","last_id":"mock"}`
	if rec.Code != 200 || rec.Body.String() != want || rec.Header().Get("Content-Type") != "application/json" {
		t.Errorf("models %d %s (%s), want %s", rec.Code, rec.Body, rec.Header().Get("Content-Type"), want)
	}
}
