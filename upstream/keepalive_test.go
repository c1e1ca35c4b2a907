package upstream

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arcaneapi/caddy-arcane/upstream/openai"
)

// keepAliveServer serves f's model through Forward on a real server, as
// the gateway's handler does, and hands each request's Exchange over once
// Forward returned.
func keepAliveServer(t *testing.T, f *failover) (*httptest.Server, <-chan *Exchange) {
	t.Helper()
	done := make(chan *Exchange, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req, err := openai.ScanRequest(body)
		if err != nil {
			t.Error(err)
			return
		}
		x := &Exchange{Body: body, Request: &req, Model: f.model, Header: http.Header{}}
		if err := f.proxy.Forward(r.Context(), w, x); err != nil {
			w.WriteHeader(599) // the handler would answer the error
			io.WriteString(w, err.Error())
		}
		done <- x
	}))
	t.Cleanup(srv.Close)
	return srv, done
}

func postRaw(t *testing.T, srv *httptest.Server, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Close = true // no idle connection left behind for checkGoroutines
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(data)
}

// slowStream answers a stream after delay.
func slowStream(delay time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
			return
		case <-time.After(delay):
		}
		writeSSE(w, streamChunk("Hello"), "[DONE]")
	}
}

func TestKeepAlive(t *testing.T) {
	const comment = ": keep-alive\n\n"
	t.Run("comments flow until the first event, then the stream", func(t *testing.T) {
		checkGoroutines(t)
		f := newFailover(t, upstreamSpec{name: "a", handler: slowStream(260 * time.Millisecond), weight: 1})
		f.proxy.KeepAlive = 50 * time.Millisecond
		srv, done := keepAliveServer(t, f)
		status, body := postRaw(t, srv, streamBody)
		x := <-done
		rest := strings.TrimLeft(strings.ReplaceAll(body, comment, "\x00"), "\x00")
		comments := len(body) - len(strings.ReplaceAll(body, comment, ""))
		if status != http.StatusOK || comments < 2*len(comment) || rest != publicFrame(streamChunk("Hello"))+"data: [DONE]\n\n" {
			t.Fatalf("status %d, body %q: want 200, at least two comments, then the stream", status, body)
		}
		if x.Outcome != OutcomeOK || !x.Delivered {
			t.Fatalf("outcome %s delivered %v", x.Outcome, x.Delivered)
		}
	})

	t.Run("a failure after the comments started ends in band", func(t *testing.T) {
		checkGoroutines(t)
		late500 := func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			time.Sleep(150 * time.Millisecond) // the upstream's own slowness
			w.WriteHeader(http.StatusInternalServerError)
		}
		f := newFailover(t, upstreamSpec{name: "a", handler: late500, weight: 1})
		f.proxy.KeepAlive = 40 * time.Millisecond
		srv, done := keepAliveServer(t, f)
		status, body := postRaw(t, srv, streamBody)
		x := <-done
		if status != http.StatusOK || !strings.HasPrefix(body, comment) {
			t.Fatalf("status %d, body %q: want 200 starting with a comment", status, body)
		}
		tail := strings.TrimLeft(strings.ReplaceAll(body, comment, "\x00"), "\x00")
		frames := strings.Split(strings.TrimSuffix(tail, "\n\n"), "\n\n")
		if len(frames) != 2 || frames[1] != "data: [DONE]" {
			t.Fatalf("after the comments %q: want the error chunk and [DONE]", tail)
		}
		c := decodeStreamError(t, strings.TrimPrefix(frames[0], "data: "))
		if c.Model != "public" || c.Error.Code != "upstream_error" || c.Error.Type != "server_error" || c.Choices[0].FinishReason != "error" || c.Created == 0 {
			t.Fatalf("error chunk %+v", c)
		}
		if x.Delivered || x.Outcome != OutcomeUpstreamError || x.Attempts != 1 {
			t.Fatalf("delivered %v outcome %s attempts %d: nothing of an answer was delivered", x.Delivered, x.Outcome, x.Attempts)
		}
	})

	t.Run("failover still works after the comments started", func(t *testing.T) {
		checkGoroutines(t)
		stuck, cancelled := hang(nil, nil)
		f := newFailover(t,
			upstreamSpec{name: "a", handler: stuck, weight: heavy, headerTimeout: 150 * time.Millisecond},
			upstreamSpec{name: "b", handler: streamOK, weight: 1})
		f.proxy.KeepAlive = 40 * time.Millisecond
		srv, done := keepAliveServer(t, f)
		status, body := postRaw(t, srv, streamBody)
		x := <-done
		rest := strings.TrimLeft(strings.ReplaceAll(body, comment, "\x00"), "\x00")
		if status != http.StatusOK || !strings.HasPrefix(body, comment) || rest != publicFrame(chunk1)+publicFrame(chunk2)+"data: [DONE]\n\n" {
			t.Fatalf("status %d, body %q: want comments, then b's stream", status, body)
		}
		waitClosed(t, cancelled, "a")
		wantServed(t, x, nil, "b/private-2025", 2, "a/private-2025 504 upstream_timeout")
	})

	t.Run("a fast stream and a JSON answer get no comment", func(t *testing.T) {
		checkGoroutines(t)
		f := newFailover(t, upstreamSpec{name: "a", handler: func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.Header.Get("Accept"), "event-stream") {
				streamOK(w, r)
				return
			}
			time.Sleep(150 * time.Millisecond)
			answerOK(w, r)
		}, weight: 1})
		f.proxy.KeepAlive = 40 * time.Millisecond
		srv, done := keepAliveServer(t, f)
		for _, body := range []string{streamBody, plainBody} {
			status, got := postRaw(t, srv, body)
			<-done
			if status != http.StatusOK || strings.Contains(got, "keep-alive") {
				t.Fatalf("status %d, body %q", status, got)
			}
		}
	})
}

