package upstream

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// flushLog is a ResponseWriter that hands over what was written at each
// Flush, so a test sees the writes a client would.
type flushLog struct {
	header  http.Header
	buf     bytes.Buffer
	flushes chan string
}

func (f *flushLog) Header() http.Header         { return f.header }
func (f *flushLog) Write(b []byte) (int, error) { return f.buf.Write(b) }
func (f *flushLog) WriteHeader(int)             {}
func (f *flushLog) Flush() {
	f.flushes <- f.buf.String()
	f.buf.Reset()
}

// pipeTransport answers every request with a 200 event stream whose body
// is read from a pipe: each Write on w arrives as one Read, as a burst of
// bytes does from the network.
type pipeTransport struct{ body *io.PipeReader }

func (p pipeTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	io.Copy(io.Discard, r.Body)
	r.Body.Close()
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"text/event-stream"}},
		Body: p.body, Request: r}, nil
}

// TestRelayWritesBurstsOnceAndNeverWaits checks how stream events reach the
// client: the first alone and at once; events that arrived together in one
// write and one flush; and what has arrived always written before the relay
// waits for more, even with half an event read.
func TestRelayWritesBurstsOnceAndNeverWaits(t *testing.T) {
	pr, pw := io.Pipe()
	x := testExchange(t, streamBody, "http://upstream.invalid/v1", &http.Client{Transport: pipeTransport{pr}})
	w := &flushLog{header: http.Header{}, flushes: make(chan string, 16)}
	done := make(chan error, 1)
	go func() { done <- (&Proxy{Tokens: testCounter}).Forward(context.Background(), w, x) }()

	event := func(data string) string { return "data: " + data + "\n\n" }
	public := func(data string) string { return event(strings.ReplaceAll(data, "private-2025", "public")) }
	var ended chan error // done, once the relay has ended and its result is kept
	next := func(what string) string {
		t.Helper()
		select {
		case got := <-w.flushes:
			return got
		case err := <-done:
			// The relay may flush and end at once; a flush already made
			// comes first.
			select {
			case got := <-w.flushes:
				ended = make(chan error, 1)
				ended <- err
				return got
			default:
			}
			t.Fatalf("waiting for %s: the relay ended: %v", what, err)
		case <-time.After(10 * time.Second):
			t.Fatalf("waiting for %s: nothing was flushed; the relay is holding what it read", what)
		}
		return ""
	}
	third := event(chunk2)
	write := func(s string) {
		if _, err := io.WriteString(pw, s); err != nil {
			t.Error(err)
		}
	}
	go write(event(chunk1) + event(chunk1) + third[:40])
	if got, want := next("the first event"), public(chunk1); got != want {
		t.Fatalf("first flush %q, want the first event alone %q", got, want)
	}
	if got, want := next("the second event"), public(chunk1); got != want {
		t.Fatalf("second flush %q, want the second event %q", got, want)
	}
	go func() {
		write(third[40:] + event("[DONE]"))
		pw.Close()
	}()
	if got, want := next("the rest"), public(chunk2)+event("[DONE]"); got != want {
		t.Fatalf("third flush %q, want the third event and [DONE] together %q", got, want)
	}
	if ended == nil {
		ended = done
	}
	if err := <-ended; err != nil {
		t.Fatal(err)
	}
	if x.Outcome != OutcomeOK {
		t.Fatalf("outcome %s", x.Outcome)
	}
}
