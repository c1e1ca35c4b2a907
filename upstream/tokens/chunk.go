package tokens

import (
	"unicode"
	"unicode/utf8"
)

// maxChunk bounds the bytes handed to the tokenizer at once. tiktoken-go's
// byte-pair merge is quadratic in the length of a pre-tokenized piece (a run
// of letters, of spaces or of punctuation): 64 KiB of spaces took 1.7 to 4 s
// here, so a megabyte of it in a prompt would hold a CPU for minutes. In
// chunks of at most 1 KiB the same text takes 36 ms, about twice the cost
// per byte of prose (BenchmarkCountPathological); 4 KiB chunks took 235 ms
// and 512-byte chunks were no faster.
const maxChunk = 1 << 10

// nextCut returns the length of the next chunk of s: all of s if it is
// short, else the longest prefix of at most maxChunk bytes that ends at a
// piece boundary, where cutting cannot change the count. Only text with no
// such boundary in maxChunk bytes (one kilobyte of a single word, of spaces
// or of punctuation) is cut elsewhere, between two runes, which may add a
// token or two per cut: an approximation confined to text that tiktoken
// itself would tokenize slowly.
func nextCut(s string) int {
	if len(s) <= maxChunk {
		return len(s)
	}
	for i := maxChunk; i > 0; i-- {
		if isBoundary(s, i) {
			return i
		}
	}
	// Cut before a rune's first byte. If none of the last utf8.UTFMax bytes
	// is one, they are continuation bytes that no valid rune can span, so
	// each decodes to U+FFFD on its own and any cut among them is as good.
	for i := maxChunk; i > maxChunk-utf8.UTFMax; i-- {
		if utf8.RuneStart(s[i]) {
			return i
		}
	}
	return maxChunk
}

// isBoundary reports whether every pre-tokenization of s by o200k_base and
// by cl100k_base has a piece ending at byte i, so that s[:i] and s[i:]
// count separately to the same total as s. It is when the rune before i is
// a letter or a number and the rune at i cannot continue the piece that rune
// is in. In both patterns a letter's piece is a letter run, optionally led
// by one character that is neither letter, number nor newline (never a
// letter or number), and continued only by more letters, combining marks
// (o200k_base) or a contraction that starts with an apostrophe; a number's
// piece is a run of one to three numbers. Neither pattern looks behind, so
// the piece starting at i does not depend on what precedes it, and the only
// lookahead, in \s+(?!\S), belongs to whitespace runs, which cannot end just
// before i. FuzzBoundary checks this against the tokenizer.
func isBoundary(s string, i int) bool {
	p, c := s[i-1], s[i]
	if p < utf8.RuneSelf && c < utf8.RuneSelf {
		pk := asciiKind(p)
		return pk != otherKind && asciiKind(c) != pk && c != '\''
	}
	pr, _ := utf8.DecodeLastRuneInString(s[:i])
	pk := runeKind(pr)
	if pk == otherKind {
		return false
	}
	cr, _ := utf8.DecodeRuneInString(s[i:])
	return runeKind(cr) != pk && cr != '\'' && !unicode.Is(unicode.M, cr)
}

type kind uint8

const (
	otherKind kind = iota
	letterKind
	numberKind
)

func asciiKind(b byte) kind {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z':
		return letterKind
	case '0' <= b && b <= '9':
		return numberKind
	}
	return otherKind
}

// runeKind classifies r as the patterns' \p{L} and \p{N} do: regexp2 reads
// those classes from the same unicode tables.
func runeKind(r rune) kind {
	switch {
	case unicode.IsLetter(r):
		return letterKind
	case unicode.IsNumber(r):
		return numberKind
	}
	return otherKind
}
