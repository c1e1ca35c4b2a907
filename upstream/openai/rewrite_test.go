package openai

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestAppendUpstream(t *testing.T) {
	cases := []struct {
		name     string
		body     string
		upstream string
		force    bool
		want     string
	}{
		{"the model is replaced and nothing else moves",
			`{"model":"gpt-5","messages":[{"role":"user","content":"model"}],"user":"gpt-5"}`, "gpt-5-2025", false,
			`{"model":"gpt-5-2025","messages":[{"role":"user","content":"model"}],"user":"gpt-5"}`},
		{"whitespace, key order and number spelling are kept",
			"{ \"messages\" : [ {\"role\":\"user\",\"content\":\"hi\"} ],\n  \"temperature\" : 1.50E0 ,\"model\" :\t\"m\" }\n", "u", false,
			"{ \"messages\" : [ {\"role\":\"user\",\"content\":\"hi\"} ],\n  \"temperature\" : 1.50E0 ,\"model\" :\t\"u\" }\n"},
		{"an escaped model and key are replaced as a whole",
			`{"mod\u0065l":"gpt\u002d5",` + msgs + `}`, "up", false,
			`{"mod\u0065l":"up",` + msgs + `}`},
		{"an upstream model that needs escaping is quoted for JSON",
			`{"model":"m",` + msgs + `}`, "a\"b\\c\n\xff", false,
			`{"model":"a\"b\\c\u000a\ufffd",` + msgs + `}`},
		{"no usage is forced on a request that does not stream",
			`{"model":"m",` + msgs + `}`, "u", true,
			`{"model":"u",` + msgs + `}`},
		{"usage is not forced unless asked",
			`{"model":"m",` + msgs + `,"stream":true}`, "u", false,
			`{"model":"u",` + msgs + `,"stream":true}`},
		{"absent stream_options are inserted first",
			`{"model":"m",` + msgs + `,"stream":true}`, "u", true,
			`{"stream_options":{"include_usage":true},"model":"u",` + msgs + `,"stream":true}`},
		{"absent stream_options are inserted after leading whitespace's brace",
			" \n{\n\"model\":\"m\"," + msgs + ",\"stream\":true}", "u", true,
			" \n{\"stream_options\":{\"include_usage\":true},\n\"model\":\"u\"," + msgs + ",\"stream\":true}"},
		{"null stream_options become an object",
			`{"model":"m",` + msgs + `,"stream":true,"stream_options":null,"x":1}`, "u", true,
			`{"model":"u",` + msgs + `,"stream":true,"stream_options":{"include_usage":true},"x":1}`},
		{"empty stream_options gain include_usage",
			`{"model":"m",` + msgs + `,"stream":true,"stream_options":{ }}`, "u", true,
			`{"model":"u",` + msgs + `,"stream":true,"stream_options":{"include_usage":true }}`},
		{"include_usage false becomes true",
			`{"model":"m",` + msgs + `,"stream":true,"stream_options":{ "include_usage" : false }}`, "u", true,
			`{"model":"u",` + msgs + `,"stream":true,"stream_options":{ "include_usage" : true }}`},
		{"include_usage true is left alone",
			`{"model":"m",` + msgs + `,"stream":true,"stream_options":{"include_usage":true}}`, "u", true,
			`{"model":"u",` + msgs + `,"stream":true,"stream_options":{"include_usage":true}}`},
		{"other stream_options members are kept",
			`{"model":"m",` + msgs + `,"stream":true,"stream_options":{"include_obfuscation":false}}`, "u", true,
			`{"model":"u",` + msgs + `,"stream":true,"stream_options":{"include_usage":true,"include_obfuscation":false}}`},
		{"stream_options before the model are edited in place",
			`{"stream":true,"stream_options":{"include_obfuscation":false,"include_usage":false},"model":"m",` + msgs + `}`, "u", true,
			`{"stream":true,"stream_options":{"include_obfuscation":false,"include_usage":true},"model":"u",` + msgs + `}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(tc.body)
			r, err := ScanRequest(body)
			if err != nil {
				t.Fatal(err)
			}
			got := r.AppendUpstream([]byte("prefix:"), body, tc.upstream, tc.force)
			if string(got) != "prefix:"+tc.want {
				t.Fatalf("got  %s\nwant prefix:%s", got, tc.want)
			}
			out := got[len("prefix:"):]
			if string(body) != tc.body {
				t.Fatal("AppendUpstream modified the body")
			}
			checkSameExceptRewrites(t, body, out, tc.upstream, tc.force && r.Stream)
		})
	}
}

// checkSameExceptRewrites decodes both bodies and checks they differ only in
// the model and in stream_options.include_usage.
func checkSameExceptRewrites(t *testing.T, in, out []byte, model string, usage bool) {
	t.Helper()
	// Numbers stay json.Number (decodeNumbers): a field the gateway does
	// not check may hold one that no float64 holds, such as 1e400.
	a, _ := decodeNumbers(t, in).(map[string]any)
	b, _ := decodeNumbers(t, out).(map[string]any)
	var wantModel string
	quoted, _ := json.Marshal(model)
	_ = json.Unmarshal(quoted, &wantModel)
	if b["model"] != wantModel {
		t.Errorf("model %q, want %q", b["model"], wantModel)
	}
	a["model"] = wantModel
	if usage {
		opts, _ := a["stream_options"].(map[string]any)
		if opts == nil {
			opts = map[string]any{}
		}
		opts["include_usage"] = true
		a["stream_options"] = opts
	}
	if !reflect.DeepEqual(a, b) {
		t.Errorf("decoded bodies differ beyond the rewrites:\n in  %v\n out %v", a, b)
	}
}

func TestAppendUpstreamRefusesAnotherBody(t *testing.T) {
	body := []byte(`{"model":"m",` + msgs + `}`)
	r, err := ScanRequest(body)
	if err != nil {
		t.Fatal(err)
	}
	other := []byte(`{"model":"m",` + msgs + `,"x":1}`)
	if got := r.AppendUpstream(nil, other, "u", true); string(got) != string(other) {
		t.Errorf("got %s, want the other body unchanged", got)
	}
	var zero Request
	if got := zero.AppendUpstream(nil, body, "u", true); string(got) != string(body) {
		t.Errorf("a zero Request rewrote the body: %s", got)
	}
}

// Samples from shared/reference/openai-chat.md §5, and a response built from §3 and §4.
var (
	chunkFirst  = `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}`
	chunkHi     = `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}],"usage":null}`
	chunkFinish = `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}`
	chunkUsage  = `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}`
	response    = `{
  "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
  "object": "chat.completion",
  "created": 1741569952,
  "model": "m",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": "Hello! How can I assist you today? \"model\": {}",
        "refusal": null,
        "annotations": []
      },
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 19,
    "completion_tokens": 10,
    "total_tokens": 29,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
  },
  "service_tier": "default"
}`
)

func TestAppendWithModel(t *testing.T) {
	cases := []struct {
		name string
		obj  string
		want string
	}{
		{"the first chunk carries the public model", chunkFirst, strings.Replace(chunkFirst, `"model":"m"`, `"model":"gpt-5.2"`, 1)},
		{"a content chunk carries the public model", chunkHi, strings.Replace(chunkHi, `"model":"m"`, `"model":"gpt-5.2"`, 1)},
		{"the finish chunk carries the public model", chunkFinish, strings.Replace(chunkFinish, `"model":"m"`, `"model":"gpt-5.2"`, 1)},
		{"the usage chunk carries the public model", chunkUsage, strings.Replace(chunkUsage, `"model":"m"`, `"model":"gpt-5.2"`, 1)},
		{"a pretty-printed response keeps its layout", response, strings.Replace(response, `"model": "m"`, `"model": "gpt-5.2"`, 1)},
		{"an escaped key and value are replaced", `{"mod\u0065l":"gpt\u002d5-2025","x":1}`, `{"mod\u0065l":"gpt-5.2","x":1}`},
		{"a null model is replaced", `{"model":null}`, `{"model":"gpt-5.2"}`},
		{"a repeated model is replaced every time", `{"model":"a","x":{},"model":"b"}`, `{"model":"gpt-5.2","x":{},"model":"gpt-5.2"}`},
		{"a nested model is not the response's", `{"x":{"model":"up"},"choices":[{"model":"up"}]}`, `{"x":{"model":"up"},"choices":[{"model":"up"}]}`},
		{"an error chunk without a model is unchanged", `{"error":{"message":"boom","type":"server_error","param":null,"code":null}}`, `{"error":{"message":"boom","type":"server_error","param":null,"code":null}}`},
		{"malformed JSON is unchanged", `{"model":"up",`, `{"model":"up",`},
		{"a non-object is unchanged", `[DONE]`, `[DONE]`},
		{"an array is unchanged", `[{"model":"up"}]`, `[{"model":"up"}]`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := AppendWithModel([]byte("data: "), []byte(tc.obj), "gpt-5.2")
			if string(got) != "data: "+tc.want {
				t.Fatalf("got  %s\nwant data: %s", got, tc.want)
			}
			if json.Valid([]byte(tc.obj)) && !json.Valid(got[len("data: "):]) {
				t.Errorf("output is not JSON")
			}
		})
	}
}

func TestAppendUpstreamOnALongConversation(t *testing.T) {
	body := request100KB()
	r, err := ScanRequest(body)
	if err != nil {
		t.Fatal(err)
	}
	got := r.AppendUpstream(nil, body, "gpt-5.2-2025-12-11", true)
	want := `{"stream_options":{"include_usage":true},` +
		strings.Replace(string(body[1:]), `"model":"gpt-5.2"`, `"model":"gpt-5.2-2025-12-11"`, 1)
	if string(got) != want {
		t.Fatal("the long body changed beyond the model and stream_options")
	}
	checkSameExceptRewrites(t, body, got, "gpt-5.2-2025-12-11", true)
}
