package anthropic

import (
	"testing"
	"time"
)

// BenchmarkStreamTextDelta is the common path of a streamed answer: one
// text_delta event in, one content chunk out.
func BenchmarkStreamTextDelta(b *testing.B) {
	s := NewStream("claude-sonnet-4-6", time.Unix(1700000000, 0))
	dst, err := s.Event(nil, "message_start", []byte(eventMessageStart))
	if err != nil {
		b.Fatal(err)
	}
	dst, _ = s.Event(dst, "content_block_start", []byte(`{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`))
	data := []byte(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello! How can I help you today? I can answer questions."}}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if dst, err = s.Event(dst[:0], "content_block_delta", data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStreamToolDelta is an argument piece of a tool call.
func BenchmarkStreamToolDelta(b *testing.B) {
	s := NewStream("claude-sonnet-4-6", time.Unix(1700000000, 0))
	dst, _ := s.Event(nil, "message_start", []byte(eventMessageStart))
	dst, _ = s.Event(dst, "content_block_start", []byte(`{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}`))
	data := []byte(`{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\": \"San Fra"}}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	var err error
	for b.Loop() {
		if dst, err = s.Event(dst[:0], "content_block_delta", data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStreamGeneralPath is a text delta whose keys are not in
// Anthropic's order: it takes the general path through encoding/json, as
// every event but text and argument deltas does.
func BenchmarkStreamGeneralPath(b *testing.B) {
	s := NewStream("claude-sonnet-4-6", time.Unix(1700000000, 0))
	dst, _ := s.Event(nil, "message_start", []byte(eventMessageStart))
	data := []byte(`{"index":0,"type":"content_block_delta","delta":{"type":"text_delta","text":"Hello! How can I help you today? I can answer questions."}}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	var err error
	for b.Loop() {
		if dst, err = s.Event(dst[:0], "content_block_delta", data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendRequest translates a small tool-using conversation.
func BenchmarkAppendRequest(b *testing.B) {
	body := []byte(requestToolRoundTrip)
	var dst []byte
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		var err error
		if dst, err = AppendRequest(dst[:0], body, deploy); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendCompletion translates a response with text and a tool call.
func BenchmarkAppendCompletion(b *testing.B) {
	resp := []byte(responseToolUse)
	var dst []byte
	b.ReportAllocs()
	b.SetBytes(int64(len(resp)))
	for b.Loop() {
		var err error
		if dst, _, err = AppendCompletion(dst[:0], resp, "claude-sonnet-4-6", now); err != nil {
			b.Fatal(err)
		}
	}
}
