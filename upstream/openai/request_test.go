package openai

import (
	"errors"
	"strings"
	"testing"
)

// msgs is a valid messages array for bodies that test other fields.
const msgs = `"messages":[{"role":"user","content":"hi"}]`

func TestScanRequestRefusesBadInput(t *testing.T) {
	cases := []struct {
		name  string
		body  string
		param string
		code  string
	}{
		{"an empty body is not JSON", ``, "", ""},
		{"a truncated body is not JSON", `{"model":"m",` + msgs, "", ""},
		{"garbage after the object is not JSON", `{"model":"m",` + msgs + `} x`, "", ""},
		{"two objects in a row are not JSON", `{"model":"m",` + msgs + `}{}`, "", ""},
		{"a malformed value past the fields we read is not JSON", `{"model":"m",` + msgs + `,"user":tru}`, "", ""},
		{"malformed JSON wins over a bad field before it", `{"model":1,` + msgs + `,"x":[}`, "", ""},
		{"an array body is not an object", `[{"model":"m"}]`, "", "invalid_type"},
		{"a string body is not an object", `"hello"`, "", "invalid_type"},
		{"a missing model is refused", `{` + msgs + `}`, "model", "missing_required_parameter"},
		{"a null model is refused", `{"model":null,` + msgs + `}`, "model", "invalid_type"},
		{"a numeric model is refused", `{"model":5,` + msgs + `}`, "model", "invalid_type"},
		{"an empty model is refused", `{"model":"",` + msgs + `}`, "model", "invalid_value"},
		{"missing messages are refused", `{"model":"m"}`, "messages", "missing_required_parameter"},
		{"messages as an object are refused", `{"model":"m","messages":{"role":"user"}}`, "messages", "invalid_type"},
		{"null messages are refused", `{"model":"m","messages":null}`, "messages", "invalid_type"},
		{"an empty messages array is refused", `{"model":"m","messages":[ ]}`, "messages", "invalid_value"},
		{"a message that is a string is refused", `{"model":"m","messages":["hi"]}`, "messages[0]", "invalid_type"},
		{"a message without a role is refused", `{"model":"m","messages":[{"content":"hi"}]}`, "messages[0].role", "missing_required_parameter"},
		{"a numeric role is refused", `{"model":"m","messages":[{"role":1,"content":"hi"}]}`, "messages[0].role", "invalid_type"},
		{"an unknown role is refused with the message's index", `{"model":"m","messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"robot","content":"c"}]}`, "messages[2].role", "invalid_value"},
		{"a role in the wrong case is refused", `{"model":"m","messages":[{"role":"User","content":"hi"}]}`, "messages[0].role", "invalid_value"},
		{"a user message without content is refused", `{"model":"m","messages":[{"role":"user"}]}`, "messages[0].content", "missing_required_parameter"},
		{"a user message with null content is refused", `{"model":"m","messages":[{"role":"user","content":null}]}`, "messages[0].content", "invalid_type"},
		{"a system message with numeric content is refused", `{"model":"m","messages":[{"role":"system","content":3}]}`, "messages[0].content", "invalid_type"},
		{"a tool message with object content is refused", `{"model":"m","messages":[{"role":"user","content":"a"},{"role":"tool","tool_call_id":"c","content":{}}]}`, "messages[1].content", "invalid_type"},
		{"an assistant message with boolean content is refused", `{"model":"m","messages":[{"role":"assistant","content":false}]}`, "messages[0].content", "invalid_type"},
		{"a message with a repeated role is ambiguous", `{"model":"m","messages":[{"role":"user","content":"a","role":"system"}]}`, "messages[0].role", "duplicate_parameter"},
		{"a message with a repeated content is ambiguous", `{"model":"m","messages":[{"role":"user","content":"a","content":"b"}]}`, "messages[0].content", "duplicate_parameter"},
		{"a repeated model is ambiguous", `{"model":"a",` + msgs + `,"model":"b"}`, "model", "duplicate_parameter"},
		{"a model repeated under an escaped key is ambiguous", `{"model":"a",` + msgs + `,"mod\u0065l":"b"}`, "model", "duplicate_parameter"},
		{"repeated messages are ambiguous", `{"model":"a",` + msgs + `,` + msgs + `}`, "messages", "duplicate_parameter"},
		{"a repeated stream is ambiguous", `{"model":"a",` + msgs + `,"stream":false,"stream":true}`, "stream", "duplicate_parameter"},
		{"a repeated max_tokens is ambiguous", `{"model":"a",` + msgs + `,"max_tokens":1,"max_tokens":1}`, "max_tokens", "duplicate_parameter"},
		{"a temperature above 2 is refused", `{"model":"m",` + msgs + `,"temperature":2.0000001}`, "temperature", "invalid_value"},
		{"a negative temperature is refused", `{"model":"m",` + msgs + `,"temperature":-0.1}`, "temperature", "invalid_value"},
		{"a temperature beyond float64 is refused", `{"model":"m",` + msgs + `,"temperature":1e400}`, "temperature", "invalid_value"},
		{"a temperature as a string is refused", `{"model":"m",` + msgs + `,"temperature":"1"}`, "temperature", "invalid_type"},
		{"a temperature as a boolean is refused", `{"model":"m",` + msgs + `,"temperature":true}`, "temperature", "invalid_type"},
		{"a top_p above 1 is refused", `{"model":"m",` + msgs + `,"top_p":1.5}`, "top_p", "invalid_value"},
		{"a top_p as an array is refused", `{"model":"m",` + msgs + `,"top_p":[1]}`, "top_p", "invalid_type"},
		{"max_tokens of zero is refused", `{"model":"m",` + msgs + `,"max_tokens":0}`, "max_tokens", "invalid_value"},
		{"negative max_tokens are refused", `{"model":"m",` + msgs + `,"max_tokens":-3}`, "max_tokens", "invalid_value"},
		{"max_tokens of minus zero are refused", `{"model":"m",` + msgs + `,"max_tokens":-0}`, "max_tokens", "invalid_value"},
		{"fractional max_tokens are refused", `{"model":"m",` + msgs + `,"max_tokens":1.5}`, "max_tokens", "invalid_type"},
		{"max_tokens with a zero fraction are refused", `{"model":"m",` + msgs + `,"max_tokens":10.0}`, "max_tokens", "invalid_type"},
		{"max_tokens with an exponent are refused", `{"model":"m",` + msgs + `,"max_tokens":1e3}`, "max_tokens", "invalid_type"},
		{"max_tokens as a string are refused", `{"model":"m",` + msgs + `,"max_tokens":"10"}`, "max_tokens", "invalid_type"},
		{"max_tokens beyond int64 are refused", `{"model":"m",` + msgs + `,"max_tokens":9223372036854775808}`, "max_tokens", "invalid_value"},
		{"max_tokens far beyond int64 are refused", `{"model":"m",` + msgs + `,"max_tokens":99999999999999999999999999999999}`, "max_tokens", "invalid_value"},
		{"max_completion_tokens of zero are refused", `{"model":"m",` + msgs + `,"max_completion_tokens":0}`, "max_completion_tokens", "invalid_value"},
		{"max_completion_tokens as an object are refused", `{"model":"m",` + msgs + `,"max_completion_tokens":{}}`, "max_completion_tokens", "invalid_type"},
		{"a bad max_tokens is refused even beside a good max_completion_tokens", `{"model":"m",` + msgs + `,"max_completion_tokens":5,"max_tokens":-1}`, "max_tokens", "invalid_value"},
		{"an escaped key is checked like the plain one", `{"model":"m",` + msgs + `,"max\u005ftokens":0}`, "max_tokens", "invalid_value"},
		{"n of zero is refused", `{"model":"m",` + msgs + `,"n":0}`, "n", "invalid_value"},
		{"n above 128 is refused", `{"model":"m",` + msgs + `,"n":129}`, "n", "invalid_value"},
		{"fractional n is refused", `{"model":"m",` + msgs + `,"n":2.5}`, "n", "invalid_type"},
		{"n as a string is refused", `{"model":"m",` + msgs + `,"n":"2"}`, "n", "invalid_type"},
		{"stream as a string is refused", `{"model":"m",` + msgs + `,"stream":"true"}`, "stream", "invalid_type"},
		{"stream as a number is refused", `{"model":"m",` + msgs + `,"stream":1}`, "stream", "invalid_type"},
		{"stream_options without stream are refused", `{"model":"m",` + msgs + `,"stream_options":{"include_usage":true}}`, "stream_options", "invalid_value"},
		{"stream_options with stream false are refused", `{"model":"m",` + msgs + `,"stream":false,"stream_options":{}}`, "stream_options", "invalid_value"},
		{"stream_options as an array are refused", `{"model":"m",` + msgs + `,"stream":true,"stream_options":[]}`, "stream_options", "invalid_type"},
		{"include_usage as a string is refused", `{"model":"m",` + msgs + `,"stream":true,"stream_options":{"include_usage":"yes"}}`, "stream_options.include_usage", "invalid_type"},
		{"include_usage as null is refused", `{"model":"m",` + msgs + `,"stream":true,"stream_options":{"include_usage":null}}`, "stream_options.include_usage", "invalid_type"},
		{"a repeated include_usage is ambiguous", `{"model":"m",` + msgs + `,"stream":true,"stream_options":{"include_usage":false,"include_usage":true}}`, "stream_options.include_usage", "duplicate_parameter"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ScanRequest([]byte(tc.body))
			var re *RequestError
			if !errors.As(err, &re) {
				t.Fatalf("err = %v (%T), want a *RequestError; request %+v", err, err, r)
			}
			if re.Param != tc.param || re.Code != tc.code {
				t.Errorf("param %q code %q, want param %q code %q (message %q)", re.Param, re.Code, tc.param, tc.code, re.Message)
			}
			if re.Message == "" || re.Error() != re.Message {
				t.Errorf("message %q, Error() %q", re.Message, re.Error())
			}
			if tc.param != "" && !strings.Contains(re.Message, "'"+tc.param+"'") {
				t.Errorf("message %q does not name %q", re.Message, tc.param)
			}
			if r != (Request{}) {
				t.Errorf("a refused request came back non-zero: %+v", r)
			}
		})
	}
}

