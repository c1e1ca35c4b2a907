package tokens

import (
	"os"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

// The models used to select each encoding in tests.
const (
	o200kModel  = "gpt-4o"
	cl100kModel = "gpt-4"
)

func TestCountMatchesTiktoken(t *testing.T) {
	// Counts from tiktoken, as recorded in tokenizers.md §2; the cl100k_base
	// ones are also OpenAI cookbook examples.
	tests := []struct {
		name  string
		model string
		text  string
		want  int
	}{
		{"English counts 6 in cl100k_base", cl100kModel, "tiktoken is great!", 6},
		{"English counts 6 in o200k_base", o200kModel, "tiktoken is great!", 6},
		{"Japanese counts 9 in cl100k_base", cl100kModel, "お誕生日おめでとう", 9},
		{"Japanese counts 8 in o200k_base", o200kModel, "お誕生日おめでとう", 8},
		{"an unknown model counts like o200k_base", "claude-sonnet-4-6", "お誕生日おめでとう", 8},
	}
	c := NewCounter()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := c.Count(tt.model, []byte(tt.text)); got != tt.want {
				t.Errorf("Count(%q, %q) = %d, want %d", tt.model, tt.text, got, tt.want)
			}
		})
	}
}

func TestCountOfEmptyTextIsZero(t *testing.T) {
	c := NewCounter()
	for _, model := range []string{o200kModel, cl100kModel} {
		if got := c.Count(model, nil); got != 0 {
			t.Errorf("Count(%q, nil) = %d, want 0", model, got)
		}
		if got := c.Count(model, []byte{}); got != 0 {
			t.Errorf("Count(%q, empty) = %d, want 0", model, got)
		}
	}
}

func TestZeroCounterCounts(t *testing.T) {
	var c Counter
	if got := c.Count(o200kModel, []byte("tiktoken is great!")); got != 6 {
		t.Errorf("zero Counter counted %d, want 6", got)
	}
}

func TestPreloadLoadsBothEncodings(t *testing.T) {
	c := NewCounter()
	for _, model := range []string{o200kModel, cl100kModel} {
		if err := c.Preload(model); err != nil {
			t.Errorf("Preload(%q): %v", model, err)
		}
	}
}

// perByteReplacement returns s with every byte that is not part of a valid
// UTF-8 sequence replaced by U+FFFD, as []rune(s) and encoding/json do.
func perByteReplacement(s string) string {
	var b strings.Builder
	for _, r := range s {
		b.WriteRune(r)
	}
	return b.String()
}

func TestCountOfInvalidUTF8IsTheCountOfItsReplacement(t *testing.T) {
	texts := []string{
		"\xff",
		"\xff\xfe abc \xc3",
		"caf\xc3",                       // truncated é at the end
		"\xe3\x81 broken hiragana \x81", // truncated sequence, stray continuation
		strings.Repeat("\x80", 300),     // no rune start at all
		"ok \xed\xa0\x80 surrogate",     // UTF-8 encoded surrogate is invalid
	}
	c := NewCounter()
	for _, model := range []string{o200kModel, cl100kModel} {
		for _, text := range texts {
			got := c.Count(model, []byte(text))
			want := c.Count(model, []byte(perByteReplacement(text)))
			if got != want || got == 0 {
				t.Errorf("Count(%q, %.40q) = %d, want %d, the count of its replacement", model, text, got, want)
			}
		}
	}
}

func TestSpecialTokensCountAsText(t *testing.T) {
	c := NewCounter()
	for _, model := range []string{o200kModel, cl100kModel} {
		for _, special := range []string{"<|endoftext|>", "<|endofprompt|>", "<|fim_prefix|>"} {
			if got := c.Count(model, []byte(special)); got < 2 {
				t.Errorf("Count(%q, %q) = %d, want it spelled out as text (more than 1)", model, special, got)
			}
		}
	}
}

func TestConcurrentFirstUse(t *testing.T) {
	english, err := os.ReadFile("testdata/english.txt")
	if err != nil {
		t.Fatal(err)
	}
	texts := [][]byte{english, []byte("お誕生日おめでとう"), []byte(strings.Repeat("x", 3*maxChunk))}
	models := []string{o200kModel, cl100kModel, "claude-sonnet-4-6", "gpt-3.5-turbo"}

	// A Counter with vocabularies of its own, so that this test's goroutines
	// race for the first load whatever ran before it.
	c := &Counter{vocab: newVocabularies()}
	const goroutines = 16
	results := make([][]int, goroutines)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			<-start
			for i := range models {
				model := models[(g+i)%len(models)]
				for _, text := range texts {
					results[g] = append(results[g], c.Count(model, text))
				}
			}
		})
	}
	close(start)
	wg.Wait()

	reference := NewCounter()
	for g := range goroutines {
		k := 0
		for i := range models {
			model := models[(g+i)%len(models)]
			for _, text := range texts {
				if want := reference.Count(model, text); results[g][k] != want {
					t.Errorf("goroutine %d counted %d for %q, want %d", g, results[g][k], model, want)
				}
				k++
			}
		}
	}
}

func TestCountIsBoundedByBytes(t *testing.T) {
	// Every token is at least one byte of the text, so valid UTF-8 can never
	// count more tokens than it has bytes.
	english, err := os.ReadFile("testdata/english.txt")
	if err != nil {
		t.Fatal(err)
	}
	c := NewCounter()
	for _, model := range []string{o200kModel, cl100kModel} {
		for _, text := range []string{string(english), "a", " ", "\n\n", "1234567", "お誕生日おめでとう", "😀"} {
			if !utf8.ValidString(text) {
				t.Fatalf("%q is not valid UTF-8", text)
			}
			if got := c.Count(model, []byte(text)); got < 1 || got > len(text) {
				t.Errorf("Count(%q, %.40q) = %d, want between 1 and %d", model, text, got, len(text))
			}
		}
	}
}
