package upstream

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/arcaneapi/caddy-arcane/upstream/openai"
)

// replayTransport answers every request with the same body, without a
// socket, so a benchmark measures the proxy's own work.
type replayTransport struct {
	body        []byte
	contentType string
}

func (t replayTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	io.Copy(io.Discard, r.Body)
	r.Body.Close()
	return &http.Response{
		StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {t.contentType}},
		Body: io.NopCloser(bytes.NewReader(t.body)), Request: r,
	}, nil
}

// discardWriter is a ResponseWriter that flushes into nothing.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}
func (w *discardWriter) Flush()                      {}

func benchProxy(b *testing.B, body string, upstream []byte, contentType string) (*Proxy, *Model, openai.Request) {
	x := testExchange(b, body, "http://up.invalid/v1", &http.Client{Transport: replayTransport{upstream, contentType}})
	return &Proxy{Tokens: testCounter}, x.Model, *x.Request
}

// BenchmarkForwardStreamPerEvent meters a 200-event stream through the
// whole per-event path (read, usage, content, model rewrite, framing,
// flush) and reports the cost per event.
func BenchmarkForwardStreamPerEvent(b *testing.B) {
	const events = 200
	var sb strings.Builder
	for range events {
		sb.WriteString("data: " + chunk1 + "\n\n")
	}
	sb.WriteString("data: " + usageChunk + "\n\ndata: [DONE]\n\n")
	proxy, model, req := benchProxy(b, streamBody, []byte(sb.String()), "text/event-stream")
	body := []byte(streamBody)
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		x := &Exchange{Body: body, Request: &req, Model: model, Header: http.Header{}}
		if err := proxy.Forward(context.Background(), w, x); err != nil || x.Basis != BasisUpstream {
			b.Fatalf("err %v basis %s", err, x.Basis)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*events), "ns/event")
}

// BenchmarkForwardSingle relays one small non-streamed answer.
func BenchmarkForwardSingle(b *testing.B) {
	answer := []byte(`{"id":"x","object":"chat.completion","model":"private-2025","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}`)
	proxy, model, req := benchProxy(b, plainBody, answer, "application/json")
	body := []byte(plainBody)
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		x := &Exchange{Body: body, Request: &req, Model: model, Header: http.Header{}}
		if err := proxy.Forward(context.Background(), w, x); err != nil {
			b.Fatal(err)
		}
	}
}
