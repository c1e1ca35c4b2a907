package sse

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"time"
)

// DefaultMaxEvent is the bound on one event's size that NewReader applies
// when it is given zero or less: far above any legitimate chunk (a base64
// image in one data line is a few MiB) and low enough that a stream cannot
// take the process down.
const DefaultMaxEvent = 16 << 20

// ErrEventTooLarge is wrapped by the error Next returns when an event grows
// past the Reader's bound. The stream cannot be resumed after it.
var ErrEventTooLarge = errors.New("sse: event too large")

// errBadRead reports a source that broke the io.Reader contract by returning
// a negative count or one larger than the buffer it was given.
var errBadRead = errors.New("sse: source returned an invalid byte count")

const (
	// minReadSize and readSize bound the Reader's read buffer. It starts
	// at minReadSize and doubles, up to readSize, each time a read fills
	// it: a stream of small events keeps a small buffer, which matters
	// because a stream holds it for as long as it waits (minutes, for a
	// slow one), while a fast stream soon reads in large blocks. Events
	// larger than the buffer are assembled in the data buffer, so its size
	// only sets how many Read calls a large event costs, not what size of
	// event parses.
	minReadSize = 512
	readSize    = 8 << 10

	// maxEmptyReads is how many reads in a row may return nothing and no
	// error before the source is declared stuck, as bufio does.
	maxEmptyReads = 100

	// maxInternedName is the longest event name the Reader remembers.
	maxInternedName = 64
)

// utf8BOM is ignored when it opens a stream.
var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// Event is one dispatched Server-Sent Event.
type Event struct {
	// Name is the value of the event's last "event" field, or "" when it
	// had none (a browser would call that type "message"). Anthropic names
	// every event; OpenAI-shaped upstreams name none.
	Name string

	// Data is the event's data lines joined with "\n", without a trailing
	// newline. It aliases the Reader's buffer: it is valid only until the
	// next call to Next, so copy it to keep it.
	Data []byte

	// ID is the stream's last event ID when the event was dispatched: it
	// persists across events until an "id" field changes it.
	ID string

	// Retry is the reconnection delay most recently set by a "retry" field
	// on the stream, zero if none set one.
	Retry time.Duration
}

// lineState is where the Reader stands inside the current line. Keeping it
// between reads is what lets a field name, a value or a CRLF pair be split
// anywhere across reads.
type lineState uint8

const (
	atLineStart  lineState = iota // nothing of the line read yet
	inName                        // reading a field name
	atValueStart                  // just after the colon: one space may follow
	inValue                       // reading a field value
	inSkip                        // discarding a comment or an ignored field
)

// field is a field name the Reader acts on.
type field uint8

const (
	fieldIgnored field = iota
	fieldData
	fieldEvent
	fieldID
	fieldRetry
)

// Reader reads Server-Sent Events from a stream. It returns each event as
// soon as the blank line that ends it has been read, without waiting for
// more input, and holds at most a fixed read buffer plus one event's bytes,
// whatever the length of the stream's lines. After warm-up, reading events
// no larger than earlier ones allocates nothing.
//
// A Reader is not safe for concurrent use.
type Reader struct {
	src      io.Reader
	maxEvent int

	buf  []byte // read buffer; buf[r:w] is not consumed yet
	r, w int
	full bool  // the last read filled buf: the next may use a larger one
	rerr error // error from the source, acted on once buf[r:w] is drained
	err  error // once set, Next returns it on every call

	started bool // the opening byte-order mark has been looked for
	state   lineState
	skipLF  bool // the last line ended in CR: an LF right after belongs to it

	// The line being read.
	name    [5]byte // field name so far; no field we act on is longer
	nameLen int     // bytes in name
	field   field
	val     []byte // value of an event, id or retry field

	// The event being assembled.
	data       []byte
	hasData    bool   // a data field was seen, even an empty one
	eventName  string // value of the last event field
	pending    bool   // a field line was read since the last blank line
	dispatched bool   // data and eventName belong to the event last returned

	// Stream state that outlives events.
	lastID   string
	retry    time.Duration
	names    [16]string // recent event names, so repeating ones cost nothing
	nextName int
}

// NewReader returns a Reader of the events in src. maxEvent bounds the bytes
// the Reader holds for one event (its joined data plus its event name and the
// field value being read); zero or less means DefaultMaxEvent.
func NewReader(src io.Reader, maxEvent int) *Reader {
	if maxEvent <= 0 {
		maxEvent = DefaultMaxEvent
	}
	return &Reader{src: src, maxEvent: maxEvent, buf: make([]byte, minReadSize)}
}

// Next returns the next event. At the end of the stream it returns io.EOF,
// or io.ErrUnexpectedEOF if the stream ended inside an event or a line: the
// spec discards such an event, and the caller learns the stream was cut. An
// event over the bound returns an error wrapping ErrEventTooLarge; a read
// error is returned wrapped. Once Next has returned an error it returns the
// same error on every later call.
func (r *Reader) Next() (Event, error) {
	return r.next(true)
}

