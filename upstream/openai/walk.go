package openai

import (
	"bytes"
	"encoding/binary"
)

// This file is the JSON walker everything else in the package stands on. It
// iterates the members of an object (or the elements of an array) and hands
// out each value's byte span without decoding it, validating as it goes, so
// one pass both proves a body is JSON and finds the fields we care about.
//
// Validity is encoding/json's, byte for byte (FuzzWalk holds us to it): the
// RFC 8259 grammar, the same four whitespace bytes, the same nesting limit,
// and, like json.Valid, invalid UTF-8 inside strings is accepted (decoders
// turn it into U+FFFD). It is about five times as fast as json.Valid
// (BenchmarkValidate100KB). Nothing here allocates; nested values are
// validated by recursion bounded by maxDepth.
//
// A walk into a value that an earlier walk validated (openObject, openArray)
// trusts it: it only finds where values end, without recursion, and finds
// string ends with bytes.IndexByte. That keeps a second look at a body,
// such as ScanRequest's pass over each message, cheap.

// maxDepth is encoding/json's nesting limit (scanner.go, maxNestingDepth).
const maxDepth = 10000

// span is the half-open byte range [start, end) of one JSON value inside the
// buffer it was found in. The zero span means "absent": a real value never
// ends at offset 0.
type span struct{ start, end int }

func (s span) ok() bool { return s.end > s.start }

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// plain reports the bytes a JSON string may hold as themselves: not a quote,
// not a backslash, not a control character.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipValue returns the offset just past the value that starts at b[i], or -1
// if there is no valid value there. depth is the number of containers that
// enclose the value.
func skipValue(b []byte, i, depth int) int {
	if i >= len(b) {
		return -1
	}
	switch c := b[i]; c {
	case '"':
		end, _ := scanString(b, i)
		return end
	case '{':
		return skipObject(b, i, depth+1)
	case '[':
		return skipArray(b, i, depth+1)
	case 't':
		return skipLiteral(b, i, "true")
	case 'f':
		return skipLiteral(b, i, "false")
	case 'n':
		return skipLiteral(b, i, "null")
	default:
		if c == '-' || isDigit(c) {
			return skipNumber(b, i)
		}
		return -1
	}
}

// scanString expects b[i] == '"' and returns the offset just past the closing
// quote (-1 if the string is malformed) and whether the string holds an
// escape, that is whether its raw bytes differ from its value.
func scanString(b []byte, i int) (end int, esc bool) {
	i++
	for {
		// Eight bytes at a time while none of them needs a look (SWAR, as in
		// "Bit Twiddling Hacks": a word has a byte below n if
		// (x - n*ones) &^ x & highs != 0, and a byte equal to c if x^(c*ones)
		// has a zero byte). Strings are most of a request's bytes.
		for i+8 <= len(b) {
			x := binary.LittleEndian.Uint64(b[i:])
			q, bs := x^(ones*'"'), x^(ones*'\\')
			if ((x-ones*0x20)&^x|(q-ones)&^q|(bs-ones)&^bs)&highs != 0 {
				break
			}
			i += 8
		}
		for i < len(b) && plain[b[i]] {
			i++
		}
		if i >= len(b) {
			return -1, esc
		}
		switch b[i] {
		case '"':
			return i + 1, esc
		case '\\':
			esc = true
			if i+1 >= len(b) {
				return -1, esc
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return -1, esc
				}
				i += 6
			default:
				return -1, esc
			}
		default: // a control character
			return -1, esc
		}
	}
}

