package openai

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestWalkAgreesWithEncodingJSON(t *testing.T) {
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	cases := []struct {
		name  string
		input string
		valid bool
	}{
		{"an empty input is not JSON", "", false},
		{"whitespace alone is not JSON", " \t\r\n", false},
		{"an empty object is JSON", "{}", true},
		{"an object with whitespace everywhere is JSON", " \n{ \"a\" :\t1 ,\r\"b\" : [ ] } \n", true},
		{"a trailing comma in an object is not JSON", `{"a":1,}`, false},
		{"a trailing comma in an array is not JSON", `[1,]`, false},
		{"a missing colon is not JSON", `{"a" 1}`, false},
		{"an unquoted key is not JSON", `{a:1}`, false},
		{"a single-quoted string is not JSON", `{'a':1}`, false},
		{"two values in a row are not JSON", `{}{}`, false},
		{"a value followed by garbage is not JSON", `{"a":1} x`, false},
		{"a mismatched bracket is not JSON", `{"a":[1}]`, false},
		{"an unclosed object is not JSON", `{"a":{"b":1}`, false},
		{"a string holding braces and escaped quotes is JSON", `{"a":"}{\"][\\","b":"\\"}`, true},
		{"an escaped quote does not end a string", `{"a":"\"}`, false},
		{"an escaped backslash before the quote ends a string", `{"a":"\\"}`, true},
		{"a unicode escape is JSON", `"\u00e9\uD83D\uDE00"`, true},
		{"a short unicode escape is not JSON", `"\u00e"`, false},
		{"a non-hex unicode escape is not JSON", `"\u00eg"`, false},
		{"an unknown escape is not JSON", `"\a"`, false},
		{"a raw control character in a string is not JSON", "\"a\tb\"", false},
		{"DEL in a string is JSON", "\"\x7f\"", true},
		{"invalid UTF-8 in a string is accepted, as json.Valid does", "\"\xff\xfe\"", true},
		{"a lone surrogate escape is JSON", `"\ud800"`, true},
		{"zero is a number", `0`, true},
		{"negative zero is a number", `-0`, true},
		{"a leading zero is not a number", `01`, false},
		{"a bare minus is not a number", `-`, false},
		{"a plus sign is not a number", `+1`, false},
		{"a fraction needs digits", `1.`, false},
		{"a fraction needs a leading digit", `.5`, false},
		{"an exponent needs digits", `1e`, false},
		{"an exponent with a sign needs digits", `1e+`, false},
		{"a full number is a number", `-12.5E-3`, true},
		{"a huge number is still JSON", `123456789012345678901234567890e999`, true},
		{"true, false and null are literals", `[true,false,null]`, true},
		{"a truncated literal is not JSON", `tru`, false},
		{"a literal in the wrong case is not JSON", `True`, false},
		{"a literal run into a letter is not JSON", `[truex]`, false},
		{"10000 nested arrays are within the limit", deep(10000), true},
		{"10001 nested arrays exceed the limit", deep(10001), false},
		{"a byte order mark is not JSON", "\xef\xbb\xbf{}", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := []byte(tc.input)
			if got := validValue(b); got != tc.valid {
				t.Errorf("validValue = %v, want %v", got, tc.valid)
			}
			if got := json.Valid(b); got != tc.valid {
				t.Errorf("json.Valid = %v: the case's expectation is wrong", got)
			}
		})
	}
}

