package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/arcaneapi/caddy-arcane/upstream/anthropic"
	"github.com/arcaneapi/caddy-arcane/upstream/openai"
	"github.com/arcaneapi/caddy-arcane/upstream/sse"
)

// forwardAnthropic serves x from an Anthropic deployment: the OpenAI
// request is translated to the Messages API, and the answer (a message, or
// its event stream) back to OpenAI's shapes, with usage from Anthropic's
// own figures.
func (p *Proxy) forwardAnthropic(ctx context.Context, w http.ResponseWriter, x *Exchange, buf *[]byte) error {
	dep := x.Deployment
	maxTokens := x.Model.MaxOutputTokens
	if maxTokens <= 0 {
		maxTokens = p.DefaultMaxTokens
	}
	if maxTokens <= 0 {
		maxTokens = 4096
	}
	body, err := anthropic.AppendRequest((*buf)[:0], x.Body, anthropic.RequestOptions{
		Model: dep.Model, MaxTokens: maxTokens, MaxOutputTokens: x.Model.MaxOutputTokens, Stream: x.Request.Stream,
	})
	*buf = body
	if err != nil {
		x.Refused = true
		var re *anthropic.RequestError
		if errors.As(err, &re) {
			return &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: re.Code, Param: re.Param, Message: re.Message, Err: err}
		}
		return &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Message: "The request could not be translated for the model's provider.", Err: err}
	}
	resp, err := p.send(ctx, x, body, func(h http.Header) {
		if dep.Provider.APIKey != "" {
			h.Set("X-Api-Key", dep.Provider.APIKey)
		}
		h.Set("Anthropic-Version", anthropic.Version)
	})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if x.Request.Stream {
		return p.anthropicStream(ctx, w, resp, x)
	}
	return p.anthropicSingle(ctx, w, resp, x)
}

// anthropicSingle relays a translated non-streamed answer.
func (p *Proxy) anthropicSingle(ctx context.Context, w http.ResponseWriter, resp *http.Response, x *Exchange) error {
	in := getBuf()
	defer putBuf(in)
	data, err := p.readAnswer(ctx, *in, resp, x)
	*in = data
	if err != nil {
		return err
	}
	out := getBuf()
	defer putBuf(out)
	var u openai.Usage
	*out, u, err = anthropic.AppendCompletion((*out)[:0], data, x.Model.ID, time.Now())
	if err != nil {
		return &Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_error",
			Message: "The model's provider sent an answer this gateway could not read.", Err: err}
	}
	// An Anthropic-compatible server that reports no usage is counted.
	return p.writeAnswer(w, x, out, in, u, u.PromptTokens > 0 || u.CompletionTokens > 0)
}

