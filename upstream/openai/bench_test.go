package openai

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// request100KB is a realistic long conversation: system prompt, tools, and
// alternating turns with escapes, unicode and tool calls, about 100 KB.
func request100KB() []byte {
	var b strings.Builder
	b.WriteString(`{"model":"gpt-5.2","stream":true,"max_completion_tokens":4096,"temperature":0.7,`)
	b.WriteString(`"tools":[{"type":"function","function":{"name":"get_weather","description":"Get the weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}],`)
	b.WriteString(`"messages":[{"role":"system","content":"You are a helpful assistant. Answer in \"plain\" text.\n"}`)
	turn := strings.Repeat(`The quick brown fox — naïve café — jumps {over} [the] lazy dog.\n `, 6)
	for i := 0; b.Len() < 100<<10; i++ {
		switch i % 3 {
		case 0:
			fmt.Fprintf(&b, `,{"role":"user","content":[{"type":"text","text":"%d %s"}]}`, i, turn)
		case 1:
			fmt.Fprintf(&b, `,{"role":"assistant","content":null,"tool_calls":[{"id":"call_%d","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]}`, i)
		case 2:
			fmt.Fprintf(&b, `,{"role":"tool","tool_call_id":"call_%d","content":"%s"},{"role":"assistant","content":"%s"}`, i-1, turn, turn)
		}
	}
	b.WriteString(`],"user":"u-123"}`)
	return []byte(b.String())
}

// chunk250 is a typical content chunk of about 250 bytes.
const chunk250 = `{"id":"chatcmpl-C9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion.chunk","created":1741569952,"model":"gpt-5.2-2025-12-11","service_tier":"default","system_fingerprint":"fp_1a2b3c4d5e","choices":[{"index":0,"delta":{"content":" there, friend"},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"x1Yz"}`

// usageChunk is the include_usage chunk with details, about 300 bytes.
const usageChunk = `{"id":"chatcmpl-C9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion.chunk","created":1741569952,"model":"gpt-5.2-2025-12-11","choices":[],"usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":192,"audio_tokens":0}}}`

func BenchmarkScanRequest100KB(b *testing.B) {
	body := request100KB()
	if !json.Valid(body) {
		b.Fatal("the benchmark body is not JSON")
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ScanRequest(body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendUpstream100KB(b *testing.B) {
	body := request100KB()
	r, err := ScanRequest(body)
	if err != nil {
		b.Fatal(err)
	}
	dst := make([]byte, 0, 2*len(body))
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		dst = r.AppendUpstream(dst[:0], body, "gpt-5.2-2025-12-11", true)
	}
}

func BenchmarkAppendWithModelChunk(b *testing.B) {
	obj := []byte(chunk250)
	dst := make([]byte, 0, 512)
	b.SetBytes(int64(len(obj)))
	b.ReportAllocs()
	for b.Loop() {
		dst = AppendWithModel(dst[:0], obj, "gpt-5.2")
	}
}

func BenchmarkParseUsageChunk(b *testing.B) {
	obj := []byte(usageChunk)
	b.SetBytes(int64(len(obj)))
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := ParseUsage(obj); !ok {
			b.Fatal("no usage")
		}
	}
}

func BenchmarkAppendContentChunk(b *testing.B) {
	obj := []byte(chunk250)
	dst := make([]byte, 0, 512)
	b.SetBytes(int64(len(obj)))
	b.ReportAllocs()
	for b.Loop() {
		dst = AppendContent(dst[:0], obj)
	}
}

func BenchmarkIsUsageOnlyChunk(b *testing.B) {
	obj := []byte(chunk250)
	b.SetBytes(int64(len(obj)))
	b.ReportAllocs()
	for b.Loop() {
		if IsUsageOnlyChunk(obj) {
			b.Fatal("a content chunk is not usage-only")
		}
	}
}

// BenchmarkValidate100KB compares the walker's validation with json.Valid,
// which it replaces.
func BenchmarkValidate100KB(b *testing.B) {
	body := request100KB()
	for _, bc := range []struct {
		name  string
		valid func([]byte) bool
	}{{"walker", validValue}, {"json.Valid", json.Valid}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if !bc.valid(body) {
					b.Fatal("invalid")
				}
			}
		})
	}
}

// mockChunk is the bench's mock upstream's content chunk (upstream/mock).
const mockChunk = `{"id":"chatcmpl-mock-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-test","choices":[{"index":0,"delta":{"content":" tok"},"logprobs":null,"finish_reason":null}],"usage":null}`

// BenchmarkRelayChunk is the JSON work the relay does on each streamed
// chunk: one scan, the content kept for counting, the model rewritten.
func BenchmarkRelayChunk(b *testing.B) {
	for _, tc := range []struct{ name, chunk string }{{"Mock", mockChunk}, {"OpenAI", chunk250}} {
		b.Run(tc.name, func(b *testing.B) {
			obj := []byte(tc.chunk)
			text, dst := make([]byte, 0, 64), make([]byte, 0, 512)
			b.SetBytes(int64(len(obj)))
			b.ReportAllocs()
			for b.Loop() {
				c := ScanChunk(obj)
				if !c.Valid() {
					b.Fatal("invalid")
				}
				c.Usage()
				text = c.AppendContent(text[:0])
				dst = c.AppendWithModel(dst[:0], "gpt-5.2")
			}
		})
	}
}
