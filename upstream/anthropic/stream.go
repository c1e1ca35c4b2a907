package anthropic

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/arcaneapi/caddy-arcane/upstream/openai"
	"github.com/arcaneapi/caddy-arcane/upstream/sse"
)

// Stream translates one Messages API event stream into OpenAI
// chat.completion.chunk events. Feed it every event in order; it is not safe
// for concurrent use. Its memory is bounded by the largest event and the
// number of tool calls open at once.
type Stream struct {
	model   string
	created int64
	nanos   int64  // now, for the fallback id
	msgID   string // from message_start, until the first chunk fixes the id
	head    []byte // {"id":…,"object":…,"created":…,"model":… — every chunk opens with it
	buf     []byte // the chunk being built
	ev      event  // the event being read, reused

	tokens     tokens
	usageSeen  bool // some usage was reported
	outputSeen bool // a message_delta reported output_tokens

	tools    []openTool // tool_use blocks started and not yet stopped
	nextTool int        // OpenAI's index of the next tool call

	started   bool // message_start seen
	roleSent  bool // the chunk with the assistant role went out
	finished  bool // the chunk with finish_reason went out
	done      bool
	failed    bool
	delivered bool
}

// openTool is a tool_use block between its start and stop events.
type openTool struct {
	index int64  // Anthropic's content block index
	k     int    // OpenAI's tool call index: 0, 1, 2… over tool calls only
	args  bool   // some arguments went out
	input []byte // a non-empty input given whole at the block's start
}

// event is what the stream reads of an event's data. Every field stays raw
// and is reused from event to event, so reading a text delta allocates
// nothing; a value of an unexpected type reads as absent.
type event struct {
	Type    json.RawMessage `json:"type"`
	Index   json.RawMessage `json:"index"`
	Message struct {
		ID    json.RawMessage `json:"id"`
		Usage usageFields     `json:"usage"`
	} `json:"message"`
	ContentBlock struct {
		Type  json.RawMessage `json:"type"`
		ID    json.RawMessage `json:"id"`
		Name  json.RawMessage `json:"name"`
		Text  json.RawMessage `json:"text"`
		Input json.RawMessage `json:"input"`
	} `json:"content_block"`
	Delta struct {
		Type        json.RawMessage `json:"type"`
		Text        json.RawMessage `json:"text"`
		PartialJSON json.RawMessage `json:"partial_json"`
		StopReason  json.RawMessage `json:"stop_reason"`
	} `json:"delta"`
	Usage usageFields `json:"usage"`
	Error struct {
		Type    json.RawMessage `json:"type"`
		Message json.RawMessage `json:"message"`
	} `json:"error"`
}

func (e *event) reset() {
	e.Type, e.Index = e.Type[:0], e.Index[:0]
	m := &e.Message
	m.ID = m.ID[:0]
	m.Usage.reset()
	c := &e.ContentBlock
	c.Type, c.ID, c.Name, c.Text, c.Input = c.Type[:0], c.ID[:0], c.Name[:0], c.Text[:0], c.Input[:0]
	d := &e.Delta
	d.Type, d.Text, d.PartialJSON, d.StopReason = d.Type[:0], d.Text[:0], d.PartialJSON[:0], d.StopReason[:0]
	e.Usage.reset()
	e.Error.Type, e.Error.Message = e.Error.Type[:0], e.Error.Message[:0]
}

// Kinds of event the stream acts on.
const (
	evOther = iota
	evMessageStart
	evBlockStart
	evBlockDelta
	evBlockStop
	evMessageDelta
	evMessageStop
	evError
)

func eventKind(name string) int {
	switch name {
	case "message_start":
		return evMessageStart
	case "content_block_start":
		return evBlockStart
	case "content_block_delta":
		return evBlockDelta
	case "content_block_stop":
		return evBlockStop
	case "message_delta":
		return evMessageDelta
	case "message_stop":
		return evMessageStop
	case "error":
		return evError
	}
	return evOther // ping, and event types newer than this code
}

// NewStream starts the translation of one stream whose chunks name
// publicModel and carry now as their created time.
func NewStream(publicModel string, now time.Time) *Stream {
	return &Stream{model: publicModel, created: now.Unix(), nanos: now.UnixNano()}
}

