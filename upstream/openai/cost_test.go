package openai

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// Bodies with usage, as OpenAI and OpenRouter send them.
var (
	completionWithUsage = `{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"gpt-5.2","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21,"prompt_tokens_details":{"cached_tokens":0}},"service_tier":"default"}`
	finalChunk          = `{"id":"x","object":"chat.completion.chunk","created":1700000000,"model":"gpt-5.2","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21,"prompt_tokens_details":{"cached_tokens":0}}}`
	openRouterChunk     = `{"id":"gen-1","provider":"OpenAI","model":"openai/gpt-5.2","object":"chat.completion.chunk","created":1700000000,"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21,"cost":0.5,"is_byok":false,"prompt_tokens_details":{"cached_tokens":0},"cost_details":{"upstream_inference_cost":null,"upstream_inference_prompt_cost":0.1,"upstream_inference_completions_cost":0.4},"completion_tokens_details":{"reasoning_tokens":0}}}`
)

// usageCostCases are rewritten with the cost 0.000123.
var usageCostCases = []struct {
	name string
	obj  string
	want string
}{
	{"an OpenAI completion gains the cost last in usage", completionWithUsage,
		strings.Replace(completionWithUsage, `"cached_tokens":0}}`, `"cached_tokens":0},"cost":0.000123}`, 1)},
	{"the final stream chunk gains the cost", finalChunk,
		strings.Replace(finalChunk, `"cached_tokens":0}}}`, `"cached_tokens":0},"cost":0.000123}}`, 1)},
	{"a pretty-printed response keeps its layout", response,
		strings.Replace(response, `"rejected_prediction_tokens": 0}`+"\n  }", `"rejected_prediction_tokens": 0},"cost":0.000123`+"\n  }", 1)},
	{"OpenRouter's cost and cost details are replaced by the gateway's cost", openRouterChunk,
		strings.Replace(openRouterChunk,
			`"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21,"cost":0.5,"is_byok":false,"prompt_tokens_details":{"cached_tokens":0},"cost_details":{"upstream_inference_cost":null,"upstream_inference_prompt_cost":0.1,"upstream_inference_completions_cost":0.4},"completion_tokens_details":{"reasoning_tokens":0}}`,
			`"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21,"is_byok":false,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0},"cost":0.000123}`, 1)},
	{"an empty usage gets only the cost", `{"usage":{}}`, `{"usage":{"cost":0.000123}}`},
	{"an empty usage keeps its whitespace", "{ \"usage\" : {\n} }\n", "{ \"usage\" : {\"cost\":0.000123\n} }\n"},
	{"a cost first is removed with the comma after it", `{"usage":{"cost":1,"total_tokens":2}}`, `{"usage":{"total_tokens":2,"cost":0.000123}}`},
	{"a cost in the middle is removed with the comma before it", `{"usage":{"a":1,"cost":1,"b":2}}`, `{"usage":{"a":1,"b":2,"cost":0.000123}}`},
	{"a cost last is replaced", `{"usage":{"a":1,"cost":1}}`, `{"usage":{"a":1,"cost":0.000123}}`},
	{"a lone cost is replaced", `{"usage":{"cost":0.5}}`, `{"usage":{"cost":0.000123}}`},
	{"leading cost members all go", `{"usage":{"cost":1,"cost_details":{"x":[1]},"cost":2,"a":1}}`, `{"usage":{"a":1,"cost":0.000123}}`},
	{"trailing cost members all go", `{"usage":{"a":1,"b":2,"cost_details":{},"cost":2}}`, `{"usage":{"a":1,"b":2,"cost":0.000123}}`},
	{"cost members between kept ones all go", `{"usage":{"a":1,"cost":1,"b":2,"cost_details":null,"c":3}}`, `{"usage":{"a":1,"b":2,"c":3,"cost":0.000123}}`},
	{"only cost members, with whitespace", `{"usage":{ "cost" : 1 , "cost_details" : {"a":1} }}`, `{"usage":{ "cost":0.000123 }}`},
	{"whitespace around kept members stays",
		"{\n \"usage\" : {\n  \"a\" : 1 ,\n  \"cost\" : 2 ,\n  \"b\" : [ 3 ]\n }\n}\n",
		"{\n \"usage\" : {\n  \"a\" : 1 ,\n  \"b\" : [ 3 ],\"cost\":0.000123\n }\n}\n"},
	{"whitespace before a removed first member stays",
		"{\"usage\":{\n  \"cost\" : 2 ,\n  \"b\" : 3\n}}",
		"{\"usage\":{\n  \"b\" : 3,\"cost\":0.000123\n}}"},
	{"escaped keys are matched", `{"us\u0061ge":{"co\u0073t":1,"n":1,"cost\u005fdetails":{}}}`, `{"us\u0061ge":{"n":1,"cost":0.000123}}`},
	{"keys that only look like cost are kept", `{"usage":{"costs":1,"cost_detail":2,"Cost":3}}`, `{"usage":{"costs":1,"cost_detail":2,"Cost":3,"cost":0.000123}}`},
	{"cost nested deeper is not usage's",
		`{"usage":{"prompt_tokens_details":{"cost":1,"cost_details":{}}},"choices":[{"usage":{"cost":1}}],"cost":7}`,
		`{"usage":{"prompt_tokens_details":{"cost":1,"cost_details":{}},"cost":0.000123},"choices":[{"usage":{"cost":1}}],"cost":7}`},
	{"a repeated usage is rewritten every time",
		`{"usage":{"cost":1},"x":0,"usage":{"prompt_tokens":2,"cost_details":{}}}`,
		`{"usage":{"cost":0.000123},"x":0,"usage":{"prompt_tokens":2,"cost":0.000123}}`},
	{"a usage object before a null one is rewritten", `{"usage":{"cost":1},"usage":null}`, `{"usage":{"cost":0.000123},"usage":null}`},
	{"whitespace after the object stays", "{\"usage\":{}} \r\n", "{\"usage\":{\"cost\":0.000123}} \r\n"},
	{"a chunk with null usage is unchanged", chunkHi, chunkHi},
	{"a chunk without usage is unchanged", `{"id":"c","choices":[]}`, `{"id":"c","choices":[]}`},
	{"usage that is an array is unchanged", `{"usage":[{"cost":1}]}`, `{"usage":[{"cost":1}]}`},
	{"usage that is a string is unchanged", `{"usage":"cost"}`, `{"usage":"cost"}`},
	{"an error body is unchanged", `{"error":{"message":"boom","type":"server_error","param":null,"code":null}}`, `{"error":{"message":"boom","type":"server_error","param":null,"code":null}}`},
	{"malformed JSON is unchanged", `{"usage":{"cost":1}`, `{"usage":{"cost":1}`},
	{"malformed JSON after usage is unchanged", `{"usage":{"cost":1},}`, `{"usage":{"cost":1},}`},
	{"a value after the object is unchanged", `{"usage":{}} {}`, `{"usage":{}} {}`},
	{"the done marker is unchanged", `[DONE]`, `[DONE]`},
	{"an array is unchanged", `[{"usage":{}}]`, `[{"usage":{}}]`},
	{"nothing is unchanged", ``, ``},
}

