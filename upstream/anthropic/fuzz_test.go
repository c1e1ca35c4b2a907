package anthropic

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/arcaneapi/caddy-arcane/upstream/openai"
	"github.com/arcaneapi/caddy-arcane/upstream/sse"
)

// fuzzInput hands out the bytes of a fuzz input as the pieces of an event
// sequence; past its end it hands out zeros.
type fuzzInput struct{ b []byte }

func (in *fuzzInput) byte() byte {
	if len(in.b) == 0 {
		return 0
	}
	c := in.b[0]
	in.b = in.b[1:]
	return c
}

// str returns up to 63 bytes, as they are: they may be invalid UTF-8.
func (in *fuzzInput) str() string {
	n := min(int(in.byte()%64), len(in.b))
	s := string(in.b[:n])
	in.b = in.b[n:]
	return s
}

// count returns a token count, now and then a huge or negative one.
func (in *fuzzInput) count() any {
	switch c := in.byte(); c {
	case 255:
		return int64(math.MaxInt64)
	case 254:
		return -1
	case 253:
		return nil
	case 252:
		return "12"
	case 251:
		return 7.5
	default:
		return int64(c) * 1000
	}
}

func (in *fuzzInput) pick(options ...string) string {
	c := int(in.byte())
	if c >= len(options) {
		return in.str()
	}
	return options[c]
}

// fuzzNames are the event names a sequence is made of: Anthropic's, none,
// and (past the end of the list) random ones.
var fuzzNames = [...]string{"message_start", "content_block_start", "content_block_delta", "content_block_delta",
	"content_block_stop", "message_delta", "message_stop", "ping", "error", ""}

// nextEvent builds one well-framed event from in: a known or random name,
// and data that is the real event of that name (mostly), the real event of
// another name, or junk.
func nextEvent(in *fuzzInput) (string, []byte) {
	op := in.byte()
	kind := int(op&15) % (len(fuzzNames) + 1)
	name := in.str()
	if kind < len(fuzzNames) {
		name = fuzzNames[kind]
	}
	switch op >> 6 {
	case 2: // the data of another event
		kind = int(in.byte()) % len(fuzzNames)
	case 3: // junk
		return name, []byte(in.str())
	}
	if kind >= len(fuzzNames) || fuzzNames[kind] == "" {
		kind = int(in.byte()) % (len(fuzzNames) - 1)
	}
	var v map[string]any
	switch fuzzNames[kind] {
	case "message_start":
		v = map[string]any{"type": "message_start", "message": map[string]any{
			"id": "msg_01" + in.str(), "type": "message", "role": "assistant", "content": []any{}, "model": "claude-sonnet-4-6",
			"stop_reason": nil, "stop_sequence": nil,
			"usage": map[string]any{"input_tokens": in.count(), "cache_creation_input_tokens": in.count(),
				"cache_read_input_tokens": in.count(), "output_tokens": in.count()}}}
	case "content_block_start":
		block := map[string]any{"type": in.pick("text", "tool_use", "thinking", "redacted_thinking", "server_tool_use")}
		switch block["type"] {
		case "text":
			block["text"] = in.str()
		case "tool_use", "server_tool_use":
			block["id"], block["name"] = "toolu_01"+in.str(), in.str()
			if in.byte()&1 == 0 {
				block["input"] = map[string]any{}
			} else {
				block["input"] = map[string]any{in.str(): in.str()}
			}
		}
		v = map[string]any{"type": "content_block_start", "index": in.byte() % 4, "content_block": block}
	case "content_block_delta":
		index := in.byte() % 4
		switch in.pick("text_delta", "input_json_delta", "thinking_delta", "raw") {
		case "text_delta":
			return name, []byte(textDeltaEvent(int(index), in.str()))
		case "input_json_delta":
			if in.byte()&1 == 0 { // in Anthropic's own form, which the fast path reads
				partial, _ := json.Marshal(in.str())
				return name, fmt.Appendf(nil, `{"type":"content_block_delta","index":%d,"delta":{"type":"input_json_delta","partial_json":%s}}`, index, partial)
			}
			v = map[string]any{"type": "content_block_delta", "index": index, "delta": map[string]any{"type": "input_json_delta", "partial_json": in.str()}}
		case "thinking_delta":
			v = map[string]any{"type": "content_block_delta", "index": index, "delta": map[string]any{"type": "thinking_delta", "thinking": in.str()}}
		case "raw":
			// A text literal with the bytes as they are, invalid UTF-8
			// included, in the form the fast path reads.
			var s []byte
			for _, c := range []byte(in.str()) {
				if c >= 0x20 && c != '"' && c != '\\' {
					s = append(s, c)
				}
			}
			return name, []byte(fmt.Sprintf(`{"type":"content_block_delta","index":%d,"delta":{"type":"text_delta","text":"%s"}}`, index, s))
		default:
			v = map[string]any{"type": "content_block_delta", "index": index, "delta": map[string]any{"type": in.str()}}
		}
	case "content_block_stop":
		v = map[string]any{"type": "content_block_stop", "index": in.byte() % 4}
	case "message_delta":
		var stop any = in.pick("end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal", "pause_turn")
		if in.byte()&1 == 1 {
			stop = nil
		}
		v = map[string]any{"type": "message_delta", "delta": map[string]any{"stop_reason": stop, "stop_sequence": nil},
			"usage": map[string]any{"output_tokens": in.count()}}
	case "message_stop":
		v = map[string]any{"type": "message_stop"}
	case "ping":
		v = map[string]any{"type": "ping"}
	case "error":
		v = map[string]any{"type": "error", "error": map[string]any{"type": in.pick("overloaded_error", "api_error"), "message": in.str()}}
	}
	data, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return name, data
}

