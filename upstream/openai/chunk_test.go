package openai

import (
	"encoding/json"
	"testing"
)

// TestChunkRewritesEveryModel covers the second walk: an object repeating
// "model" more often than a Chunk keeps still has every one rewritten.
func TestChunkRewritesEveryModel(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"model":"a"}`, `{"model":"pub"}`},
		{`{"model":"a","x":1,"model":"b"}`, `{"model":"pub","x":1,"model":"pub"}`},
		{`{"model":"a","model":"b","model":"c","model":{"d":1}}`, `{"model":"pub","model":"pub","model":"pub","model":"pub"}`},
		{`{"mod\u0065l":"a","choices":[]}`, `{"mod\u0065l":"pub","choices":[]}`},
		{`{"model":"a"`, `{"model":"a"`},
	} {
		c := ScanChunk([]byte(tc.in))
		if got := string(c.AppendWithModel([]byte("x"), "pub")); got != "x"+tc.want {
			t.Errorf("%s: got %s, want x%s", tc.in, got, tc.want)
		}
		if c.Valid() != json.Valid([]byte(tc.in)) {
			t.Errorf("%s: Valid = %v", tc.in, c.Valid())
		}
	}
}

// TestChunkAnswersAsTheFunctions checks one scan against the four
// questions the relay asks of every event.
func TestChunkAnswersAsTheFunctions(t *testing.T) {
	for _, in := range []string{
		`{"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null}`,
		`{"id":"c","model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5}}`,
		`{"id":"c","choices":[{"delta":{"content":"a"}}],"usage":{"prompt_tokens":1},"usage":null,"choices":[]}`,
		`{"id":"c","choices":[{"message":{"content":"whole"}}],"usage":{"prompt_tokens":2,"completion_tokens":4,"total_tokens":6}}`,
		`[1]`, `{"choices":[`, ``,
	} {
		c := ScanChunk([]byte(in))
		u1, ok1 := c.Usage()
		u2, ok2 := ParseUsage([]byte(in))
		if u1 != u2 || ok1 != ok2 {
			t.Errorf("%s: Usage %v %v, ParseUsage %v %v", in, u1, ok1, u2, ok2)
		}
		if c.UsageOnly() != IsUsageOnlyChunk([]byte(in)) {
			t.Errorf("%s: UsageOnly differs", in)
		}
		if a, b := string(c.AppendContent(nil)), string(AppendContent(nil, []byte(in))); a != b {
			t.Errorf("%s: AppendContent %q vs %q", in, a, b)
		}
	}
}

// TestChunkMayBeError covers the scan's hint that a chunk may be an error
// event: a top-level member named "error" in any case or spelling, which
// encoding/json would decode into the relay's error probe, and nothing
// else (the word inside a string, a nested member, a longer name).
func TestChunkMayBeError(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{`{"error":{"message":"overloaded"}}`, true},
		{`{"id":"c","model":"m","error":null}`, false},
		{`{"error":false,"ERROR":""}`, false},
		{`{"error":null,"Error":"down"}`, true},
		{`{"error":0}`, true},
		{`{"Error":{"message":"x"}}`, true},
		{`{"ERROR":{}}`, true},
		{`{"\u0065rror":{"message":"x"}}`, true},
		{`{"err\u006Fr":1}`, true},
		{`{"id":"c","choices":[{"delta":{"content":"\"error\": none"}}]}`, false},
		{`{"choices":[{"error":{"message":"x"}}]}`, false},
		{`{"errors":[{}],"error_code":1}`, false},
		{`{"error":{"message":"x"}`, false}, // not JSON
		{`{"id":"c","model":"m","choices":[]}`, false},
	} {
		c := ScanChunk([]byte(tc.in))
		if got := c.MayBeError(); got != tc.want {
			t.Errorf("%s: MayBeError = %v, want %v", tc.in, got, tc.want)
		}
	}
}