type streamErrorChunk struct {
	Model   string `json:"model"`
	Created int64  `json:"created"`
	Choices []struct {
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Error struct {
		Type string `json:"type"`
		Code string `json:"code"`
	} `json:"error"`
}

func decodeStreamError(t *testing.T, data string) streamErrorChunk {
	t.Helper()
	var c streamErrorChunk
	if err := json.Unmarshal([]byte(data), &c); err != nil || len(c.Choices) != 1 {
		t.Fatalf("chunk %q: %v", data, err)
	}
	return c
}

func TestKeepAliveTimer(t *testing.T) {
	t.Run("no goroutine waits while no comment is due", func(t *testing.T) {
		// A hundred waiting streams: the goroutine a keep-alive used to
		// hold would show as a hundred more, unrelated ones come and go
		// by a few.
		const streams = 100
		before := runtime.NumGoroutine()
		recs, ks := make([]*httptest.ResponseRecorder, streams), make([]*keepAlive, streams)
		for i := range ks {
			recs[i] = httptest.NewRecorder()
			ks[i] = startKeepAlive(recs[i], time.Hour)
		}
		during := runtime.NumGoroutine()
		for i, k := range ks {
			if k.stop() {
				t.Fatal("stop says a comment went out")
			}
			if rec := recs[i]; rec.Body.Len() != 0 || len(rec.Header()) != 0 {
				t.Fatalf("wrote %q, headers %v", rec.Body.String(), rec.Header())
			}
		}
		if during-before >= streams/2 {
			t.Fatalf("%d goroutines while %d streams wait, %d before: want none added", during, streams, before)
		}
	})

	t.Run("stop waits for a comment being written, and none follows", func(t *testing.T) {
		w := &blockingWriter{ResponseRecorder: httptest.NewRecorder(), entered: make(chan struct{}), release: make(chan struct{})}
		k := startKeepAlive(w, time.Millisecond)
		<-w.entered // a comment is being written
		stopped := make(chan bool)
		go func() { stopped <- k.stop() }()
		select {
		case <-stopped:
			t.Fatal("stop returned while a comment was being written")
		case <-time.After(20 * time.Millisecond):
		}
		close(w.release)
		if !<-stopped {
			t.Fatal("stop says no comment went out")
		}
		n := w.writes.Load()
		// The timer is stopped: however long we look, no write follows.
		// (A re-armed timer would fire within its 1 ms interval.)
		time.Sleep(20 * time.Millisecond)
		if got := w.writes.Load(); got != n || n < 1 {
			t.Fatalf("%d writes at stop, %d later: want at least the one and no more", n, got)
		}
		if ct := w.Header().Get("Content-Type"); ct != "text/event-stream" {
			t.Fatalf("Content-Type %q: the first comment sends the stream's headers", ct)
		}
	})
}

// blockingWriter holds its first Write until released.
type blockingWriter struct {
	*httptest.ResponseRecorder
	entered, release chan struct{}
	writes           atomic.Int32
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	if w.writes.Add(1) == 1 {
		close(w.entered)
		<-w.release
	}
	return w.ResponseRecorder.Write(p)
}

// BenchmarkKeepAlive is the keep-alive's cost to a stream whose first
// event comes before any comment is due, as most do.
func BenchmarkKeepAlive(b *testing.B) {
	rec := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		startKeepAlive(rec, time.Minute).stop()
	}
}
