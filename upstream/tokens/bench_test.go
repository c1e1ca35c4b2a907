package tokens

import (
	"os"
	"strings"
	"testing"
)

func englishOfSize(b *testing.B, size int) []byte {
	b.Helper()
	english, err := os.ReadFile("testdata/english.txt")
	if err != nil {
		b.Fatal(err)
	}
	return []byte(strings.Repeat(string(english), size/len(english)+1)[:size])
}

func benchmarkCount(b *testing.B, text []byte) {
	for _, model := range []string{o200kModel, cl100kModel} {
		b.Run(EncodingFor(model), func(b *testing.B) {
			c := NewCounter()
			if err := c.Preload(model); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				c.Count(model, text)
			}
		})
	}
}

func BenchmarkCount1KB(b *testing.B) {
	benchmarkCount(b, englishOfSize(b, 1<<10))
}

func BenchmarkCount100KB(b *testing.B) {
	benchmarkCount(b, englishOfSize(b, 100<<10))
}

// BenchmarkCountPathological counts 64 KiB runs that tiktoken-go alone
// would take over a second each to tokenize.
func BenchmarkCountPathological(b *testing.B) {
	for name, text := range map[string]string{
		"spaces":      strings.Repeat(" ", 64<<10),
		"punctuation": strings.Repeat("!", 64<<10),
		"word":        strings.Repeat("abcdefghijklmnopqrstuvwxyz", (64<<10)/26),
	} {
		b.Run(name, func(b *testing.B) {
			benchmarkCount(b, []byte(text))
		})
	}
}

func BenchmarkCountChat(b *testing.B) {
	c := NewCounter()
	if err := c.Preload(o200kModel); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		c.CountChat(o200kModel, cookbookMessages)
	}
}

// BenchmarkLoad builds an encoding for a fresh set of vocabularies on every
// iteration. tiktoken-go parses the embedded vocabulary file only once per
// process and keeps the result, so this measures the rest of a load
// (building the byte-pair tables and compiling the pattern);
// TestVocabulariesLoadOffline reports a process's true first load.
func BenchmarkLoad(b *testing.B) {
	for _, model := range []string{o200kModel, cl100kModel} {
		b.Run(EncodingFor(model), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := (&Counter{vocab: newVocabularies()}).Preload(model); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