func TestAppendUsageCost(t *testing.T) {
	for _, tc := range usageCostCases {
		t.Run(tc.name, func(t *testing.T) {
			got := AppendUsageCost([]byte("data: "), []byte(tc.obj), []byte("0.000123"))
			if string(got) != "data: "+tc.want {
				t.Fatalf("got  %s\nwant data: %s", got, tc.want)
			}
			checkUsageCost(t, []byte(tc.obj), []byte("0.000123"), got[len("data: "):])
		})
	}
}

// TestAppendUsageCostDecodes holds the output to encoding/json over the
// cases, the fuzz seeds and costs spelt in every way JSON allows.
func TestAppendUsageCostDecodes(t *testing.T) {
	objs := append([]string(nil), fuzzSeeds...)
	for _, tc := range usageCostCases {
		objs = append(objs, tc.obj)
	}
	for _, obj := range objs {
		for _, cost := range []string{"0", "-0", "0.000123", "12", "1e-7", "1.5E+3", "-2.25"} {
			checkUsageCost(t, []byte(obj), []byte(cost), AppendUsageCost(nil, []byte(obj), []byte(cost)))
		}
	}
}

func TestAppendUsageCostAllocatesNothing(t *testing.T) {
	dst := make([]byte, 0, 1024)
	cost := []byte("0.000123")
	for _, tc := range usageCostCases {
		obj := []byte(tc.obj)
		if n := testing.AllocsPerRun(100, func() { dst = AppendUsageCost(dst[:0], obj, cost) }); n != 0 {
			t.Errorf("%s: %v allocations", tc.name, n)
		}
	}
}