// fuzzModel is a public model name that needs escaping.
const fuzzModel = `claude "4.6" <b>&é`

// FuzzStream feeds random but well-framed event sequences to a Stream and
// checks that whatever it appends is SSE frames of well-formed chunks that a
// client can read: one id throughout, the public model, tool call indexes
// counted over tool calls, one finish at most, no [DONE], nothing after the
// end, and usage that adds up.
func FuzzStream(f *testing.F) {
	for _, seed := range fuzzStreamSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		in := &fuzzInput{b: input}
		s := NewStream(fuzzModel, now)
		var out []byte
		for n := 0; len(in.b) > 0 && n < 200; n++ {
			name, data := nextEvent(in)
			wasDone := s.Done()
			more, err := s.Event(out, name, data)
			if !bytes.Equal(more[:len(out)], out) {
				t.Fatalf("%s event changed what was appended before", name)
			}
			if (wasDone || err != nil) && len(more) != len(out) {
				t.Fatalf("%s event appended %q after Done or with error %v", name, more[len(out):], err)
			}
			if err != nil && (name == "ping" || json.Valid(data) && bytes.HasPrefix(bytes.TrimSpace(data), []byte("{"))) {
				t.Fatalf("%s event: error %v for a JSON object: %s", name, err, data)
			}
			out = more
		}
		if s.Failed() && !s.Done() {
			t.Fatal("Failed but not Done")
		}
		if s.Delivered() != (len(out) > 0) {
			t.Fatalf("Delivered %v with %d bytes appended", s.Delivered(), len(out))
		}
		checkChunks(t, out, s)

		u, _ := s.Usage()
		if u.PromptTokens < 0 || u.CompletionTokens < 0 || u.CachedTokens < 0 || u.CachedTokens > u.PromptTokens ||
			u.TotalTokens != addCounts(u.PromptTokens, u.CompletionTokens) {
			t.Fatalf("usage does not add up: %+v", u)
		}
		obj := s.UsageChunk(nil)
		if pu, ok := openai.ParseUsage(obj); !ok || pu != u || !openai.IsUsageOnlyChunk(obj) {
			t.Fatalf("usage chunk %s reads as %+v, %v; want %+v", obj, pu, ok, u)
		}
	})
}

