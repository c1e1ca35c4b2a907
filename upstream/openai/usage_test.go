package openai

import (
	"testing"
)

func TestParseUsage(t *testing.T) {
	cases := []struct {
		name string
		obj  string
		want Usage
		ok   bool
	}{
		{"the usage-only chunk reports the totals", chunkUsage, Usage{PromptTokens: 9, CompletionTokens: 2, TotalTokens: 11}, true},
		{"a chunk with null usage reports nothing", chunkHi, Usage{}, false},
		{"a chunk without usage reports nothing", `{"id":"c","choices":[]}`, Usage{}, false},
		{"a response reports its details", response, Usage{PromptTokens: 19, CompletionTokens: 10, TotalTokens: 29}, true},
		{"cached and reasoning tokens are read",
			`{"usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":192,"audio_tokens":0}}}`,
			Usage{2006, 300, 2306, 1920, 0, 192}, true},
		{"cache writes are read (OpenRouter reports them)",
			`{"usage":{"prompt_tokens":3000,"completion_tokens":10,"total_tokens":3010,"prompt_tokens_details":{"cached_tokens":1000,"cache_write_tokens":1500}}}`,
			Usage{PromptTokens: 3000, CompletionTokens: 10, TotalTokens: 3010, CachedTokens: 1000, CacheWriteTokens: 1500}, true},
		{"null details count as zero", `{"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2,"prompt_tokens_details":null,"completion_tokens_details":null}}`, Usage{1, 1, 2, 0, 0, 0}, true},
		{"a missing total is the sum", `{"usage":{"prompt_tokens":7,"completion_tokens":5}}`, Usage{PromptTokens: 7, CompletionTokens: 5, TotalTokens: 12}, true},
		{"an empty usage object is usage of zero", `{"usage":{}}`, Usage{}, true},
		{"negative counts read as zero", `{"usage":{"prompt_tokens":-5,"completion_tokens":3,"total_tokens":-2}}`, Usage{CompletionTokens: 3, TotalTokens: 3}, true},
		{"integral decimals are read", `{"usage":{"prompt_tokens":12.0,"completion_tokens":1.5e1,"total_tokens":27}}`, Usage{12, 15, 27, 0, 0, 0}, true},
		{"fractions and strings read as zero", `{"usage":{"prompt_tokens":1.5,"completion_tokens":"3","total_tokens":9}}`, Usage{TotalTokens: 9}, true},
		{"counts beyond int64 read as zero", `{"usage":{"prompt_tokens":9223372036854775808,"completion_tokens":1e300,"total_tokens":1}}`, Usage{TotalTokens: 1}, true},
		{"the largest int64 is read", `{"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":1}}`, Usage{9223372036854775807, 1, 9223372036854775807, 0, 0, 0}, true},
		{"an escaped key is read", `{"us\u0061ge":{"prompt_\u0074okens":4}}`, Usage{PromptTokens: 4, TotalTokens: 4}, true},
		{"a repeated usage takes the last, as encoding/json does", `{"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":2}}`, Usage{PromptTokens: 2, TotalTokens: 2}, true},
		{"usage nested in a choice is not the chunk's", `{"choices":[{"usage":{"prompt_tokens":1}}],"x_groq":{"usage":{"prompt_tokens":1}}}`, Usage{}, false},
		{"usage that is not an object reports nothing", `{"usage":[1,2,3]}`, Usage{}, false},
		{"malformed JSON reports nothing", `{"usage":{"prompt_tokens":1}`, Usage{}, false},
		{"the done marker reports nothing", `[DONE]`, Usage{}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := ParseUsage([]byte(tc.obj))
			if got != tc.want || ok != tc.ok {
				t.Errorf("got %+v %v, want %+v %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestIsUsageOnlyChunk(t *testing.T) {
	cases := []struct {
		name string
		obj  string
		want bool
	}{
		{"the include_usage chunk is usage-only", chunkUsage, true},
		{"the first chunk is not", chunkFirst, false},
		{"a content chunk is not", chunkHi, false},
		{"the finish chunk is not", chunkFinish, false},
		{"a whole response is not", response, false},
		{"empty choices with null usage are not", `{"choices":[],"usage":null}`, false},
		{"whitespace inside the empty choices does not matter", `{"usage":{},"choices":[ ]}`, true},
		{"a finish chunk that also carries usage is not usage-only", `{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":1}}`, false},
		{"usage without choices is not a chunk", `{"usage":{"prompt_tokens":1}}`, false},
		{"malformed JSON is not", `{"choices":[],"usage":{}`, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsUsageOnlyChunk([]byte(tc.obj)); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestAppendContent(t *testing.T) {
	cases := []struct {
		name string
		objs []string // appended in turn, like the chunks of a stream
		want string
	}{
		{"a stream's chunks concatenate to its text", []string{chunkFirst, chunkHi, chunkFinish, chunkUsage}, "Hi"},
		{"a response gives its message content", []string{response}, `Hello! How can I assist you today? "model": {}`},
		{"escapes are decoded", []string{`{"choices":[{"delta":{"content":"a\nb\u00e9\ud83d\ude00\"\\"}}]}`}, "a\nbé😀\"\\"},
		{"streamed tool calls give names and argument pieces",
			[]string{
				`{"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}`,
				`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]},"finish_reason":null}]}`,
				`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]},"finish_reason":null}]}`,
			},
			`get_weather{"city":"Paris"}`},
		{"a response's tool calls give names and arguments in order",
			[]string{`{"choices":[{"message":{"role":"assistant","content":null,"tool_calls":[{"id":"a","type":"function","function":{"arguments":"{}","name":"f"}},{"id":"b","type":"custom","custom":{"name":"g","input":"x"}}]}}]}`},
			`f{}gx`},
		{"every choice counts", []string{`{"choices":[{"index":0,"message":{"content":"one"}},{"index":1,"message":{"content":"two"}}]}`}, "onetwo"},
		{"a refusal counts", []string{`{"choices":[{"message":{"content":null,"refusal":"I can't."}}]}`}, "I can't."},
		{"reasoning text comes first", []string{`{"choices":[{"delta":{"content":"B","reasoning_content":"A"}}]}`}, "AB"},
		{"content parts give their text", []string{`{"choices":[{"message":{"content":[{"type":"text","text":"a"},{"type":"refusal","refusal":"b"}]}}]}`}, "ab"},
		{"a deprecated function_call counts", []string{`{"choices":[{"message":{"function_call":{"name":"f","arguments":"{}"}}}]}`}, "f{}"},
		{"a repeated content takes the last, as encoding/json does", []string{`{"choices":[{"delta":{"content":"a","content":"b"}}]}`}, "b"},
		{"fields of the wrong type are skipped", []string{`{"choices":[{"delta":{"content":5,"tool_calls":{"a":1}}},"x",{"message":{"content":"ok"}}]}`}, "ok"},
		{"text outside choices does not count", []string{`{"content":"no","choices":[{"text":"no","delta":{"role":"assistant"}}]}`}, ""},
		{"a repeated delta takes the last, whatever its type", []string{`{"choices":[{"delta":{"content":"a"},"delta":null},{"delta":{"content":"x"},"delta":{"content":"b"}}]}`}, "b"},
		{"a choice's delta comes before its message, whatever their order", []string{`{"choices":[{"message":{"content":"m"},"delta":{"content":"d"}}]}`}, "dm"},
		{"escaped and spaced keys are keys", []string{"{ \"choices\" : [ { \"d\\u0065lta\" : { \"c\\u006fntent\" : \"a\" } } , { \"index\" : 1 , \"message\" : { \"content\" : \"b\" } } ] }"}, "ab"},
		{"nested values before the delta are skipped", []string{`{"choices":[{"logprobs":{"content":[{"token":"no","bytes":[1,2]}]},"x":[{"delta":{"content":"no"}}],"delta":{"content":"yes","extra":{"content":"no"}}}]}`}, "yes"},
		{"malformed JSON gives nothing", []string{`{"choices":[{"delta":{"content":"a"}}]`}, ""},
		{"the done marker gives nothing", []string{`[DONE]`}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dst := []byte(">")
			for _, obj := range tc.objs {
				dst = AppendContent(dst, []byte(obj))
			}
			if string(dst) != ">"+tc.want {
				t.Errorf("got %q, want %q", dst[1:], tc.want)
			}
		})
	}
}
