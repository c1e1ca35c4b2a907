package tokens

import (
	"strings"
	"testing"
	"unicode/utf8"
)

var fuzzSeeds = []string{
	"",
	"tiktoken is great!",
	"お誕生日おめでとう",
	"\xff\xfe abc \xc3",
	"<|endoftext|>",
	"it's 12345 café\u0301 😀\r\n\t don'T",
	"x  \n  \n y",
	strings.Repeat(" ", 2*maxChunk+3),
	strings.Repeat("\x80", maxChunk+5),
	strings.Repeat("ab1", maxChunk),
}

// replacedLen is the length of text once each byte that is not part of a
// valid UTF-8 sequence is replaced by the 3 bytes of U+FFFD, which is the
// text the tokenizer actually sees.
func replacedLen(text []byte) int {
	n := 0
	for len(text) > 0 {
		r, size := utf8.DecodeRune(text)
		if r == utf8.RuneError && size == 1 {
			n += utf8.RuneLen(utf8.RuneError)
		} else {
			n += size
		}
		text = text[size:]
	}
	return n
}

// FuzzCount checks that Count never panics and stays within sound bounds.
// Count uses ordinary encoding (no special tokens, nothing added before or
// after the text), so its tokens split the bytes the tokenizer sees into
// non-empty pieces: a text of n bytes counts at most n tokens. Those bytes
// are text itself when it is valid UTF-8, and text with each invalid byte
// widened to U+FFFD otherwise, so the bound is replacedLen(text), which is
// len(text) for valid UTF-8. No "+1" is needed; and len(text)+1 would not
// hold for invalid input, where one stray byte becomes three. Non-empty
// text counts at least one token.
func FuzzCount(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	c := NewCounter()
	f.Fuzz(func(t *testing.T, text []byte) {
		limit := replacedLen(text)
		for _, model := range []string{o200kModel, cl100kModel} {
			n := c.Count(model, text)
			switch {
			case len(text) == 0 && n != 0:
				t.Fatalf("Count(%q, empty) = %d, want 0", model, n)
			case len(text) > 0 && (n < 1 || n > limit):
				t.Fatalf("Count(%q, %q) = %d, want between 1 and %d", model, text, n, limit)
			}
		}
	})
}

// FuzzBoundary checks isBoundary against the tokenizer: cutting a text at
// any boundary it reports must not change the count.
func FuzzBoundary(f *testing.F) {
	for _, s := range fuzzSeeds {
		if len(s) <= 256 {
			f.Add(s)
		}
	}
	c := NewCounter()
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 256 {
			s = s[:256]
		}
		for _, model := range []string{o200kModel, cl100kModel} {
			enc, err := c.vocabulary(model).load()
			if err != nil {
				t.Fatal(err)
			}
			whole := len(enc.EncodeOrdinary(s))
			for i := 1; i < len(s); i++ {
				if !isBoundary(s, i) {
					continue
				}
				if split := len(enc.EncodeOrdinary(s[:i])) + len(enc.EncodeOrdinary(s[i:])); split != whole {
					t.Fatalf("%s: cutting %q at %d (%q | %q) counts %d, whole text %d", model, s, i, s[:i], s[i:], split, whole)
				}
			}
		}
	})
}
