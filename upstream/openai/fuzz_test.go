package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

// Seeds shared by the fuzz targets.
var fuzzSeeds = []string{
	``, `{}`, `[]`, `null`, `{"a":1}`, `{"model":"m"}`, `{"model":"m","messages":[]}`,
	`{"model":"gpt\u002d5",` + msgs + `}`,
	`{"model":"m",` + msgs + `,"stream":true}`,
	`{"model":"m",` + msgs + `,"stream":true,"stream_options":null}`,
	`{"model":"m",` + msgs + `,"stream":true,"stream_options":{}}`,
	`{"stream":true,"stream_options":{"include_obfuscation":false,"include_usage":false},"model":"m",` + msgs + `}`,
	`{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[]}],"max_tokens":5,"max_completion_tokens":9,"n":2,"temperature":0.5,"top_p":1}`,
	`{"metadata":{"a":"}{\"][","b":[{"c":"\\"}]},"model":"m",` + msgs + `}`,
	"{\"model\":\"m\xff\"," + msgs + "}",
	`{"mod\u0065l":"a",` + msgs + `,"model":"b"}`,
	chunkFirst, chunkHi, chunkFinish, chunkUsage, response,
	`{"choices":[{"delta":{"reasoning_content":"r","content":"c","refusal":"x","tool_calls":[{"function":{"name":"f","arguments":"{}"},"custom":{"name":"g","input":"i"}}],"function_call":{"name":"h","arguments":"a"}}}]}`,
	`{"choices":[{"message":{"content":[{"type":"text","text":"a"}]}}],"usage":{"prompt_tokens":1.0,"completion_tokens":-1,"total_tokens":0}}`,
	`{"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":9223372036854775807}}`,
	`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"https://x/a.png"}},{"type":"image_url","image_url":{"url":"data:image/png;base64,AA=="}},{"Type":"image\u005furl","image_url":"https://y"}]}]}`,
	`{"model":"m","messages":[{"role":"user","content":[{"type":"file","file":{"file_id":"file-x"}},{"type":"text","TYPE":"file"},{"type":"file","file":{"file_data":"data:application/pdf;base64,JVBE"}}]}]}`,
	`{"model":"m","messages":[{"role":"user","content":"x","Content":[{"type":"file","file":{"file_id":"file-x"}}]}]}`,
}

// FuzzWalk holds the walker to encoding/json: the same inputs are valid, and
// an object's members decode to the same keys and raw values. Its trusting
// skip, for values already validated, must agree with the validating one.
func FuzzWalk(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		valid := json.Valid(data)
		if validValue(data) != valid {
			t.Fatalf("validValue = %v, json.Valid = %v", !valid, valid)
		}
		if valid {
			// The trusting skip finds the same end as the validating one.
			i := skipWS(data, 0)
			if end, want := skip(data, i, 0), skipValue(data, i, 0); end != want {
				t.Fatalf("skip = %d, skipValue = %d", end, want)
			}
		}
		o := topObject(data)
		got := map[string]string{}
		for {
			m, ok := o.next()
			if !ok {
				break
			}
			key := string(appendUnescaped(nil, m.key))
			got[key] = string(data[m.start:m.end])
			if isASCII(key) && !m.is(key) {
				t.Fatalf("member %q does not match its own decoded key", m.key)
			}
		}
		isObject := valid && data[skipWS(data, 0)] == '{'
		if o.failed() == isObject {
			t.Fatalf("walk failed = %v, but the input is a valid object = %v", o.failed(), isObject)
		}
		if !isObject {
			return
		}
		var want map[string]json.RawMessage
		if err := json.Unmarshal(data, &want); err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("got %d keys, encoding/json %d", len(got), len(want))
		}
		for k, v := range want {
			if got[k] != string(v) {
				t.Fatalf("key %q: got %q, encoding/json %q", k, got[k], v)
			}
		}
	})
}

