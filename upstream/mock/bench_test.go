package mock

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// discard is a reusable ResponseWriter, so the benchmarks measure the
// handler and not a recorder.
type discard struct {
	header http.Header
	n      int
}

func (w *discard) Header() http.Header         { return w.header }
func (w *discard) WriteHeader(int)             {}
func (w *discard) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }
func (w *discard) Flush()                      {}

func benchServe(b *testing.B, path, body string) {
	h := NewHandler(Config{ReplyTokens: 16})
	rd := strings.NewReader(body)
	req := httptest.NewRequest(http.MethodPost, path, nil)
	if strings.HasSuffix(path, "/messages") {
		req.Header.Set("X-Api-Key", "sk-ant-bench")
		req.Header.Set("Anthropic-Version", "2023-06-01")
	}
	req.Body = io.NopCloser(rd)
	req.ContentLength = int64(len(body))
	w := &discard{header: make(http.Header)}
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(body)
		h.ServeHTTP(w, req)
	}
	b.SetBytes(int64(w.n) / int64(b.N))
}

const benchBody = `{"model":"gpt-test","messages":[{"role":"system","content":"You are a load test."},{"role":"user","content":"Say sixteen words."}]`

// benchMessagesBody is benchBody as a gateway translates it for Anthropic.
const benchMessagesBody = `{"model":"claude-test","max_tokens":1024,"system":"You are a load test.","messages":[{"role":"user","content":"Say sixteen words."}]`

func BenchmarkNonStream(b *testing.B) { benchServe(b, "/v1/chat/completions", benchBody+`}`) }

func BenchmarkStream16(b *testing.B) {
	benchServe(b, "/v1/chat/completions", benchBody+`,"stream":true,"stream_options":{"include_usage":true}}`)
}

func BenchmarkMessagesNonStream(b *testing.B) { benchServe(b, "/v1/messages", benchMessagesBody+`}`) }

func BenchmarkMessagesStream16(b *testing.B) {
	benchServe(b, "/v1/messages", benchMessagesBody+`,"stream":true}`)
}

// BenchmarkTransportStream16 adds the in-process Transport and an
// http.Client reading the whole stream: the cost of the gateway's `mock`
// provider per request.
func BenchmarkTransportStream16(b *testing.B) {
	benchTransport(b, mockURL, benchBody+`,"stream":true,"stream_options":{"include_usage":true}}`)
}

// BenchmarkTransportMessagesStream16 is the same for a mock provider of
// format anthropic.
func BenchmarkTransportMessagesStream16(b *testing.B) {
	benchTransport(b, "http://mock.invalid/v1/messages", benchMessagesBody+`,"stream":true}`)
}

func benchTransport(b *testing.B, url, body string) {
	c := &http.Client{Transport: &Transport{Handler: NewHandler(Config{ReplyTokens: 16})}}
	buf := make([]byte, 4096)
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, url, strings.NewReader(body))
		if strings.HasSuffix(url, "/messages") {
			req.Header.Set("Anthropic-Version", "2023-06-01")
		}
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := resp.Body.Read(buf); err != nil {
				if err != io.EOF {
					b.Fatal(err)
				}
				break
			}
		}
		resp.Body.Close()
	}
}