func TestScanRequestReadsGoodInput(t *testing.T) {
	type want struct {
		model        string
		stream       bool
		maxTokens    int64
		n            int64
		includeUsage bool
		messages     int
	}
	cases := []struct {
		name string
		body string
		want want
	}{
		{"a minimal request has defaults", `{"model":"gpt-5",` + msgs + `}`, want{"gpt-5", false, 0, 1, false, 1}},
		{"whitespace and key order do not matter", "\n { \"messages\" : [ {\"content\":\"hi\" , \"role\" :\"user\"} ] ,\r\n\t\"model\" : \"m\" } \n", want{"m", false, 0, 1, false, 1}},
		{"a model with escapes is decoded", `{"model":"gpt\u002d5\"x\\",` + msgs + `}`, want{`gpt-5"x\`, false, 0, 1, false, 1}},
		{"a model with a surrogate pair is decoded", `{"model":"m\ud83d\ude00",` + msgs + `}`, want{"m😀", false, 0, 1, false, 1}},
		{"a model with a lone surrogate decodes to U+FFFD", `{"model":"m\ud83d",` + msgs + `}`, want{"m\uFFFD", false, 0, 1, false, 1}},
		{"a model with invalid UTF-8 decodes to U+FFFD as encoding/json does", "{\"model\":\"m\xff\"," + msgs + "}", want{"m\uFFFD", false, 0, 1, false, 1}},
		{"a model under an escaped key is found", `{"mod\u0065l":"m",` + msgs + `}`, want{"m", false, 0, 1, false, 1}},
		{"every role is accepted and messages are counted", `{"model":"m","messages":[{"role":"system","content":"s"},{"role":"developer","content":[{"type":"text","text":"d"}]},{"role":"user","content":"u"},{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c","content":"t"},{"role":"function","name":"f","content":null},{"role":"assistant"}]}`, want{"m", false, 0, 1, false, 7}},
		{"an escaped role is decoded", `{"model":"m","messages":[{"role":"us\u0065r","content":"hi"}]}`, want{"m", false, 0, 1, false, 1}},
		{"stream true is read", `{"model":"m",` + msgs + `,"stream":true}`, want{"m", true, 0, 1, false, 1}},
		{"null stream means no stream", `{"model":"m",` + msgs + `,"stream":null}`, want{"m", false, 0, 1, false, 1}},
		{"include_usage true is read", `{"model":"m",` + msgs + `,"stream":true,"stream_options":{"include_usage":true}}`, want{"m", true, 0, 1, true, 1}},
		{"include_usage false is read", `{"model":"m",` + msgs + `,"stream":true,"stream_options":{"include_usage":false,"include_obfuscation":false}}`, want{"m", true, 0, 1, false, 1}},
		{"null stream_options are fine without stream", `{"model":"m",` + msgs + `,"stream_options":null}`, want{"m", false, 0, 1, false, 1}},
		{"max_tokens is read", `{"model":"m",` + msgs + `,"max_tokens":100}`, want{"m", false, 100, 1, false, 1}},
		{"max_completion_tokens wins over max_tokens", `{"model":"m",` + msgs + `,"max_tokens":100,"max_completion_tokens":50}`, want{"m", false, 50, 1, false, 1}},
		{"max_tokens is used when max_completion_tokens is null", `{"model":"m",` + msgs + `,"max_tokens":100,"max_completion_tokens":null}`, want{"m", false, 100, 1, false, 1}},
		{"the largest int64 max_tokens is read", `{"model":"m",` + msgs + `,"max_tokens":9223372036854775807}`, want{"m", false, 9223372036854775807, 1, false, 1}},
		{"n is read", `{"model":"m",` + msgs + `,"n":128}`, want{"m", false, 0, 128, false, 1}},
		{"null n means one", `{"model":"m",` + msgs + `,"n":null}`, want{"m", false, 0, 1, false, 1}},
		{"temperature and top_p at their bounds are fine", `{"model":"m",` + msgs + `,"temperature":2,"top_p":0}`, want{"m", false, 0, 1, false, 1}},
		{"temperature written with an exponent is fine", `{"model":"m",` + msgs + `,"temperature":15e-1,"top_p":-0.0}`, want{"m", false, 0, 1, false, 1}},
		{"null temperature and top_p are fine", `{"model":"m",` + msgs + `,"temperature":null,"top_p":null}`, want{"m", false, 0, 1, false, 1}},
		{"unknown and repeated unknown fields pass", `{"model":"m",` + msgs + `,"user":"a","user":"b","reasoning_effort":"low","x":{"model":1}}`, want{"m", false, 0, 1, false, 1}},
		{"nested tricky strings are skipped", `{"metadata":{"a":"}{\"][","b":[{"c":"\\"},"\"model\":1"]},"model":"m",` + msgs + `}`, want{"m", false, 0, 1, false, 1}},
		{"huge numbers in unchecked fields pass", `{"model":"m",` + msgs + `,"seed":123456789012345678901234567890,"logit_bias":{"1":1e999}}`, want{"m", false, 0, 1, false, 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ScanRequest([]byte(tc.body))
			if err != nil {
				t.Fatalf("ScanRequest: %v", err)
			}
			got := want{r.Model, r.Stream, r.MaxTokens, r.N, r.IncludeUsage, r.Messages}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestScanRequestRefusesCaseVariantsOfCheckedKeys(t *testing.T) {
	for name, body := range map[string]string{
		"a capitalised model after model":        `{"model":"a","messages":[{"role":"user","content":"x"}],"Model":"b"}`,
		"an upper-case MAX_TOKENS":               `{"model":"a","messages":[{"role":"user","content":"x"}],"MAX_TOKENS":99999}`,
		"a Stream beside stream":                 `{"model":"a","messages":[{"role":"user","content":"x"}],"stream":false,"Stream":true}`,
		"a long s (U+017F) that folds to stream": `{"model":"a","messages":[{"role":"user","content":"x"}],"ſtream":true}`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ScanRequest([]byte(body))
			var re *RequestError
			if !errors.As(err, &re) || re.Code != "duplicate_parameter" {
				t.Fatalf("err = %v, want a duplicate_parameter refusal", err)
			}
		})
	}
	if _, err := ScanRequest([]byte(`{"model":"a","messages":[{"role":"user","content":"x"}],"modelx":1,"Temperature_scale":2}`)); err != nil {
		t.Fatalf("keys that merely resemble checked ones are refused: %v", err)
	}
}

// The parts tests' bodies: messages between partsOpen and partsClose, user
// messages made of content parts.
const (
	partsOpen  = `{"model":"m","messages":[`
	partsClose = `]}`
)

func userParts(parts ...string) string {
	return `{"role":"user","content":[` + strings.Join(parts, ",") + `]}`
}

func TestScanRequestCountsImages(t *testing.T) {
	const (
		https = `{"type":"image_url","image_url":{"url":"https://example.com/cat.png","detail":"high"}}`
		data  = `{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}}`
		text  = `{"type":"text","text":"what is in these images? \"image_url\""}`
	)
	cases := []struct {
		name string
		body string
		want int
	}{
		{"string content holds no image, whatever it says", partsOpen + `{"role":"user","content":"` + strings.ReplaceAll(https, `"`, `\"`) + `"}` + partsClose, 0},
		{"text parts are not images", partsOpen + userParts(text) + partsClose, 0},
		{"an https image counts", partsOpen + userParts(text, https) + partsClose, 1},
		{"an http image counts", partsOpen + userParts(`{"type":"image_url","image_url":{"url":"http://example.com/a.jpg"}}`) + partsClose, 1},
		{"a data: image counts too: a tiny one costs more tokens than its bytes", partsOpen + userParts(data) + partsClose, 1},
		{"images count across parts and messages", partsOpen + userParts(https, data, https) + `,{"role":"assistant","content":"ok"},` + userParts(text, https) + partsClose, 4},
		{"images count in any role", partsOpen + `{"role":"system","content":[` + https + `]},{"role":"assistant","content":[` + https + `]}` + partsClose, 2},
		{"a bare URL string as image_url counts", partsOpen + userParts(`{"type":"image_url","image_url":"https://example.com/a.png"}`) + partsClose, 1},
		{"a bare data: URL string as image_url counts", partsOpen + userParts(`{"type":"image_url","image_url":"data:image/png;base64,AAAA"}`) + partsClose, 1},
		{"an image part without a url counts: we cannot tell what it costs", partsOpen + userParts(`{"type":"image_url","image_url":{"detail":"low"}}`) + partsClose, 1},
		{"an image part without image_url counts", partsOpen + userParts(`{"type":"image_url"}`) + partsClose, 1},
		{"an image part whose url is not a string counts", partsOpen + userParts(`{"type":"image_url","image_url":{"url":["data:x"]}}`) + partsClose, 1},
		{"an image part whose image_url is null counts", partsOpen + userParts(`{"type":"image_url","image_url":null}`) + partsClose, 1},
		{"an image part with a data: and an https url counts", partsOpen + userParts(`{"type":"image_url","image_url":{"url":"data:x","url":"https://x"}}`) + partsClose, 1},
		{"an image part with a repeated image_url counts once", partsOpen + userParts(`{"type":"image_url","image_url":{"url":"data:x"},"image_url":{"url":"https://x"}}`) + partsClose, 1},
		{"a part typed image_url in any repeat counts", partsOpen + userParts(`{"type":"text","type":"image_url","image_url":{"url":"https://x"}}`) + partsClose, 1},
		{"keys in another case count, as Go's encoding/json reads them", partsOpen + userParts(`{"Type":"image_url","IMAGE_URL":{"URL":"https://x"}}`) + partsClose, 1},
		{"keys and type written with escapes count", partsOpen + userParts(`{"typ\u0065":"image\u005furl","imag\u0065_url":{"url":"https://x"}}`) + partsClose, 1},
		{"a type in another case is not image_url", partsOpen + userParts(`{"type":"Image_URL","image_url":{"url":"https://x"}}`) + partsClose, 0},
		{"non-object parts are skipped", partsOpen + userParts(`"https://x"`, `["image_url"]`, `null`, https) + partsClose, 1},
		{"an image_url key without the type is not an image part", partsOpen + userParts(`{"type":"text","text":"a","image_url":{"url":"https://x"}}`) + partsClose, 0},
		{"an image in an unchecked field does not count", `{"model":"m",` + msgs + `,"metadata":{"content":[` + https + `]}}`, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ScanRequest([]byte(tc.body))
			if err != nil {
				t.Fatalf("ScanRequest: %v", err)
			}
			if r.Images != tc.want {
				t.Errorf("Images = %d, want %d", r.Images, tc.want)
			}
		})
	}
}

// A message key in another case is refused as a repeat, as at the top
// level: an upstream decoding with Go's encoding/json would read it as the
// message's content (or role), whose parts were not counted.
func TestScanRequestRefusesMessageKeysInAnotherCase(t *testing.T) {
	const file = `[{"type":"file","file":{"file_id":"file-x"}}]`
	for _, tc := range []struct{ body, param string }{
		{`{"model":"m","messages":[{"role":"user","content":"x","Content":` + file + `}]}`, "messages[0].content"},
		{`{"model":"m","messages":[{"role":"assistant","CONTENT":` + file + `}]}`, "messages[0].content"},
		{`{"model":"m","messages":[{"role":"user","content":"a"},{"role":"user","content":"x","Role":"system"}]}`, "messages[1].role"},
		{`{"model":"m","messages":[{"role":"user","conte\u004et":` + file + `}]}`, "messages[0].content"},
	} {
		_, err := ScanRequest([]byte(tc.body))
		var re *RequestError
		if !errors.As(err, &re) || re.Code != codeDuplicate || re.Param != tc.param {
			t.Errorf("%s: error %v, want duplicate_parameter for %s", tc.body, err, tc.param)
		}
	}
}

func TestScanRequestCountsFiles(t *testing.T) {
	const (
		byID   = `{"type":"file","file":{"file_id":"file-6F2ksmvXxt4VdoqmHRw6kL"}}`
		inline = `{"type":"file","file":{"filename":"a.pdf","file_data":"data:application/pdf;base64,JVBERi0xLjQK"}}`
		image  = `{"type":"image_url","image_url":{"url":"https://example.com/cat.png"}}`
		text   = `{"type":"text","text":"summarize this \"file\""}`
	)
	for _, tc := range []struct {
		name          string
		body          string
		files, images int
	}{
		{"string content holds no file, whatever it says", partsOpen + `{"role":"user","content":"` + strings.ReplaceAll(byID, `"`, `\"`) + `"}` + partsClose, 0, 0},
		{"text parts are not files", partsOpen + userParts(text) + partsClose, 0, 0},
		{"a file by id counts", partsOpen + userParts(text, byID) + partsClose, 1, 0},
		{"an inline file counts: a PDF is billed by its pages, not its bytes", partsOpen + userParts(inline) + partsClose, 1, 0},
		{"files and images are counted apart", partsOpen + userParts(byID, image, inline) + `,{"role":"assistant","content":"ok"},` + userParts(image) + partsClose, 2, 2},
		{"files count in any role", partsOpen + `{"role":"system","content":[` + byID + `]}` + partsClose, 1, 0},
		{"a file part without a file counts: we cannot tell what it costs", partsOpen + userParts(`{"type":"file"}`) + partsClose, 1, 0},
		{"keys in another case count, as Go's encoding/json reads them", partsOpen + userParts(`{"TYPE":"file","File":{"file_id":"x"}}`) + partsClose, 1, 0},
		{"a type written with escapes counts", partsOpen + userParts(`{"typ\u0065":"fil\u0065","file":{"file_id":"x"}}`) + partsClose, 1, 0},
		{"a part typed file in any repeat counts", partsOpen + userParts(`{"type":"text","type":"file","file":{"file_id":"x"}}`) + partsClose, 1, 0},
		{"a part typed both ways counts as both", partsOpen + userParts(`{"type":"file","type":"image_url"}`) + partsClose, 1, 1},
		{"a type in another case is not file", partsOpen + userParts(`{"type":"File","file":{"file_id":"x"}}`) + partsClose, 0, 0},
		{"a file key without the type is not a file part", partsOpen + userParts(`{"type":"text","text":"a","file":{"file_id":"x"}}`) + partsClose, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ScanRequest([]byte(tc.body))
			if err != nil {
				t.Fatalf("ScanRequest: %v", err)
			}
			if r.Files != tc.files || r.Images != tc.images {
				t.Errorf("Files = %d and Images = %d, want %d and %d", r.Files, r.Images, tc.files, tc.images)
			}
		})
	}
}
