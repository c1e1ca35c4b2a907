package sse

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// ev is an event as a test expects it, with Data as a string.
type ev struct {
	Name  string
	Data  string
	ID    string
	Retry time.Duration
}

func (e ev) String() string {
	return fmt.Sprintf("{Name:%q Data:%q ID:%q Retry:%v}", e.Name, e.Data, e.ID, e.Retry)
}

// readAll reads events until Next fails, copying each (Data is only valid
// until the next call), and returns them with the final error. It fails the
// test if the reader does not end within limit calls.
func readAll(t testing.TB, r *Reader, limit int) ([]ev, error) {
	t.Helper()
	var got []ev
	for range limit {
		e, err := r.Next()
		if err != nil {
			return got, err
		}
		got = append(got, ev{e.Name, string(e.Data), e.ID, e.Retry})
	}
	t.Fatalf("Next still returning events after %d calls", limit)
	return nil, nil
}

// chunkReader returns 1 to 7 bytes per Read, in a seeded random pattern.
type chunkReader struct {
	src io.Reader
	rnd *rand.Rand
}

func newChunkReader(src io.Reader, seed uint64) *chunkReader {
	return &chunkReader{src: src, rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

func (c *chunkReader) Read(p []byte) (int, error) {
	n := 1 + c.rnd.IntN(7)
	if len(p) > n {
		p = p[:n]
	}
	return c.src.Read(p)
}

// splitters are the ways a test stream reaches the Reader: each must give
// the same events, wherever the reads split the bytes.
var splitters = []struct {
	name string
	wrap func(io.Reader) io.Reader
}{
	{"in one read", func(r io.Reader) io.Reader { return r }},
	{"one byte per read", iotest.OneByteReader},
	{"1 to 7 bytes per read", func(r io.Reader) io.Reader { return newChunkReader(r, 1) }},
	{"1 to 7 bytes per read with EOF on the last data", func(r io.Reader) io.Reader {
		return iotest.DataErrReader(newChunkReader(r, 2))
	}},
}

func TestReaderFraming(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []ev
		wantErr error
	}{
		{name: "an empty stream ends cleanly", in: "", wantErr: io.EOF},
		{name: "a single data line is one event",
			in: "data: hello\n\n", want: []ev{{Data: "hello"}}, wantErr: io.EOF},
		{name: "data without a space after the colon equals data with one",
			in: "data:hello\n\ndata: hello\n\n", want: []ev{{Data: "hello"}, {Data: "hello"}}, wantErr: io.EOF},
		{name: "only one leading space is stripped from a value",
			in: "data:  two\n\n", want: []ev{{Data: " two"}}, wantErr: io.EOF},
		{name: "trailing spaces of a value are kept",
			in: "data: x  \n\n", want: []ev{{Data: "x  "}}, wantErr: io.EOF},
		{name: "a colon inside a value is kept",
			in: "data: {\"a\":\"b:c\"}\n\n", want: []ev{{Data: `{"a":"b:c"}`}}, wantErr: io.EOF},
		{name: "several data lines are joined with a newline",
			in: "data: a\ndata: b\ndata: c\n\n", want: []ev{{Data: "a\nb\nc"}}, wantErr: io.EOF},
		{name: "an empty data line contributes an empty line",
			in: "data: a\ndata:\ndata: b\n\n", want: []ev{{Data: "a\n\nb"}}, wantErr: io.EOF},
		{name: "a data field with no colon dispatches an event with empty data",
			in: "data\n\n", want: []ev{{Data: ""}}, wantErr: io.EOF},
		{name: "two bare data fields make one newline",
			in: "data\ndata\n\n", want: []ev{{Data: "\n"}}, wantErr: io.EOF},
		{name: "CRLF line endings parse like LF",
			in: "data: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n", want: []ev{{Data: "a\nb"}, {Data: "c"}}, wantErr: io.EOF},
		{name: "lone CR line endings parse like LF",
			in: "data: a\rdata: b\r\rdata: c\r\r", want: []ev{{Data: "a\nb"}, {Data: "c"}}, wantErr: io.EOF},
		{name: "mixed line endings in one stream parse alike",
			in: "data: a\r\ndata: b\rdata: c\n\r\n", want: []ev{{Data: "a\nb\nc"}}, wantErr: io.EOF},
		{name: "CR CR is two line ends and dispatches",
			in: "data: a\r\r\ndata: b\n\n", want: []ev{{Data: "a"}, {Data: "b"}}, wantErr: io.EOF},
		{name: "a CR inside a value ends the line there",
			in: "data: a\rb\n\n", want: []ev{{Data: "a"}}, wantErr: io.EOF},
		{name: "a leading byte-order mark is ignored",
			in: "\xEF\xBB\xBFdata: x\n\n", want: []ev{{Data: "x"}}, wantErr: io.EOF},
		{name: "only the first byte-order mark is ignored",
			in: "\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\ndata: y\n\n", want: []ev{{Data: "y"}}, wantErr: io.EOF},
		{name: "a byte-order mark after the start is not stripped",
			in: "\n\xEF\xBB\xBFdata: x\n\ndata: \xEF\xBB\xBFy\n\n", want: []ev{{Data: "\xEF\xBB\xBFy"}}, wantErr: io.EOF},
		{name: "a stream of a partial byte-order mark is a cut line",
			in: "\xEF\xBB", wantErr: io.ErrUnexpectedEOF},
		{name: "comment lines are skipped",
			in: ": OPENROUTER PROCESSING\n\n: ping\ndata: x\n\n", want: []ev{{Data: "x"}}, wantErr: io.EOF},
		{name: "a comment between data lines does not split the event",
			in: "data: a\n: keep-alive\ndata: b\n\n", want: []ev{{Data: "a\nb"}}, wantErr: io.EOF},
		{name: "a line holding only a colon is a comment",
			in: ":\ndata: x\n\n", want: []ev{{Data: "x"}}, wantErr: io.EOF},
		{name: "unknown fields are ignored",
			in: "foo: bar\ndata: x\nobfuscation: y\n\n", want: []ev{{Data: "x"}}, wantErr: io.EOF},
		{name: "field names are case-sensitive",
			in: "Data: x\nDATA: y\ndata: z\n\n", want: []ev{{Data: "z"}}, wantErr: io.EOF},
		{name: "a space before the colon makes a different field",
			in: "data : x\ndata: y\n\n", want: []ev{{Data: "y"}}, wantErr: io.EOF},
		{name: "a field name longer than any known is ignored",
			in: "datadata: x\nretry2: 5\ndata: y\n\n", want: []ev{{Data: "y"}}, wantErr: io.EOF},
		{name: "a known name as prefix of a longer field is ignored",
			in: "dat: x\nevents: e\ndata: y\n\n", want: []ev{{Data: "y"}}, wantErr: io.EOF},
		{name: "the event field names the event",
			in: "event: message_start\ndata: {}\n\n", want: []ev{{Name: "message_start", Data: "{}"}}, wantErr: io.EOF},
		{name: "the last event field wins",
			in: "event: a\nevent: b\ndata: x\n\n", want: []ev{{Name: "b", Data: "x"}}, wantErr: io.EOF},
		{name: "the event name resets after dispatch",
			in: "event: ping\ndata: {}\n\ndata: x\n\n", want: []ev{{Name: "ping", Data: "{}"}, {Data: "x"}}, wantErr: io.EOF},
		{name: "an event with a name but no data is not dispatched and its name does not leak",
			in: "event: lonely\n\ndata: x\n\n", want: []ev{{Data: "x"}}, wantErr: io.EOF},
		{name: "blank lines with nothing pending dispatch nothing",
			in: "\n\n\r\n\rdata: x\n\n\n\n", want: []ev{{Data: "x"}}, wantErr: io.EOF},
		{name: "the last event id persists across events",
			in:   "id: 7\ndata: a\n\ndata: b\n\nid: 8\ndata: c\n\n",
			want: []ev{{ID: "7", Data: "a"}, {ID: "7", Data: "b"}, {ID: "8", Data: "c"}}, wantErr: io.EOF},
		{name: "an id set in an undispatched event still counts",
			in: "id: 9\n\ndata: a\n\n", want: []ev{{ID: "9", Data: "a"}}, wantErr: io.EOF},
		{name: "an id containing NUL is ignored",
			in: "id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n", want: []ev{{ID: "1", Data: "a"}, {ID: "1", Data: "b"}}, wantErr: io.EOF},
		{name: "an empty id clears the last event id",
			in: "id: 1\ndata: a\n\nid\ndata: b\n\n", want: []ev{{ID: "1", Data: "a"}, {Data: "b"}}, wantErr: io.EOF},
		{name: "a NUL in data is kept",
			in: "data: a\x00b\n\n", want: []ev{{Data: "a\x00b"}}, wantErr: io.EOF},
		{name: "retry with digits sets the reconnection delay",
			in:   "retry: 1500\ndata: a\n\ndata: b\n\n",
			want: []ev{{Retry: 1500 * time.Millisecond, Data: "a"}, {Retry: 1500 * time.Millisecond, Data: "b"}}, wantErr: io.EOF},
		{name: "retry that is not all digits is ignored",
			in: "retry: 10\nretry: 1.5\nretry: -3\nretry:  20\nretry\ndata: a\n\n", want: []ev{{Retry: 10 * time.Millisecond, Data: "a"}}, wantErr: io.EOF},
		{name: "a huge retry is clamped rather than overflowing",
			in:   "retry: 99999999999999999999999999\ndata: a\n\n",
			want: []ev{{Retry: time.Duration(1<<63-1) / time.Millisecond * time.Millisecond, Data: "a"}}, wantErr: io.EOF},
		{name: "an OpenAI stream ends with DONE",
			in:      "data: {\"choices\":[]}\n\ndata: [DONE]\n\n",
			want:    []ev{{Data: `{"choices":[]}`}, {Data: "[DONE]"}},
			wantErr: io.EOF},
		{name: "an Anthropic stream names each event",
			in: "event: message_start\ndata: {\"type\":\"message_start\"}\n\n" +
				"event: ping\ndata: {\"type\": \"ping\"}\n\n" +
				"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
			want: []ev{
				{Name: "message_start", Data: `{"type":"message_start"}`},
				{Name: "ping", Data: `{"type": "ping"}`},
				{Name: "message_stop", Data: `{"type":"message_stop"}`},
			},
			wantErr: io.EOF},
		{name: "an event without its closing blank line is an unexpected EOF",
			in: "data: a\n\ndata: b\n", want: []ev{{Data: "a"}}, wantErr: io.ErrUnexpectedEOF},
		{name: "a stream cut inside a value is an unexpected EOF",
			in: "data: a\n\ndata: {\"ch", want: []ev{{Data: "a"}}, wantErr: io.ErrUnexpectedEOF},
		{name: "a stream cut inside a field name is an unexpected EOF",
			in: "da", wantErr: io.ErrUnexpectedEOF},
		{name: "a stream cut right after a colon is an unexpected EOF",
			in: "data:", wantErr: io.ErrUnexpectedEOF},
		{name: "a stream cut after a name-only line is an unexpected EOF",
			in: "event: message_delta\n", wantErr: io.ErrUnexpectedEOF},
		{name: "a stream cut inside a comment line is an unexpected EOF",
			in: "data: a\n\n: pi", want: []ev{{Data: "a"}}, wantErr: io.ErrUnexpectedEOF},
		{name: "a complete comment after the last event is a clean end",
			in: "data: a\n\n: bye\n", want: []ev{{Data: "a"}}, wantErr: io.EOF},
		{name: "an event ended by a final CR is complete",
			in: "data: a\r\r", want: []ev{{Data: "a"}}, wantErr: io.EOF},
	}
	for _, tt := range tests {
		for _, sp := range splitters {
			t.Run(tt.name+"/"+sp.name, func(t *testing.T) {
				r := NewReader(sp.wrap(strings.NewReader(tt.in)), 0)
				got, err := readAll(t, r, 100)
				if fmt.Sprint(got) != fmt.Sprint(tt.want) {
					t.Errorf("events:\n got %v\nwant %v", got, tt.want)
				}
				if err != tt.wantErr {
					t.Errorf("final error = %v, want %v", err, tt.wantErr)
				}
				if _, again := r.Next(); again != err {
					t.Errorf("Next after the end = %v, want the same %v", again, err)
				}
			})
		}
	}
}

// stepReader hands out its chunks one Read at a time and fails the test if
// it is read past them: it stands for a live upstream that has sent no more.
type stepReader struct {
	t      *testing.T
	chunks []string
}

func (s *stepReader) Read(p []byte) (int, error) {
	if len(s.chunks) == 0 {
		s.t.Error("Reader read past the bytes the upstream has sent so far")
		return 0, errors.New("blocked")
	}
	n := copy(p, s.chunks[0])
	s.chunks[0] = s.chunks[0][n:]
	if s.chunks[0] == "" {
		s.chunks = s.chunks[1:]
	}
	return n, nil
}

func TestReaderDispatchesWithoutWaiting(t *testing.T) {
	tests := []struct {
		name   string
		chunks []string
		want   []string
	}{
		{"an LF-framed event is returned as soon as its blank line arrives",
			[]string{"data: a\n", "\n", "data: b\n\n"}, []string{"a", "b"}},
		{"a CRLF-framed event is returned before the next read",
			[]string{"data: a\r\n\r\n", "data: b\r\n\r\n"}, []string{"a", "b"}},
		{"a CR-framed event is returned although an LF might follow",
			[]string{"data: a\r\r", "\ndata: b\r\r"}, []string{"a", "b"}},
		{"a CR at the end of one read and an LF at the start of the next are one line end",
			[]string{"data: a\r", "\ndata: b\r", "\n\r", "\n"}, []string{"a\nb"}},
		{"several events in one read are returned one by one",
			[]string{"data: a\n\ndata: b\n\ndata: c\n\n"}, []string{"a", "b", "c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(&stepReader{t: t, chunks: tt.chunks}, 0)
			for _, want := range tt.want {
				e, err := r.Next()
				if err != nil {
					t.Fatalf("Next: %v", err)
				}
				if string(e.Data) != want {
					t.Fatalf("Data = %q, want %q", e.Data, want)
				}
			}
		})
	}
}

func TestReaderLongLines(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	tests := []struct {
		name string
		in   string
		want []ev
	}{
		{"a 1 MiB data line parses intact", "data: " + big + "\n\n", []ev{{Data: big}}},
		{"a 1 MiB data line with CRLF parses intact", "data: " + big + "\r\n\r\n", []ev{{Data: big}}},
		{"several long data lines are joined", "data: " + big + "\ndata: " + big + "\n\n", []ev{{Data: big + "\n" + big}}},
		{"a 1 MiB event name parses intact", "event: " + big + "\ndata: x\n\n", []ev{{Name: big, Data: "x"}}},
		{"a 1 MiB comment is skipped", ": " + big + "\ndata: x\n\n", []ev{{Data: "x"}}},
	}
	for _, tt := range tests {
		for _, sp := range splitters {
			t.Run(tt.name+"/"+sp.name, func(t *testing.T) {
				got, err := readAll(t, NewReader(sp.wrap(strings.NewReader(tt.in)), 0), 10)
				if err != io.EOF {
					t.Fatalf("final error = %v, want EOF", err)
				}
				if len(got) != len(tt.want) {
					t.Fatalf("got %d events, want %d", len(got), len(tt.want))
				}
				for i := range got {
					if got[i] != tt.want[i] {
						t.Errorf("event %d differs: name %d bytes, data %d bytes", i, len(got[i].Name), len(got[i].Data))
					}
				}
			})
		}
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	src io.Reader
	n   int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.src.Read(p)
	c.n += n
	return n, err
}

// endless repeats a chunk forever.
type endless struct {
	chunk []byte
	off   int
}

func (e *endless) Read(p []byte) (int, error) {
	n := copy(p, e.chunk[e.off:])
	e.off = (e.off + n) % len(e.chunk)
	return n, nil
}

func TestReaderEventTooLarge(t *testing.T) {
	const max = 1000
	tests := []struct {
		name   string
		src    func() io.Reader
		before []ev // events returned before the error
	}{
		{"one data line longer than the bound",
			func() io.Reader { return strings.NewReader("data: " + strings.Repeat("x", max+1) + "\n\n") }, nil},
		{"an endless data line from a hostile upstream",
			func() io.Reader {
				return io.MultiReader(strings.NewReader("data: "), &endless{chunk: []byte("xxxxxxxx")})
			}, nil},
		{"data lines that add up past the bound",
			func() io.Reader {
				return strings.NewReader("data: ok\n\n" + strings.Repeat("data: "+strings.Repeat("y", 99)+"\n", 11) + "\n")
			}, []ev{{Data: "ok"}}},
		{"endless empty data lines, each adding a newline",
			func() io.Reader { return &endless{chunk: []byte("data\n")} }, nil},
		{"an event name longer than the bound",
			func() io.Reader { return strings.NewReader("event: " + strings.Repeat("n", max+1) + "\ndata: x\n\n") }, nil},
		{"an id longer than the bound",
			func() io.Reader { return strings.NewReader("id: " + strings.Repeat("i", max+1) + "\ndata: x\n\n") }, nil},
		{"a name and data that together pass the bound",
			func() io.Reader {
				return strings.NewReader("event: " + strings.Repeat("n", 500) + "\ndata: " + strings.Repeat("d", 501) + "\n\n")
			}, nil},
	}
	for _, tt := range tests {
		for _, sp := range splitters {
			t.Run(tt.name+"/"+sp.name, func(t *testing.T) {
				src := &countingReader{src: sp.wrap(tt.src())}
				r := NewReader(src, max)
				got, err := readAll(t, r, 10)
				if fmt.Sprint(got) != fmt.Sprint(tt.before) {
					t.Errorf("events before the error = %v, want %v", got, tt.before)
				}
				if !errors.Is(err, ErrEventTooLarge) {
					t.Fatalf("error = %v, want ErrEventTooLarge", err)
				}
				if _, again := r.Next(); again != err {
					t.Errorf("Next after the error = %v, want the same error", again)
				}
				if c := cap(r.data); c > max {
					t.Errorf("data buffer grew to %d bytes, past the bound of %d", c, max)
				}
				if c := cap(r.val); c > max {
					t.Errorf("value buffer grew to %d bytes, past the bound of %d", c, max)
				}
				if c := cap(r.buf); c > readSize {
					t.Errorf("read buffer is %d bytes, want at most %d", c, readSize)
				}
				// The reader stops within one read chunk of the event that
				// broke the bound.
				if limit := 2*max + 100 + readSize; src.n > limit {
					t.Errorf("read %d bytes before giving up, want at most %d", src.n, limit)
				}
			})
		}
	}
}

func TestReaderAcceptsAnEventOfExactlyTheBound(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want ev
	}{
		{"one line of exactly the bound", "data: " + strings.Repeat("x", 100) + "\n\n", ev{Data: strings.Repeat("x", 100)}},
		{"two lines and their joining newline making exactly the bound",
			"data: " + strings.Repeat("x", 50) + "\ndata: " + strings.Repeat("y", 49) + "\n\n",
			ev{Data: strings.Repeat("x", 50) + "\n" + strings.Repeat("y", 49)}},
		{"a name and data making exactly the bound",
			"event: abc\ndata: " + strings.Repeat("x", 97) + "\n\n", ev{Name: "abc", Data: strings.Repeat("x", 97)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readAll(t, NewReader(strings.NewReader(tt.in), 100), 10)
			if err != io.EOF || len(got) != 1 || got[0] != tt.want {
				t.Fatalf("got %v, %v; want [%v], EOF", got, err, tt.want)
			}
		})
	}
}

func TestReaderLongCommentsAreNotBuffered(t *testing.T) {
	// Comments and ignored fields are discarded as they stream past, so
	// their length is not bounded by maxEvent and costs no memory.
	long := strings.Repeat("z", 1<<20)
	in := ": " + long + "\nunknown: " + long + "\ndata: x\n\n"
	r := NewReader(strings.NewReader(in), 16)
	got, err := readAll(t, r, 10)
	if err != io.EOF || len(got) != 1 || got[0].Data != "x" {
		t.Fatalf("got %v, %v; want one event x and EOF", got, err)
	}
	if cap(r.data) > 16 || cap(r.val) > 16 {
		t.Errorf("buffers grew to %d and %d bytes past the bound of 16", cap(r.data), cap(r.val))
	}
}

// failingReader returns its data, then err.
type failingReader struct {
	data string
	err  error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.data == "" {
		return 0, f.err
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

// zeroReader returns nothing and no error, forever.
type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

// liarReader claims to have read more than it was given room for.
type liarReader struct{}

func (liarReader) Read(p []byte) (int, error) { return len(p) + 1, nil }

func TestReaderSourceErrors(t *testing.T) {
	errReset := errors.New("connection reset by peer")
	tests := []struct {
		name   string
		src    io.Reader
		before []ev
		want   error
	}{
		{"a read error is returned after the events read before it",
			&failingReader{data: "data: a\n\ndata: b\n\ndata: c", err: errReset}, []ev{{Data: "a"}, {Data: "b"}}, errReset},
		{"a source that never makes progress is reported",
			zeroReader{}, nil, io.ErrNoProgress},
		{"a source returning an impossible count is reported, not a panic",
			liarReader{}, nil, errBadRead},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(tt.src, 0)
			got, err := readAll(t, r, 10)
			if fmt.Sprint(got) != fmt.Sprint(tt.before) {
				t.Errorf("events = %v, want %v", got, tt.before)
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("error = %v, want one wrapping %v", err, tt.want)
			}
			if _, again := r.Next(); again != err {
				t.Errorf("Next after the error = %v, want the same error", again)
			}
		})
	}
}

func TestReaderNamesAndIDsOutliveTheNextCall(t *testing.T) {
	r := NewReader(strings.NewReader("event: a\nid: 1\ndata: x\n\nevent: b\nid: 2\ndata: y\n\n"), 0)
	first, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if first.Name != "a" || first.ID != "1" {
		t.Errorf("first event's name and id changed to %q and %q after the next call", first.Name, first.ID)
	}
}

// Streams shaped like the upstreams the gateway reads, for the allocation
// test and the benchmarks.
var (
	openAIChunk = "data: " + `{"id":"chatcmpl-AbCdEf0123456789","object":"chat.completion.chunk","created":1700000000,` +
		`"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":" token"},"logprobs":null,"finish_reason":null}],` +
		`"usage":null,"obfuscation":"x1y2z3"}` + "\n\n"
	anthropicChunks = "event: message_start\ndata: {\"type\":\"message_start\"}\n\n" +
		"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0}\n\n" +
		"event: ping\ndata: {\"type\": \"ping\"}\n\n" +
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"Hi\"}}\n\n" +
		"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n" +
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":2}}\n\n" +
		": keep-alive\n\n" +
		"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
)

func TestReaderSteadyStateDoesNotAllocate(t *testing.T) {
	tests := []struct {
		name  string
		chunk string
	}{
		{"OpenAI-shaped chunks", openAIChunk},
		{"Anthropic-shaped named events and comments", anthropicChunks},
		{"CRLF-framed multi-line events with an id", "id: 42\r\ndata: line one\r\ndata: line two\r\n\r\n"},
		{"CR-framed events with retry", "retry: 3000\rdata: x\r\r"},
		{"events larger than the read buffer", "data: " + strings.Repeat("w", 3*readSize) + "\n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(&endless{chunk: []byte(tt.chunk)}, 0)
			for range 100 { // warm-up: buffers grow, names are remembered
				if _, err := r.Next(); err != nil {
					t.Fatal(err)
				}
			}
			allocs := testing.AllocsPerRun(1000, func() {
				if _, err := r.Next(); err != nil {
					t.Fatal(err)
				}
			})
			if allocs != 0 {
				t.Errorf("Next allocates %v times per event in the steady state, want 0", allocs)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	rnd := rand.New(rand.NewPCG(7, 11))
	alphabet := []byte("ab {}\":,\n\r \x00é[DONE]data: event:id\xEF\xBB\xBF")
	var stream []byte
	var want []string
	for range 2000 {
		p := make([]byte, rnd.IntN(300))
		for i := range p {
			p[i] = alphabet[rnd.IntN(len(alphabet))]
		}
		stream = AppendData(stream, p)
		want = append(want, normalizeNewlines(string(p)))
		if rnd.IntN(10) == 0 {
			stream = AppendComment(stream, "keep-alive")
		}
	}
	stream = AppendDone(stream)
	want = append(want, Done)

	for _, sp := range splitters {
		t.Run("written events read back equal/"+sp.name, func(t *testing.T) {
			got, err := readAll(t, NewReader(sp.wrap(bytes.NewReader(stream)), 0), len(want)+1)
			if err != io.EOF {
				t.Fatalf("final error = %v, want EOF", err)
			}
			if len(got) != len(want) {
				t.Fatalf("read %d events, wrote %d", len(got), len(want))
			}
			for i := range got {
				if got[i].Data != want[i] || got[i].Name != "" {
					t.Fatalf("event %d = %v, want data %q", i, got[i], want[i])
				}
			}
			if !IsDone([]byte(got[len(got)-1].Data)) {
				t.Errorf("the last event is not [DONE]")
			}
		})
	}
}

// normalizeNewlines maps CRLF and CR to LF, as SSE framing does.
func normalizeNewlines(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\r", "\n")
}

func FuzzReader(f *testing.F) {
	for _, s := range []string{
		"", "data: x\n\n", "data:x\r\n\r\n", "data: a\rdata: b\r\r", "\xEF\xBB\xBFdata: x\n\n",
		"event: e\nid: 1\nretry: 5\ndata: a\ndata\n\n", ": c\ndata: [DONE]\n\n", "data: a\r",
		"data: " + strings.Repeat("x", 200) + "\n\n", "id: \x00\ndata\n\n", "retry: 99999999999999999999\n\n",
		anthropicChunks,
	} {
		f.Add([]byte(s), uint8(64))
	}
	f.Fuzz(func(t *testing.T, in []byte, bound uint8) {
		maxEvent := 1 + int(bound)
		// Each event needs at least two bytes of input, so a reader that
		// keeps returning events past len(in) calls does not terminate.
		limit := len(in) + 2
		whole, wholeErr := readAll(t, NewReader(bytes.NewReader(in), maxEvent), limit)
		for _, e := range whole {
			if len(e.Data)+len(e.Name) > maxEvent {
				t.Fatalf("event of %d data and %d name bytes passed the bound of %d", len(e.Data), len(e.Name), maxEvent)
			}
		}
		if wholeErr != io.EOF && wholeErr != io.ErrUnexpectedEOF && !errors.Is(wholeErr, ErrEventTooLarge) {
			t.Fatalf("unexpected error %v", wholeErr)
		}
		// However the reads split the input, the events are the same.
		for _, src := range []io.Reader{
			iotest.OneByteReader(bytes.NewReader(in)),
			iotest.DataErrReader(newChunkReader(bytes.NewReader(in), uint64(len(in)))),
		} {
			split, splitErr := readAll(t, NewReader(src, maxEvent), limit)
			if fmt.Sprint(split) != fmt.Sprint(whole) || splitErr.Error() != wholeErr.Error() {
				t.Fatalf("split reads gave %v, %v; one read gave %v, %v", split, splitErr, whole, wholeErr)
			}
		}
		// A relay asks Buffered first and calls Next only when it says
		// no: the events are the same.
		relayed, relayedErr := readBuffered(t, NewReader(bytes.NewReader(in), maxEvent), limit)
		if fmt.Sprint(relayed) != fmt.Sprint(whole) || relayedErr.Error() != wholeErr.Error() {
			t.Fatalf("Buffered then Next gave %v, %v; Next alone gave %v, %v", relayed, relayedErr, whole, wholeErr)
		}
	})
}

// readBuffered reads events as the relay does: Buffered while it has one,
// Next when it has not.
func readBuffered(t *testing.T, r *Reader, limit int) ([]ev, error) {
	t.Helper()
	var got []ev
	for range limit {
		e, ok := r.Buffered()
		if !ok {
			var err error
			if e, err = r.Next(); err != nil {
				return got, err
			}
		}
		got = append(got, ev{e.Name, string(e.Data), e.ID, e.Retry})
	}
	t.Fatalf("more than %d events", limit)
	return nil, nil
}

func FuzzRoundTrip(f *testing.F) {
	for _, s := range []string{"", "x", "[DONE]", "a\nb", "a\r\nb", "a\rb", "\n", "\r\n\r", " lead", ": not a comment", "\xEF\xBB\xBF"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		stream := AppendData(nil, data)
		// The relay frames a one-line event itself (OneLine, in
		// upstream.Proxy.stream): it must be exactly AppendData's frame.
		if OneLine(data) && string(stream) != "data: "+string(data)+"\n\n" {
			t.Fatalf("one line framed as %q", stream)
		}
		for _, src := range []io.Reader{bytes.NewReader(stream), iotest.OneByteReader(bytes.NewReader(stream))} {
			r := NewReader(src, 0)
			e, err := r.Next()
			if err != nil {
				t.Fatalf("Next: %v (stream %q)", err, stream)
			}
			if want := normalizeNewlines(string(data)); string(e.Data) != want || e.Name != "" {
				t.Fatalf("read back %v, wrote %q (stream %q)", e, data, stream)
			}
			if _, err := r.Next(); err != io.EOF {
				t.Fatalf("after the one event: %v, want EOF (stream %q)", err, stream)
			}
		}
	})
}

func BenchmarkReaderSmallEvents(b *testing.B) {
	r := NewReader(&endless{chunk: []byte(strings.Repeat(openAIChunk, 16))}, 0)
	if _, err := r.Next(); err != nil { // warm-up: the data buffer grows once
		b.Fatal(err)
	}
	b.SetBytes(int64(len(openAIChunk)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Next(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReaderLargeEvent(b *testing.B) {
	chunk := "data: " + strings.Repeat("Q", 100_000) + "\n\n"
	r := NewReader(&endless{chunk: []byte(chunk)}, 0)
	if _, err := r.Next(); err != nil { // warm-up: the data buffer grows once
		b.Fatal(err)
	}
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Next(); err != nil {
			b.Fatal(err)
		}
	}
}

// TestReaderBufferFollowsTheStream checks that a stream of small events
// keeps the smallest read buffer (a waiting stream holds it), and that a
// source with more than the buffer holds grows it, never past readSize.
func TestReaderBufferFollowsTheStream(t *testing.T) {
	small := "data: {\"x\":1}\n\n"
	r := NewReader(&chunkedSource{chunks: repeat(small, 100)}, 0)
	if _, err := readAll(t, r, 1000); err != io.EOF {
		t.Fatalf("reading small events: %v", err)
	}
	if c := cap(r.buf); c != minReadSize {
		t.Errorf("after small events the read buffer is %d bytes, want %d", c, minReadSize)
	}
	big := "data: " + strings.Repeat("w", 4*readSize) + "\n\n"
	r = NewReader(strings.NewReader(big+big), 0)
	evs, err := readAll(t, r, 10)
	if err != io.EOF || len(evs) != 2 {
		t.Fatalf("reading large events: %d events, %v", len(evs), err)
	}
	if c := cap(r.buf); c != readSize {
		t.Errorf("after large events the read buffer is %d bytes, want %d", c, readSize)
	}
}

// chunkedSource returns one chunk per Read, as a paced upstream does.
type chunkedSource struct{ chunks []string }

func (s *chunkedSource) Read(p []byte) (int, error) {
	if len(s.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.chunks[0])
	if s.chunks[0] = s.chunks[0][n:]; s.chunks[0] == "" {
		s.chunks = s.chunks[1:]
	}
	return n, nil
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// TestReaderBuffered checks that Buffered hands out exactly the events the
// bytes already read complete, never reads, and leaves a partial event for
// Next to finish.
func TestReaderBuffered(t *testing.T) {
	src := &chunkedSource{chunks: []string{
		"data: a\n\ndata: b\r\n\r\n: ping\n\ndata: c\ndata: c2",
		"\n\n",
		": only a comment\n\n",
		"data: d\n\n",
	}}
	r := NewReader(src, 0)
	if _, ok := r.Buffered(); ok {
		t.Fatal("Buffered before the first read returned an event")
	}
	next := func(want string) {
		t.Helper()
		ev, err := r.Next()
		if err != nil || string(ev.Data) != want {
			t.Fatalf("Next = %q, %v; want %q", ev.Data, err, want)
		}
	}
	buffered := func(want string, wantOK bool) {
		t.Helper()
		reads := len(src.chunks)
		ev, ok := r.Buffered()
		if ok != wantOK || string(ev.Data) != want {
			t.Fatalf("Buffered = %q, %v; want %q, %v", ev.Data, ok, want, wantOK)
		}
		if len(src.chunks) != reads {
			t.Fatal("Buffered read from the source")
		}
	}
	next("a")
	buffered("b", true)
	buffered("", false) // a comment, then half of c
	next("c\nc2")
	buffered("", false) // nothing buffered
	next("d")           // the comment-only block dispatches nothing
	buffered("", false)
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("at the end Next = %v, want EOF", err)
	}
	if _, ok := r.Buffered(); ok {
		t.Fatal("Buffered after the end returned an event")
	}
}