// Event translates one upstream event (its SSE event name and data) and
// appends the resulting OpenAI chunks to dst as complete SSE frames, zero or
// more. It never appends [DONE] nor the usage chunk (see UsageChunk).
// Unknown event types and ping append nothing, and so does every event after
// Done. An event without a name is known by its data's type. It returns an
// error only for data it cannot parse, a known event whose data is not a JSON
// object, and then appends nothing and changes nothing: the caller ends the
// stream with its own in-band error.
func (s *Stream) Event(dst []byte, name string, data []byte) ([]byte, error) {
	if s.done {
		return dst, nil
	}
	kind := eventKind(name)
	if kind == evOther && name != "" || s.afterFinish(kind) {
		return dst, nil
	}
	if kind == evBlockDelta {
		switch fast, index, literal := fastDelta(data); fast {
		case fastText:
			return s.text(dst, literal), nil
		case fastJSON:
			return s.arguments(dst, index, literal), nil
		}
	}
	if err := s.read(data); err != nil {
		if name == "" {
			name = "unnamed"
		}
		return dst, fmt.Errorf("anthropic: reading %s event: %w", name, err)
	}
	if name == "" {
		t, _ := rawText(s.ev.Type, nil)
		if kind = eventKind(string(t)); kind == evOther || s.afterFinish(kind) {
			return dst, nil
		}
	}
	ev := &s.ev
	switch kind {
	case evMessageStart:
		return s.messageStart(dst), nil
	case evBlockStart:
		return s.blockStart(dst), nil
	case evBlockDelta:
		t, _ := rawText(ev.Delta.Type, nil)
		switch string(t) {
		case "text_delta":
			return s.text(dst, ev.Delta.Text), nil
		case "input_json_delta":
			return s.arguments(dst, blockIndex(ev.Index), ev.Delta.PartialJSON), nil
		}
		return dst, nil // thinking, signature and citation deltas are dropped
	case evBlockStop:
		return s.blockStop(dst, blockIndex(ev.Index)), nil
	case evMessageDelta:
		return s.messageDelta(dst), nil
	case evMessageStop:
		if !s.finished {
			dst = s.finish(dst, "stop")
		}
		s.done = true
		return dst, nil
	case evError:
		return s.error(dst), nil
	}
	return dst, nil
}

// afterFinish reports whether an event of kind is content that comes after
// the chunk with the finish reason went out. Anthropic sends none; should it,
// it is dropped, because OpenAI's clients take the finish as the end of the
// choice.
func (s *Stream) afterFinish(kind int) bool {
	return s.finished && (kind == evBlockStart || kind == evBlockDelta || kind == evBlockStop)
}

// read decodes data into s.ev. Values of unexpected types are skipped, not
// failed on: only data that is not a JSON object is an error.
func (s *Stream) read(data []byte) error {
	s.ev.reset()
	data = bytes.TrimLeft(data, " \t\r\n")
	if len(data) == 0 || data[0] != '{' {
		return errors.New("data is not a JSON object")
	}
	err := json.Unmarshal(data, &s.ev)
	var te *json.UnmarshalTypeError
	if err != nil && !errors.As(err, &te) {
		return err
	}
	return nil
}

// blockIndex reads a content block index; -1 when there is none.
func blockIndex(raw json.RawMessage) int64 {
	if n, ok := rawCount(raw); ok {
		return n
	}
	return -1
}

func (s *Stream) messageStart(dst []byte) []byte {
	if s.started {
		return dst // Anthropic sends one; a repeat changes nothing
	}
	s.started = true
	m := &s.ev.Message
	if id, ok := rawString(m.ID); ok && s.head == nil {
		s.msgID = id
	}
	// Its output_tokens is a placeholder (usually 1): the count comes with
	// message_delta.
	if s.tokens.read(&m.Usage, false) {
		s.usageSeen = true
	}
	return s.role(dst)
}

