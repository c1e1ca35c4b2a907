package anthropic

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/arcaneapi/caddy-arcane/upstream/openai"
)

// ErrNotMessage is wrapped by the error AppendCompletion returns for a body
// that is not a Messages API response.
var ErrNotMessage = errors.New("anthropic: not a Messages API response")

// messageResponse is what the gateway reads of a Messages API response.
type messageResponse struct {
	ID         string `json:"id"`
	Type       string `json:"type"`
	StopReason string `json:"stop_reason"`
	Content    []struct {
		Type  string          `json:"type"`
		Text  string          `json:"text"`
		ID    string          `json:"id"`
		Name  string          `json:"name"`
		Input json.RawMessage `json:"input"`
	} `json:"content"`
	Usage usageFields `json:"usage"`
}

// usageFields is Anthropic's usage object, in messages and in stream events.
// The counts stay raw so that null, absent and odd values read as "not
// reported" (see rawCount) instead of failing a whole answer.
type usageFields struct {
	InputTokens              json.RawMessage `json:"input_tokens"`
	OutputTokens             json.RawMessage `json:"output_tokens"`
	CacheCreationInputTokens json.RawMessage `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     json.RawMessage `json:"cache_read_input_tokens"`
}

func (u *usageFields) reset() {
	u.InputTokens = u.InputTokens[:0]
	u.OutputTokens = u.OutputTokens[:0]
	u.CacheCreationInputTokens = u.CacheCreationInputTokens[:0]
	u.CacheReadInputTokens = u.CacheReadInputTokens[:0]
}

// tokens is Anthropic's usage: input excludes the cache reads and writes.
type tokens struct {
	input, cacheWrite, cacheRead, output int64
}

// read sets the counts u reports, leaving the others as they are, and
// reports whether it set any.
func (t *tokens) read(u *usageFields, output bool) bool {
	set := false
	for _, f := range [...]struct {
		raw json.RawMessage
		n   *int64
	}{
		{u.InputTokens, &t.input},
		{u.CacheCreationInputTokens, &t.cacheWrite},
		{u.CacheReadInputTokens, &t.cacheRead},
		{u.OutputTokens, &t.output},
	} {
		if f.n == &t.output && !output {
			continue
		}
		if n, ok := rawCount(f.raw); ok {
			*f.n, set = n, true
		}
	}
	return set
}

// usage maps Anthropic's counts to OpenAI's, where prompt tokens include
// the ones read from and written to the cache.
func (t tokens) usage() openai.Usage {
	u := openai.Usage{
		PromptTokens:     addCounts(t.input, t.cacheWrite, t.cacheRead),
		CompletionTokens: t.output,
		CachedTokens:     t.cacheRead,
		CacheWriteTokens: t.cacheWrite,
	}
	u.TotalTokens = addCounts(u.PromptTokens, u.CompletionTokens)
	return u
}

// appendUsage appends u as OpenAI's usage object, with cache writes in
// prompt_tokens_details.cache_write_tokens (the name OpenAI's SDKs and
// OpenRouter use) when there are any.
func appendUsage(dst []byte, u openai.Usage) []byte {
	dst = append(dst, `{"prompt_tokens":`...)
	dst = appendInt(dst, u.PromptTokens)
	dst = append(dst, `,"completion_tokens":`...)
	dst = appendInt(dst, u.CompletionTokens)
	dst = append(dst, `,"total_tokens":`...)
	dst = appendInt(dst, u.TotalTokens)
	dst = append(dst, `,"prompt_tokens_details":{"cached_tokens":`...)
	dst = appendInt(dst, u.CachedTokens)
	if u.CacheWriteTokens > 0 {
		// Left out when zero: most OpenAI-shaped answers do not carry it.
		dst = append(dst, `,"cache_write_tokens":`...)
		dst = appendInt(dst, u.CacheWriteTokens)
	}
	return append(dst, "}}"...)
}

// finishReason maps a stop_reason to OpenAI's finish_reason.
func finishReason(stop []byte) string {
	switch string(stop) {
	case "max_tokens", "model_context_window_exceeded":
		return "length"
	case "tool_use":
		return "tool_calls"
	case "refusal":
		return "content_filter"
	}
	// end_turn, stop_sequence, pause_turn (a server tool's long turn,
	// which the gateway never asks for), none and any new value.
	return "stop"
}

// AppendCompletion translates a non-streamed Messages API response into an
// OpenAI chat.completion with the public model id, and returns its usage.
// The id is "chatcmpl-" + the message id; created is now. Text blocks are
// concatenated into message.content (null when there are none), tool_use
// blocks become message.tool_calls, other blocks (thinking, server tools)
// are dropped. It returns an error wrapping ErrNotMessage if resp is not a
// Messages response.
func AppendCompletion(dst, resp []byte, publicModel string, now time.Time) ([]byte, openai.Usage, error) {
	var m messageResponse
	if err := json.Unmarshal(resp, &m); err != nil {
		return dst, openai.Usage{}, fmt.Errorf("%w: %w", ErrNotMessage, err)
	}
	if m.Type != "message" {
		return dst, openai.Usage{}, fmt.Errorf("%w: type %q", ErrNotMessage, m.Type)
	}
	var t tokens
	t.read(&m.Usage, true)
	u := t.usage()

	dst = append(dst, `{"id":`...)
	dst = appendString(dst, "chatcmpl-"+m.ID)
	dst = append(dst, `,"object":"chat.completion","created":`...)
	dst = appendInt(dst, now.Unix())
	dst = append(dst, `,"model":`...)
	dst = appendString(dst, publicModel)
	dst = append(dst, `,"choices":[{"index":0,"message":{"role":"assistant","content":`...)

	var text []byte
	hasText, calls := false, 0
	for _, b := range m.Content {
		switch b.Type {
		case "text":
			hasText = true
			text = append(text, b.Text...)
		case "tool_use":
			calls++
		}
	}
	if hasText {
		dst = appendString(dst, string(text))
	} else {
		dst = append(dst, "null"...)
	}
	dst = append(dst, `,"refusal":null`...)
	if calls > 0 {
		dst = append(dst, `,"tool_calls":[`...)
		k := 0
		for _, b := range m.Content {
			if b.Type != "tool_use" {
				continue
			}
			if k > 0 {
				dst = append(dst, ',')
			}
			k++
			dst = append(dst, `{"id":`...)
			dst = appendString(dst, b.ID)
			dst = append(dst, `,"type":"function","function":{"name":`...)
			dst = appendString(dst, b.Name)
			dst = append(dst, `,"arguments":`...)
			dst = appendString(dst, string(arguments(b.Input)))
			dst = append(dst, "}}"...)
		}
		dst = append(dst, ']')
	}
	dst = append(dst, `},"logprobs":null,"finish_reason":"`...)
	dst = append(dst, finishReason([]byte(m.StopReason))...)
	dst = append(dst, `"}],"usage":`...)
	dst = appendUsage(dst, u)
	return append(dst, '}'), u, nil
}

// arguments is a tool_use input as OpenAI's arguments string holds it:
// compact JSON, "{}" when there is none.
func arguments(input json.RawMessage) []byte {
	if absent(input) {
		return []byte("{}")
	}
	var buf bytes.Buffer
	if json.Compact(&buf, input) != nil {
		return []byte("{}") // unreachable: input came from valid JSON
	}
	return buf.Bytes()
}

// ParseError reads Anthropic's error envelope,
// {"type":"error","error":{"type","message"}}: the error's type (such as
// "overloaded_error") and message. ok is false when body holds no error
// object with a type.
func ParseError(body []byte) (typ, message string, ok bool) {
	var env struct {
		Error *struct {
			Type    json.RawMessage `json:"type"`
			Message json.RawMessage `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &env) != nil || env.Error == nil {
		return "", "", false
	}
	typ, _ = rawString(env.Error.Type)
	message, _ = rawString(env.Error.Message)
	return typ, message, typ != ""
}
