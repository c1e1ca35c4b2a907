package openai

import (
	"unicode/utf16"
	"unicode/utf8"
)

// JSON strings: quoting a Go string for the wire, and reading a raw string
// body (the bytes between the quotes) the way encoding/json decodes it. The
// raw bodies handed to the readers always come from a validating walk, so
// every escape in them is complete.

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string literal. It escapes only what
// JSON requires (the quote, the backslash, control characters as \u00XX),
// keeps valid UTF-8 as it is and writes \ufffd for each invalid byte, as
// encoding/json does. strconv.Quote is no substitute: its \x and \U escapes
// are not JSON.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if plain[c] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			if c == '"' || c == '\\' {
				dst = append(dst, '\\', c)
			} else {
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// decodeRune decodes the character at raw[i] of a valid raw string body and
// returns it with the number of raw bytes it took. Like encoding/json it
// joins surrogate pairs and yields U+FFFD for a lone surrogate and for each
// byte of invalid UTF-8.
func decodeRune(raw []byte, i int) (rune, int) {
	c := raw[i]
	if c != '\\' {
		if c < utf8.RuneSelf {
			return rune(c), 1
		}
		return utf8.DecodeRune(raw[i:])
	}
	switch raw[i+1] {
	case 'b':
		return '\b', 2
	case 'f':
		return '\f', 2
	case 'n':
		return '\n', 2
	case 'r':
		return '\r', 2
	case 't':
		return '\t', 2
	case 'u':
		r := hex4(raw[i+2:])
		if !utf16.IsSurrogate(r) {
			return r, 6
		}
		if i+12 <= len(raw) && raw[i+6] == '\\' && raw[i+7] == 'u' && isHex4(raw[i+8:]) {
			if dec := utf16.DecodeRune(r, hex4(raw[i+8:])); dec != utf8.RuneError {
				return dec, 12
			}
		}
		return utf8.RuneError, 6
	default: // '"', '\\', '/'
		return rune(raw[i+1]), 2
	}
}

func isHex4(b []byte) bool {
	return isHex(b[0]) && isHex(b[1]) && isHex(b[2]) && isHex(b[3])
}

func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		switch {
		case c <= '9':
			c -= '0'
		case c <= 'F':
			c -= 'A' - 10
		default:
			c -= 'a' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}

// appendUnescaped appends the value of the raw string body raw.
func appendUnescaped(dst, raw []byte) []byte {
	start := 0
	for i := 0; i < len(raw); {
		c := raw[i]
		if c < utf8.RuneSelf && c != '\\' {
			i++
			continue
		}
		r, n := decodeRune(raw, i)
		if c != '\\' && (r != utf8.RuneError || n != 1) {
			i += n // valid UTF-8 stays as it is
			continue
		}
		dst = append(dst, raw[start:i]...)
		dst = utf8.AppendRune(dst, r)
		i += n
		start = i
	}
	return append(dst, raw[start:]...)
}

// equalString reports whether the raw string body raw (esc: it holds an
// escape) decodes to name, which must be ASCII. A raw body without escapes
// equals an ASCII name only byte for byte, so the common case is a compare.
func equalString(raw []byte, esc bool, name string) bool {
	if !esc {
		return string(raw) == name
	}
	j := 0
	for i := 0; i < len(raw); {
		r, n := decodeRune(raw, i)
		if j >= len(name) || r != rune(name[j]) {
			return false
		}
		i += n
		j++
	}
	return j == len(name)
}

// maxName bounds the keys and enum values this package compares: all of them
// are short ASCII words.
const maxName = 32

// name returns the member's key as bytes to switch on: the raw key when it has
// no escapes, else the key decoded into buf. A key whose value is not ASCII or
// is longer than buf comes back empty, as it can equal none of our names.
func (m *member) name(buf *[maxName]byte) []byte {
	return asciiName(m.key, m.esc, buf)
}

func asciiName(raw []byte, esc bool, buf *[maxName]byte) []byte {
	if !esc {
		return raw
	}
	n := 0
	for i := 0; i < len(raw); {
		r, size := decodeRune(raw, i)
		if r >= utf8.RuneSelf || n == len(buf) {
			return nil
		}
		buf[n] = byte(r)
		n++
		i += size
	}
	return buf[:n]
}

// is reports whether the member's key is name (ASCII).
func (m *member) is(name string) bool { return equalString(m.key, m.esc, name) }