func skipNumber(b []byte, i int) int {
	if b[i] == '-' {
		i++
	}
	switch {
	case i >= len(b):
		return -1
	case b[i] == '0':
		i++
	case isDigit(b[i]):
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	default:
		return -1
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || !isDigit(b[i]) {
			return -1
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || !isDigit(b[i]) {
			return -1
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	return i
}

func skipLiteral(b []byte, i int, lit string) int {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return -1
	}
	return i + len(lit)
}

// skipObject and skipArray expect b[i] to open a container at nesting depth
// depth (the top-level value is at depth 1).
func skipObject(b []byte, i, depth int) int {
	o := object{b: b, i: i + 1, depth: depth}
	if depth > maxDepth {
		return -1
	}
	for {
		if _, ok := o.next(); !ok {
			break
		}
	}
	if o.failed() {
		return -1
	}
	return o.i
}

func skipArray(b []byte, i, depth int) int {
	a := array{b: b, i: i + 1, depth: depth}
	if depth > maxDepth {
		return -1
	}
	for {
		if _, ok := a.next(); !ok {
			break
		}
	}
	if a.failed() {
		return -1
	}
	return a.i
}

// validValue reports whether b holds exactly one JSON value, with optional
// whitespace around it: json.Valid, without the allocation-free-but-slow
// state machine.
func validValue(b []byte) bool {
	i := skipWS(b, 0)
	end := skipValue(b, i, 0)
	return end >= 0 && skipWS(b, end) == len(b)
}

// Iteration states.
const (
	iterFirst = iota // before the first member or element
	iterMore         // after one: a comma or the closing bracket comes next
	iterDone         // the closing bracket was read
	iterBad          // the input is malformed
)

// object iterates the members of one JSON object. Call next until it returns
// false, then failed to learn whether that was the end of the object or
// malformed input; a caller that stops early has validated nothing past the
// last member it saw.
type object struct {
	b     []byte
	i     int  // where reading resumes; past the '}' once done
	depth int  // the object's own nesting depth; 0: it is known to be valid
	top   bool // the object is the whole buffer: only whitespace may follow it
	state int8
}

// member is one object member: the key's raw bytes between its quotes and the
// span of its value.
type member struct {
	key []byte
	esc bool // key holds an escape, so its raw bytes are not its name
	span
}

// topObject iterates the object that must make up all of b.
func topObject(b []byte) object {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return object{state: iterBad}
	}
	return object{b: b, i: i + 1, depth: 1, top: true}
}

// openObject iterates the object value at v. v must come from a walk that
// validated it, and b[v.start] must be '{'. As the value is known to be
// valid, the walk skips nested values without validating them again.
func openObject(b []byte, v span) object {
	return object{b: b[:v.end], i: v.start + 1}
}

func (o *object) failed() bool { return o.state == iterBad }

func (o *object) next() (m member, ok bool) {
	if o.state >= iterDone {
		return m, false
	}
	b := o.b
	i := skipWS(b, o.i)
	if i < len(b) && b[i] == '}' && o.state == iterFirst {
		return m, o.close(i)
	}
	if o.state == iterMore {
		if i >= len(b) {
			return m, o.fail()
		}
		if b[i] == '}' {
			return m, o.close(i)
		}
		if b[i] != ',' {
			return m, o.fail()
		}
		i = skipWS(b, i+1)
	}
	if i >= len(b) || b[i] != '"' {
		return m, o.fail()
	}
	var end int
	var esc bool
	if o.depth == 0 {
		end = skipValidString(b, i)
		esc = end > 0 && bytes.IndexByte(b[i+1:end-1], '\\') >= 0
	} else {
		end, esc = scanString(b, i)
	}
	if end < 0 {
		return m, o.fail()
	}
	m.key, m.esc = b[i+1:end-1], esc
	i = skipWS(b, end)
	if i >= len(b) || b[i] != ':' {
		return m, o.fail()
	}
	i = skipWS(b, i+1)
	if end = skip(b, i, o.depth); end < 0 {
		return m, o.fail()
	}
	m.span = span{i, end}
	o.i, o.state = end, iterMore
	return m, true
}

func (o *object) close(i int) bool {
	o.i, o.state = i+1, iterDone
	if o.top && skipWS(o.b, o.i) != len(o.b) {
		o.state = iterBad
	}
	return false
}

func (o *object) fail() bool {
	o.state = iterBad
	return false
}

// array iterates the elements of one JSON array, like object.
type array struct {
	b     []byte
	i     int
	depth int
	state int8
}

// openArray iterates the array value at v, with the same preconditions as
// openObject.
func openArray(b []byte, v span) array {
	return array{b: b[:v.end], i: v.start + 1}
}

func (a *array) failed() bool { return a.state == iterBad }

func (a *array) next() (v span, ok bool) {
	if a.state >= iterDone {
		return v, false
	}
	b := a.b
	i := skipWS(b, a.i)
	if i < len(b) && b[i] == ']' && a.state == iterFirst {
		a.i, a.state = i+1, iterDone
		return v, false
	}
	if a.state == iterMore {
		if i >= len(b) {
			a.state = iterBad
			return v, false
		}
		if b[i] == ']' {
			a.i, a.state = i+1, iterDone
			return v, false
		}
		if b[i] != ',' {
			a.state = iterBad
			return v, false
		}
		i = skipWS(b, i+1)
	}
	end := skip(b, i, a.depth)
	if end < 0 {
		a.state = iterBad
		return v, false
	}
	a.i, a.state = end, iterMore
	return span{i, end}, true
}

// skip returns the offset past the value at b[i] (-1 if there is none): it
// validates the value at nesting depth depth, or, with depth 0, only finds
// its end, trusting an earlier walk to have validated it.
func skip(b []byte, i, depth int) int {
	if depth > 0 {
		return skipValue(b, i, depth)
	}
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipValidString(b, i)
	case '{', '[':
		nest := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				if i = skipValidString(b, i); i < 0 {
					return -1
				}
				continue
			case '{', '[':
				nest++
			case '}', ']':
				if nest--; nest == 0 {
					return i + 1
				}
			}
			i++
		}
		return -1
	default: // a number or a literal runs to the next delimiter
		for i++; i < len(b); i++ {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
		}
		return i
	}
}

// skipValidString returns the offset past the valid string at b[i] (-1 if
// it does not end). Its closing quote is the first one not escaped, that is
// not preceded by an odd number of backslashes, and bytes.IndexByte finds
// quotes fast.
func skipValidString(b []byte, i int) int {
	i++
	for {
		j := bytes.IndexByte(b[i:], '"')
		if j < 0 {
			return -1
		}
		i += j
		k := i
		for b[k-1] == '\\' { // stops at the opening quote at the latest
			k--
		}
		if (i-k)%2 == 0 {
			return i + 1
		}
		i++
	}
}
