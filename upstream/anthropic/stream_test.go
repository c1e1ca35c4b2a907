package anthropic

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/arcaneapi/caddy-arcane/upstream/openai"
	"github.com/arcaneapi/caddy-arcane/upstream/sse"
)

const public = "claude-sonnet-4-6"

// chunk is an OpenAI chat.completion.chunk as a client decodes it.
type chunk struct {
	ID      *string `json:"id"`
	Object  string  `json:"object"`
	Created *int64  `json:"created"`
	Model   string  `json:"model"`
	Choices []struct {
		Index        *int            `json:"index"`
		Delta        json.RawMessage `json:"delta"`
		Logprobs     json.RawMessage `json:"logprobs"`
		FinishReason *string         `json:"finish_reason"`
	} `json:"choices"`
	Usage json.RawMessage `json:"usage"`
	Error *struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    string  `json:"code"`
	} `json:"error"`
}

// events reads the SSE text of an Anthropic stream into its events.
func events(t testing.TB, text string) []sse.Event {
	t.Helper()
	var evs []sse.Event
	r := sse.NewReader(strings.NewReader(text), 0)
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			return evs
		}
		if err != nil {
			t.Fatal(err)
		}
		ev.Data = bytes.Clone(ev.Data)
		evs = append(evs, ev)
	}
}

// feed runs every event of text through s and returns what it appended.
func feed(t testing.TB, s *Stream, text string) []byte {
	t.Helper()
	var out []byte
	for _, ev := range events(t, text) {
		var err error
		if out, err = s.Event(out, ev.Name, ev.Data); err != nil {
			t.Fatalf("%s event: %v", ev.Name, err)
		}
	}
	return out
}

// chunks parses out as SSE frames of chunks, checks what every chunk of a
// stream must hold, and returns them.
func chunks(t testing.TB, out []byte) []chunk {
	t.Helper()
	var cs []chunk
	for _, ev := range events(t, string(out)) {
		if ev.Name != "" {
			t.Errorf("a frame has an event name %q", ev.Name)
		}
		if sse.IsDone(ev.Data) {
			t.Fatalf("[DONE] was appended")
		}
		var c chunk
		if err := json.Unmarshal(ev.Data, &c); err != nil {
			t.Fatalf("a frame is not a chunk: %v: %s", err, ev.Data)
		}
		if c.Object != "chat.completion.chunk" || c.Model != public || c.ID == nil || c.Created == nil || c.Choices == nil {
			t.Fatalf("malformed chunk: %s", ev.Data)
		}
		if len(cs) > 0 && (*c.ID != *cs[0].ID || *c.Created != *cs[0].Created) {
			t.Fatalf("chunk id or created changed: %s after %s", ev.Data, *cs[0].ID)
		}
		for _, ch := range c.Choices {
			if ch.Index == nil || *ch.Index != 0 || string(ch.Logprobs) != "null" || !bytes.HasPrefix(ch.Delta, []byte("{")) {
				t.Fatalf("malformed choice: %s", ev.Data)
			}
		}
		cs = append(cs, c)
	}
	return cs
}

// summary renders each chunk as its delta and, after a slash, its finish
// reason, or "error: type/code: message" for an error chunk.
func summary(cs []chunk) []string {
	var out []string
	for _, c := range cs {
		if c.Error != nil {
			out = append(out, fmt.Sprintf("error: %s/%s: %s", c.Error.Type, c.Error.Code, c.Error.Message))
			continue
		}
		ch := c.Choices[0]
		s := string(ch.Delta)
		if ch.FinishReason != nil {
			s += "/" + *ch.FinishReason
		}
		out = append(out, s)
	}
	return out
}

// ev frames one event in Anthropic's form.
func ev(name, data string) string { return "event: " + name + "\ndata: " + data + "\n\n" }

const (
	role       = `{"role":"assistant","content":""}`
	startText0 = `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`
	stopBlock0 = `{"type":"content_block_stop","index":0}`
	stopEvent  = `{"type":"message_stop"}`
)

func textDeltaEvent(index int, text string) string {
	b, _ := json.Marshal(text)
	return fmt.Sprintf(`{"type":"content_block_delta","index":%d,"delta":{"type":"text_delta","text":%s}}`, index, b)
}