// checkChunks holds what Stream appended to the rules of an OpenAI stream.
func checkChunks(t *testing.T, out []byte, s *Stream) {
	r := sse.NewReader(bytes.NewReader(out), 0)
	var id string
	tools, finishes, errs := 0, 0, 0
	for i := 0; ; i++ {
		ev, err := r.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("output is not SSE frames: %v: %q", err, out)
			}
			break
		}
		if sse.IsDone(ev.Data) {
			t.Fatal("[DONE] was appended")
		}
		if !utf8.Valid(ev.Data) {
			t.Fatalf("chunk is not UTF-8: %q", ev.Data)
		}
		var c struct {
			chunk
			Choices []struct {
				Delta struct {
					Role      *string `json:"role"`
					ToolCalls []struct {
						Index *int    `json:"index"`
						ID    *string `json:"id"`
					} `json:"tool_calls"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
		}
		if err := json.Unmarshal(ev.Data, &c); err != nil {
			t.Fatalf("chunk does not decode: %v: %s", err, ev.Data)
		}
		if c.Object != "chat.completion.chunk" || c.Model != fuzzModel || c.ID == nil || c.Created == nil || c.Choices == nil || *c.Created != now.Unix() {
			t.Fatalf("malformed chunk: %s", ev.Data)
		}
		if i == 0 {
			id = *c.ID
		} else if *c.ID != id {
			t.Fatalf("id changed from %q: %s", id, ev.Data)
		}
		if errs > 0 {
			t.Fatalf("a chunk after the error chunk: %s", ev.Data)
		}
		if c.Error != nil {
			errs++
			continue
		}
		if len(c.Choices) != 1 {
			t.Fatalf("%d choices: %s", len(c.Choices), ev.Data)
		}
		ch := c.Choices[0]
		if (i == 0) != (ch.Delta.Role != nil) {
			t.Fatalf("chunk %d has role %v: %s", i, ch.Delta.Role, ev.Data)
		}
		if ch.FinishReason != nil {
			finishes++
		} else if finishes > 0 {
			t.Fatalf("a delta after the finish: %s", ev.Data)
		}
		for _, tc := range ch.Delta.ToolCalls {
			if tc.Index == nil || *tc.Index < 0 || *tc.Index >= tools+btoi(tc.ID != nil) {
				t.Fatalf("tool call index out of order after %d calls: %s", tools, ev.Data)
			}
			if tc.ID != nil {
				if *tc.Index != tools {
					t.Fatalf("tool call %d started with index %d: %s", tools, *tc.Index, ev.Data)
				}
				tools++
			}
		}
	}
	if finishes > 1 || errs > 1 || errs > 0 != s.Failed() {
		t.Fatalf("%d finish chunks, %d error chunks, Failed %v", finishes, errs, s.Failed())
	}
	if s.Done() && !s.Failed() && finishes != 1 {
		t.Fatalf("a stream that ended has %d finish chunks", finishes)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// fuzzStreamSeeds are inputs that nextEvent reads as typical streams.
func fuzzStreamSeeds() [][]byte {
	const (
		start = 0 // message_start
		block = 1 // content_block_start
		delta = 2 // content_block_delta
		stop  = 4 // content_block_stop
		mdel  = 5 // message_delta
		mstop = 6 // message_stop
		ping  = 7
		errEv = 8
		anon  = 9
	)
	str := func(s string) []byte { return append([]byte{byte(len(s))}, s...) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	b := func(c ...byte) []byte { return c }
	text := cat(
		b(start), str(""), str("XFDUDYJgAACzvnptvVoYEL"), b(0, 0, 0, 1),
		b(block), str(""), b(0), str(""), b(0),
		b(ping), str(""),
		b(delta), str(""), b(0, 0), str("Hello"),
		b(delta), str(""), b(0, 0), str(", world\n"),
		b(stop), str(""), b(0),
		b(mdel), str(""), b(0, 0, 15),
		b(mstop), str(""),
	)
	tools := cat(
		b(start), str(""), str("014p7gG3wDgGV9EU"), b(1, 0, 0, 2),
		b(block), str(""), b(0), str("Let me check."), b(0),
		b(stop), str(""), b(0),
		b(block), str(""), b(1), str("T1x1fJ34qAmk2t"), str("get_weather"), b(0), b(1),
		b(delta), str(""), b(1, 1, 0), str(`{"location":`),
		b(delta), str(""), b(1, 1, 1), str(` "Paris"}`),
		b(stop), str(""), b(1),
		b(block), str(""), b(1), str("VBsaRg3Ftx7Y"), str("get_time"), b(0), b(2),
		b(stop), str(""), b(2),
		b(mdel), str(""), b(3, 0, 89),
		b(mstop), str(""),
	)
	failed := cat(text[:40], b(errEv), str(""), b(0), str("Overloaded"), b(delta), str(""), b(0, 0), str("late"))
	return [][]byte{
		text, tools, failed,
		cat(b(anon), str(""), b(0), str("1"), b(0, 0, 0, 0), b(anon), str(""), b(2), b(0, 3), str("x\xffy")),
		cat(b(0xC2), str("junk{"), b(0x82), b(3), b(0), b(0xFF)),
		cat(b(10), str("future"), b(delta), str(""), b(0, 0), str("before start")),
		{},
	}
}

// FuzzRequest feeds random bodies to AppendRequest: it never panics, and it
// returns either a *RequestError or a Messages API body that Anthropic's
// rules accept: alternating turns with content, a max_tokens within bounds,
// a temperature within 0-1, tool results first, tool ids of allowed bytes.
func FuzzRequest(f *testing.F) {
	for _, body := range fuzzRequestSeeds {
		f.Add([]byte(body), int64(8192), int64(64000), false)
	}
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":"Hi"}]}`), int64(0), int64(0), true)
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":"Hi"}],"max_tokens":9}`), int64(-5), int64(3), true)
	f.Fuzz(func(t *testing.T, body []byte, maxTokens, maxOutput int64, stream bool) {
		o := RequestOptions{Model: "claude-x", MaxTokens: maxTokens, MaxOutputTokens: maxOutput, Stream: stream}
		out, err := AppendRequest([]byte("x"), body, o)
		if err != nil {
			var re *RequestError
			if !errors.As(err, &re) || re.Message == "" {
				t.Fatalf("error %v (%T) is not a *RequestError with a message", err, err)
			}
			if string(out) != "x" {
				t.Fatalf("dst changed on error: %q", out)
			}
			return
		}
		if !bytes.HasPrefix(out, []byte("x")) || !json.Valid(out[1:]) || !utf8.Valid(out[1:]) {
			t.Fatalf("output is not valid JSON after dst: %q", out)
		}
		checkMessagesRequest(t, out[1:], o)
	})
}

