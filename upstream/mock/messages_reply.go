package mock

import (
	"bytes"
	"math"
	"net/http"
	"strconv"
)

// serveMessages answers Anthropic's POST {base}/messages with the same
// words, token counts, pacing and failure schedule as a chat completion.
func (h *Handler) serveMessages(w http.ResponseWriter, r *http.Request) {
	// Anthropic checks the header before the body. The key is not
	// checked: the gateway's mock provider usually has none.
	switch v := r.Header.Get("Anthropic-Version"); {
	case v == "":
		writeMessagesError(w, errNoVersion)
		return
	case !anthropicVersions[v]:
		writeMessagesError(w, messagesInvalid("anthropic-version: not a supported version; send 2023-06-01"))
		return
	}
	bp := bufPool.Get().(*[]byte)
	defer putBuf(bp)
	body, apiErr := readBody(w, r, (*bp)[:0])
	*bp = body
	var req messagesRequest
	switch {
	case apiErr == errTooLarge:
		apiErr = errMessagesTooLarge
	case apiErr != nil:
		apiErr = messagesInvalid(apiErr.message)
	default:
		apiErr = req.decode(body)
	}
	if apiErr != nil {
		writeMessagesError(w, apiErr)
		return
	}
	n := h.requests.Add(1)
	if h.fails(n) {
		writeMessagesError(w, errOverloaded)
		return
	}
	rp := reply{id: n, model: req.Model, prompt: req.promptTokens()}
	*bp = req.plan(&rp, h.cfg.ReplyTokens, body) // the body is decoded: its buffer is free
	if req.Stream {
		*bp = h.writeMessageStream(w, r, &rp, *bp)
	} else {
		*bp = h.writeMessage(w, r, &rp, *bp)
	}
}

// plan sets the reply's length and stop: max_tokens caps the natural
// length (stop_reason max_tokens), and the first stop sequence the reply's
// text completes ends it there (stop_reason stop_sequence), the sequence
// itself not delivered. scratch is a buffer the text may be built in; plan
// returns it, grown.
func (req *messagesRequest) plan(rp *reply, natural int, scratch []byte) []byte {
	rp.tokens, rp.finish, rp.cut = natural, "end_turn", math.MaxInt
	if *req.MaxTokens < natural {
		rp.tokens, rp.finish = *req.MaxTokens, "max_tokens"
	}
	if len(req.StopSequences) == 0 {
		return scratch
	}
	text := scratch[:0]
	for i := range rp.tokens {
		text = append(text, word(i)...)
	}
	end := math.MaxInt // where the earliest completed stop sequence ends
	for _, s := range req.StopSequences {
		if at := bytes.Index(text, []byte(s)); at >= 0 && at+len(s) < end {
			end, rp.cut, rp.stop = at+len(s), at, s
		}
	}
	if end == math.MaxInt {
		return text
	}
	// Output counts every token generated, through the one that completed
	// the sequence.
	tokens, off := 0, 0
	for off < end {
		off += len(word(tokens))
		tokens++
	}
	rp.tokens, rp.finish = tokens, "stop_sequence"
	return text
}

// appendMessageHead appends a Message object's members up to the opening
// of its content array.
func (rp *reply) appendMessageHead(b []byte) []byte {
	b = append(b, `{"id":"msg_mock_`...)
	b = strconv.AppendUint(b, rp.id, 10)
	b = append(b, `","type":"message","role":"assistant","model":`...)
	b = appendJSONString(b, rp.model)
	return append(b, `,"content":[`...)
}

// appendMessagesUsage appends Anthropic's usage member with output tokens
// out. The mock caches nothing, so all input is uncached input.
func (rp *reply) appendMessagesUsage(b []byte, out int) []byte {
	b = append(b, `"usage":{"input_tokens":`...)
	b = strconv.AppendInt(b, int64(rp.prompt), 10)
	b = append(b, `,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":`...)
	b = strconv.AppendInt(b, int64(out), 10)
	return append(b, '}')
}

// appendStop appends a stop_reason and the stop_sequence that caused it.
func (rp *reply) appendStop(b []byte) []byte {
	b = append(b, `"stop_reason":"`...)
	b = append(b, rp.finish...)
	b = append(b, `","stop_sequence":`...)
	if rp.stop == "" {
		return append(b, "null"...)
	}
	return appendJSONString(b, rp.stop)
}

// piece is token i's text as delivered, given the off bytes of text
// generated before it: the word, the part of it before the cut, or "".
func (rp *reply) piece(i, off int) string {
	w := word(i)
	if off+len(w) > rp.cut {
		w = w[:max(rp.cut-off, 0)]
	}
	return w
}