func messageDelta(stop string, output int) string {
	return fmt.Sprintf(`{"type":"message_delta","delta":{"stop_reason":%q,"stop_sequence":null},"usage":{"output_tokens":%d}}`, stop, output)
}

func TestStream(t *testing.T) {
	tests := []struct {
		name       string
		stream     string
		want       []string
		wantID     string
		wantUsage  openai.Usage
		noUsage    bool
		failed     bool
		unfinished bool
	}{
		{
			name:      "a text answer opens with the role, streams its text and finishes with stop",
			stream:    streamText,
			want:      []string{role, `{"content":"Hello"}`, `{"content":"! How can I help?\n"}`, `{}/stop`},
			wantID:    "chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL",
			wantUsage: openai.Usage{PromptTokens: 25, CompletionTokens: 15, TotalTokens: 40},
		},
		{
			name:   "tool calls between text blocks get OpenAI's indexes 0 and 1, not the block indexes",
			stream: streamTools,
			want: []string{
				role,
				`{"content":"Let me check both cities."}`,
				`{"tool_calls":[{"index":0,"id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","type":"function","function":{"name":"get_weather","arguments":""}}]}`,
				`{"tool_calls":[{"index":0,"function":{"arguments":"{\"location\":"}}]}`,
				`{"tool_calls":[{"index":0,"function":{"arguments":" \"Paris\"}"}}]}`,
				`{"content":" And Tokyo:"}`,
				`{"tool_calls":[{"index":1,"id":"toolu_01VBsaRg3Ftx7Yb4sBYAfCEZ","type":"function","function":{"name":"get_weather","arguments":""}}]}`,
				`{"tool_calls":[{"index":1,"function":{"arguments":"{\"location\": \"Tokyo\"}"}}]}`,
				`{}/tool_calls`,
			},
			wantID:    "chatcmpl-msg_014p7gG3wDgGV9EUtLvnow3U",
			wantUsage: openai.Usage{PromptTokens: 472, CompletionTokens: 89, TotalTokens: 561},
		},
		{
			name: "a tool call of no arguments gets {} when its block stops",
			stream: ev("message_start", eventMessageStart) +
				ev("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_01NoArgs","name":"get_time","input":{}}}`) +
				ev("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":""}}`) +
				ev("content_block_stop", stopBlock0) +
				ev("message_delta", messageDelta("tool_use", 30)) + ev("message_stop", stopEvent),
			want: []string{
				role,
				`{"tool_calls":[{"index":0,"id":"toolu_01NoArgs","type":"function","function":{"name":"get_time","arguments":""}}]}`,
				`{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}`,
				`{}/tool_calls`,
			},
			wantID:    "chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL",
			wantUsage: openai.Usage{PromptTokens: 25, CompletionTokens: 30, TotalTokens: 55},
		},
		{
			name: "a tool call whose input came whole with its start gets that input when its block stops",
			stream: ev("message_start", eventMessageStart) +
				ev("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_01Whole","name":"f","input":{"a": [1, 2]}}}`) +
				ev("content_block_stop", stopBlock0) + ev("message_stop", stopEvent),
			want: []string{
				role,
				`{"tool_calls":[{"index":0,"id":"toolu_01Whole","type":"function","function":{"name":"f","arguments":""}}]}`,
				`{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":[1,2]}"}}]}`,
				`{}/stop`,
			},
			wantID:    "chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL",
			wantUsage: openai.Usage{PromptTokens: 25, TotalTokens: 25},
		},
		{
			name: "max_tokens finishes with length",
			stream: ev("message_start", eventMessageStart) + ev("content_block_start", startText0) +
				ev("content_block_delta", textDeltaEvent(0, "Once upon a")) + ev("content_block_stop", stopBlock0) +
				ev("message_delta", messageDelta("max_tokens", 3)) + ev("message_stop", stopEvent),
			want:      []string{role, `{"content":"Once upon a"}`, `{}/length`},
			wantID:    "chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL",
			wantUsage: openai.Usage{PromptTokens: 25, CompletionTokens: 3, TotalTokens: 28},
		},
		{
			name: "a stop sequence finishes with stop",
			stream: ev("message_start", eventMessageStart) + ev("content_block_start", startText0) +
				ev("content_block_delta", textDeltaEvent(0, "1, 2, 3, ")) + ev("content_block_stop", stopBlock0) +
				ev("message_delta", `{"type":"message_delta","delta":{"stop_reason":"stop_sequence","stop_sequence":"4"},"usage":{"output_tokens":9}}`) +
				ev("message_stop", stopEvent),
			want:      []string{role, `{"content":"1, 2, 3, "}`, `{}/stop`},
			wantID:    "chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL",
			wantUsage: openai.Usage{PromptTokens: 25, CompletionTokens: 9, TotalTokens: 34},
		},
		{
			name: "cache reads and writes from message_start count as prompt tokens, and as cached and cache-write tokens",
			stream: ev("message_start", `{"type":"message_start","message":{"id":"msg_01Cache","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-6","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":21,"cache_creation_input_tokens":1200,"cache_read_input_tokens":188086,"cache_creation":{"ephemeral_5m_input_tokens":1200,"ephemeral_1h_input_tokens":0},"output_tokens":1,"service_tier":"standard"}}}`) +
				ev("content_block_start", startText0) + ev("content_block_delta", textDeltaEvent(0, "Yes.")) + ev("content_block_stop", stopBlock0) +
				ev("message_delta", messageDelta("end_turn", 4)) + ev("message_stop", stopEvent),
			want:      []string{role, `{"content":"Yes."}`, `{}/stop`},
			wantID:    "chatcmpl-msg_01Cache",
			wantUsage: openai.Usage{PromptTokens: 189307, CompletionTokens: 4, TotalTokens: 189311, CachedTokens: 188086, CacheWriteTokens: 1200},
		},
		{
			name: "output_tokens of message_delta is a running total: the last one replaces, it does not add",
			stream: ev("message_start", eventMessageStart) + ev("content_block_start", startText0) +
				ev("content_block_delta", textDeltaEvent(0, "A")) +
				ev("message_delta", `{"type":"message_delta","delta":{"stop_reason":null,"stop_sequence":null},"usage":{"output_tokens":5}}`) +
				ev("content_block_delta", textDeltaEvent(0, "B")) + ev("content_block_stop", stopBlock0) +
				ev("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":12}}`) +
				ev("message_stop", stopEvent),
			want:      []string{role, `{"content":"A"}`, `{"content":"B"}`, `{}/stop`},
			wantID:    "chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL",
			wantUsage: openai.Usage{PromptTokens: 25, CompletionTokens: 12, TotalTokens: 37},
		},
		{
			name: "an overloaded error mid-stream ends it with one in-band error chunk, and nothing after it counts",
			stream: ev("message_start", eventMessageStart) + ev("content_block_start", startText0) +
				ev("content_block_delta", textDeltaEvent(0, "The answer is")) +
				ev("error", `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`) +
				ev("content_block_delta", textDeltaEvent(0, " 42")) + ev("message_delta", messageDelta("end_turn", 40)) + ev("message_stop", stopEvent),
			want:      []string{role, `{"content":"The answer is"}`, "error: server_error/upstream_overloaded: Overloaded"},
			wantID:    "chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL",
			wantUsage: openai.Usage{PromptTokens: 25, TotalTokens: 25},
			failed:    true,
		},
		{
			name:      "an api error before anything else is one error chunk",
			stream:    ev("error", `{"type":"error","error":{"type":"api_error","message":"Internal server error"}}`),
			want:      []string{"error: server_error/upstream_error: Internal server error"},
			noUsage:   true,
			failed:    true,
			wantUsage: openai.Usage{},
		},
		{
			name: "thinking, signatures, citations, pings and unknown events are dropped",
			stream: ev("message_start", eventMessageStart) +
				ev("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}`) +
				ev("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me think."}}`) +
				ev("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM1gbcDa9GJwZA2b3h"}}`) +
				ev("content_block_stop", stopBlock0) + ev("ping", `{"type": "ping"}`) + ev("future_event", `{"type":"future_event"}`) +
				ev("content_block_start", `{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}`) +
				ev("content_block_delta", `{"type":"content_block_delta","index":1,"delta":{"type":"citations_delta","citation":{"type":"char_location","cited_text":"x"}}}`) +
				ev("content_block_delta", textDeltaEvent(1, "Done.")) +
				ev("message_delta", messageDelta("end_turn", 50)) + ev("message_stop", stopEvent),
			want:      []string{role, `{"content":"Done."}`, `{}/stop`},
			wantID:    "chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL",
			wantUsage: openai.Usage{PromptTokens: 25, CompletionTokens: 50, TotalTokens: 75},
		},
		{
			name: "events before message_start still make well-formed chunks, under a fallback id that stays",
			stream: ev("content_block_delta", textDeltaEvent(0, "Early")) + ev("message_start", eventMessageStart) +
				ev("content_block_delta", textDeltaEvent(0, " text")) + ev("message_stop", stopEvent),
			want:      []string{role, `{"content":"Early"}`, `{"content":" text"}`, `{}/stop`},
			wantID:    "chatcmpl-anthropic-",
			wantUsage: openai.Usage{PromptTokens: 25, TotalTokens: 25},
		},
		{
			name: "events without a name are known by their data's type",
			stream: "data: " + eventMessageStart + "\n\ndata: " + textDeltaEvent(0, "Hi") + "\n\ndata: " +
				`{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":2}}` + "\n\ndata: {\"type\":\"ping\"}\n\n",
			want:       []string{role, `{"content":"Hi"}`, `{}/stop`},
			wantID:     "chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL",
			wantUsage:  openai.Usage{PromptTokens: 25, CompletionTokens: 2, TotalTokens: 27},
			unfinished: true,
		},
		{
			name: "a text delta written with spaces and escapes reads as the compact one does",
			stream: ev("message_start", eventMessageStart) +
				ev("content_block_delta", `{ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": "caf\u00e9 \"<b>\" \ud83d\ude00" } }`) +
				ev("content_block_delta", `{"type":"content_block_delta","delta":{"text":"tail","type":"text_delta"},"index":0}`) +
				ev("message_stop", stopEvent),
			want:      []string{role, `{"content":"caf\u00e9 \"<b>\" \ud83d\ude00"}`, `{"content":"tail"}`, `{}/stop`},
			wantID:    "chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL",
			wantUsage: openai.Usage{PromptTokens: 25, TotalTokens: 25},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStream(public, now)
			if s.Delivered() {
				t.Fatal("Delivered before any event")
			}
			out := feed(t, s, tt.stream)
			cs := chunks(t, out)
			got := summary(cs)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d chunks, want %d:\n%s", len(got), len(tt.want), strings.Join(got, "\n"))
			}
			for i := range got {
				if got[i] != tt.want[i] && !jsonEqualDelta(got[i], tt.want[i]) {
					t.Errorf("chunk %d:\n got  %s\n want %s", i, got[i], tt.want[i])
				}
			}
			if tt.wantID != "" && !strings.HasPrefix(*cs[0].ID, tt.wantID) {
				t.Errorf("id %q, want %q", *cs[0].ID, tt.wantID)
			}
			if *cs[0].Created != now.Unix() {
				t.Errorf("created %d, want %d", *cs[0].Created, now.Unix())
			}
			if s.Done() == tt.unfinished || s.Failed() != tt.failed || !s.Delivered() {
				t.Errorf("Done %v, Failed %v, Delivered %v", s.Done(), s.Failed(), s.Delivered())
			}
			u, ok := s.Usage()
			if u != tt.wantUsage || ok == tt.noUsage {
				t.Errorf("Usage() = %+v, %v; want %+v", u, ok, tt.wantUsage)
			}
			// Nothing after the end appends anything.
			if s.Done() {
				for _, ev := range events(t, streamText) {
					if more, err := s.Event(out, ev.Name, ev.Data); err != nil || len(more) != len(out) {
						t.Fatalf("%s after Done appended %q, err %v", ev.Name, more[len(out):], err)
					}
				}
			}
		})
	}
}

