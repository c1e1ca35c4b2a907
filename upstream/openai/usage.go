package openai

import (
	"bytes"
	"errors"
	"math"
	"strconv"
)

// Metering: what the upstream reports (usage) and what it delivered (the
// text a tokenizer counts when no usage arrives). All of it reads responses
// and chunks, which come from upstreams, so it is lenient where ScanRequest
// is strict: a repeated key takes its last value, as encoding/json would, and
// a field of the wrong type counts as absent.

// Usage is the token usage an upstream reported (schema CompletionUsage).
// Reasoning tokens are a part of CompletionTokens, and cached and cache-write
// tokens parts of PromptTokens, not additions to them.
type Usage struct {
	PromptTokens     int64
	CompletionTokens int64
	TotalTokens      int64
	CachedTokens     int64 // prompt_tokens_details.cached_tokens
	// CacheWriteTokens are the prompt tokens the provider wrote to its
	// prompt cache: prompt_tokens_details.cache_write_tokens, which
	// OpenRouter reports (OpenAI itself does not), or Anthropic's
	// cache_creation_input_tokens through the translation.
	CacheWriteTokens int64
	ReasoningTokens  int64 // completion_tokens_details.reasoning_tokens
}

// ParseUsage reads the top-level "usage" object of a response or stream
// chunk. It returns false when there is none: usage absent, null (as on every
// chunk but the usage chunk) or not an object, or obj not a JSON object. A
// count that is missing, negative, fractional or beyond int64 reads as 0
// (12.0 reads as 12); a missing total is the sum of prompt and completion.
// It allocates nothing.
func ParseUsage(obj []byte) (Usage, bool) {
	c := ScanChunk(obj)
	return c.Usage()
}

// usageAt reads the usage object at v, which a walk validated.
func usageAt(obj []byte, v span) Usage {
	var u Usage
	var buf [maxName]byte
	uo := openObject(obj, v)
	for {
		m, ok := uo.next()
		if !ok {
			break
		}
		switch string(m.name(&buf)) {
		case "prompt_tokens":
			u.PromptTokens = count(obj, m.span)
		case "completion_tokens":
			u.CompletionTokens = count(obj, m.span)
		case "total_tokens":
			u.TotalTokens = count(obj, m.span)
		case "prompt_tokens_details":
			u.CachedTokens = detail(obj, m.span, "cached_tokens")
			u.CacheWriteTokens = detail(obj, m.span, "cache_write_tokens")
		case "completion_tokens_details":
			u.ReasoningTokens = detail(obj, m.span, "reasoning_tokens")
		}
	}
	if u.TotalTokens == 0 {
		u.TotalTokens = u.PromptTokens + u.CompletionTokens
		if u.TotalTokens < 0 { // overflowed
			u.TotalTokens = math.MaxInt64
		}
	}
	return u
}

// detail reads one count from a details object at v.
func detail(b []byte, v span, name string) int64 {
	if b[v.start] != '{' {
		return 0
	}
	var n int64
	o := openObject(b, v)
	for {
		m, ok := o.next()
		if !ok {
			break
		}
		if m.is(name) {
			n = count(b, m.span)
		}
	}
	return n
}

// count reads a token count. Upstreams send integer literals; an integral
// number written another way (12.0, 1.2e1) is taken too, anything else is 0.
func count(b []byte, v span) int64 {
	if !isNumber(b[v.start]) {
		return 0
	}
	num := b[v.start:v.end]
	n, err := parseCount(num)
	if !errors.Is(err, errNotInteger) {
		return n // 0 on errRange: negative, or beyond any real count
	}
	f, err := strconv.ParseFloat(string(num), 64)
	if err != nil || f < 0 || f >= math.MaxInt64 || f != math.Trunc(f) {
		return 0
	}
	return int64(f)
}

// IsUsageOnlyChunk reports whether obj is the extra chunk an upstream sends
// for stream_options.include_usage: top-level "choices" an empty array and
// "usage" an object. The proxy drops it from the stream of a client that did
// not ask for usage, after reading it.
func IsUsageOnlyChunk(obj []byte) bool {
	c := ScanChunk(obj)
	return c.UsageOnly()
}

// AppendContent appends the text delivered in obj, a stream chunk or a whole
// response, decoded: for every choice, from its delta (chunk) or message
// (response), the reasoning text some OpenAI-compatible servers send and bill
// as output (reasoning_content, reasoning), the content (a string, or the
// text of content parts), the refusal, and the name and arguments of each
// tool call (input for custom tools; the deprecated function_call too). That
// order is fixed, and pieces are not separated, so the text of successive
// chunks concatenates. This is what a tokenizer counts when the upstream
// reports no usage. An obj that is not a JSON object appends nothing. It
// allocates nothing when dst has room.
func AppendContent(dst, obj []byte) []byte {
	c := ScanChunk(obj)
	return c.AppendContent(dst)
}

// messageText is where a delta or message object keeps its text: the last
// member of each name, as encoding/json would take it.
type messageText struct {
	reasoningContent, reasoning, content, refusal, toolCalls, functionCall span
}

