package anthropic

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"unicode/utf8"
)

// JSON helpers shared by the request, response and stream translations.

// absent reports whether raw is a member that is missing or null: OpenAI
// treats the two alike for optional parameters, and so do Anthropic's events.
func absent(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}

// rawText returns the contents of raw, a JSON string literal, decoded, and
// whether raw is a string at all. A literal without escapes is returned as a
// sub-slice of raw; one with escapes is decoded into scratch, which may be
// nil (and then allocates).
func rawText(raw, scratch []byte) ([]byte, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return nil, false
	}
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return inner, true
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return nil, false
	}
	return append(scratch[:0], s...), true
}

// rawString is rawText as a string, for the rare values that are kept.
func rawString(raw json.RawMessage) (string, bool) {
	b, ok := rawText(raw, nil)
	return string(b), ok
}

// rawCount reads a token count: a non-negative integer, written as an
// integer literal or (leniently) as an integral number such as 12.0. Anything
// else, null or absent included, is not a count.
func rawCount(raw json.RawMessage) (int64, bool) {
	if len(raw) == 0 || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) {
		return 0, false
	}
	if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
		return n, n >= 0
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || f < 0 || f >= math.MaxInt64 || f != math.Trunc(f) {
		return 0, false
	}
	return int64(f), true
}

// addCounts adds token counts, saturating instead of overflowing.
func addCounts(ns ...int64) int64 {
	var sum int64
	for _, n := range ns {
		if n > math.MaxInt64-sum {
			return math.MaxInt64
		}
		sum += n
	}
	return sum
}

// appendString appends s as a JSON string literal, escaped as encoding/json
// escapes it except that <, > and & are left alone (the output is never
// embedded in HTML). Invalid UTF-8 becomes U+FFFD, as there.
func appendString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		// U+2028 and U+2029 are valid in JSON but end lines in JavaScript;
		// encoding/json escapes them, and so do we.
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendLiteral appends raw, a string literal taken from valid JSON, as a
// JSON string. A literal that is valid UTF-8 is copied as it is, which is
// what keeps the text path of a stream free of allocation; otherwise it is
// decoded and escaped again, so invalid UTF-8 never reaches a client.
func appendLiteral(dst, raw []byte) []byte {
	if utf8.Valid(raw) {
		return append(dst, raw...)
	}
	s, _ := rawString(raw)
	return appendString(dst, s)
}

// validUTF8 returns b with each byte that is not part of valid UTF-8
// replaced by U+FFFD, as encoding/json does in the strings it decodes. In
// valid JSON such bytes can only stand inside strings, so the result is the
// same JSON with the same structure. b itself is returned when it is valid.
func validUTF8(b []byte) []byte {
	if utf8.Valid(b) {
		return b
	}
	out := make([]byte, 0, len(b)+16)
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			out = append(out, "\uFFFD"...)
		} else {
			out = append(out, b[i:i+size]...)
		}
		i += size
	}
	return out
}

// marshal appends v encoded as JSON without HTML escaping and without the
// newline json.Encoder adds.
func marshal(dst []byte, v any) ([]byte, error) {
	buf := bytes.NewBuffer(dst)
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return dst, err
	}
	out := buf.Bytes()
	return out[:len(out)-1], nil
}

func appendInt(dst []byte, n int64) []byte { return strconv.AppendInt(dst, n, 10) }
