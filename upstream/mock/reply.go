package mock

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// words are the reply's tokens: token i is words[i%len(words)], and the
// reply's first token drops the leading space. They need no JSON escaping.
var words = [...]string{
	" arcane", " mock", " reply", " streams", " one", " word", " per", " chunk",
	" so", " gateways", " can", " meter", " every", " token", " they", " relay",
}

func word(i int) string {
	w := words[i%len(words)]
	if i == 0 {
		return w[1:]
	}
	return w
}

// reply is one planned answer.
type reply struct {
	id      uint64 // n in chatcmpl-mock-<n>
	created int64
	model   string
	tokens  int
	finish  string
	prompt  int // prompt_tokens

	// A Messages reply may end inside a word, where a stop sequence
	// began: cut is how many bytes of text it delivers (math.MaxInt when
	// whole) and stop the sequence, else "".
	cut  int
	stop string
}

// bufPool holds the buffers that read request bodies and assemble
// responses; one per request, reused for every event of a stream.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// maxPooledBuf keeps one huge request from pinning its buffer forever.
const maxPooledBuf = 64 << 10

func putBuf(b *[]byte) {
	if cap(*b) <= maxPooledBuf {
		*b = (*b)[:0]
		bufPool.Put(b)
	}
}

// appendHead appends the members every response and chunk starts with.
func (rp *reply) appendHead(b []byte, object string) []byte {
	b = append(b, `{"id":"chatcmpl-mock-`...)
	b = strconv.AppendUint(b, rp.id, 10)
	b = append(b, `","object":"`...)
	b = append(b, object...)
	b = append(b, `","created":`...)
	b = strconv.AppendInt(b, rp.created, 10)
	b = append(b, `,"model":`...)
	b = appendJSONString(b, rp.model)
	return b
}

func (rp *reply) appendUsage(b []byte) []byte {
	b = append(b, `"usage":{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(rp.prompt), 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(rp.tokens), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(rp.prompt+rp.tokens), 10)
	return append(b, '}')
}

// writeCompletion answers without streaming: after the time the stream
// would have taken, one chat.completion object.
func (h *Handler) writeCompletion(w http.ResponseWriter, r *http.Request, rp *reply, buf []byte) []byte {
	if d := h.replyTime(rp.tokens); d > 0 {
		if h.sleep(r.Context(), d) != nil {
			return buf // the client is gone
		}
	}
	b := rp.appendHead(buf[:0], "chat.completion")
	b = append(b, `,"choices":[{"index":0,"message":{"role":"assistant","content":"`...)
	for i := range rp.tokens {
		b = append(b, word(i)...)
	}
	b = append(b, `","refusal":null},"logprobs":null,"finish_reason":"`...)
	b = append(b, rp.finish...)
	b = append(b, `"}],`...)
	b = rp.appendUsage(b)
	b = append(b, '}')

	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Content-Length", strconv.Itoa(len(b)))
	hdr.Set("X-Request-Id", "req_mock_"+strconv.FormatUint(rp.id, 10))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
	return b
}

// replyTime is how long a reply of n tokens takes to generate.
func (h *Handler) replyTime(n int) time.Duration {
	return h.cfg.TimeToFirstToken + time.Duration(n-1)*h.interval
}

// stream writes SSE events from one buffer that keeps the chunks' common
// head (`data: {"id":...,"model":...,"choices":`) and is cut back to it
// before each event.
type stream struct {
	w    http.ResponseWriter
	rc   *http.ResponseController
	ctx  context.Context
	buf  []byte
	head int    // len of the common head in buf
	tail string // what ends every chunk but the usage chunk
}

// Chunk bodies after the head. They stop before the chunk's closing brace:
// the tail adds `,"usage":null` first when include_usage is on.
const (
	roleChoices    = `[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]`
	contentOpen    = `[{"index":0,"delta":{"content":"`
	contentClose   = `"},"logprobs":null,"finish_reason":null}]`
	finishOpen     = `[{"index":0,"delta":{},"logprobs":null,"finish_reason":"`
	finishClose    = `"}]`
	usageChoices   = `[],`
	tailPlain      = "}\n\n"
	tailNullUsage  = ",\"usage\":null}\n\n"
	doneEvent      = "data: [DONE]\n\n"
	eventDataField = "data: "
)

// emit writes buf as one event and flushes it. It reports false when the
// client is gone, after which nothing more may be written.
func (s *stream) emit() bool {
	if s.ctx.Err() != nil {
		return false
	}
	if _, err := s.w.Write(s.buf); err != nil {
		return false
	}
	if err := s.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return false
	}
	return true
}

// writeStream answers with server-sent events: the role chunk, one chunk
// per token, the finish chunk, the usage chunk when asked for, [DONE].
// It returns as soon as the client goes away.
func (h *Handler) writeStream(w http.ResponseWriter, r *http.Request, rp *reply, includeUsage bool, buf []byte) []byte {
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Request-Id", "req_mock_"+strconv.FormatUint(rp.id, 10))
	w.WriteHeader(http.StatusOK)

	s := stream{w: w, rc: http.NewResponseController(w), ctx: r.Context(), tail: tailPlain}
	if includeUsage {
		s.tail = tailNullUsage
	}
	s.buf = append(buf[:0], eventDataField...)
	s.buf = rp.appendHead(s.buf, "chat.completion.chunk")
	s.buf = append(s.buf, `,"choices":`...)
	s.head = len(s.buf)

	s.buf = append(append(s.buf, roleChoices...), s.tail...)
	if !s.emit() {
		return s.buf
	}
	for i := range rp.tokens {
		d := h.interval
		if i == 0 {
			d = h.cfg.TimeToFirstToken
		}
		if d > 0 && h.sleep(s.ctx, d) != nil {
			return s.buf
		}
		s.buf = append(s.buf[:s.head], contentOpen...)
		s.buf = append(s.buf, word(i)...)
		s.buf = append(append(s.buf, contentClose...), s.tail...)
		if !s.emit() {
			return s.buf
		}
	}
	s.buf = append(s.buf[:s.head], finishOpen...)
	s.buf = append(s.buf, rp.finish...)
	s.buf = append(append(s.buf, finishClose...), s.tail...)
	if !s.emit() {
		return s.buf
	}
	if includeUsage {
		s.buf = append(s.buf[:s.head], usageChoices...)
		s.buf = rp.appendUsage(s.buf)
		s.buf = append(s.buf, tailPlain...)
		if !s.emit() {
			return s.buf
		}
	}
	s.buf = append(s.buf[:0], doneEvent...)
	s.emit()
	return s.buf
}

// appendJSONString appends s as a JSON string. s comes from
// encoding/json, so it is valid UTF-8; only quotes, backslashes and
// control characters need escaping (U+2028/9 too, for JavaScript readers).
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		var esc string
		switch {
		case c == '"':
			esc = `\"`
		case c == '\\':
			esc = `\\`
		case c == '\n':
			esc = `\n`
		case c == '\r':
			esc = `\r`
		case c == '\t':
			esc = `\t`
		case c < 0x20:
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			start = i + 1
			continue
		case c == 0xe2 && i+2 < len(s) && s[i+1] == 0x80 && (s[i+2] == 0xa8 || s[i+2] == 0xa9):
			b = append(b, s[start:i]...)
			b = append(b, `\u202`...)
			b = append(b, hex[s[i+2]&0xf])
			i += 2
			start = i + 1
			continue
		default:
			continue
		}
		b = append(b, s[start:i]...)
		b = append(b, esc...)
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