// Buffered returns the next event if the bytes already read complete it,
// without reading from the source; ok is false when they do not, and Next
// would have to read (or report the stream's end or error). A relay uses it
// to write the events that arrived together in one go, and to flush before
// it waits. The event is valid until the next call to Next or Buffered.
func (r *Reader) Buffered() (ev Event, ok bool) {
	if r.err != nil || !r.started {
		return Event{}, false
	}
	ev, err := r.next(false)
	return ev, err == nil
}

// errWouldRead is next's answer, without read, when the buffered bytes
// hold no complete event.
var errWouldRead = errors.New("sse: no complete event buffered")

// next is Next; without read it parses only what is buffered and returns
// errWouldRead, leaving the parser where it stopped, rather than read.
func (r *Reader) next(read bool) (Event, error) {
	if r.err != nil {
		return Event{}, r.err
	}
	if r.dispatched {
		r.resetEvent()
		r.dispatched = false
	}
	if !r.started {
		r.skipBOM()
	}
	for {
		if r.r == r.w {
			if !read {
				return Event{}, errWouldRead
			}
			if r.rerr != nil {
				return Event{}, r.finish()
			}
			r.fill()
			continue
		}
		var err error
		switch r.state {
		case atLineStart:
			if r.lineStart() {
				r.dispatched = true
				return Event{Name: r.eventName, Data: r.data, ID: r.lastID, Retry: r.retry}, nil
			}
		case inName:
			err = r.readName()
		case atValueStart:
			if r.buf[r.r] == ' ' {
				r.r++
			}
			r.state = inValue
		case inValue:
			err = r.readValue()
		case inSkip:
			r.skipLine()
		}
		if err != nil {
			r.err = err
			return Event{}, err
		}
	}
}

// lineStart looks at the first byte of a line and reports whether that byte
// was a blank line that dispatches an event.
func (r *Reader) lineStart() bool {
	c := r.buf[r.r]
	if r.skipLF {
		r.skipLF = false
		if c == '\n' {
			r.r++
			return false
		}
	}
	switch c {
	case '\r', '\n':
		r.r++
		r.skipLF = c == '\r'
		if r.hasData {
			return true
		}
		// An event without data is not dispatched, and its name must not
		// carry over to the next one.
		r.resetEvent()
	case ':':
		r.r++
		r.state = inSkip
	default:
		r.pending = true
		r.nameLen = 0
		r.state = inName
	}
	return false
}

// readName reads field-name bytes up to the colon or the end of the line.
func (r *Reader) readName() error {
	for i, c := range r.buf[r.r:r.w] {
		switch c {
		case ':':
			r.r += i + 1
			r.state = atValueStart
			return r.startField()
		case '\r', '\n':
			// A line without a colon is a field with an empty value.
			r.r += i
			if err := r.startField(); err != nil {
				return err
			}
			r.endField()
			r.endLine()
			return nil
		}
		if r.nameLen == len(r.name) {
			// Longer than every field we act on: ignore the line.
			r.r += i
			r.state = inSkip
			return nil
		}
		r.name[r.nameLen] = c
		r.nameLen++
	}
	r.r = r.w
	return nil
}

// startField acts on a complete field name. Field names are case-sensitive:
// "Data" and "data " are unknown fields.
func (r *Reader) startField() error {
	r.field = fieldIgnored
	r.val = r.val[:0]
	name := r.name[:r.nameLen]
	switch {
	case string(name) == "data":
		r.field = fieldData
		if r.hasData {
			if err := r.appendData([]byte{'\n'}); err != nil {
				return err
			}
		}
		r.hasData = true
	case string(name) == "event":
		r.field = fieldEvent
	case string(name) == "id":
		r.field = fieldID
	case string(name) == "retry":
		r.field = fieldRetry
	}
	return nil
}

// readValue reads value bytes up to the end of the line.
func (r *Reader) readValue() error {
	b := r.buf[r.r:r.w]
	e := indexEOL(b)
	if e >= 0 {
		b = b[:e]
	}
	switch r.field {
	case fieldData:
		if err := r.appendData(b); err != nil {
			return err
		}
	case fieldEvent, fieldID, fieldRetry:
		if err := r.checkSize(len(b)); err != nil {
			return err
		}
		r.val = append(grow(r.val, len(b), r.maxEvent), b...)
	}
	if e < 0 {
		r.r = r.w
		return nil
	}
	r.r += e
	r.endField()
	r.endLine()
	return nil
}

// endField acts on a field whose value is complete.
func (r *Reader) endField() {
	switch r.field {
	case fieldEvent:
		r.eventName = r.intern(r.val)
	case fieldID:
		// The spec ignores an id containing NUL.
		if bytes.IndexByte(r.val, 0) < 0 && string(r.val) != r.lastID {
			r.lastID = string(r.val)
		}
	case fieldRetry:
		if d, ok := parseRetry(r.val); ok {
			r.retry = d
		}
	}
}