// collect walks the valid object at b[i] ('{') and records its members;
// it returns the offset past the object, or -1 if it is not one.
func (t *messageText) collect(b []byte, i int) int {
	var buf [maxName]byte
	o := object{b: b, i: i + 1}
	for {
		m, ok := o.next()
		if !ok {
			if o.failed() {
				return -1
			}
			return o.i
		}
		switch string(m.name(&buf)) {
		case "reasoning_content":
			t.reasoningContent = m.span
		case "reasoning":
			t.reasoning = m.span
		case "content":
			t.content = m.span
		case "refusal":
			t.refusal = m.span
		case "tool_calls":
			t.toolCalls = m.span
		case "function_call":
			t.functionCall = m.span
		}
	}
}

// append appends the recorded text, in its fixed order.
func (t *messageText) append(dst, b []byte) []byte {
	dst = appendString(dst, b, t.reasoningContent)
	dst = appendString(dst, b, t.reasoning)
	if content := t.content; content.ok() && b[content.start] == '[' { // content parts, from some compatible servers
		a := openArray(b, content)
		for {
			e, ok := a.next()
			if !ok {
				break
			}
			dst = appendFields(dst, b, e, "text", "refusal")
		}
	} else {
		dst = appendString(dst, b, content)
	}
	dst = appendString(dst, b, t.refusal)
	if toolCalls := t.toolCalls; toolCalls.ok() && b[toolCalls.start] == '[' {
		a := openArray(b, toolCalls)
		for {
			e, ok := a.next()
			if !ok {
				break
			}
			function, custom := fields(b, e, "function", "custom")
			dst = appendFields(dst, b, function, "name", "arguments")
			dst = appendFields(dst, b, custom, "name", "input")
		}
	}
	return appendFields(dst, b, t.functionCall, "name", "arguments")
}

// appendChoicesText appends the text of every choice in the array at v, in
// one pass: each choice's members are walked once, descending into its
// delta and message objects where they are, instead of finding each
// choice's end, then its delta and message, then walking those again. The
// array must come from a walk that validated it (ScanChunk's). It reads
// keys itself rather than through object.next, which skips each value:
// splitting next into a key and a value step made every chunk's scan 7-11%
// slower (BenchmarkAppendWithModelChunk, BenchmarkAppendContentChunk).
func appendChoicesText(dst, b []byte, v span) []byte {
	var buf [maxName]byte
	b = b[:v.end]
	i := v.start + 1 // past '['
	for {
		i = skipWS(b, i)
		if i < len(b) && b[i] == ',' {
			i = skipWS(b, i+1)
		}
		if i >= len(b) || b[i] == ']' {
			return dst
		}
		if b[i] != '{' { // not a choice object: no text
			if i = skip(b, i, 0); i < 0 {
				return dst
			}
			continue
		}
		var delta, message messageText
		i++ // past '{'
		for {
			i = skipWS(b, i)
			if i < len(b) && b[i] == ',' {
				i = skipWS(b, i+1)
			}
			if i >= len(b) || b[i] != '"' {
				break // '}', the choice's end
			}
			end := skipValidString(b, i)
			if end < 0 {
				return dst
			}
			key := b[i+1 : end-1]
			i = skipWS(b, end)
			if i >= len(b) || b[i] != ':' {
				return dst
			}
			i = skipWS(b, i+1)
			var into *messageText
			switch string(asciiName(key, bytes.IndexByte(key, '\\') >= 0, &buf)) {
			case "delta":
				into = &delta
			case "message":
				into = &message
			}
			if into != nil {
				// The last member of the name wins, whatever its value.
				*into = messageText{}
				if i < len(b) && b[i] == '{' {
					if i = into.collect(b, i); i < 0 {
						return dst
					}
					continue
				}
			}
			if i = skip(b, i, 0); i < 0 {
				return dst
			}
		}
		if i >= len(b) || b[i] != '}' {
			return dst
		}
		i++
		dst = delta.append(dst, b)
		dst = message.append(dst, b)
	}
}

// fields returns the values of the members named n1 and n2 (the last of
// each, should one repeat) of the value at v if it is an object.
func fields(b []byte, v span, n1, n2 string) (v1, v2 span) {
	if !v.ok() || b[v.start] != '{' {
		return v1, v2
	}
	o := openObject(b, v)
	for {
		m, ok := o.next()
		if !ok {
			break
		}
		switch {
		case m.is(n1):
			v1 = m.span
		case m.is(n2):
			v2 = m.span
		}
	}
	return v1, v2
}

// appendFields appends the string values of the members n1 and n2, in that
// order, of the value at v if it is an object.
func appendFields(dst, b []byte, v span, n1, n2 string) []byte {
	v1, v2 := fields(b, v, n1, n2)
	dst = appendString(dst, b, v1)
	return appendString(dst, b, v2)
}

// appendString appends the decoded value at v if it is a string.
func appendString(dst, b []byte, v span) []byte {
	if !v.ok() || b[v.start] != '"' {
		return dst
	}
	return appendUnescaped(dst, b[v.start+1:v.end-1])
}