// jsonEqualDelta compares two summaries whose deltas are JSON written
// differently.
func jsonEqualDelta(a, b string) bool {
	da, fa, _ := strings.Cut(a, "}/")
	db, fb, _ := strings.Cut(b, "}/")
	var x, y any
	if fa != fb || json.Unmarshal([]byte(strings.TrimSuffix(da, "}")+"}"), &x) != nil || json.Unmarshal([]byte(strings.TrimSuffix(db, "}")+"}"), &y) != nil {
		return false
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return string(xb) == string(yb)
}

func TestStreamErrorChunkShape(t *testing.T) {
	s := NewStream(public, now)
	out := feed(t, s, ev("message_start", eventMessageStart)+ev("error", `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`))
	frames := events(t, string(out))
	want := `{"id":"chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL","object":"chat.completion.chunk","created":1767225600,"model":"claude-sonnet-4-6",` +
		`"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"error"}],` +
		`"error":{"message":"Overloaded","type":"server_error","param":null,"code":"upstream_overloaded"}}`
	if got := string(frames[len(frames)-1].Data); got != want {
		t.Errorf("error chunk\n got  %s\n want %s", got, want)
	}
}

func TestStreamUsageChunk(t *testing.T) {
	s := NewStream(public, now)
	feed(t, s, strings.Replace(streamText, `"cache_read_input_tokens":0`, `"cache_read_input_tokens":100`, 1))
	got := string(s.UsageChunk([]byte("x")))
	want := `x{"id":"chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL","object":"chat.completion.chunk","created":1767225600,"model":"claude-sonnet-4-6","choices":[],` +
		`"usage":{"prompt_tokens":125,"completion_tokens":15,"total_tokens":140,"prompt_tokens_details":{"cached_tokens":100}}}`
	if got != want {
		t.Errorf("UsageChunk\n got  %s\n want %s", got, want)
	}
	// The proxy recognizes it and reads it as it does OpenAI's.
	obj := []byte(got[1:])
	if !openai.IsUsageOnlyChunk(obj) {
		t.Error("openai.IsUsageOnlyChunk = false")
	}
	if u, ok := openai.ParseUsage(obj); !ok || u != (openai.Usage{PromptTokens: 125, CompletionTokens: 15, TotalTokens: 140, CachedTokens: 100}) {
		t.Errorf("openai.ParseUsage = %+v, %v", u, ok)
	}
}

func TestStreamUsageChunkCarriesCacheWrites(t *testing.T) {
	s := NewStream(public, now)
	feed(t, s, strings.Replace(streamText, `"cache_creation_input_tokens":0`, `"cache_creation_input_tokens":4000`, 1))
	got := string(s.UsageChunk(nil))
	want := `{"id":"chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL","object":"chat.completion.chunk","created":1767225600,"model":"claude-sonnet-4-6","choices":[],` +
		`"usage":{"prompt_tokens":4025,"completion_tokens":15,"total_tokens":4040,"prompt_tokens_details":{"cached_tokens":0,"cache_write_tokens":4000}}}`
	if got != want {
		t.Errorf("UsageChunk\n got  %s\n want %s", got, want)
	}
	if u, _ := s.Usage(); u.CacheWriteTokens != 4000 || u.PromptTokens != 4025 {
		t.Errorf("Usage() = %+v, want 4000 of 4025 prompt tokens written to the cache", u)
	}
}

func TestStreamUsageBeforeOutput(t *testing.T) {
	s := NewStream(public, now)
	if _, ok := s.Usage(); ok {
		t.Error("usage seen before any event")
	}
	feed(t, s, ev("message_start", eventMessageStart)+ev("content_block_delta", textDeltaEvent(0, "cut here")))
	u, ok := s.Usage()
	if !ok || u != (openai.Usage{PromptTokens: 25, TotalTokens: 25}) || s.OutputReported() {
		t.Errorf("after message_start: Usage() = %+v, %v; OutputReported %v", u, ok, s.OutputReported())
	}
	feed(t, s, ev("message_delta", messageDelta("end_turn", 7)))
	if u, _ := s.Usage(); u.CompletionTokens != 7 || !s.OutputReported() {
		t.Errorf("after message_delta: Usage() = %+v; OutputReported %v", u, s.OutputReported())
	}
}

func TestStreamRefusesDataItCannotParse(t *testing.T) {
	for _, data := range []string{`{"type":"content_block_delta",`, `not json`, ``, `[1]`, `"text"`} {
		for _, name := range []string{"content_block_delta", "message_start", "error", ""} {
			s := NewStream(public, now)
			out, err := s.Event([]byte("x"), name, []byte(data))
			if err == nil {
				t.Errorf("%s %q: no error", name, data)
			}
			if string(out) != "x" || s.Done() || s.Delivered() {
				t.Errorf("%s %q: appended %q, Done %v, Delivered %v", name, data, out, s.Done(), s.Delivered())
			}
		}
	}
	// ping and unknown events are not read at all.
	s := NewStream(public, now)
	for _, name := range []string{"ping", "future_event"} {
		if out, err := s.Event(nil, name, []byte("not json")); err != nil || len(out) != 0 {
			t.Errorf("%s: %q, %v", name, out, err)
		}
	}
}

func TestStreamLenientValues(t *testing.T) {
	// Values of unexpected types read as absent rather than fail the stream.
	s := NewStream(public, now)
	out := feed(t, s, ev("message_start", `{"type":"message_start","message":{"id":5,"usage":{"input_tokens":"many","output_tokens":1}}}`)+
		ev("content_block_delta", `{"type":"content_block_delta","index":"zero","delta":{"type":"text_delta","text":7}}`)+
		ev("content_block_delta", `{"type":"content_block_delta","index":0,"delta":"text"}`)+
		ev("message_delta", `{"type":"message_delta","delta":{"stop_reason":null},"usage":null}`)+
		ev("message_stop", stopEvent))
	got := summary(chunks(t, out))
	if want := []string{role, `{}/stop`}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got %v, want %v", got, want)
	}
	if u, ok := s.Usage(); ok || u != (openai.Usage{}) {
		t.Errorf("Usage() = %+v, %v", u, ok)
	}
}