func (s *Stream) blockStart(dst []byte) []byte {
	c := &s.ev.ContentBlock
	t, _ := rawText(c.Type, nil)
	switch string(t) {
	case "text":
		return s.text(dst, c.Text)
	case "tool_use":
	default:
		return dst // thinking, redacted_thinking, server tools: dropped
	}
	tool := openTool{index: blockIndex(s.ev.Index), k: s.nextTool}
	s.nextTool++
	if len(c.Input) > 0 && c.Input[0] == '{' {
		var buf bytes.Buffer
		if json.Compact(&buf, c.Input) == nil && buf.Len() > 2 {
			tool.input = buf.Bytes()
		}
	}
	s.tools = append(s.tools, tool)

	dst = s.role(dst)
	b := s.open()
	b = append(b, `{"tool_calls":[{"index":`...)
	b = strconv.AppendInt(b, int64(tool.k), 10)
	b = append(b, `,"id":`...)
	b = appendStringValue(b, c.ID)
	b = append(b, `,"type":"function","function":{"name":`...)
	b = appendStringValue(b, c.Name)
	b = append(b, `,"arguments":""}}]}`...)
	return s.close(dst, b, "")
}

// text appends a content chunk for raw, a text block's text; an empty or
// missing text appends nothing.
func (s *Stream) text(dst []byte, raw json.RawMessage) []byte {
	if len(raw) <= 2 || raw[0] != '"' {
		return dst
	}
	dst = s.role(dst)
	b := s.open()
	b = append(b, `{"content":`...)
	b = appendLiteral(b, raw)
	b = append(b, '}')
	return s.close(dst, b, "")
}

// arguments appends a tool call chunk carrying a piece of its arguments,
// raw, for the tool_use block at index.
func (s *Stream) arguments(dst []byte, index int64, raw json.RawMessage) []byte {
	i := s.tool(index)
	if i < 0 || len(raw) <= 2 || raw[0] != '"' {
		return dst
	}
	s.tools[i].args = true
	return s.argumentsChunk(dst, s.tools[i].k, raw)
}

// argumentsChunk appends a tool call chunk with arguments, a string literal.
func (s *Stream) argumentsChunk(dst []byte, k int, literal []byte) []byte {
	dst = s.role(dst)
	b := s.open()
	b = append(b, `{"tool_calls":[{"index":`...)
	b = strconv.AppendInt(b, int64(k), 10)
	b = append(b, `,"function":{"arguments":`...)
	b = appendLiteral(b, literal)
	b = append(b, "}}]}"...)
	return s.close(dst, b, "")
}

// blockStop closes a tool_use block. One that got no arguments at all gets
// the input its start gave, or "{}": clients parse the arguments of every
// call, and "" is not JSON.
func (s *Stream) blockStop(dst []byte, index int64) []byte {
	i := s.tool(index)
	if i < 0 {
		return dst
	}
	t := s.tools[i]
	s.tools = append(s.tools[:i], s.tools[i+1:]...)
	if t.args {
		return dst
	}
	args := []byte(`"{}"`)
	if t.input != nil {
		args = appendString(nil, string(t.input))
	}
	return s.argumentsChunk(dst, t.k, args)
}

// tool returns the position in s.tools of the open tool_use block at index,
// or -1.
func (s *Stream) tool(index int64) int {
	for i := len(s.tools) - 1; i >= 0; i-- {
		if s.tools[i].index == index {
			return i
		}
	}
	return -1
}

func (s *Stream) messageDelta(dst []byte) []byte {
	u := &s.ev.Usage
	if _, ok := rawCount(u.OutputTokens); ok {
		s.outputSeen = true
	}
	// Its counts are totals so far: they replace, never add to, what came
	// before.
	if s.tokens.read(u, true) {
		s.usageSeen = true
	}
	stop, ok := rawText(s.ev.Delta.StopReason, nil)
	if !ok || s.finished {
		return dst
	}
	return s.finish(dst, finishReason(stop))
}

// finish appends the chunk with the finish reason.
func (s *Stream) finish(dst []byte, reason string) []byte {
	s.finished = true
	dst = s.role(dst)
	b := s.open()
	b = append(b, "{}"...)
	return s.close(dst, b, reason)
}