func checkMessagesRequest(t *testing.T, body []byte, o RequestOptions) {
	var req struct {
		Model       string   `json:"model"`
		MaxTokens   int64    `json:"max_tokens"`
		Temperature *float64 `json:"temperature"`
		Stream      bool     `json:"stream"`
		System      []block  `json:"system"`
		Messages    []struct {
			Role    string          `json:"role"`
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		t.Fatalf("output does not decode: %v: %s", err, body)
	}
	if req.Model != o.Model || req.MaxTokens < 1 || o.MaxOutputTokens > 0 && req.MaxTokens > o.MaxOutputTokens || req.Stream != o.Stream {
		t.Fatalf("model, max_tokens or stream wrong: %s", body)
	}
	if req.Temperature != nil && (*req.Temperature < 0 || *req.Temperature > 1) {
		t.Fatalf("temperature out of range: %s", body)
	}
	for _, b := range req.System {
		if b.Type != "text" || strings.TrimSpace(b.Text) == "" {
			t.Fatalf("bad system block %+v: %s", b, body)
		}
	}
	if len(req.Messages) == 0 {
		t.Fatalf("no messages: %s", body)
	}
	for i, m := range req.Messages {
		if m.Role != "user" && m.Role != "assistant" || i > 0 && m.Role == req.Messages[i-1].Role {
			t.Fatalf("turn %d has role %q: %s", i, m.Role, body)
		}
		var s string
		if json.Unmarshal(m.Content, &s) == nil {
			if strings.TrimSpace(s) == "" {
				t.Fatalf("turn %d is blank: %s", i, body)
			}
			continue
		}
		var blocks []block
		if err := json.Unmarshal(m.Content, &blocks); err != nil || len(blocks) == 0 {
			t.Fatalf("turn %d content is neither a string nor blocks: %s", i, body)
		}
		results := true
		for _, b := range blocks {
			switch b.Type {
			case "text":
				if strings.TrimSpace(b.Text) == "" {
					t.Fatalf("turn %d has a blank text block: %s", i, body)
				}
			case "image":
				if b.Source == nil {
					t.Fatalf("image without source: %s", body)
				}
			case "tool_use":
				if m.Role != "assistant" || b.ID == "" || strings.Trim(b.ID, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != "" || b.Name == "" || !bytes.HasPrefix(b.Input, []byte("{")) {
					t.Fatalf("bad tool_use %+v: %s", b, body)
				}
			case "tool_result":
				if m.Role != "user" || !results || strings.Trim(b.ToolUseID, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != "" {
					t.Fatalf("bad or misplaced tool_result %+v: %s", b, body)
				}
			default:
				t.Fatalf("unexpected block type %q: %s", b.Type, body)
			}
			results = results && b.Type == "tool_result"
		}
	}
	if last := req.Messages[len(req.Messages)-1]; last.Role == "assistant" {
		var s string
		if json.Unmarshal(last.Content, &s) == nil && strings.TrimRightFunc(s, func(r rune) bool { return strings.TrimSpace(string(r)) == "" }) != s {
			t.Fatalf("a final assistant turn ends in white space: %s", body)
		}
	}
}

// requestToolRoundTrip is a conversation with tool calls, their results, a
// replayed foreign tool call id and a forced tool choice.
const requestToolRoundTrip = `{"model":"m","messages":[{"role":"user","content":"Weather?"},{"role":"assistant","content":null,"tool_calls":[{"id":"functions.f:0","type":"function","function":{"name":"get_weather","arguments":"{\"location\":\"Paris\"}"}},{"id":"call_2","type":"function","function":{"name":"t","arguments":""}}]},{"role":"tool","tool_call_id":"functions.f:0","content":"18C"},{"role":"tool","tool_call_id":"call_2","content":[{"type":"text","text":"noon"}]},{"role":"user","content":"Thanks"}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}},{"type":"function","function":{"name":"t"}}],"tool_choice":{"type":"function","function":{"name":"t"}},"parallel_tool_calls":false}`

var fuzzRequestSeeds = []string{
	``, `{}`, `[]`, `null`, `{"model":"m"}`, `{"model":"m","messages":[]}`,
	`{"model":"m","messages":[{"role":"user","content":"Hello"}]}`,
	`{"model":"m","messages":[{"role":"system","content":"S"},{"role":"developer","content":[{"type":"text","text":"D","cache_control":{"type":"ephemeral"}}]},{"role":"user","content":"Q"},{"role":"user","content":" "},{"role":"assistant","content":"A "}],"temperature":1.5,"top_p":1,"stop":["x"," "],"user":"u@x","max_tokens":99999999}`,
	`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"Look"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo=","detail":"low"}},{"type":"image_url","image_url":"https://example.com/a.jpg"}]}],"stream":true,"stream_options":{"include_usage":true}}`,
	requestToolRoundTrip,
	`{"model":"m","messages":[{"role":"assistant","content":[{"type":"refusal","refusal":"No."}]},{"role":"user","content":"Why"}],"n":1,"logprobs":false,"response_format":{"type":"text"},"tool_choice":"none","safety_identifier":"sid"}`,
	`{"model":"m","messages":[{"role":"user","content":"x"}],"n":2,"logprobs":true,"response_format":{"type":"json_schema"}}`,
	`{"model":"m","messages":[{"role":"user","content":"\u0000\ud800"}],"stop":"\n"}`,
}

// FuzzFastDelta holds the stream's fast path for text and input_json deltas
// to encoding/json.
func FuzzFastDelta(f *testing.F) {
	f.Add([]byte(textDeltaEvent(0, "Hello")))
	f.Add([]byte(textDeltaEvent(10, "esc \" \\ \n \u2028 é")))
	f.Add([]byte(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"\u00e9\/"}}` + "\n "))
	f.Add([]byte(`{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"location\": \"Pa"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkFastDelta(t, data)
	})
}