// skipLine discards bytes up to the end of the line.
func (r *Reader) skipLine() {
	e := indexEOL(r.buf[r.r:r.w])
	if e < 0 {
		r.r = r.w
		return
	}
	r.r += e
	r.endLine()
}

// endLine consumes the terminator at buf[r]. A CR ends the line at once,
// so an event ending in CR is dispatched without waiting for the next read;
// an LF right after it is skipped at the next line's start.
func (r *Reader) endLine() {
	r.skipLF = r.buf[r.r] == '\r'
	r.r++
	r.state = atLineStart
}

func (r *Reader) appendData(b []byte) error {
	if err := r.checkSize(len(b)); err != nil {
		return err
	}
	r.data = append(grow(r.data, len(b), r.maxEvent), b...)
	return nil
}

// checkSize reports whether n more bytes would take the event past the bound.
func (r *Reader) checkSize(n int) error {
	if len(r.data)+len(r.eventName)+len(r.val)+n > r.maxEvent {
		return fmt.Errorf("sse: event larger than %d bytes: %w", r.maxEvent, ErrEventTooLarge)
	}
	return nil
}

func (r *Reader) resetEvent() {
	r.data = r.data[:0]
	r.hasData = false
	r.eventName = ""
	r.pending = false
}

// intern returns b as a string, reusing a recent name when one matches so
// that a stream repeating a few event names does not allocate.
func (r *Reader) intern(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	for _, s := range r.names {
		if string(b) == s {
			return s
		}
	}
	s := string(b)
	if len(s) <= maxInternedName {
		r.names[r.nextName] = s
		r.nextName = (r.nextName + 1) % len(r.names)
	}
	return s
}

// skipBOM drops a UTF-8 byte-order mark opening the stream. It waits for
// three bytes, which never delays an event: the shortest is six.
func (r *Reader) skipBOM() {
	r.started = true
	for r.w-r.r < len(utf8BOM) && r.rerr == nil {
		r.fill()
	}
	if bytes.HasPrefix(r.buf[r.r:r.w], utf8BOM) {
		r.r += len(utf8BOM)
	}
}

// fill reads once more from the source into the free end of buf.
func (r *Reader) fill() {
	if r.full && len(r.buf) < readSize {
		// The source had more than the buffer held: read in larger
		// blocks from now on, keeping what is not parsed yet. Waiting
		// for the buffer to be all parsed first would split every burst
		// that ends inside an event into two reads, and a relay that
		// writes what it has before it reads again into two writes.
		nb := make([]byte, 2*len(r.buf))
		r.w = copy(nb, r.buf[r.r:r.w])
		r.buf, r.r = nb, 0
	}
	if r.r > 0 {
		copy(r.buf, r.buf[r.r:r.w])
		r.w -= r.r
		r.r = 0
	}
	for range maxEmptyReads {
		n, err := r.src.Read(r.buf[r.w:])
		if n < 0 || n > len(r.buf)-r.w {
			r.rerr = errBadRead
			return
		}
		r.w += n
		r.full = r.w == len(r.buf)
		if err != nil {
			r.rerr = err
			return
		}
		if n > 0 {
			return
		}
	}
	r.rerr = io.ErrNoProgress
}

// finish turns the source's error into Next's final answer once every
// buffered byte has been parsed.
func (r *Reader) finish() error {
	switch {
	case r.rerr != io.EOF:
		r.err = fmt.Errorf("sse: reading stream: %w", r.rerr)
	case r.pending || r.state != atLineStart:
		r.err = io.ErrUnexpectedEOF
	default:
		r.err = io.EOF
	}
	return r.err
}

// grow returns b with room for n more bytes, never with a capacity over
// limit; the caller has checked that len(b)+n <= limit. Plain append could
// double a buffer to twice the bound.
func grow(b []byte, n, limit int) []byte {
	need := len(b) + n
	if need <= cap(b) {
		return b
	}
	c := min(max(2*cap(b), need, 256), limit)
	nb := make([]byte, len(b), c)
	copy(nb, b)
	return nb
}

// parseRetry parses a retry value, which counts only if it is all ASCII
// digits. Values too large for a Duration are clamped.
func parseRetry(b []byte) (time.Duration, bool) {
	if len(b) == 0 {
		return 0, false
	}
	const limit = math.MaxInt64 / int64(time.Millisecond)
	var ms int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		if ms <= limit {
			ms = ms*10 + int64(c-'0')
		}
	}
	return time.Duration(min(ms, limit)) * time.Millisecond, true
}

// indexEOL returns the index of the first CR or LF in b, or -1. It looks
// for CR only before the first LF, so scanning a stream stays linear.
func indexEOL(b []byte) int {
	lf := bytes.IndexByte(b, '\n')
	head := b
	if lf >= 0 {
		head = b[:lf]
	}
	if cr := bytes.IndexByte(head, '\r'); cr >= 0 {
		return cr
	}
	return lf
}