// FuzzScanRequest checks that whatever ScanRequest accepts, encoding/json
// reads the same way, and that the upstream body is JSON with the new model.
func FuzzScanRequest(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ScanRequest(body)
		if err != nil {
			var re *RequestError
			if !errors.As(err, &re) {
				t.Fatalf("error %T is not a *RequestError", err)
			}
			if !json.Valid(body) && (re.Param != "" || re.Code != "") {
				t.Fatalf("malformed body refused as %+v", re)
			}
			return
		}
		// Numbers stay json.Number: a field the gateway does not check may
		// hold one that no float64 holds (1e400: the corpus has one).
		m, ok := decodeNumbers(t, body).(map[string]any)
		if !ok {
			t.Fatalf("accepted, but encoding/json decodes no object")
		}
		if model, ok := m["model"].(string); !ok || model != r.Model || model == "" {
			t.Fatalf("model %q, encoding/json %#v", r.Model, m["model"])
		}
		messages, _ := m["messages"].([]any)
		if len(messages) == 0 || len(messages) != r.Messages {
			t.Fatalf("%d messages, encoding/json %d", r.Messages, len(messages))
		}
		for i, msg := range messages {
			mm, _ := msg.(map[string]any)
			switch mm["role"] {
			case "system", "developer", "user", "assistant", "tool", "function":
			default:
				t.Fatalf("messages[%d].role %#v accepted", i, mm["role"])
			}
		}
		if stream, _ := m["stream"].(bool); stream != r.Stream {
			t.Fatalf("stream %v, encoding/json %#v", r.Stream, m["stream"])
		}
		if r.N < 1 || r.N > maxN || r.MaxTokens < 0 {
			t.Fatalf("n %d, max tokens %d", r.N, r.MaxTokens)
		}
		// The image and file counts err high, never low: at least what a
		// decoder that keeps the last of repeated keys sees, at most the
		// parts.
		images, files, parts := refParts(messages)
		if r.Images < images || r.Images > parts {
			t.Fatalf("%d images; encoding/json sees %d among %d parts", r.Images, images, parts)
		}
		if r.Files < files || r.Files > parts {
			t.Fatalf("%d files; encoding/json sees %d among %d parts", r.Files, files, parts)
		}
		// A part is an image only when its type decodes to image_url, a
		// file when it decodes to file.
		if r.Images > 0 && !bytes.Contains(body, []byte("image_url")) && !bytes.Contains(body, []byte(`\u`)) {
			t.Fatalf("%d images in a body that never says image_url", r.Images)
		}
		if r.Files > 0 && !bytes.Contains(body, []byte(`"file"`)) && !bytes.Contains(body, []byte(`\u`)) {
			t.Fatalf("%d files in a body that never says \"file\"", r.Files)
		}

		const upstream = "up\"stream\u2028\x01"
		out := r.AppendUpstream(nil, body, upstream, true)
		checkSameExceptRewrites(t, body, out, upstream, r.Stream)
		again, err := ScanRequest(out)
		if err != nil {
			t.Fatalf("the upstream body is refused: %v\n%s", err, out)
		}
		if again.Model != upstream || again.IncludeUsage != r.Stream || again.Messages != r.Messages || again.MaxTokens != r.MaxTokens ||
			again.Images != r.Images || again.Files != r.Files {
			t.Fatalf("the upstream body scans as %+v, from %+v", again, r)
		}
	})
}

// refParts is Request.Images and Request.Files over decoded messages,
// which keep only the last of repeated keys, and the number of object
// content parts.
func refParts(messages []any) (images, files, parts int) {
	for _, msg := range messages {
		mm, _ := msg.(map[string]any)
		content, _ := mm["content"].([]any)
		for _, p := range content {
			part, ok := p.(map[string]any)
			if !ok {
				continue
			}
			parts++
			// Any repeat of the type counts, as the scanner counts it.
			var image, file bool
			for k, v := range part {
				if strings.EqualFold(k, "type") {
					image = image || v == "image_url"
					file = file || v == "file"
				}
			}
			if image {
				images++
			}
			if file {
				files++
			}
		}
	}
	return images, files, parts
}

// FuzzAppendWithModel checks that a JSON object stays one, with the new model.
func FuzzAppendWithModel(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s), "gpt-5.2")
	}
	f.Add([]byte(`{"model":"a","model":"b"}`), "x\"\xff\n")
	f.Fuzz(func(t *testing.T, obj []byte, model string) {
		out := AppendWithModel([]byte("data: "), obj, model)
		if !bytes.HasPrefix(out, []byte("data: ")) {
			t.Fatal("the prefix was lost")
		}
		out = out[len("data: "):]
		var in map[string]any
		if !json.Valid(obj) || json.Unmarshal(obj, &in) != nil || in == nil {
			if !bytes.Equal(out, obj) {
				t.Fatalf("a non-object changed: %q -> %q", obj, out)
			}
			return
		}
		var got map[string]any
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("output is not JSON: %v\n%s", err, out)
		}
		if _, ok := in["model"]; ok {
			var want string
			quoted, _ := json.Marshal(model)
			_ = json.Unmarshal(quoted, &want)
			in["model"] = want
		}
		if !reflect.DeepEqual(in, got) {
			t.Fatalf("got %v, want %v", got, in)
		}
	})
}