// checkUsageCost checks out, what AppendUsageCost made of obj: JSON if obj
// was, obj itself if obj has no top-level usage object, and otherwise what
// encoding/json reads from obj but for usage.cost, which is cost, and
// usage.cost_details, which is gone.
func checkUsageCost(t *testing.T, obj, cost, out []byte) {
	t.Helper()
	if !json.Valid(obj) || !hasUsageObject(obj) {
		if !bytes.Equal(out, obj) {
			t.Fatalf("an obj without a usage object changed:\n%q\n%q", obj, out)
		}
		return
	}
	if !json.Valid(out) {
		t.Fatalf("output is not JSON:\n%s\nfrom\n%s", out, obj)
	}
	want, got := decodeNumbers(t, obj), decodeNumbers(t, out)
	if m, ok := want.(map[string]any); ok {
		if u, ok := m["usage"].(map[string]any); ok {
			delete(u, "cost_details")
			u["cost"] = json.Number(cost)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decodes as %v, want %v\nout %s\nobj %s", got, want, out, obj)
	}
}

func decodeNumbers(t *testing.T, b []byte) any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return v
}

// hasUsageObject reports whether the valid JSON value b is an object with a
// top-level "usage" member whose value is an object, the last such member or
// not: an encoding/json reference for the walk AppendUsageCost makes.
func hasUsageObject(b []byte) bool {
	d := json.NewDecoder(bytes.NewReader(b))
	if tok, err := d.Token(); err != nil || tok != json.Delim('{') {
		return false
	}
	found := false
	for d.More() {
		key, err := d.Token()
		if err != nil {
			return false
		}
		var v json.RawMessage
		if err := d.Decode(&v); err != nil {
			return false
		}
		if key == "usage" && v[0] == '{' {
			found = true
		}
	}
	return found
}

// FuzzAppendUsageCost checks that a JSON object with usage stays JSON, with
// the gateway's cost and nothing else changed, and that anything else passes
// unchanged.
func FuzzAppendUsageCost(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s), 0.000123)
	}
	for _, tc := range usageCostCases {
		f.Add([]byte(tc.obj), 1.5)
	}
	f.Add([]byte(openRouterChunk), 1e-9)
	f.Add([]byte(`{"usage":{"cost":1,"cost_details":{},"cost":2}}`), 0.0)
	f.Add([]byte(`{"usage":{ },"usage":{"cost":1},"usage":[]}`), -3.0)
	f.Fuzz(func(t *testing.T, obj []byte, c float64) {
		if math.IsNaN(c) || math.IsInf(c, 0) { // not JSON numbers
			c = 0
		}
		cost := strconv.AppendFloat(nil, c, 'g', -1, 64)
		out := AppendUsageCost([]byte("data: "), obj, cost)
		if !bytes.HasPrefix(out, []byte("data: ")) {
			t.Fatal("the prefix was lost")
		}
		checkUsageCost(t, obj, cost, out[len("data: "):])
	})
}

func BenchmarkAppendUsageCost(b *testing.B) {
	for _, bc := range []struct{ name, obj string }{
		{"OpenAIChunk", usageChunk},
		{"OpenRouterChunk", openRouterChunk},
		{"ContentChunk", chunk250},
	} {
		b.Run(bc.name, func(b *testing.B) {
			obj, cost := []byte(bc.obj), []byte("0.000123")
			dst := make([]byte, 0, 1024)
			b.SetBytes(int64(len(obj)))
			b.ReportAllocs()
			for b.Loop() {
				dst = AppendUsageCost(dst[:0], obj, cost)
			}
		})
	}
}