func TestTopObjectMembers(t *testing.T) {
	cases := []struct {
		name   string
		input  string
		keys   []string // decoded
		values []string // raw spans
		failed bool
	}{
		{"an empty object has no members", ` { } `, nil, nil, false},
		{"members come in order with raw value spans",
			`{"a":1, "b" : "x}" ,"c":{"d":[1,{"e":"]"}]},"f":null}`,
			[]string{"a", "b", "c", "f"}, []string{`1`, `"x}"`, `{"d":[1,{"e":"]"}]}`, `null`}, false},
		{"escaped keys decode", `{"mod\u0065l":true,"a\"b":false,"\\":0}`,
			[]string{"model", `a"b`, `\`}, []string{`true`, `false`, `0`}, false},
		{"repeated keys are all visited", `{"a":1,"a":2}`, []string{"a", "a"}, []string{"1", "2"}, false},
		{"malformed input after a member fails the walk", `{"a":1,"b":}`, []string{"a"}, []string{"1"}, true},
		{"garbage after the object fails the walk", `{"a":1}]`, []string{"a"}, []string{"1"}, true},
		{"an array is not an object", `[1]`, nil, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := []byte(tc.input)
			o := topObject(b)
			var keys, values []string
			for {
				m, ok := o.next()
				if !ok {
					break
				}
				keys = append(keys, string(appendUnescaped(nil, m.key)))
				values = append(values, string(b[m.start:m.end]))
			}
			if o.failed() != tc.failed {
				t.Errorf("failed = %v, want %v", o.failed(), tc.failed)
			}
			if strings.Join(keys, "|") != strings.Join(tc.keys, "|") || strings.Join(values, "|") != strings.Join(tc.values, "|") {
				t.Errorf("got keys %q values %q, want %q %q", keys, values, tc.keys, tc.values)
			}
		})
	}
}

func TestStringHelpersMatchEncodingJSON(t *testing.T) {
	cases := []struct {
		name string
		s    string
		want string // appendJSONString output
	}{
		{"an empty string", "", `""`},
		{"plain ASCII is kept", "gpt-5.2", `"gpt-5.2"`},
		{"quotes and backslashes are escaped", `a"b\c`, `"a\"b\\c"`},
		{"control characters become \\u00XX", "a\nb\x00\x1f", `"a\u000ab\u0000\u001f"`},
		{"DEL and valid UTF-8 are kept", "\x7fé😀\u2028", "\"\x7fé😀\u2028\""},
		{"each invalid UTF-8 byte becomes \\ufffd", "a\xff\xfeb", `"a\ufffd\ufffdb"`},
		{"a valid U+FFFD is kept", "\uFFFD", "\"\uFFFD\""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := appendJSONString([]byte("x"), tc.s)
			if string(got) != "x"+tc.want {
				t.Fatalf("appendJSONString = %s, want x%s", got, tc.want)
			}
			var fromUs, fromJSON string
			want, _ := json.Marshal(tc.s)
			if err := json.Unmarshal(got[1:], &fromUs); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(want, &fromJSON); err != nil {
				t.Fatal(err)
			}
			if fromUs != fromJSON {
				t.Errorf("decodes to %q, encoding/json's to %q", fromUs, fromJSON)
			}
			// And back: unescaping our output gives what encoding/json decodes.
			if un := appendUnescaped(nil, got[2:len(got)-1]); string(un) != fromJSON {
				t.Errorf("appendUnescaped = %q, want %q", un, fromJSON)
			}
		})
	}
}

func TestUnescapeMatchesEncodingJSON(t *testing.T) {
	raws := []string{
		`plain`, `\"\\\/\b\f\n\r\t`, `\u0041\u00e9\u20ac`, `\ud83d\ude00`, `\ud83d`, `\ude00\ud83d`,
		`\ud83dx`, `\ud83d\u0041`, `\uD83D\uDE00tail`, "raw\xffbyte", "\xed\xa0\x80", `\u0000`,
	}
	for _, raw := range raws {
		var want string
		if err := json.Unmarshal([]byte(`"`+raw+`"`), &want); err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		if got := appendUnescaped(nil, []byte(raw)); string(got) != want {
			t.Errorf("appendUnescaped(%q) = %q, want %q", raw, got, want)
		}
		esc := bytes.IndexByte([]byte(raw), '\\') >= 0
		if isASCII(want) {
			if !equalString([]byte(raw), esc, want) {
				t.Errorf("equalString(%q, %q) = false", raw, want)
			}
		}
	}
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