// anthropicStream relays a translated event stream. Usage is Anthropic's
// when the stream ran to message_stop; a stream cut short (by either side)
// has only message_start's figures, which do not cover the output, so its
// completion is counted over the text the client received instead.
func (p *Proxy) anthropicStream(ctx context.Context, w http.ResponseWriter, resp *http.Response, x *Exchange) error {
	rc := http.NewResponseController(w)
	rd := sse.NewReader(resp.Body, p.MaxEvent)
	st := anthropic.NewStream(x.Model.ID, time.Now())
	out := getBuf()
	defer putBuf(out)
	chunk := getBuf()
	defer putBuf(chunk)
	text := getBuf()
	defer putBuf(text)
	var (
		counted     int64
		readErr     error
		failedEmpty bool
	)
	for !st.Done() {
		ev, err := rd.Next()
		if err != nil {
			readErr = err
			break
		}
		*out, err = st.Event((*out)[:0], ev.Name, ev.Data)
		if err != nil {
			readErr = err
			break
		}
		if st.Failed() && len(*text) == 0 && counted == 0 {
			// The provider failed before any content: nothing of value
			// was delivered. Before the first byte that is a plain error
			// answer; after a role chunk, the in-band error ends the
			// stream and nothing is charged.
			if !x.Delivered {
				x.Deployment.observe(false)
				return anthropicStreamError(ev.Data)
			}
			failedEmpty = true
		}
		if len(*out) == 0 {
			continue
		}
		*text = appendFramesContent(*text, *out)
		if len(*text) > maxCountBuffer {
			counted += int64(p.Tokens.Count(x.Model.ID, *text))
			*text = (*text)[:0]
		}
		if !emit(w, rc, x, *out) {
			break
		}
	}
	usage, gotUsage := st.Usage()
	switch {
	case gotUsage && st.OutputReported() && !st.Failed():
		// Anthropic's own figures cover the whole answer (message_delta
		// came), even if the stream was cut before message_stop.
		x.Usage, x.Basis = usage, BasisUpstream
	case failedEmpty:
		x.Usage, x.Basis = openai.Usage{}, BasisCounted
	default:
		u := p.count(x, *text)
		if gotUsage && usage.PromptTokens > 0 {
			u.PromptTokens, u.CachedTokens = usage.PromptTokens, usage.CachedTokens
		}
		u.CompletionTokens += counted
		u.TotalTokens = u.PromptTokens + u.CompletionTokens
		x.Usage, x.Basis = u, BasisCounted
	}
	if x.Outcome == OutcomeClientClosed {
		return nil
	}
	if !x.Delivered {
		if ctx.Err() != nil {
			return errClientClosed(x, ctx.Err())
		}
		x.Deployment.observe(false)
		return &Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_error",
			Message: "The model's provider ended the stream before answering. Retry with backoff.", Err: readErr}
	}
	if ctx.Err() != nil {
		x.Outcome = OutcomeClientClosed
		return nil
	}
	*out = (*out)[:0]
	switch {
	case st.Failed():
		// The translator already sent the provider's error in band.
		x.Outcome = OutcomeUpstreamError
	case !st.Done():
		// The provider broke off mid-stream: end it in band with the
		// translator's error chunk, which carries the stream's id, created
		// and model like every other chunk.
		*out, _ = st.Event(*out, "error", brokenOffEvent)
		x.Outcome = OutcomeUpstreamError
	default:
		if x.Request.IncludeUsage {
			*chunk = st.UsageChunk((*chunk)[:0])
			if x.Cost != nil {
				*text = p.withCost((*text)[:0], *chunk, x)
				*text, *chunk = *chunk, *text
			}
			*out = sse.AppendData(*out, *chunk)
		}
		x.Outcome = OutcomeOK
	}
	*out = sse.AppendDone(*out)
	if _, err := w.Write(*out); err != nil {
		x.Outcome = OutcomeClientClosed
		return nil
	}
	_ = rc.Flush()
	return nil
}

// brokenOffEvent is the error event a stream that ended without
// message_stop is closed with: code upstream_error.
var brokenOffEvent = []byte(`{"type":"error","error":{"type":"api_error","message":"The model's provider ended the stream unexpectedly."}}`)

// anthropicStreamError answers an error event that came before anything
// was sent to the client as the error it is.
func anthropicStreamError(data []byte) error {
	typ, msg, _ := anthropic.ParseError(data)
	cause := fmt.Errorf("upstream error event before the first byte: %s: %s", typ, msg)
	if typ == "overloaded_error" {
		return &Error{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "upstream_overloaded", RetryAfter: "1",
			Message: "The model's provider is overloaded. Retry after 1 seconds.", Err: cause}
	}
	return &Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_error",
		Message: "The model's provider failed before answering. Retry with backoff.", Err: cause}
}

// appendFramesContent appends the text of every chunk in frames, SSE
// frames of one data line each, as the translator writes them.
func appendFramesContent(dst, frames []byte) []byte {
	for len(frames) > 0 {
		line := frames
		if i := bytes.IndexByte(frames, '\n'); i >= 0 {
			line, frames = frames[:i], frames[i+1:]
		} else {
			frames = nil
		}
		if data, ok := bytes.CutPrefix(line, []byte("data: ")); ok {
			dst = openai.AppendContent(dst, data)
		}
	}
	return dst
}