// writeMessage answers without streaming: after the time the stream would
// have taken, one Message with one text block.
func (h *Handler) writeMessage(w http.ResponseWriter, r *http.Request, rp *reply, buf []byte) []byte {
	if d := h.replyTime(rp.tokens); d > 0 {
		if h.sleep(r.Context(), d) != nil {
			return buf // the client is gone
		}
	}
	b := rp.appendMessageHead(buf[:0])
	b = append(b, `{"type":"text","text":"`...)
	for i, off := 0, 0; i < rp.tokens; i++ {
		b = append(b, rp.piece(i, off)...)
		off += len(word(i))
	}
	b = append(b, `"}],`...)
	b = rp.appendStop(b)
	b = append(b, ',')
	b = rp.appendMessagesUsage(b, rp.tokens)
	b = append(b, '}')

	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Content-Length", strconv.Itoa(len(b)))
	hdr.Set("Request-Id", "req_mock_"+strconv.FormatUint(rp.id, 10))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
	return b
}

// The events of a Messages stream that do not vary; each is one
// `event:` line, one `data:` line whose type repeats the event's name, and
// a blank line.
const (
	evMessageStartHead  = "event: message_start\ndata: " + `{"type":"message_start","message":`
	evContentBlockStart = "event: content_block_start\ndata: " + `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}` + "\n\n"
	evPing              = "event: ping\ndata: " + `{"type":"ping"}` + "\n\n"
	evTextDeltaHead     = "event: content_block_delta\ndata: " + `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"`
	evTextDeltaTail     = `"}}` + "\n\n"
	evContentBlockStop  = "event: content_block_stop\ndata: " + `{"type":"content_block_stop","index":0}` + "\n\n"
	evMessageDeltaHead  = "event: message_delta\ndata: " + `{"type":"message_delta","delta":{`
	evMessageStop       = "event: message_stop\ndata: " + `{"type":"message_stop"}` + "\n\n"
)

// writeMessageStream answers with Anthropic's server-sent events:
// message_start, content_block_start, ping, one content_block_delta per
// token, content_block_stop, message_delta, message_stop. It paces the
// deltas as writeStream paces its content chunks and returns as soon as
// the client goes away.
func (h *Handler) writeMessageStream(w http.ResponseWriter, r *http.Request, rp *reply, buf []byte) []byte {
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("Request-Id", "req_mock_"+strconv.FormatUint(rp.id, 10))
	w.WriteHeader(http.StatusOK)

	s := stream{w: w, rc: http.NewResponseController(w), ctx: r.Context()}
	s.buf = append(buf[:0], evMessageStartHead...)
	s.buf = rp.appendMessageHead(s.buf)
	s.buf = append(s.buf, `],"stop_reason":null,"stop_sequence":null,`...)
	s.buf = rp.appendMessagesUsage(s.buf, 1) // as Anthropic does: the first token's
	s.buf = append(s.buf, "}}\n\n"...)
	if !s.emit() {
		return s.buf
	}
	for _, ev := range [...]string{evContentBlockStart, evPing} {
		s.buf = append(s.buf[:0], ev...)
		if !s.emit() {
			return s.buf
		}
	}
	s.buf = append(s.buf[:0], evTextDeltaHead...)
	s.head = len(s.buf)
	for i, off := 0, 0; i < rp.tokens; i++ {
		d := h.interval
		if i == 0 {
			d = h.cfg.TimeToFirstToken
		}
		if d > 0 && h.sleep(s.ctx, d) != nil {
			return s.buf
		}
		p := rp.piece(i, off)
		off += len(word(i))
		if p == "" {
			continue // generated, but inside the stop sequence
		}
		s.buf = append(s.buf[:s.head], p...)
		s.buf = append(s.buf, evTextDeltaTail...)
		if !s.emit() {
			return s.buf
		}
	}
	s.buf = append(s.buf[:0], evContentBlockStop...)
	if !s.emit() {
		return s.buf
	}
	s.buf = append(s.buf[:0], evMessageDeltaHead...)
	s.buf = rp.appendStop(s.buf)
	s.buf = append(s.buf, `},"usage":{"output_tokens":`...)
	s.buf = strconv.AppendInt(s.buf, int64(rp.tokens), 10)
	s.buf = append(s.buf, "}}\n\n"...)
	if !s.emit() {
		return s.buf
	}
	s.buf = append(s.buf[:0], evMessageStop...)
	s.emit()
	return s.buf
}