// error appends the in-band error chunk for an error event, in OpenRouter's
// shape: a choice finished with "error", and OpenAI's error object beside it.
func (s *Stream) error(dst []byte) []byte {
	s.done, s.failed = true, true
	typ, _ := rawString(s.ev.Error.Type)
	msg, _ := rawString(s.ev.Error.Message)
	if msg == "" {
		msg = "The model's provider reported an error."
	}
	code := "upstream_error"
	switch typ {
	case "overloaded_error":
		code = "upstream_overloaded"
	case "timeout_error":
		code = "upstream_timeout"
	}
	b := s.open()
	b = append(b, "{}"...)
	b = append(b, `,"logprobs":null,"finish_reason":"error"}],`...)
	env := openai.MarshalError(msg, "server_error", "", code) // {"error":{…}}
	b = append(b, env[1:]...)
	s.buf = b
	s.delivered = true
	return sse.AppendData(dst, b)
}

// role appends the chunk that opens OpenAI streams, with the assistant role,
// unless it went out already.
func (s *Stream) role(dst []byte) []byte {
	if s.roleSent {
		return dst
	}
	s.roleSent = true
	b := s.open()
	b = append(b, `{"role":"assistant","content":""}`...)
	return s.close(dst, b, "")
}

// open starts a chunk in s.buf, up to its choice's delta.
func (s *Stream) open() []byte {
	b := s.appendHead(s.buf[:0])
	return append(b, `,"choices":[{"index":0,"delta":`...)
}

// close ends the chunk begun by open, its delta written, with finish as the
// finish reason ("" for null), and appends it to dst as an SSE frame.
func (s *Stream) close(dst, b []byte, finish string) []byte {
	b = append(b, `,"logprobs":null,"finish_reason":`...)
	if finish == "" {
		b = append(b, "null"...)
	} else {
		b = append(b, '"')
		b = append(b, finish...)
		b = append(b, '"')
	}
	b = append(b, "}]}"...)
	s.buf = b
	s.delivered = true
	return sse.AppendData(dst, b)
}

// appendHead appends the members every chunk opens with. The id is fixed by
// the first chunk: "chatcmpl-" and the message id, or a fallback when no
// message_start came first.
func (s *Stream) appendHead(dst []byte) []byte {
	if s.head == nil {
		id := s.msgID
		if id == "" {
			id = "anthropic-" + strconv.FormatInt(s.nanos, 36)
		}
		h := append([]byte(nil), `{"id":`...)
		h = appendString(h, "chatcmpl-"+id)
		h = append(h, `,"object":"chat.completion.chunk","created":`...)
		h = strconv.AppendInt(h, s.created, 10)
		h = append(h, `,"model":`...)
		s.head = appendString(h, s.model)
	}
	return append(dst, s.head...)
}

// appendStringValue appends raw if it is a string literal, else "".
func appendStringValue(dst []byte, raw json.RawMessage) []byte {
	if len(raw) < 2 || raw[0] != '"' {
		return append(dst, `""`...)
	}
	return appendLiteral(dst, raw)
}

// Done reports whether message_stop or an error event ended the stream.
func (s *Stream) Done() bool { return s.done }

// Failed reports whether an error event ended the stream; Event then
// appended one in-band error chunk.
func (s *Stream) Failed() bool { return s.failed }

// Delivered reports whether Event has appended any chunk yet.
func (s *Stream) Delivered() bool { return s.delivered }

// Usage returns the usage so far, mapped as AppendCompletion maps it, and
// whether any usage was reported. Input and cache counts come from
// message_start (a message_delta that repeats them overrides them); output
// tokens from the last message_delta, whose count is a running total, so
// CompletionTokens is 0 until one arrives (see OutputReported).
func (s *Stream) Usage() (openai.Usage, bool) {
	return s.tokens.usage(), s.usageSeen
}

// OutputReported reports whether a message_delta has reported output_tokens.
// Until one has, Usage's CompletionTokens is 0: a caller billing a stream cut
// short should take the prompt from Usage and count the delivered text for
// the completion.
func (s *Stream) OutputReported() bool { return s.outputSeen }

// UsageChunk appends, unframed, the final usage chunk: choices empty and
// usage with prompt_tokens, completion_tokens, total_tokens and
// prompt_tokens_details (cached_tokens and cache_write_tokens). The caller
// adds the cost and frames it.
func (s *Stream) UsageChunk(dst []byte) []byte {
	dst = s.appendHead(dst)
	dst = append(dst, `,"choices":[],"usage":`...)
	dst = appendUsage(dst, s.tokens.usage())
	return append(dst, '}')
}
