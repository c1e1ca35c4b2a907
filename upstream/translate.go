package upstream

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/arcaneapi/caddy-arcane/upstream/anthropic"
	"github.com/arcaneapi/caddy-arcane/upstream/openai"
	"github.com/arcaneapi/caddy-arcane/upstream/sse"
)

// anthropicRequest translates x's OpenAI request to the Messages API for
// dep. A request the translation refuses is bad input: x.Refused is set
// and the *Error is the client's 400.
func (p *Proxy) anthropicRequest(dst []byte, x *Exchange, dep *Deployment) ([]byte, error) {
	maxTokens := x.Model.MaxOutputTokens
	if maxTokens <= 0 {
		maxTokens = p.DefaultMaxTokens
	}
	if maxTokens <= 0 {
		maxTokens = 4096
	}
	body, err := anthropic.AppendRequest(dst, x.Body, anthropic.RequestOptions{
		Model: dep.Model, MaxTokens: maxTokens, MaxOutputTokens: x.Model.MaxOutputTokens, Stream: x.Request.Stream,
	})
	if err == nil {
		return body, nil
	}
	x.Refused = true
	var re *anthropic.RequestError
	if errors.As(err, &re) {
		return body, &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: re.Code, Param: re.Param, Message: re.Message, Err: err}
	}
	return body, &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Message: "The request could not be translated for the model's provider.", Err: err}
}

// anthropicSingle relays a translated non-streamed answer.
func (p *Proxy) anthropicSingle(a *attempt, w http.ResponseWriter, resp *http.Response, x *Exchange) error {
	in := getBuf()
	defer putBuf(in)
	data, err := p.readAnswer(a, *in, resp, x)
	*in = data
	if err != nil {
		return err
	}
	out := getBuf()
	defer putBuf(out)
	var u openai.Usage
	*out, u, err = anthropic.AppendCompletion((*out)[:0], data, x.Model.ID, time.Now())
	if err != nil {
		a.fail("unreadable answer: " + err.Error())
		return &Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_error",
			Message: "The model's provider sent an answer this gateway could not read.", Err: err, retry: true}
	}
	// An Anthropic-compatible server that reports no usage is counted.
	return p.writeAnswer(w, x, out, in, u, u.PromptTokens > 0 || u.CompletionTokens > 0)
}

// anthropicStream relays a translated event stream. Usage is Anthropic's
// when the stream ran to message_stop; a stream cut short (by either side)
// has only message_start's figures, which do not cover the output, so its
// completion is counted over the text the client received instead.
func (p *Proxy) anthropicStream(a *attempt, w http.ResponseWriter, resp *http.Response, x *Exchange) error {
	a.body = resp.Body
	rd := sse.NewReader(a, p.MaxEvent)
	st := anthropic.NewStream(x.Model.ID, time.Now())
	// As in stream: frames gather in the relay until the reader would
	// wait, and the delivered text is kept at its own size.
	out := newRelay(w, x, a)
	defer out.close()
	var (
		text        []byte
		counted     int64
		readErr     error
		failedEmpty bool
	)
	for !st.Done() {
		ev, err := out.next(rd)
		if err != nil {
			if err != errClientGone {
				readErr = err
			}
			break
		}
		f := out.frames()
		before := len(*f)
		*f, err = st.Event(*f, ev.Name, ev.Data)
		if err != nil {
			*f = (*f)[:before]
			readErr = err
			break
		}
		if st.Failed() && len(text) == 0 && counted == 0 {
			// The provider failed before any content: nothing of value
			// was delivered. Before the first byte that is a plain error
			// answer; after a role chunk, the in-band error ends the
			// stream and nothing is charged.
			if !x.Delivered {
				return anthropicStreamError(a, ev.Data)
			}
			failedEmpty = true
		}
		frames := (*f)[before:]
		if len(frames) == 0 {
			continue
		}
		a.firstByte()
		text = appendFramesContent(text, frames)
		if len(text) > maxCountBuffer {
			counted += int64(p.Tokens.Count(x.Model.ID, text))
			text = text[:0]
		}
		out.added()
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
		u := p.count(x, text)
		if gotUsage && usage.PromptTokens > 0 {
			u.PromptTokens, u.CachedTokens, u.CacheWriteTokens = usage.PromptTokens, usage.CachedTokens, usage.CacheWriteTokens
		}
		u.CompletionTokens += counted
		u.TotalTokens = u.PromptTokens + u.CompletionTokens
		x.Usage, x.Basis = u, BasisCounted
	}
	if x.Outcome == OutcomeClientClosed {
		a.verdict = verdictNone
		return nil
	}
	if !x.Delivered {
		return a.undelivered(x, readErr)
	}
	if a.client.Err() != nil {
		x.Outcome = OutcomeClientClosed
		return nil
	}
	chunk, scratch := getBuf(), getBuf()
	defer putBuf(chunk)
	defer putBuf(scratch)
	f := out.frames()
	switch {
	case st.Failed():
		// The translator already sent the provider's error in band.
		a.fail("error event mid-stream")
		x.Outcome = OutcomeUpstreamError
	case !st.Done():
		// The provider broke off mid-stream: end it in band with the
		// translator's error chunk, which carries the stream's id, created
		// and model like every other chunk.
		code, msg := a.brokenOff(readErr)
		typ := "api_error"
		if code == "upstream_timeout" {
			typ = "timeout_error"
		}
		*chunk = append((*chunk)[:0], `{"type":"error","error":{"type":"`...)
		*chunk = append(*chunk, typ...)
		*chunk = append(*chunk, `","message":`...)
		m, _ := json.Marshal(msg)
		*chunk = append(*chunk, m...)
		*chunk = append(*chunk, "}}"...)
		*f, _ = st.Event(*f, "error", *chunk)
		x.Outcome = OutcomeUpstreamError
	default:
		if x.Request.IncludeUsage {
			*chunk = st.UsageChunk((*chunk)[:0])
			if x.Cost != nil {
				*scratch = p.withCost((*scratch)[:0], *chunk, x)
				*scratch, *chunk = *chunk, *scratch
			}
			*f = sse.AppendData(*f, *chunk)
		}
		x.Outcome = OutcomeOK
	}
	*f = sse.AppendDone(*f)
	if !out.flush() {
		x.Outcome = OutcomeClientClosed
	}
	return nil
}

// anthropicStreamError answers an error event that came before anything
// was sent to the client as the error it is.
func anthropicStreamError(a *attempt, data []byte) error {
	typ, msg, _ := anthropic.ParseError(data)
	cause := fmt.Errorf("upstream error event before the first byte: %s: %s", typ, msg)
	a.fail(cause.Error())
	if typ == "overloaded_error" {
		return &Error{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "upstream_overloaded", RetryAfter: "1",
			Message: "The model's provider is overloaded. Retry after 1 seconds.", Err: cause, retry: true}
	}
	return &Error{Status: http.StatusBadGateway, Type: "server_error", Code: "upstream_error",
		Message: "The model's provider failed before answering. Retry with backoff.", Err: cause, retry: true}
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
