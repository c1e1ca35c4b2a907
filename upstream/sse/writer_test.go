package sse

import (
	"strings"
	"testing"
)

func TestAppendData(t *testing.T) {
	tests := []struct {
		name string
		dst  string
		data string
		want string
	}{
		{"single-line data is one data line and a blank line", "", `{"a":1}`, "data: {\"a\":1}\n\n"},
		{"empty data is one empty data line", "", "", "data: \n\n"},
		{"a newline in data starts another data line", "", "a\nb", "data: a\ndata: b\n\n"},
		{"a trailing newline in data makes an empty last line", "", "a\n", "data: a\ndata: \n\n"},
		{"CRLF in data is one line break", "", "a\r\nb", "data: a\ndata: b\n\n"},
		{"a lone CR in data is a line break", "", "a\rb", "data: a\ndata: b\n\n"},
		{"CR CR in data is two line breaks", "", "a\r\rb", "data: a\ndata: \ndata: b\n\n"},
		{"a forged field in data stays inside a data line", "", "x\n\nevent: evil", "data: x\ndata: \ndata: event: evil\n\n"},
		{"a leading space in data survives the one stripped space", "", " x", "data:  x\n\n"},
		{"the event is appended after what dst holds", "data: 1\n\n", "2", "data: 1\n\ndata: 2\n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(AppendData([]byte(tt.dst), []byte(tt.data))); got != tt.want {
				t.Errorf("AppendData(%q, %q) = %q, want %q", tt.dst, tt.data, got, tt.want)
			}
		})
	}
}

func TestAppendDone(t *testing.T) {
	if got := string(AppendDone([]byte("data: x\n\n"))); got != "data: x\n\ndata: [DONE]\n\n" {
		t.Errorf("AppendDone = %q", got)
	}
}

func TestAppendComment(t *testing.T) {
	tests := []struct {
		name string
		text string
		want string
	}{
		{"a keep-alive comment is one comment line and a blank line", "keep-alive", ": keep-alive\n\n"},
		{"an empty comment is still a comment", "", ": \n\n"},
		{"a newline in the text starts another comment line", "a\nb", ": a\n: b\n\n"},
		{"CRLF and CR in the text start other comment lines", "a\r\nb\rc", ": a\n: b\n: c\n\n"},
		{"a forged event in the text stays a comment", "x\n\ndata: evil", ": x\n: \n: data: evil\n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(AppendComment(nil, tt.text)); got != tt.want {
				t.Errorf("AppendComment(%q) = %q, want %q", tt.text, got, tt.want)
			}
			if got, err := readAll(t, NewReader(strings.NewReader(tt.want), 0), 10); len(got) != 0 || err.Error() != "EOF" {
				t.Errorf("a reader sees %v, %v in a comment, want nothing and EOF", got, err)
			}
		})
	}
}

func TestIsDone(t *testing.T) {
	tests := []struct {
		name string
		data string
		want bool
	}{
		{"the sentinel is done", "[DONE]", true},
		{"the sentinel with surrounding white space is done", " \t[DONE]\r\n", true},
		{"JSON is not done", `{"done":true}`, false},
		{"a lowercase sentinel is not done", "[done]", false},
		{"the sentinel with more after it is not done", "[DONE] now", false},
		{"the sentinel inside JSON is not done", `"[DONE]"`, false},
		{"empty data is not done", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsDone([]byte(tt.data)); got != tt.want {
				t.Errorf("IsDone(%q) = %v, want %v", tt.data, got, tt.want)
			}
		})
	}
}

func BenchmarkAppendData(b *testing.B) {
	data := []byte(strings.TrimSuffix(strings.TrimPrefix(openAIChunk, "data: "), "\n\n"))
	dst := make([]byte, 0, 1024)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		dst = AppendData(dst[:0], data)
	}
}