func TestStreamInvalidUTF8NeverReachesTheClient(t *testing.T) {
	s := NewStream(public, now)
	data := []byte(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a` + "\xff" + `b"}}`)
	out, err := s.Event(nil, "content_block_delta", data)
	if err != nil {
		t.Fatal(err)
	}
	cs := chunks(t, out)
	if got := string(cs[1].Choices[0].Delta); got != `{"content":"a\ufffdb"}` {
		t.Errorf("delta %s", got)
	}
}

func TestFastDeltaAgreesWithEncodingJSON(t *testing.T) {
	for _, data := range []string{
		textDeltaEvent(0, "plain"),
		textDeltaEvent(12, "esc \" \\ \n \t \u2028 é 😀"),
		`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"\u00e9\/"}}` + "\n",
		`{"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"{\"location\": \"Pa"}}`,
		`{"type":"content_block_delta","index":123456789012345678,"delta":{"type":"input_json_delta","partial_json":""}}`,
		`{"type":"content_block_delta","index":1234567890123456789,"delta":{"type":"input_json_delta","partial_json":"x"}}`,
		`{"type":"content_block_delta","index":01,"delta":{"type":"text_delta","text":"x"}}`,
		`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}}`,
		`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x\q"}}`,
		`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x` + "\n" + `"}}`,
		`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x\u12"}}`,
		`{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"x"}}`,
	} {
		checkFastDelta(t, []byte(data))
	}
	if kind, index, _ := fastDelta([]byte(`{"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"{"}}`)); kind != fastJSON || index != 3 {
		t.Errorf("fastDelta of an input_json_delta = %d, %d", kind, index)
	}
}

// checkFastDelta holds the fast path to encoding/json: whatever it accepts
// is valid JSON whose delta type, index and text it returns.
func checkFastDelta(t testing.TB, data []byte) {
	t.Helper()
	kind, index, literal := fastDelta(data)
	if kind == 0 {
		return
	}
	var ev struct {
		Type  string
		Index int64
		Delta struct {
			Type, Text  string
			PartialJSON string `json:"partial_json"`
		}
	}
	if err := json.Unmarshal(data, &ev); err != nil {
		t.Fatalf("fastDelta accepted what encoding/json refuses: %v: %q", err, data)
	}
	want, wantKind := ev.Delta.Text, fastText
	if ev.Delta.Type == "input_json_delta" {
		want, wantKind = ev.Delta.PartialJSON, fastJSON
	}
	var s string
	if err := json.Unmarshal(literal, &s); err != nil || s != want || kind != wantKind || index != ev.Index || ev.Type != "content_block_delta" {
		t.Fatalf("fastDelta read %d %d %q (%q), encoding/json %+v: %q", kind, index, literal, s, ev, data)
	}
}
