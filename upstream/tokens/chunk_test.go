package tokens

import (
	"math/rand/v2"
	"os"
	"strings"
	"testing"
)

// samples are natural texts of several kinds, each longer than a chunk.
func samples(t testing.TB) map[string]string {
	t.Helper()
	english, err := os.ReadFile("testdata/english.txt")
	if err != nil {
		t.Fatal(err)
	}
	var source strings.Builder
	for _, name := range []string{"chunk.go", "counter.go", "encoding.go", "chat.go"} {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		source.Write(b)
	}
	return map[string]string{
		"English prose":                     strings.Repeat(string(english), 8),
		"Go source":                         strings.Repeat(source.String(), 2),
		"Japanese prose":                    strings.Repeat("吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。\nお誕生日おめでとう！今日はいい天気ですね、散歩に行きましょう。", 60),
		"Chinese prose":                     strings.Repeat("今天天气很好，我们去公园散步吧。明天可能会下雨，所以要带伞。", 80),
		"Python with whitespace-only lines": strings.Repeat("def f(x):\n    y = x + 1\n    \n    return y  \n\n\n", 200),
		"JSON":                              strings.Repeat(`{"id":"chatcmpl-123","choices":[{"index":0,"delta":{"content":"Hello, wörld! 42"}}],"usage":null}`+"\n", 60),
		"mixed scripts and numbers":         strings.Repeat("Version 1.2.3 costs €12,345.67 — naïve café Ünïcödé, Привет мир 123456789 ١٢٣ ²³ ⅫⅢ x²+y² don't WE'LL\r\n", 60),
	}
}

func TestChunkedCountIsExactOnNaturalText(t *testing.T) {
	c := NewCounter()
	for name, text := range samples(t) {
		t.Run(name, func(t *testing.T) {
			for _, model := range []string{o200kModel, cl100kModel} {
				enc, err := c.vocabulary(model).load()
				if err != nil {
					t.Fatal(err)
				}
				want := len(enc.EncodeOrdinary(text))
				if got := c.Count(model, []byte(text)); got != want {
					t.Errorf("%s: chunked count %d, whole-text count %d", model, got, want)
				}
			}
		})
	}
}

func TestNextCutPartitionsTextWithoutSplittingRunes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	word := make([]byte, 5*maxChunk)
	for i := range word {
		word[i] = byte('a' + rng.IntN(26))
	}
	inputs := map[string]string{
		"empty":                         "",
		"shorter than a chunk":          "hello world",
		"one long word":                 string(word),
		"spaces":                        strings.Repeat(" ", 3*maxChunk+1),
		"two-byte runes":                strings.Repeat("é", 2*maxChunk),
		"three-byte runes":              strings.Repeat("お", maxChunk),
		"four-byte runes":               strings.Repeat("😀", maxChunk),
		"continuation bytes only":       strings.Repeat("\x80", 3*maxChunk),
		"truncated sequences":           strings.Repeat("\xe3\x81", 2*maxChunk),
		"letters with combining accent": strings.Repeat("e\u0301", maxChunk),
	}
	for name, s := range inputs {
		t.Run(name, func(t *testing.T) {
			rest := s
			for rest != "" {
				cut := nextCut(rest)
				if cut <= 0 || cut > maxChunk {
					t.Fatalf("nextCut returned %d for %d bytes, want 1..%d", cut, len(rest), maxChunk)
				}
				if perByteReplacement(rest[:cut])+perByteReplacement(rest[cut:]) != perByteReplacement(rest) {
					t.Fatalf("cut at %d splits a rune", cut)
				}
				rest = rest[cut:]
			}
		})
	}
}

func TestPathologicalTextCountsCloseToWholeText(t *testing.T) {
	const size = 8 << 10
	rng := rand.New(rand.NewPCG(3, 4))
	word := make([]byte, size)
	for i := range word {
		word[i] = byte('a' + rng.IntN(26))
	}
	inputs := map[string]string{
		"one long word":            string(word),
		"spaces":                   strings.Repeat(" ", size),
		"punctuation":              strings.Repeat("!", size),
		"digits":                   strings.Repeat("7", size),
		"newlines between spaces":  strings.Repeat("\n ", size/2),
		"Japanese with no breaks":  strings.Repeat("吾輩は猫である名前はまだ無い", size/42),
		"base64 without separator": strings.Repeat("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo", size/35),
	}
	c := NewCounter()
	for name, text := range inputs {
		t.Run(name, func(t *testing.T) {
			for _, model := range []string{o200kModel, cl100kModel} {
				enc, err := c.vocabulary(model).load()
				if err != nil {
					t.Fatal(err)
				}
				whole := len(enc.EncodeOrdinary(text))
				got := c.Count(model, []byte(text))
				// A forced cut every maxChunk bytes costs a token or two.
				slack := 2*len(text)/maxChunk + 1
				if got < whole-slack || got > whole+slack {
					t.Errorf("%s: chunked count %d, whole-text count %d, more than %d apart", model, got, whole, slack)
				}
				t.Logf("%s: chunked %d, whole text %d", model, got, whole)
			}
		})
	}
}
