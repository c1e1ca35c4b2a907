package mock

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
)

// Transport is an http.RoundTripper that serves each request by calling
// Handler in process: no socket, no listener, no port. It is how the
// gateway's `mock` provider type reaches the mock upstream, so the whole
// proxy path (request building, response headers, streaming, metering,
// cancellation) runs as it would against a remote provider.
//
// RoundTrip runs the handler in a goroutine and returns as soon as the
// handler has written its headers (or its first byte, or a flush); the
// response body then streams through a pipe, passed on whenever the
// handler flushes or its 4 KiB buffer fills, like net/http's server. The
// handler's request context ends when the caller closes the body, when the
// caller's request context ends, and when the handler returns. As with any
// RoundTripper the caller must close the body; once it has been read to EOF
// or closed, the handler's goroutine finishes (provided the handler, like
// any well-behaved one, returns when its writes fail or its context ends).
// A handler panic becomes an error from RoundTrip, or from reading the body
// if the headers were already sent.
type Transport struct {
	// Handler serves the requests; usually a *Handler.
	Handler http.Handler
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.Handler == nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, errors.New("mock: Transport has no Handler")
	}
	ctx, cancel := context.WithCancel(req.Context())

	// The handler gets its own copy of the request, shaped like one a
	// server received: handlers may change it, the caller's stays intact.
	sreq := req.Clone(ctx)
	if sreq.Body == nil {
		sreq.Body = http.NoBody
	}
	sreq.RequestURI = req.URL.RequestURI()
	if sreq.Host == "" {
		sreq.Host = req.URL.Host
	}
	sreq.RemoteAddr = "127.0.0.1:0" // in process; some handlers parse it

	pr, pw := io.Pipe()
	rw := &pipeWriter{header: make(http.Header), pw: pw, bw: getBufio(pw), headers: make(chan result, 1)}
	// Ending the context ends the body: the caller's reads fail with the
	// context's error (not a clean EOF that would pass a cut stream off as
	// whole) and the handler's writes fail.
	stop := context.AfterFunc(ctx, func() { pw.CloseWithError(ctx.Err()) })
	go rw.serve(t.Handler, sreq, req.Body, stop, cancel)

	select {
	case res := <-rw.headers:
		if err := req.Context().Err(); err != nil {
			// The caller gave up while the handler was answering: as a
			// real transport, no response.
			pr.CloseWithError(err)
			return nil, err
		}
		return res.response(req, pr, cancel)
	case <-ctx.Done():
		if err := req.Context().Err(); err != nil {
			// The caller gave up. The handler's context is ending too, and
			// its writes fail on the closed pipe.
			return nil, err
		}
		// The handler finished, which sent its result before ending the
		// context, and the select happened to see the context first.
		return (<-rw.headers).response(req, pr, cancel)
	}
}

// result is what RoundTrip waits for: the status line and headers, or the
// reason there will be none.
type result struct {
	status int
	header http.Header
	err    error
}

func (res result) response(req *http.Request, body *io.PipeReader, cancel context.CancelFunc) (*http.Response, error) {
	if res.err != nil {
		return nil, res.err
	}
	contentLength := int64(-1)
	if v, err := strconv.ParseInt(res.header.Get("Content-Length"), 10, 64); err == nil && v >= 0 {
		contentLength = v
	}
	return &http.Response{
		Status:        strconv.Itoa(res.status) + " " + http.StatusText(res.status),
		StatusCode:    res.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        res.header,
		Body:          &pipeBody{pr: body, cancel: cancel},
		ContentLength: contentLength,
		Request:       req,
	}, nil
}

// pipeWriter is the handler's http.ResponseWriter. It buffers like
// net/http's server and sends what it holds down the pipe on Flush.
type pipeWriter struct {
	header      http.Header
	wroteHeader bool
	headers     chan result // receives exactly one result, never blocks
	pw          *io.PipeWriter
	bw          *bufio.Writer
}

func (w *pipeWriter) Header() http.Header { return w.header }

// WriteHeader sends the status and a snapshot of the headers to
// RoundTrip; later changes to Header are ignored, as net/http does.
// Informational statuses are not passed on.
func (w *pipeWriter) WriteHeader(code int) {
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code)) // as net/http does
	}
	if w.wroteHeader || code < 200 {
		return
	}
	w.wroteHeader = true
	w.headers <- result{status: code, header: w.header.Clone()}
}

func (w *pipeWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.bw.Write(p)
}

// FlushError sends the buffered bytes to the reader, waiting until it has
// taken them. http.ResponseController uses it.
func (w *pipeWriter) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.bw.Flush()
}

// Flush implements http.Flusher.
func (w *pipeWriter) Flush() { _ = w.FlushError() }

// serve runs the handler and then ends the response: the body gets EOF if
// the handler finished normally, an error if it panicked or the context
// ended first.
func (w *pipeWriter) serve(h http.Handler, r *http.Request, reqBody io.ReadCloser, stop func() bool, cancel context.CancelFunc) {
	defer cancel()
	// A RoundTripper closes the request body: here before the response
	// body ends, so that a caller who read it to the end sees the request
	// body closed; deferred for a handler that panicked.
	closeBody := func() {
		if reqBody != nil {
			reqBody.Close()
			reqBody = nil
		}
	}
	defer closeBody()
	defer func() {
		if v := recover(); v != nil {
			err := fmt.Errorf("mock: handler panicked: %v", v)
			if v == http.ErrAbortHandler {
				err = errors.New("mock: handler aborted the response")
			}
			if !w.wroteHeader {
				w.headers <- result{err: err}
			}
			w.pw.CloseWithError(err)
		}
	}()
	h.ServeHTTP(w, r)
	closeBody()
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	err := w.bw.Flush()
	if stop() { // else the context ended and already closed the pipe
		if cerr := r.Context().Err(); err == nil && cerr != nil {
			// The context ended while the handler was returning, before
			// its AfterFunc ran: the body still ends with its error.
			err = cerr
		}
		w.pw.CloseWithError(err) // nil: EOF
	}
	putBufio(w.bw)
	w.bw = nil
}

// pipeBody is the response body. Closing it ends the handler's context.
type pipeBody struct {
	pr     *io.PipeReader
	cancel context.CancelFunc
}

func (b *pipeBody) Read(p []byte) (int, error) { return b.pr.Read(p) }

func (b *pipeBody) Close() error {
	b.pr.Close()
	b.cancel()
	return nil
}

var bufioPool sync.Pool

func getBufio(w io.Writer) *bufio.Writer {
	if bw, ok := bufioPool.Get().(*bufio.Writer); ok {
		bw.Reset(w)
		return bw
	}
	return bufio.NewWriterSize(w, 4<<10)
}

func putBufio(bw *bufio.Writer) {
	bw.Reset(nil)
	bufioPool.Put(bw)
}