// FuzzChunk holds ParseUsage, IsUsageOnlyChunk and AppendContent to
// references written over encoding/json.
func FuzzChunk(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, obj []byte) {
		var m map[string]any
		d := json.NewDecoder(bytes.NewReader(obj))
		d.UseNumber()
		if !json.Valid(obj) || d.Decode(&m) != nil {
			m = nil
		}
		u, ok := ParseUsage(obj)
		wu, wok := refUsage(m)
		if u != wu || ok != wok {
			t.Fatalf("ParseUsage = %+v %v, reference %+v %v", u, ok, wu, wok)
		}
		if got, want := IsUsageOnlyChunk(obj), refUsageOnly(m); got != want {
			t.Fatalf("IsUsageOnlyChunk = %v, reference %v", got, want)
		}
		if got, want := string(AppendContent(nil, obj)), refContent(m); got != want {
			t.Fatalf("AppendContent = %q, reference %q", got, want)
		}
		// The relay decodes a chunk as an error event only when the scan
		// says it may be one: every chunk encoding/json finds an error
		// object in must say so.
		var probe struct {
			Error *struct{} `json:"error"`
		}
		c := ScanChunk(obj)
		if json.Unmarshal(obj, &probe) == nil && probe.Error != nil && !c.MayBeError() {
			t.Fatalf("MayBeError = false for a chunk that decodes with an error object")
		}
		if c.MayBeError() {
			var members map[string]json.RawMessage
			if err := json.Unmarshal(obj, &members); err != nil {
				t.Fatalf("MayBeError for a chunk that is not a JSON object: %v", err)
			}
			named := false
			for k, v := range members {
				named = named || strings.EqualFold(k, "error") && !NoError(v)
			}
			if !named {
				t.Fatalf("MayBeError for a chunk without a member named error that is not null, false or empty")
			}
		}
	})
}

func refUsage(m map[string]any) (Usage, bool) {
	um, ok := m["usage"].(map[string]any)
	if !ok {
		return Usage{}, false
	}
	detail := func(v any, k string) int64 {
		dm, _ := v.(map[string]any)
		return refCount(dm[k])
	}
	u := Usage{
		PromptTokens:     refCount(um["prompt_tokens"]),
		CompletionTokens: refCount(um["completion_tokens"]),
		TotalTokens:      refCount(um["total_tokens"]),
		CachedTokens:     detail(um["prompt_tokens_details"], "cached_tokens"),
		ReasoningTokens:  detail(um["completion_tokens_details"], "reasoning_tokens"),
	}
	if u.TotalTokens == 0 {
		u.TotalTokens = u.PromptTokens + u.CompletionTokens
		if u.TotalTokens < 0 {
			u.TotalTokens = math.MaxInt64
		}
	}
	return u, true
}

func refCount(v any) int64 {
	n, ok := v.(json.Number)
	if !ok {
		return 0
	}
	if i, err := n.Int64(); err == nil {
		return max(i, 0)
	}
	if bytes.ContainsAny([]byte(n), ".eE") {
		f, err := n.Float64()
		if err == nil && f >= 0 && f < math.MaxInt64 && f == math.Trunc(f) {
			return int64(f)
		}
	}
	return 0
}

func refUsageOnly(m map[string]any) bool {
	choices, ok := m["choices"].([]any)
	_, usage := m["usage"].(map[string]any)
	return ok && len(choices) == 0 && usage
}

func refContent(m map[string]any) string {
	var out []byte
	str := func(v any) {
		if s, ok := v.(string); ok {
			out = append(out, s...)
		}
	}
	obj := func(v any) map[string]any { o, _ := v.(map[string]any); return o }
	choices, _ := m["choices"].([]any)
	for _, c := range choices {
		for _, k := range []string{"delta", "message"} {
			msg := obj(obj(c)[k])
			if msg == nil {
				continue
			}
			str(msg["reasoning_content"])
			str(msg["reasoning"])
			if parts, ok := msg["content"].([]any); ok {
				for _, p := range parts {
					str(obj(p)["text"])
					str(obj(p)["refusal"])
				}
			} else {
				str(msg["content"])
			}
			str(msg["refusal"])
			calls, _ := msg["tool_calls"].([]any)
			for _, call := range calls {
				fn, custom := obj(obj(call)["function"]), obj(obj(call)["custom"])
				str(fn["name"])
				str(fn["arguments"])
				str(custom["name"])
				str(custom["input"])
			}
			fc := obj(msg["function_call"])
			str(fc["name"])
			str(fc["arguments"])
		}
	}
	return string(out)
}
