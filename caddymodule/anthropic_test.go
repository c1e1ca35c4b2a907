package caddymodule

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"

	"github.com/arcaneapi/caddy-arcane/billing"
)

// End-to-end tests of Anthropic models behind the OpenAI endpoint: a real
// Caddy with a provider of type anthropic whose base_url is an httptest
// server speaking Anthropic's Messages API (it checks the headers and the
// translated body it receives the way Anthropic does, and answers with
// responses and event sequences of the recorded shapes), driven by the
// openai-go SDK and, for the raw framing, plain HTTP.

const (
	// anthropicKeyEnv names the environment variable the Anthropic
	// provider's key is read from, as an operator's config would.
	anthropicKeyEnv = "ARCANE_TEST_ANTHROPIC_KEY"
	// claudeModel is the public id; claudeDeployment Anthropic's own id
	// for it, which clients must never see.
	claudeModel      = "claude-sonnet-4-6"
	claudeDeployment = "claude-sonnet-4-6-20250929"
	// claudeMaxOutput is claudeModel's max_output_tokens.
	claudeMaxOutput = 64000
	// claudeUncapped is a model without max_output_tokens: requests for it
	// get the app's default_max_output_tokens, claudeDefaultOutput.
	claudeUncapped           = "claude-uncapped"
	claudeUncappedDeployment = "claude-haiku-4-5-20251001"
	claudeDefaultOutput      = 3000
	// anthropicVersion is the anthropic-version header Anthropic requires.
	anthropicVersion = "2023-06-01"
)

// claudePrice is claudeModel's price: $3 input, $0.30 cached input, $3.75
// cache write and $15 output per 1M tokens, in micro-dollars.
var claudePrice = testPrice{input: 3_000_000, cachedInput: 300_000, cacheWrite: 3_750_000, output: 15_000_000}

// anthropicCatalog is the arcane block's Anthropic provider at baseURL,
// with its key from anthropicKeyEnv, and the two Claude models on it.
func anthropicCatalog(baseURL string) string {
	return fmt.Sprintf(`provider claude {
			type anthropic
			base_url %s
			api_key {env.%s}
		}
		model %s {
			deploy claude %s
			price input 3.00 output 15.00 cached_input 0.30 cache_write 3.75
			context_length 200000
			max_output_tokens %d
		}
		model %s {
			deploy claude %s
			price input 1.00 output 5.00
		}
		default_max_output_tokens %d
		`, baseURL, anthropicKeyEnv, claudeModel, claudeDeployment, claudeMaxOutput,
		claudeUncapped, claudeUncappedDeployment, claudeDefaultOutput)
}

// anthropicEnv is a running arcane with the Anthropic upstream behind it
// (and chatEnv's OpenAI-shaped one, unused).
type anthropicEnv struct {
	*chatEnv
	// anth is the Anthropic upstream; anthKey the gateway's key for it.
	anth    *fakeUpstream
	anthKey string
}

// anthropicOptions starts an Anthropic upstream answering plainReply, sets
// the provider key in the environment and adds the catalog to opts, for
// startChat or startLimit.
func anthropicOptions(t *testing.T, opts chatOptions) (chatOptions, *fakeUpstream, string) {
	t.Helper()
	key := "sk-ant-api03-" + strings.Repeat("x", 8) + strconv.FormatInt(time.Now().UnixNano(), 36)
	t.Setenv(anthropicKeyEnv, key)
	anth := newFakeUpstream(t)
	anth.handle(anthropicReplies(key, plainReply))
	opts.arcaneExtra = anthropicCatalog(anth.URL) + opts.arcaneExtra
	return opts, anth, key
}

// startAnthropic loads a config serving claudeModel and claudeUncapped
// from a fresh Anthropic upstream, with an account and a key.
func startAnthropic(t *testing.T, opts chatOptions) *anthropicEnv {
	t.Helper()
	opts, anth, key := anthropicOptions(t, opts)
	return &anthropicEnv{chatEnv: startChat(t, opts), anth: anth, anthKey: key}
}

// sdk is an openai-go client for the env's key; with settled, its
// requests return once they have settled (see settledClient).
func (env *anthropicEnv) sdk(settled bool) openai.Client {
	opts := []option.RequestOption{
		option.WithBaseURL(siteURL + "/v1/"),
		option.WithAPIKey(env.key.Key),
		option.WithMaxRetries(0),
		option.WithRequestTimeout(2 * streamWait),
	}
	if settled {
		opts = append(opts, option.WithHTTPClient(settledClient))
	}
	return openai.NewClient(opts...)
}

// --- Anthropic's side of the wire ---

// anthropicUsage is a Messages API usage: input excludes the cache
// writes and reads.
type anthropicUsage struct {
	Input, CacheCreation, CacheRead, Output int64
}

// prompt, cached and total are the usage as OpenAI's clients must see it.
func (u anthropicUsage) prompt() int64 { return u.Input + u.CacheCreation + u.CacheRead }
func (u anthropicUsage) total() int64  { return u.prompt() + u.Output }

// anthropicBlock is a content block of a reply: text, or a tool_use when
// ToolID is set.
type anthropicBlock struct {
	Text string
	// ToolID, ToolName and Input (a JSON object) make a tool_use block.
	ToolID, ToolName, Input string
	// Pieces are the block's deltas in a stream: text_delta texts or
	// input_json_delta partial JSON; joined, Text or Input. Nil sends it
	// in one delta.
	Pieces []string
}

func (b anthropicBlock) isTool() bool { return b.ToolID != "" }

func (b anthropicBlock) pieces() []string {
	if b.Pieces != nil {
		return b.Pieces
	}
	if b.isTool() {
		return []string{"", b.Input} // Anthropic opens with an empty piece
	}
	return []string{b.Text}
}

// anthropicReply is what the upstream answers: a message, or its events.
type anthropicReply struct {
	ID           string
	Blocks       []anthropicBlock
	StopReason   string
	StopSequence string
	Usage        anthropicUsage
}

// text is the reply's text blocks joined.
func (rep anthropicReply) text() string {
	var b strings.Builder
	for _, bl := range rep.Blocks {
		if !bl.isTool() {
			b.WriteString(bl.Text)
		}
	}
	return b.String()
}

// plainReply is the usual answer, with prompt caching at work.
var plainReply = anthropicReply{
	ID:         "msg_01XFDUDYJgAACzvnptvVoYEL",
	Blocks:     []anthropicBlock{{Text: "Hello! How can I help you today?", Pieces: []string{"Hello", "! How can I", " help you today?"}}},
	StopReason: "end_turn",
	Usage:      anthropicUsage{Input: 21, CacheCreation: 188, CacheRead: 2095, Output: 12},
}

func (u anthropicUsage) wire(output int64) map[string]any {
	return map[string]any{
		"input_tokens":                u.Input,
		"cache_creation_input_tokens": u.CacheCreation,
		"cache_read_input_tokens":     u.CacheRead,
		"cache_creation":              map[string]any{"ephemeral_5m_input_tokens": u.CacheCreation, "ephemeral_1h_input_tokens": 0},
		"output_tokens":               output,
		"service_tier":                "standard",
	}
}

// explain is an SDK error with the message of the answer, for failures.
func explain(err error) string {
	var apierr *openai.Error
	if errors.As(err, &apierr) {
		return fmt.Sprintf("%v: %s", err, apierr.Message)
	}
	return err.Error()
}

// show writes an optional number for a failure message.
func show[T int64 | float64](p *T) string {
	if p == nil {
		return "absent"
	}
	return fmt.Sprint(*p)
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// anthropicMessageJSON is the non-streamed Message for rep.
func anthropicMessageJSON(model string, rep anthropicReply) []byte {
	content := []any{}
	for _, b := range rep.Blocks {
		if b.isTool() {
			content = append(content, map[string]any{"type": "tool_use", "id": b.ToolID, "name": b.ToolName, "input": json.RawMessage(b.Input)})
		} else {
			content = append(content, map[string]any{"type": "text", "text": b.Text})
		}
	}
	return mustJSON(map[string]any{
		"id": rep.ID, "type": "message", "role": "assistant", "model": model, "content": content,
		"stop_reason": rep.StopReason, "stop_sequence": nullable(rep.StopSequence), "usage": rep.Usage.wire(rep.Usage.Output),
	})
}

// writeAnthropicEvent writes one named SSE event and flushes it.
func writeAnthropicEvent(w http.ResponseWriter, name string, data any) {
	fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, mustJSON(data))
	_ = http.NewResponseController(w).Flush()
}

func startAnthropicStream(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("Request-Id", "req_011CUnNXLpZ1Qd6J4BnFd3cq")
	w.WriteHeader(http.StatusOK)
}

// writeMessageStart opens a stream: the headers, message_start with the
// input and cache counts (and Anthropic's placeholder output count of 1).
func writeMessageStart(w http.ResponseWriter, model string, rep anthropicReply) {
	startAnthropicStream(w)
	writeAnthropicEvent(w, "message_start", map[string]any{"type": "message_start", "message": map[string]any{
		"id": rep.ID, "type": "message", "role": "assistant", "model": model, "content": []any{},
		"stop_reason": nil, "stop_sequence": nil, "usage": rep.Usage.wire(1),
	}})
}

// writeBlock writes content block i: its start, its deltas and its stop,
// with a ping after the first start as Anthropic sends one.
func writeBlock(w http.ResponseWriter, i int, b anthropicBlock) {
	start := map[string]any{"type": "text", "text": ""}
	if b.isTool() {
		start = map[string]any{"type": "tool_use", "id": b.ToolID, "name": b.ToolName, "input": map[string]any{}}
	}
	writeAnthropicEvent(w, "content_block_start", map[string]any{"type": "content_block_start", "index": i, "content_block": start})
	if i == 0 {
		writeAnthropicEvent(w, "ping", map[string]any{"type": "ping"})
	}
	for _, p := range b.pieces() {
		delta := map[string]any{"type": "text_delta", "text": p}
		if b.isTool() {
			delta = map[string]any{"type": "input_json_delta", "partial_json": p}
		}
		writeAnthropicEvent(w, "content_block_delta", map[string]any{"type": "content_block_delta", "index": i, "delta": delta})
	}
	writeAnthropicEvent(w, "content_block_stop", map[string]any{"type": "content_block_stop", "index": i})
}

// writeMessageEnd ends a stream: message_delta with the stop reason and
// the output count (a running total), then message_stop.
func writeMessageEnd(w http.ResponseWriter, rep anthropicReply) {
	writeAnthropicEvent(w, "message_delta", map[string]any{"type": "message_delta",
		"delta": map[string]any{"stop_reason": rep.StopReason, "stop_sequence": nullable(rep.StopSequence)},
		"usage": map[string]any{"output_tokens": rep.Usage.Output}})
	writeAnthropicEvent(w, "message_stop", map[string]any{"type": "message_stop"})
}

// writeAnthropicStream writes rep as Anthropic streams it.
func writeAnthropicStream(w http.ResponseWriter, model string, rep anthropicReply) {
	writeMessageStart(w, model, rep)
	for i, b := range rep.Blocks {
		writeBlock(w, i, b)
	}
	writeMessageEnd(w, rep)
}

// writeAnthropicError answers with Anthropic's error envelope.
func writeAnthropicError(w http.ResponseWriter, status int, typ, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Request-Id", "req_011CUnNXLpZ1Qd6J4BnFd3cq")
	w.WriteHeader(status)
	_, _ = w.Write(mustJSON(map[string]any{"type": "error", "error": map[string]any{"type": typ, "message": message},
		"request_id": "req_011CUnNXLpZ1Qd6J4BnFd3cq"}))
}

// anthropicReplies answers every request that Anthropic would accept with
// rep, streamed or not as asked, and refuses the others as Anthropic does.
func anthropicReplies(key string, rep anthropicReply) upstreamHandler {
	return anthropicHandler(key, func(w http.ResponseWriter, _ *http.Request, req anthropicRequest) {
		if req.Stream {
			writeAnthropicStream(w, req.Model, rep)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Request-Id", "req_011CUnNXLpZ1Qd6J4BnFd3cq")
		_, _ = w.Write(anthropicMessageJSON(req.Model, rep))
	})
}

// anthropicHandler checks a request as Anthropic does (path, key, version,
// body) and passes the ones it accepts to reply.
func anthropicHandler(key string, reply func(w http.ResponseWriter, r *http.Request, req anthropicRequest)) upstreamHandler {
	return func(w http.ResponseWriter, r *http.Request, body []byte) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/messages" {
			writeAnthropicError(w, http.StatusNotFound, "not_found_error", "Not Found")
			return
		}
		if r.Header.Get("X-Api-Key") != key {
			writeAnthropicError(w, http.StatusUnauthorized, "authentication_error", "invalid x-api-key")
			return
		}
		if r.Header.Get("Anthropic-Version") != anthropicVersion {
			writeAnthropicError(w, http.StatusBadRequest, "invalid_request_error", "anthropic-version: header is required and must be 2023-06-01")
			return
		}
		req, msg := parseAnthropicRequest(body)
		if msg != "" {
			writeAnthropicError(w, http.StatusBadRequest, "invalid_request_error", msg)
			return
		}
		reply(w, r, req)
	}
}

// anthropicRequestBlock is a content block of a request.
type anthropicRequestBlock struct {
	Type         string          `json:"type"`
	Text         *string         `json:"text"`
	ID           string          `json:"id"`
	Name         string          `json:"name"`
	Input        json.RawMessage `json:"input"`
	ToolUseID    string          `json:"tool_use_id"`
	Content      json.RawMessage `json:"content"`
	IsError      bool            `json:"is_error"`
	Source       json.RawMessage `json:"source"`
	CacheControl json.RawMessage `json:"cache_control"`
}

// anthropicTurn is a request message, its string shorthand read as one
// text block.
type anthropicTurn struct {
	Role    string
	Content []anthropicRequestBlock
}

func (m *anthropicTurn) UnmarshalJSON(b []byte) error {
	var raw struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	m.Role = raw.Role
	var s string
	if json.Unmarshal(raw.Content, &s) == nil {
		m.Content = []anthropicRequestBlock{{Type: "text", Text: &s}}
		return nil
	}
	return json.Unmarshal(raw.Content, &m.Content)
}

// anthropicRequest is a Messages API request body.
type anthropicRequest struct {
	Model         string          `json:"model"`
	MaxTokens     *int64          `json:"max_tokens"`
	System        json.RawMessage `json:"system"`
	Messages      []anthropicTurn `json:"messages"`
	Temperature   *float64        `json:"temperature"`
	TopP          *float64        `json:"top_p"`
	TopK          *int64          `json:"top_k"`
	StopSequences []string        `json:"stop_sequences"`
	Stream        bool            `json:"stream"`
	Tools         []struct {
		Name        string          `json:"name"`
		Description string          `json:"description"`
		InputSchema json.RawMessage `json:"input_schema"`
	} `json:"tools"`
	ToolChoice *struct {
		Type                   string `json:"type"`
		Name                   string `json:"name"`
		DisableParallelToolUse bool   `json:"disable_parallel_tool_use"`
	} `json:"tool_choice"`
	Metadata *struct {
		UserID string `json:"user_id"`
	} `json:"metadata"`
}

// anthropicFields are the top-level members the Messages API accepts; it
// refuses any other ("Extra inputs are not permitted").
var anthropicFields = []string{"model", "max_tokens", "messages", "system", "temperature", "top_p", "top_k",
	"stop_sequences", "stream", "tools", "tool_choice", "metadata", "thinking", "service_tier", "container",
	"mcp_servers", "context_management", "output_config", "cache_control", "inference_geo"}

// parseAnthropicRequest decodes a body and checks it as Anthropic does,
// with the strict turn rules of its older versions and of the clouds that
// lag behind: roles alternate, the first is user, no content is empty,
// every tool_use is answered by a tool_result in the next turn.
// It returns Anthropic's message for a request it refuses.
func parseAnthropicRequest(body []byte) (anthropicRequest, string) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return anthropicRequest{}, "There was an issue with your request body: " + err.Error()
	}
	for name := range top {
		if !slices.Contains(anthropicFields, name) {
			return anthropicRequest{}, name + ": Extra inputs are not permitted"
		}
	}
	var req anthropicRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return req, "There was an issue with your request body: " + err.Error()
	}
	switch {
	case req.Model == "":
		return req, "model: Field required"
	case req.MaxTokens == nil:
		return req, "max_tokens: Field required"
	case *req.MaxTokens < 1:
		return req, "max_tokens: the gateway must never ask for no output"
	case len(req.Messages) == 0:
		return req, "messages: at least one message is required"
	case req.Temperature != nil && (*req.Temperature < 0 || *req.Temperature > 1):
		return req, "temperature: Input should be less than or equal to 1"
	case req.Messages[0].Role != "user":
		return req, "messages: first message must use the \"user\" role"
	}
	for i, m := range req.Messages {
		if m.Role != "user" && m.Role != "assistant" {
			return req, fmt.Sprintf("messages.%d.role: Input should be 'user' or 'assistant'", i)
		}
		if i > 0 && req.Messages[i-1].Role == m.Role {
			return req, "messages: roles must alternate between \"user\" and \"assistant\", but found multiple \"" + m.Role + "\" roles in a row"
		}
		if len(m.Content) == 0 && i < len(req.Messages)-1 {
			return req, fmt.Sprintf("messages.%d: all messages must have non-empty content except for the optional final assistant message", i)
		}
		for j, b := range m.Content {
			if b.Type == "text" && (b.Text == nil || strings.TrimSpace(*b.Text) == "") {
				return req, fmt.Sprintf("messages.%d.content.%d.text: text content blocks must contain non-whitespace text", i, j)
			}
			if b.Type == "tool_use" {
				if len(b.Input) == 0 || b.Input[0] != '{' {
					return req, fmt.Sprintf("messages.%d.content.%d.tool_use.input: Input should be a valid dictionary", i, j)
				}
				answered := false
				if i+1 < len(req.Messages) {
					for _, nb := range req.Messages[i+1].Content {
						answered = answered || nb.Type == "tool_result" && nb.ToolUseID == b.ID
					}
				}
				if !answered && i+1 < len(req.Messages) {
					return req, fmt.Sprintf("messages.%d: `tool_use` ids were found without `tool_result` blocks immediately after: %s", i, b.ID)
				}
			}
		}
	}
	return req, ""
}

// systemTexts is the request's system prompt, as its texts.
func (req anthropicRequest) systemTexts(t testing.TB) []string {
	t.Helper()
	if len(req.System) == 0 {
		return nil
	}
	var s string
	if json.Unmarshal(req.System, &s) == nil {
		return []string{s}
	}
	var blocks []anthropicRequestBlock
	if err := json.Unmarshal(req.System, &blocks); err != nil {
		t.Fatalf("system is neither a string nor blocks: %s", req.System)
	}
	var texts []string
	for _, b := range blocks {
		if b.Type != "text" || b.Text == nil {
			t.Errorf("a system block is not text: %+v", b)
			continue
		}
		texts = append(texts, *b.Text)
	}
	return texts
}

// describeTurns writes the turns as one line each, the blocks in a
// readable shorthand, for comparing with what a test expects.
func describeTurns(t testing.TB, turns []anthropicTurn) []string {
	t.Helper()
	var out []string
	for _, m := range turns {
		var blocks []string
		for _, b := range m.Content {
			switch b.Type {
			case "text":
				blocks = append(blocks, fmt.Sprintf("text %q", *b.Text))
			case "tool_use":
				blocks = append(blocks, fmt.Sprintf("tool_use %s %s %s", b.ID, b.Name, canonicalJSON(t, b.Input)))
			case "tool_result":
				blocks = append(blocks, fmt.Sprintf("tool_result %s %q", b.ToolUseID, toolResultText(t, b.Content)))
			default:
				blocks = append(blocks, b.Type)
			}
		}
		out = append(out, m.Role+": "+strings.Join(blocks, " | "))
	}
	return out
}

// toolResultText is a tool_result's content, a string or text blocks.
func toolResultText(t testing.TB, raw json.RawMessage) string {
	t.Helper()
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var blocks []anthropicRequestBlock
	if err := json.Unmarshal(raw, &blocks); err != nil {
		t.Fatalf("tool_result content %s is neither a string nor blocks", raw)
	}
	var b strings.Builder
	for _, bl := range blocks {
		if bl.Text != nil {
			b.WriteString(*bl.Text)
		}
	}
	return b.String()
}

// canonicalJSON re-encodes a JSON value with sorted keys and no spaces.
func canonicalJSON(t testing.TB, raw []byte) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("not JSON: %v; %s", err, raw)
	}
	return string(mustJSON(v))
}

// lastAnthropic returns the last request the Anthropic upstream got, after
// checking it came as Anthropic wants (POST /v1/messages, the gateway's
// key as x-api-key, anthropic-version) for deployment, with nothing of
// the client's credentials or headers.
func (env *anthropicEnv) lastAnthropic(t testing.TB, deployment string) anthropicRequest {
	t.Helper()
	got := env.anth.last(t)
	if got.Method != http.MethodPost || got.Path != "/v1/messages" {
		t.Errorf("the upstream got %s %s, want POST /v1/messages", got.Method, got.Path)
	}
	if k := got.Header.Values("X-Api-Key"); len(k) != 1 || k[0] != env.anthKey {
		t.Errorf("x-api-key %q, want the provider's key from %s", k, anthropicKeyEnv)
	}
	if v := got.Header.Values("Anthropic-Version"); len(v) != 1 || v[0] != anthropicVersion {
		t.Errorf("anthropic-version %q, want %s", v, anthropicVersion)
	}
	if ct := got.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	if a := got.Header.Get("Authorization"); a != "" {
		t.Errorf("the upstream got an Authorization header %q: Anthropic's key goes in x-api-key only", a)
	}
	var dump strings.Builder
	_ = got.Header.Write(&dump)
	dump.Write(got.Body)
	for _, secret := range []string{env.key.Key, "ak_", env.providerKey, "s3cret-cookie", "203.0.113.7"} {
		if strings.Contains(dump.String(), secret) {
			t.Errorf("%q reached the Anthropic upstream:\n%s", secret, dump.String())
		}
	}
	req, msg := parseAnthropicRequest(got.Body)
	if msg != "" {
		t.Fatalf("Anthropic would refuse the request: %s\n%s", msg, got.Body)
	}
	if req.Model != deployment {
		t.Errorf("upstream model %q, want the deployment's %q", req.Model, deployment)
	}
	return req
}

// --- the client's side ---

// anthropicChunk is what the tests read of a chunk or a completion.
type anthropicChunk struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []struct {
		Index int `json:"index"`
		Delta struct {
			Role      *string        `json:"role"`
			Content   *string        `json:"content"`
			ToolCalls []toolCallWire `json:"tool_calls"`
		} `json:"delta"`
		Message struct {
			Role      string         `json:"role"`
			Content   *string        `json:"content"`
			ToolCalls []toolCallWire `json:"tool_calls"`
		} `json:"message"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *wireUsage `json:"usage"`
	Error *struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Code    *string `json:"code"`
	} `json:"error"`
}

type toolCallWire struct {
	Index    *int   `json:"index"`
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string  `json:"name"`
		Arguments *string `json:"arguments"`
	} `json:"function"`
}

func decodeAnthropicChunk(t testing.TB, payload string) anthropicChunk {
	t.Helper()
	var c anthropicChunk
	if err := json.Unmarshal([]byte(payload), &c); err != nil {
		t.Fatalf("not a JSON chunk: %v; %s", err, head(payload))
	}
	return c
}

// streamChunks checks a raw stream: data events only, exactly one [DONE]
// and it last, every chunk a chat.completion.chunk of the public model
// with the same id (chatcmpl- and the message id) and created. It returns
// the chunks, [DONE] left out, raw and decoded.
func streamChunks(t testing.TB, resp chatResponse, msgID string) ([]string, []anthropicChunk) {
	t.Helper()
	if resp.Status != http.StatusOK {
		t.Fatalf("status %d, want 200; body %s", resp.Status, resp.Body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q, want text/event-stream", ct)
	}
	events := splitEvents(t, resp.Body)
	if n := strings.Count(string(resp.Body), "[DONE]"); n != 1 || events[len(events)-1] != "[DONE]" {
		t.Fatalf("the stream has %d [DONE], want exactly one, last:\n%s", n, resp.Body)
	}
	if strings.Contains(string(resp.Body), claudeDeployment) || strings.Contains(string(resp.Body), "event:") {
		t.Errorf("the stream names the deployment's model or has Anthropic's event lines:\n%s", resp.Body)
	}
	raw := events[:len(events)-1]
	chunks := make([]anthropicChunk, len(raw))
	for i, e := range raw {
		c := decodeAnthropicChunk(t, e)
		if c.ID != "chatcmpl-"+msgID || c.Object != "chat.completion.chunk" || c.Model != claudeModel {
			t.Errorf("chunk %d: id %q, object %q, model %q; want chatcmpl-%s, chat.completion.chunk, %s", i, c.ID, c.Object, c.Model, msgID, claudeModel)
		}
		if c.Created != chunks[0].Created && i > 0 {
			t.Errorf("chunk %d: created %d, the first chunk's %d", i, c.Created, chunks[0].Created)
		}
		for _, ch := range c.Choices {
			if ch.Index != 0 {
				t.Errorf("chunk %d has choice index %d", i, ch.Index)
			}
		}
		chunks[i] = c
	}
	if len(chunks) == 0 || len(chunks[0].Choices) != 1 || chunks[0].Choices[0].Delta.Role == nil || *chunks[0].Choices[0].Delta.Role != "assistant" {
		t.Errorf("the first chunk does not carry the assistant role: %s", head(events[0]))
	}
	return raw, chunks
}

// finishReasons returns the finish reasons the chunks carry, in order.
func finishReasons(chunks []anthropicChunk) []string {
	var out []string
	for _, c := range chunks {
		for _, ch := range c.Choices {
			if ch.FinishReason != nil {
				out = append(out, *ch.FinishReason)
			}
		}
	}
	return out
}

// streamedText is the content the chunks carry, joined.
func streamedText(chunks []anthropicChunk) string {
	var b strings.Builder
	for _, c := range chunks {
		for _, ch := range c.Choices {
			if ch.Delta.Content != nil {
				b.WriteString(*ch.Delta.Content)
			}
		}
	}
	return b.String()
}

// assertWireUsage checks an OpenAI usage against Anthropic's figures.
func assertWireUsage(t testing.TB, got *wireUsage, want anthropicUsage) {
	t.Helper()
	if got == nil {
		t.Fatal("no usage")
	}
	if got.PromptTokens != want.prompt() || got.CompletionTokens != want.Output || got.TotalTokens != want.total() ||
		got.PromptTokensDetails.CachedTokens != want.CacheRead || got.PromptTokensDetails.CacheWriteTokens != want.CacheCreation {
		t.Errorf("usage %+v; want prompt %d (input+cache creation+cache read), completion %d, total %d, cached %d, cache write %d",
			*got, want.prompt(), want.Output, want.total(), want.CacheRead, want.CacheCreation)
	}
}

// assertSDKUsage checks the SDK's view of a usage.
func assertSDKUsage(t testing.TB, got openai.CompletionUsage, want anthropicUsage) {
	t.Helper()
	if got.PromptTokens != want.prompt() || got.CompletionTokens != want.Output || got.TotalTokens != want.total() ||
		got.PromptTokensDetails.CachedTokens != want.CacheRead || got.PromptTokensDetails.CacheWriteTokens != want.CacheCreation {
		t.Errorf("usage prompt %d, completion %d, total %d, cached %d, cache write %d; want %d, %d, %d, %d, %d",
			got.PromptTokens, got.CompletionTokens, got.TotalTokens, got.PromptTokensDetails.CachedTokens, got.PromptTokensDetails.CacheWriteTokens,
			want.prompt(), want.Output, want.total(), want.CacheRead, want.CacheCreation)
	}
}

// anthropicErrorBody is the client's error envelope, code and param nil
// when null.
type anthropicErrorBody struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// clientError checks an error answer is OpenAI's envelope (exactly its
// four keys, as JSON) with status, type and code ("" for null), and
// returns it.
func clientError(t testing.TB, resp chatResponse, status int, typ, code string) anthropicErrorBody {
	t.Helper()
	if resp.Status != status {
		t.Fatalf("status %d, want %d; body %s", resp.Status, status, resp.Body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var env map[string]map[string]json.RawMessage
	if err := json.Unmarshal(resp.Body, &env); err != nil || len(env) != 1 || len(env["error"]) != 4 {
		t.Fatalf("not OpenAI's error envelope with four keys: %v; %s", err, resp.Body)
	}
	var e struct{ Error anthropicErrorBody }
	if err := json.Unmarshal(resp.Body, &e); err != nil {
		t.Fatal(err)
	}
	if e.Error.Message == "" || e.Error.Type != typ {
		t.Errorf("type %q, message %q; want %q and a message", e.Error.Type, e.Error.Message, typ)
	}
	if gotCode := e.Error.Code; (code == "") != (gotCode == nil) || gotCode != nil && *gotCode != code {
		t.Errorf("code %s, want %q", env["error"]["code"], code)
	}
	return e.Error
}

// --- 1. plain text ---

func TestAnthropicPlainText(t *testing.T) {
	env := startAnthropic(t, chatOptions{})
	client := env.sdk(false)
	want := plainReply.Usage
	params := openai.ChatCompletionNewParams{
		Model:    claudeModel,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hello.")},
	}
	checkUpstream := func(t *testing.T, stream bool) {
		t.Helper()
		req := env.lastAnthropic(t, claudeDeployment)
		if got := describeTurns(t, req.Messages); !slices.Equal(got, []string{`user: text "Say hello."`}) {
			t.Errorf("upstream messages %q, want the one user turn", got)
		}
		if req.Stream != stream || req.MaxTokens == nil || *req.MaxTokens != claudeMaxOutput || req.System != nil {
			t.Errorf("upstream stream %v, max_tokens %s, system %s; want %v, the model's %d, none", req.Stream, show(req.MaxTokens), req.System, stream, claudeMaxOutput)
		}
		accept := "application/json"
		if stream {
			accept = "text/event-stream"
		}
		if got := env.anth.last(t).Header.Get("Accept"); got != accept {
			t.Errorf("Accept %q, want %q", got, accept)
		}
	}

	t.Run("a completion through the SDK has the text, stop, the public model and cache-aware usage", func(t *testing.T) {
		resp, err := client.Chat.Completions.New(context.Background(), params)
		if err != nil {
			t.Fatalf("Chat.Completions.New: %s", explain(err))
		}
		if resp.ID != "chatcmpl-"+plainReply.ID || resp.Model != claudeModel || resp.Object != "chat.completion" {
			t.Errorf("id %q, model %q, object %q; want chatcmpl-%s, %s, chat.completion", resp.ID, resp.Model, resp.Object, plainReply.ID, claudeModel)
		}
		if len(resp.Choices) != 1 || resp.Choices[0].Message.Content != plainReply.text() ||
			resp.Choices[0].FinishReason != "stop" || resp.Choices[0].Message.Role != "assistant" || len(resp.Choices[0].Message.ToolCalls) != 0 {
			t.Errorf("choices %s, want one assistant message %q finished with stop", resp.JSON.Choices.Raw(), plainReply.text())
		}
		assertSDKUsage(t, resp.Usage, want)
		if strings.Contains(resp.RawJSON(), claudeDeployment) {
			t.Errorf("the answer names the deployment's model: %s", resp.RawJSON())
		}
		checkUpstream(t, false)
	})

	t.Run("a raw completion is one chat.completion in OpenAI's shape", func(t *testing.T) {
		resp := postChat(t, env.key.Key, chatBody(claudeModel, ""))
		if resp.Status != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("status %d, Content-Type %q; body %s", resp.Status, resp.Header.Get("Content-Type"), resp.Body)
		}
		var c anthropicChunk
		if err := json.Unmarshal(resp.Body, &c); err != nil {
			t.Fatalf("decoding %s: %v", resp.Body, err)
		}
		if c.ID != "chatcmpl-"+plainReply.ID || c.Object != "chat.completion" || c.Model != claudeModel || c.Created <= 0 {
			t.Errorf("head %+v, want chatcmpl-%s, chat.completion, %s and a created time", c, plainReply.ID, claudeModel)
		}
		if len(c.Choices) != 1 || c.Choices[0].Message.Content == nil || *c.Choices[0].Message.Content != plainReply.text() ||
			c.Choices[0].FinishReason == nil || *c.Choices[0].FinishReason != "stop" {
			t.Errorf("choices in %s, want the text finished with stop", resp.Body)
		}
		assertWireUsage(t, c.Usage, want)
		if strings.Contains(string(resp.Body), claudeDeployment) || strings.Contains(string(resp.Body), `"msg_01`) {
			t.Errorf("the answer shows Anthropic's ids: %s", resp.Body)
		}
	})

	for _, includeUsage := range []bool{true, false} {
		t.Run(fmt.Sprintf("a stream through the SDK with include_usage %v", includeUsage), func(t *testing.T) {
			p := params
			if includeUsage {
				p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
			}
			stream := client.Chat.Completions.NewStreaming(context.Background(), p)
			defer stream.Close()
			var chunks []openai.ChatCompletionChunk
			for stream.Next() {
				chunks = append(chunks, stream.Current())
			}
			if err := stream.Err(); err != nil {
				t.Fatalf("stream: %s", explain(err))
			}
			var content strings.Builder
			var finishes []string
			for i, c := range chunks {
				if c.Model != claudeModel || c.ID != "chatcmpl-"+plainReply.ID {
					t.Errorf("chunk %d: model %q, id %q; want %s and chatcmpl-%s", i, c.Model, c.ID, claudeModel, plainReply.ID)
				}
				for _, ch := range c.Choices {
					content.WriteString(ch.Delta.Content)
					if ch.FinishReason != "" {
						finishes = append(finishes, ch.FinishReason)
					}
				}
				if c.JSON.Usage.Valid() && !(includeUsage && i == len(chunks)-1) {
					t.Errorf("chunk %d of %d carries usage: %s", i, len(chunks), c.RawJSON())
				}
			}
			if content.String() != plainReply.text() || !slices.Equal(finishes, []string{"stop"}) {
				t.Errorf("content %q, finish reasons %q; want %q and one stop", content.String(), finishes, plainReply.text())
			}
			checkUpstream(t, true)
			if !includeUsage {
				return
			}
			last := chunks[len(chunks)-1]
			if len(last.Choices) != 0 || !last.JSON.Usage.Valid() {
				t.Fatalf("the last chunk is not the usage chunk: %s", last.RawJSON())
			}
			assertSDKUsage(t, last.Usage, want)
		})
	}

	t.Run("a raw stream is role, deltas, finish and usage chunks, then one [DONE]", func(t *testing.T) {
		resp := postChat(t, env.key.Key, chatBody(claudeModel, `,"stream":true,"stream_options":{"include_usage":true}`))
		raw, chunks := streamChunks(t, resp, plainReply.ID)
		pieces := plainReply.Blocks[0].Pieces
		if len(chunks) != len(pieces)+3 {
			t.Fatalf("%d chunks, want role, %d deltas, finish and usage:\n%s", len(chunks), len(pieces), resp.Body)
		}
		for i, p := range pieces {
			c := chunks[1+i]
			if len(c.Choices) != 1 || c.Choices[0].Delta.Content == nil || *c.Choices[0].Delta.Content != p || c.Choices[0].FinishReason != nil {
				t.Errorf("chunk %d is %s, want the delta %q", 1+i, raw[1+i], p)
			}
		}
		if got := finishReasons(chunks); !slices.Equal(got, []string{"stop"}) || chunks[len(pieces)+1].Choices[0].FinishReason == nil {
			t.Errorf("finish reasons %q, want one stop in the chunk after the deltas", got)
		}
		last := chunks[len(chunks)-1]
		if len(last.Choices) != 0 {
			t.Errorf("the usage chunk has choices: %s", raw[len(raw)-1])
		}
		assertWireUsage(t, last.Usage, want)
		for i, c := range chunks[:len(chunks)-1] {
			if c.Usage != nil {
				t.Errorf("chunk %d carries usage: %s", i, raw[i])
			}
		}
	})
}

// --- 2. system, developer and multi-turn ---

func TestAnthropicSystemAndMultiTurn(t *testing.T) {
	env := startAnthropic(t, chatOptions{})
	client := env.sdk(false)
	messages := []openai.ChatCompletionMessageParamUnion{
		openai.SystemMessage("You are a terse assistant."),
		openai.UserMessage("What is the capital of France?"),
		openai.AssistantMessage("Paris."),
		openai.DeveloperMessage("Answer in one word."),
		openai.UserMessage("And of Italy?"),
		openai.UserMessage([]openai.ChatCompletionContentPartUnionParam{openai.TextContentPart("Spell it in capitals.")}),
	}
	wantSystem := []string{"You are a terse assistant.", "Answer in one word."}
	wantTurns := []string{
		`user: text "What is the capital of France?"`,
		`assistant: text "Paris."`,
		`user: text "And of Italy?" | text "Spell it in capitals."`,
	}
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprintf("stream %v: system and developer go top-level, same-role turns merge", stream), func(t *testing.T) {
			params := openai.ChatCompletionNewParams{Model: claudeModel, Messages: messages}
			if stream {
				s := client.Chat.Completions.NewStreaming(context.Background(), params)
				var content strings.Builder
				for s.Next() {
					for _, ch := range s.Current().Choices {
						content.WriteString(ch.Delta.Content)
					}
				}
				if err := s.Err(); err != nil {
					t.Fatalf("stream: %s", explain(err))
				}
				s.Close()
				if content.String() != plainReply.text() {
					t.Errorf("content %q, want %q", content.String(), plainReply.text())
				}
			} else {
				resp, err := client.Chat.Completions.New(context.Background(), params)
				if err != nil {
					t.Fatalf("Chat.Completions.New: %s", explain(err))
				}
				if resp.Choices[0].Message.Content != plainReply.text() {
					t.Errorf("content %q", resp.Choices[0].Message.Content)
				}
			}
			req := env.lastAnthropic(t, claudeDeployment)
			if got := req.systemTexts(t); !slices.Equal(got, wantSystem) {
				t.Errorf("upstream system %q, want %q", got, wantSystem)
			}
			if got := describeTurns(t, req.Messages); !slices.Equal(got, wantTurns) {
				t.Errorf("upstream turns\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantTurns, "\n"))
			}
		})
	}
}

// --- 3. tools ---

// weatherTool is the client's tool.
var weatherTool = shared.FunctionDefinitionParam{
	Name:        "get_weather",
	Description: openai.String("Get the current weather in a given location"),
	Parameters: shared.FunctionParameters{
		"type": "object",
		"properties": map[string]any{
			"location": map[string]any{"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
			"unit":     map[string]any{"type": "string", "enum": []string{"celsius", "fahrenheit"}},
		},
		"required": []string{"location"},
	},
}

// toolReply calls the weather tool twice after a sentence; in a stream
// the arguments come in pieces, and a text block stands between the two
// calls, so Anthropic's block indexes (1 and 3) differ from OpenAI's tool
// call indexes (0 and 1).
var toolReply = anthropicReply{
	ID: "msg_01Aq9w938a90dw8q",
	Blocks: []anthropicBlock{
		{Text: "I'll check the weather in both cities.", Pieces: []string{"I'll check the weather", " in both cities."}},
		{ToolID: "toolu_01A09q90qw90lq917835lq9", ToolName: "get_weather", Input: `{"location": "San Francisco, CA", "unit": "celsius"}`,
			Pieces: []string{"", `{"location": "San`, ` Francisco, CA", "unit"`, `: "celsius"}`}},
		{Text: " And now Paris.", Pieces: []string{" And now Paris."}},
		{ToolID: "toolu_01T1x1fJ34qAmk2tNTrN7Up6", ToolName: "get_weather", Input: `{"location": "Paris, France"}`,
			Pieces: []string{"", `{"locati`, `on": "Paris, France"}`}},
	},
	StopReason: "tool_use",
	Usage:      anthropicUsage{Input: 472, Output: 118},
}

// toolAnswer is the reply to the follow-up that carries the results.
var toolAnswer = anthropicReply{
	ID:         "msg_01Ck2BfRvqoZmKJqNaz3yWsn",
	Blocks:     []anthropicBlock{{Text: "San Francisco is at 15°C and Paris at 22°C."}},
	StopReason: "end_turn",
	Usage:      anthropicUsage{Input: 702, Output: 24},
}

func TestAnthropicToolCallRoundTrip(t *testing.T) {
	env := startAnthropic(t, chatOptions{})
	client := env.sdk(false)
	question := openai.UserMessage("What's the weather in San Francisco and in Paris?")
	tools := []openai.ChatCompletionToolUnionParam{openai.ChatCompletionFunctionTool(weatherTool)}
	wantSchema := canonicalJSON(t, mustJSON(weatherTool.Parameters))
	checkTools := func(t *testing.T, req anthropicRequest, choiceType, choiceName string) {
		t.Helper()
		if len(req.Tools) != 1 || req.Tools[0].Name != "get_weather" || req.Tools[0].Description != weatherTool.Description.Value ||
			canonicalJSON(t, req.Tools[0].InputSchema) != wantSchema {
			t.Errorf("upstream tools %+v, want get_weather with its description and parameters as input_schema", req.Tools)
		}
		if req.ToolChoice == nil || req.ToolChoice.Type != choiceType || req.ToolChoice.Name != choiceName {
			t.Errorf("upstream tool_choice %+v, want type %q name %q", req.ToolChoice, choiceType, choiceName)
		}
	}
	var calls []openai.ChatCompletionMessageToolCallUnion
	var assistant openai.ChatCompletionMessage

	t.Run("tool_use blocks become tool_calls with JSON string arguments", func(t *testing.T) {
		env.anth.handle(anthropicReplies(env.anthKey, toolReply))
		resp, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model: claudeModel, Messages: []openai.ChatCompletionMessageParamUnion{question}, Tools: tools,
			ToolChoice: openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("required")},
		})
		if err != nil {
			t.Fatalf("Chat.Completions.New: %s", explain(err))
		}
		checkTools(t, env.lastAnthropic(t, claudeDeployment), "any", "")
		if len(resp.Choices) != 1 {
			t.Fatalf("choices %s", resp.JSON.Choices.Raw())
		}
		ch := resp.Choices[0]
		if ch.FinishReason != "tool_calls" || ch.Message.Content != toolReply.text() {
			t.Errorf("finish %q, content %q; want tool_calls and %q", ch.FinishReason, ch.Message.Content, toolReply.text())
		}
		assistant, calls = ch.Message, ch.Message.ToolCalls
		wantCalls := []anthropicBlock{toolReply.Blocks[1], toolReply.Blocks[3]}
		if len(calls) != len(wantCalls) {
			t.Fatalf("tool_calls %s, want two", ch.Message.JSON.ToolCalls.Raw())
		}
		for i, w := range wantCalls {
			c := calls[i]
			if c.ID != w.ToolID || c.Type != "function" || c.Function.Name != w.ToolName {
				t.Errorf("call %d: id %q type %q name %q; want %s function %s", i, c.ID, c.Type, c.Function.Name, w.ToolID, w.ToolName)
			}
			var args map[string]any
			if err := json.Unmarshal([]byte(c.Function.Arguments), &args); err != nil || canonicalJSON(t, []byte(c.Function.Arguments)) != canonicalJSON(t, []byte(w.Input)) {
				t.Errorf("call %d arguments %q (%v), want the input %s as a JSON string", i, c.Function.Arguments, err, w.Input)
			}
		}
		assertSDKUsage(t, resp.Usage, toolReply.Usage)
	})

	t.Run("the results go back as tool_use and one user turn of tool_result blocks", func(t *testing.T) {
		if len(calls) != 2 {
			t.Skip("no tool calls to answer")
		}
		env.anth.handle(anthropicReplies(env.anthKey, toolAnswer))
		resp, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model: claudeModel, Tools: tools,
			ToolChoice: openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("auto")},
			Messages: []openai.ChatCompletionMessageParamUnion{
				question,
				assistant.ToParam(),
				openai.ToolMessage("15 degrees, sunny", calls[0].ID),
				openai.ToolMessage([]openai.ChatCompletionContentPartTextParam{{Text: "22 degrees, cloudy"}}, calls[1].ID),
			},
		})
		if err != nil {
			t.Fatalf("Chat.Completions.New: %s", explain(err))
		}
		if resp.Choices[0].Message.Content != toolAnswer.text() || resp.Choices[0].FinishReason != "stop" {
			t.Errorf("answer %q finished %q, want %q and stop", resp.Choices[0].Message.Content, resp.Choices[0].FinishReason, toolAnswer.text())
		}
		req := env.lastAnthropic(t, claudeDeployment)
		checkTools(t, req, "auto", "")
		want := []string{
			`user: text "What's the weather in San Francisco and in Paris?"`,
			`assistant: text "I'll check the weather in both cities. And now Paris." | ` +
				`tool_use toolu_01A09q90qw90lq917835lq9 get_weather {"location":"San Francisco, CA","unit":"celsius"} | ` +
				`tool_use toolu_01T1x1fJ34qAmk2tNTrN7Up6 get_weather {"location":"Paris, France"}`,
			`user: tool_result toolu_01A09q90qw90lq917835lq9 "15 degrees, sunny" | tool_result toolu_01T1x1fJ34qAmk2tNTrN7Up6 "22 degrees, cloudy"`,
		}
		if got := describeTurns(t, req.Messages); !slices.Equal(got, want) {
			t.Errorf("upstream turns\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})

	t.Run("a stream's input_json_delta pieces become argument chunks of tool calls 0 and 1", func(t *testing.T) {
		env.anth.handle(anthropicReplies(env.anthKey, toolReply))
		body := string(mustJSON(map[string]any{
			"model": claudeModel, "stream": true,
			"messages":    []any{map[string]any{"role": "user", "content": "What's the weather in San Francisco and in Paris?"}},
			"tools":       []any{map[string]any{"type": "function", "function": weatherTool}},
			"tool_choice": map[string]any{"type": "function", "function": map[string]any{"name": "get_weather"}},
		}))
		resp := postChat(t, env.key.Key, body)
		raw, chunks := streamChunks(t, resp, toolReply.ID)
		checkTools(t, env.lastAnthropic(t, claudeDeployment), "tool", "get_weather")

		// Every tool call delta, in order: index, id, name, arguments.
		type callDelta struct {
			index    int
			id, name string
			args     string
		}
		var deltas []callDelta
		for i, c := range chunks {
			for _, ch := range c.Choices {
				for _, tc := range ch.Delta.ToolCalls {
					if tc.Index == nil || tc.Function.Arguments == nil {
						t.Fatalf("chunk %d has a tool call without index or arguments: %s", i, raw[i])
					}
					deltas = append(deltas, callDelta{*tc.Index, tc.ID, tc.Function.Name, *tc.Function.Arguments})
				}
			}
		}
		a, b := toolReply.Blocks[1], toolReply.Blocks[3]
		var want []callDelta
		want = append(want, callDelta{0, a.ToolID, a.ToolName, ""})
		for _, p := range a.Pieces[1:] {
			want = append(want, callDelta{index: 0, args: p})
		}
		want = append(want, callDelta{1, b.ToolID, b.ToolName, ""})
		for _, p := range b.Pieces[1:] {
			want = append(want, callDelta{index: 1, args: p})
		}
		if !reflect.DeepEqual(deltas, want) {
			t.Errorf("tool call deltas\n%+v\nwant\n%+v", deltas, want)
		}
		if got := streamedText(chunks); got != toolReply.text() {
			t.Errorf("streamed text %q, want %q", got, toolReply.text())
		}
		if got := finishReasons(chunks); !slices.Equal(got, []string{"tool_calls"}) {
			t.Errorf("finish reasons %q, want one tool_calls", got)
		}
	})

	t.Run("the SDK accumulates the streamed calls", func(t *testing.T) {
		env.anth.handle(anthropicReplies(env.anthKey, toolReply))
		stream := client.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
			Model: claudeModel, Messages: []openai.ChatCompletionMessageParamUnion{question}, Tools: tools,
		})
		defer stream.Close()
		var acc openai.ChatCompletionAccumulator
		for stream.Next() {
			if !acc.AddChunk(stream.Current()) {
				t.Fatalf("the accumulator refused a chunk: %s", stream.Current().RawJSON())
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("stream: %s", explain(err))
		}
		if len(acc.Choices) != 1 {
			t.Fatalf("accumulated %d choices", len(acc.Choices))
		}
		msg := acc.Choices[0].Message
		if acc.Choices[0].FinishReason != "tool_calls" || msg.Content != toolReply.text() || len(msg.ToolCalls) != 2 {
			t.Fatalf("accumulated finish %q, content %q, %d calls", acc.Choices[0].FinishReason, msg.Content, len(msg.ToolCalls))
		}
		for i, w := range []anthropicBlock{toolReply.Blocks[1], toolReply.Blocks[3]} {
			c := msg.ToolCalls[i]
			if c.ID != w.ToolID || c.Function.Name != w.ToolName || c.Function.Arguments != w.Input {
				t.Errorf("call %d: %q %q %q, want %q %q %q", i, c.ID, c.Function.Name, c.Function.Arguments, w.ToolID, w.ToolName, w.Input)
			}
		}
		if req := env.lastAnthropic(t, claudeDeployment); req.ToolChoice != nil {
			t.Errorf("no tool_choice was sent, yet the upstream got %+v", req.ToolChoice)
		}
	})
}

// --- 4. stops, max_tokens and temperature ---

func TestAnthropicStopReasonsAndParameters(t *testing.T) {
	env := startAnthropic(t, chatOptions{})

	t.Run("stop reasons map to finish reasons, streamed and not", func(t *testing.T) {
		for _, tc := range []struct {
			stop, sequence, finish string
		}{
			{stop: "end_turn", finish: "stop"},
			{stop: "max_tokens", finish: "length"},
			{stop: "stop_sequence", sequence: "END", finish: "stop"},
			{stop: "tool_use", finish: "tool_calls"},
			{stop: "refusal", finish: "content_filter"},
		} {
			rep := plainReply
			rep.StopReason, rep.StopSequence = tc.stop, tc.sequence
			env.anth.handle(anthropicReplies(env.anthKey, rep))
			resp := postChat(t, env.key.Key, chatBody(claudeModel, `,"stop":["END"]`))
			if resp.Status != http.StatusOK {
				t.Fatalf("%s: status %d; body %s", tc.stop, resp.Status, resp.Body)
			}
			c := decodeAnthropicChunk(t, string(resp.Body))
			if len(c.Choices) != 1 || c.Choices[0].FinishReason == nil || *c.Choices[0].FinishReason != tc.finish {
				t.Errorf("%s: completion %s, want finish_reason %s", tc.stop, resp.Body, tc.finish)
			}
			_, chunks := streamChunks(t, postChat(t, env.key.Key, chatBody(claudeModel, `,"stop":["END"],"stream":true`)), rep.ID)
			if got := finishReasons(chunks); !slices.Equal(got, []string{tc.finish}) {
				t.Errorf("%s: streamed finish reasons %q, want %s", tc.stop, got, tc.finish)
			}
			if got := env.lastAnthropic(t, claudeDeployment).StopSequences; !slices.Equal(got, []string{"END"}) {
				t.Errorf("upstream stop_sequences %q, want [END]", got)
			}
		}
	})
	env.anth.handle(anthropicReplies(env.anthKey, plainReply))

	t.Run("max_tokens upstream: the client's, else the model's cap, else the default", func(t *testing.T) {
		for _, tc := range []struct {
			name, model, extra string
			want               int64
		}{
			{"max_tokens", claudeModel, `,"max_tokens":300`, 300},
			{"max_completion_tokens", claudeModel, `,"max_completion_tokens":200`, 200},
			{"max_completion_tokens over max_tokens", claudeModel, `,"max_tokens":900,"max_completion_tokens":250`, 250},
			{"a value over the model's cap is lowered to it", claudeModel, `,"max_tokens":100000`, claudeMaxOutput},
			{"none: the model's max_output_tokens", claudeModel, "", claudeMaxOutput},
			{"none for a model without a cap: default_max_output_tokens", claudeUncapped, "", claudeDefaultOutput},
			{"the client's for a model without a cap", claudeUncapped, `,"max_tokens":7000`, 7000},
		} {
			resp := postChat(t, env.key.Key, chatBody(tc.model, tc.extra))
			if resp.Status != http.StatusOK {
				t.Fatalf("%s: status %d; body %s", tc.name, resp.Status, resp.Body)
			}
			if c := decodeAnthropicChunk(t, string(resp.Body)); c.Model != tc.model {
				t.Errorf("%s: model %q, want %q", tc.name, c.Model, tc.model)
			}
			deployment := claudeDeployment
			if tc.model == claudeUncapped {
				deployment = claudeUncappedDeployment
			}
			if got := env.lastAnthropic(t, deployment).MaxTokens; got == nil || *got != tc.want {
				t.Errorf("%s: upstream max_tokens %s, want %d", tc.name, show(got), tc.want)
			}
		}
	})

	t.Run("temperature over 1 is clamped to 1, stop is a list without blank entries", func(t *testing.T) {
		client := env.sdk(false)
		for _, tc := range []struct {
			temperature float64
			want        float64
		}{{1.5, 1}, {2, 1}, {1, 1}, {0.25, 0.25}, {0, 0}} {
			_, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
				Model:       claudeModel,
				Messages:    []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hello.")},
				Temperature: openai.Float(tc.temperature),
				Stop:        openai.ChatCompletionNewParamsStopUnion{OfStringArray: []string{"\n\nHuman:", "  "}},
			})
			if err != nil {
				t.Fatalf("temperature %v: %s", tc.temperature, explain(err))
			}
			req := env.lastAnthropic(t, claudeDeployment)
			if req.Temperature == nil || *req.Temperature != tc.want {
				t.Errorf("temperature %v reached the upstream as %s, want %v", tc.temperature, show(req.Temperature), tc.want)
			}
			if !slices.Equal(req.StopSequences, []string{"\n\nHuman:"}) {
				t.Errorf("upstream stop_sequences %q, want only the non-blank one", req.StopSequences)
			}
		}
		resp := postChat(t, env.key.Key, chatBody(claudeModel, `,"stop":"STOP"`))
		if resp.Status != http.StatusOK {
			t.Fatalf("status %d; body %s", resp.Status, resp.Body)
		}
		if req := env.lastAnthropic(t, claudeDeployment); !slices.Equal(req.StopSequences, []string{"STOP"}) || req.Temperature != nil {
			t.Errorf("upstream stop_sequences %q and temperature %s, want [STOP] and none", req.StopSequences, show(req.Temperature))
		}
	})
}

// --- 5. cached tokens billed ---

// cachedReply reads most of its prompt from the cache and writes some.
var cachedReply = anthropicReply{
	ID:         "msg_01NnKDfL8AGuYNSCSC7iPrVm",
	Blocks:     []anthropicBlock{{Text: "The contract's term is two years.", Pieces: []string{"The contract's", " term is", " two years."}}},
	StopReason: "end_turn",
	Usage:      anthropicUsage{Input: 57, CacheCreation: 1200, CacheRead: 3400, Output: 86},
}

func TestAnthropicCachedUsageIsBilled(t *testing.T) {
	env := startAnthropic(t, chatOptions{balance: true})
	env.anth.handle(anthropicReplies(env.anthKey, cachedReply))
	const opening = 10 * billing.Dollar
	creditAccount(t, env.acct.ID, opening.String())
	spent := billing.Amount(0)
	u := cachedReply.Usage
	// Plain input at $3, cache reads at $0.30, cache writes at $3.75 and
	// output at $15 per 1M tokens: in 1e-12 dollars, summed, then rounded
	// once to micro-dollars.
	pico := u.Input*3_000_000 + u.CacheRead*300_000 + u.CacheCreation*3_750_000 + u.Output*15_000_000
	wantCost := billing.Amount((pico + 500_000) / 1_000_000)
	if wantCost != 6981 || wantCost != claudePrice.costWithWrites(u.prompt(), u.CacheRead, u.CacheCreation, u.Output) ||
		wantCost == claudePrice.cost(u.prompt(), u.CacheRead, u.Output) {
		t.Fatalf("test setup: cost %s", wantCost)
	}
	wantRow := func(id string) ledgerRow {
		return ledgerRow{RequestID: id, KeyID: env.key.ID, Model: claudeModel, Deployment: "claude/" + claudeDeployment,
			PromptTokens: u.prompt(), CachedTokens: u.CacheRead, CacheWriteTokens: u.CacheCreation, CompletionTokens: u.Output,
			Basis: "upstream", Outcome: "ok"}
	}

	for _, tc := range []struct {
		name, extra string
		// usageAt says where usage.cost is shown: the completion, the
		// last chunk, or nowhere.
		usageAt string
	}{
		{"a completion", "", "completion"},
		{"a stream with include_usage", `,"stream":true,"stream_options":{"include_usage":true}`, "chunk"},
		{"a stream without include_usage", `,"stream":true`, ""},
	} {
		t.Run(tc.name+" is charged at the cache-read and cache-write prices, as usage.cost says", func(t *testing.T) {
			resp := settledChat(t, http.MethodPost, env.key.Key, chatBody(claudeModel, tc.extra))
			if resp.Status != http.StatusOK {
				t.Fatalf("status %d; body %s", resp.Status, resp.Body)
			}
			id := requestID(t, resp.Header)
			assertCharge(t, requestRow(t, env.acct.ID, id), wantRow(id), wantCost)
			spent += wantCost
			assertFunds(t, env.acct.ID, opening-spent)
			switch tc.usageAt {
			case "completion":
				if got := usageCost(t, string(resp.Body)); got != wantCost.String() {
					t.Errorf("usage.cost %s, want %s", got, wantCost)
				}
				assertWireUsage(t, decodeAnthropicChunk(t, string(resp.Body)).Usage, u)
			case "chunk":
				raw, chunks := streamChunks(t, resp, cachedReply.ID)
				if got := usageCost(t, raw[len(raw)-1]); got != wantCost.String() {
					t.Errorf("usage.cost %s, want %s", got, wantCost)
				}
				assertWireUsage(t, chunks[len(chunks)-1].Usage, u)
			default:
				_, chunks := streamChunks(t, resp, cachedReply.ID)
				for _, c := range chunks {
					if c.Usage != nil {
						t.Errorf("a chunk carries usage though the client did not ask: %+v", c)
					}
				}
			}
		})
	}

	t.Run("the SDK reads the same cost", func(t *testing.T) {
		client := env.sdk(true)
		resp, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model: claudeModel, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hi.")},
		})
		if err != nil {
			t.Fatalf("Chat.Completions.New: %s", explain(err))
		}
		if got := resp.Usage.JSON.ExtraFields["cost"].Raw(); got != wantCost.String() {
			t.Errorf("usage.cost %s, want %s", got, wantCost)
		}
		assertSDKUsage(t, resp.Usage, u)
		spent += wantCost
		assertFunds(t, env.acct.ID, opening-spent)
	})
	t.Run("the token metrics count the cache reads and writes", func(t *testing.T) {
		s := scrapeMetrics(t)
		for kind, want := range map[string]int64{"prompt": 4 * u.prompt(), "cached": 4 * u.CacheRead, "cache_write": 4 * u.CacheCreation, "completion": 4 * u.Output} {
			if got := s.value("caddy_arcane_tokens_total", "model", claudeModel, "kind", kind); got != float64(want) {
				t.Errorf("caddy_arcane_tokens_total{model=%q,kind=%q} = %v, want %d (four requests)", claudeModel, kind, got, want)
			}
		}
	})
	assertAudit(t)
}

// A prompt the provider writes whole to its cache costs the cache-write
// price for every token, more than the input price: the hold must cover it,
// so an account funded with exactly the hold pays the whole cost and one
// funded a micro-dollar less is refused before anything is sent.
func TestAnthropicWholePromptCacheWriteFitsTheHold(t *testing.T) {
	env := startAnthropic(t, chatOptions{balance: true})
	const maxTokens = 500
	for _, tc := range []struct{ name, extra string }{
		{"a completion", ""},
		{"a stream", `,"stream":true,"stream_options":{"include_usage":true}`},
	} {
		t.Run(tc.name+" whose whole prompt is a cache write costs exactly its hold", func(t *testing.T) {
			body := chatBody(claudeModel, fmt.Sprintf(`,"max_tokens":%d`, maxTokens)+tc.extra)
			// The most a request can report: as many prompt tokens as its
			// body has bytes, all written to the cache, and max_tokens out.
			prompt := int64(len(body))
			rep := cachedReply
			rep.Usage = anthropicUsage{CacheCreation: prompt, Output: maxTokens}
			env.anth.handle(anthropicReplies(env.anthKey, rep))
			// Every prompt token at $3.75 and every output token at $15 per
			// 1M, in 1e-12 dollars, rounded once.
			hold := billing.Amount((prompt*3_750_000 + maxTokens*15_000_000 + 500_000) / 1_000_000)
			if hold != claudePrice.worst(body, 1, maxTokens) || hold <= claudePrice.cost(prompt, 0, maxTokens) {
				t.Fatalf("test setup: hold %s", hold)
			}

			short, shortKey := fundedKey(t, hold-1)
			if resp := settledChat(t, http.MethodPost, shortKey.Key, body); resp.Status != http.StatusForbidden {
				t.Errorf("an account one micro-dollar short of the hold: status %d, want 403; body %s", resp.Status, resp.Body)
			}
			assertFunds(t, short.ID, hold-1)

			acct, key := fundedKey(t, hold)
			resp := settledChat(t, http.MethodPost, key.Key, body)
			assertOK(t, resp)
			id := requestID(t, resp.Header)
			assertCharge(t, requestRow(t, acct.ID, id), ledgerRow{RequestID: id, KeyID: key.ID, Model: claudeModel,
				Deployment: "claude/" + claudeDeployment, PromptTokens: prompt, CacheWriteTokens: prompt,
				CompletionTokens: maxTokens, Basis: "upstream", Outcome: "ok"}, hold)
			assertFunds(t, acct.ID, 0)
		})
	}
	assertAudit(t)
}

// The token budget of arcane_limit is corrected with the translated usage:
// prompt tokens include the cache writes and reads.
func TestAnthropicUsageCorrectsTheTokenLimit(t *testing.T) {
	const budget = 20000
	opts, anth, key := anthropicOptions(t, chatOptions{})
	env := &anthropicEnv{chatEnv: startLimit(t, fmt.Sprintf("tokens %d 1m", budget), opts).chatEnv, anth: anth, anthKey: key}
	env.anth.handle(anthropicReplies(env.anthKey, cachedReply))
	body := chatBody(claudeModel, `,"max_tokens":1000`)
	reserved := int64(len(body)) + 1000
	used := cachedReply.Usage.total()
	if used <= reserved || used+reserved > budget {
		t.Fatalf("test setup: used %d, reserved %d", used, reserved)
	}

	resp := settledChat(t, http.MethodPost, env.key.Key, body)
	assertOK(t, resp)
	if got := resp.Header.Get("X-Ratelimit-Remaining-Tokens"); got != strconv.FormatInt(budget-reserved, 10) {
		t.Errorf("remaining tokens %s after the first reservation, want %d", got, budget-reserved)
	}
	resp = settledChat(t, http.MethodPost, env.key.Key, body)
	assertOK(t, resp)
	if got := resp.Header.Get("X-Ratelimit-Remaining-Tokens"); got != strconv.FormatInt(budget-used-reserved, 10) {
		t.Errorf("remaining tokens %s, want %d: the first request's %d tokens (cache included) and this one's reservation",
			got, budget-used-reserved, used)
	}
}

// --- 6. mid-stream error ---

// brokenReply starts answering, then fails.
var brokenReply = anthropicReply{
	ID:     "msg_01Dq6KzyRp2Yt3YaV7rBxk4C",
	Blocks: []anthropicBlock{{Text: "Once upon a time, in a land far away", Pieces: []string{"Once upon", " a time,", " in a land", " far away"}}},
	Usage:  anthropicUsage{Input: 1520, CacheRead: 0},
}

func TestAnthropicMidStreamError(t *testing.T) {
	env := startAnthropic(t, chatOptions{balance: true})
	const opening = 10 * billing.Dollar
	creditAccount(t, env.acct.ID, opening.String())
	spent := billing.Amount(0)
	delivered := brokenReply.text()
	completion := int64(tokenCounter.Count(claudeModel, []byte(delivered)))
	prompt := brokenReply.Usage.prompt()
	cost := claudePrice.cost(prompt, 0, completion)
	whole := claudePrice.cost(prompt, 0, claudeMaxOutput)
	if completion <= 0 || cost <= 0 {
		t.Fatalf("test setup: %d tokens, cost %s", completion, cost)
	}

	for _, tc := range []struct {
		name string
		end  func(w http.ResponseWriter)
		code string
		msg  string
	}{
		{name: "an overloaded_error event", code: "upstream_overloaded", msg: "Overloaded", end: func(w http.ResponseWriter) {
			writeAnthropicEvent(w, "error", map[string]any{"type": "error", "error": map[string]any{"type": "overloaded_error", "message": "Overloaded"}})
		}},
		{name: "a stream that breaks off without message_stop", code: "upstream_error", end: func(http.ResponseWriter) {}},
	} {
		t.Run(tc.name+" ends the stream in band and is charged for what was delivered", func(t *testing.T) {
			env.anth.handle(anthropicHandler(env.anthKey, func(w http.ResponseWriter, _ *http.Request, req anthropicRequest) {
				writeMessageStart(w, req.Model, brokenReply)
				b := brokenReply.Blocks[0]
				writeAnthropicEvent(w, "content_block_start", map[string]any{"type": "content_block_start", "index": 0, "content_block": map[string]any{"type": "text", "text": ""}})
				for _, p := range b.Pieces {
					writeAnthropicEvent(w, "content_block_delta", map[string]any{"type": "content_block_delta", "index": 0, "delta": map[string]any{"type": "text_delta", "text": p}})
				}
				tc.end(w)
			}))
			resp := settledChat(t, http.MethodPost, env.key.Key, chatBody(claudeModel, `,"stream":true,"stream_options":{"include_usage":true}`))
			raw, chunks := streamChunks(t, resp, brokenReply.ID)
			pieces := brokenReply.Blocks[0].Pieces
			if len(chunks) != len(pieces)+2 {
				t.Fatalf("%d chunks, want role, %d deltas and the error chunk, no usage chunk:\n%s", len(chunks), len(pieces), resp.Body)
			}
			if got := streamedText(chunks); got != delivered {
				t.Errorf("delivered %q, want %q", got, delivered)
			}
			last := chunks[len(chunks)-1]
			if last.Error == nil || last.Error.Type != "server_error" || last.Error.Code == nil || *last.Error.Code != tc.code ||
				tc.msg != "" && last.Error.Message != tc.msg {
				t.Errorf("the last chunk is %s, want an in-band server_error %s", raw[len(raw)-1], tc.code)
			}
			if got := finishReasons(chunks); !slices.Equal(got, []string{"error"}) || len(last.Choices) != 1 || last.Choices[0].FinishReason == nil {
				t.Errorf("finish reasons %q, want one error, in the error chunk", got)
			}
			id := requestID(t, resp.Header)
			row := requestRow(t, env.acct.ID, id)
			assertCharge(t, row, ledgerRow{RequestID: id, KeyID: env.key.ID, Model: claudeModel, Deployment: "claude/" + claudeDeployment,
				PromptTokens: prompt, CompletionTokens: completion, Basis: "counted", Outcome: "upstream_error"}, cost)
			if cost >= whole {
				t.Errorf("charged %s, not less than a whole answer's %s", cost, whole)
			}
			spent += cost
			assertFunds(t, env.acct.ID, opening-spent)
		})
	}

	overloaded := map[string]any{"type": "error", "error": map[string]any{"type": "overloaded_error", "message": "Overloaded"}}
	// noCharge checks a request left a zero-cost upstream_error row.
	noCharge := func(t *testing.T, resp chatResponse) {
		t.Helper()
		row := requestRow(t, env.acct.ID, requestID(t, resp.Header))
		if row.cost(t) != 0 || row.Outcome != "upstream_error" || row.PromptTokens != 0 || row.CompletionTokens != 0 {
			t.Errorf("row %+v, want an upstream_error charging nothing", row)
		}
		assertFunds(t, env.acct.ID, opening-spent)
	}

	for _, tc := range []struct {
		name, typ  string
		status     int
		code       string
		retryAfter string
	}{
		{"overloaded_error", "overloaded_error", http.StatusServiceUnavailable, "upstream_overloaded", "1"},
		{"api_error", "api_error", http.StatusBadGateway, "upstream_error", ""},
	} {
		t.Run("an "+tc.name+" event before anything was sent is an error answer, not charged", func(t *testing.T) {
			resetHealth()
			env.anth.handle(anthropicHandler(env.anthKey, func(w http.ResponseWriter, _ *http.Request, _ anthropicRequest) {
				startAnthropicStream(w)
				writeAnthropicEvent(w, "error", map[string]any{"type": "error", "error": map[string]any{"type": tc.typ, "message": "Overloaded"}})
			}))
			resp := settledChat(t, http.MethodPost, env.key.Key, chatBody(claudeModel, `,"stream":true`))
			clientError(t, resp, tc.status, "server_error", tc.code)
			if got := resp.Header.Get("Retry-After"); got != tc.retryAfter {
				t.Errorf("Retry-After %q, want %q", got, tc.retryAfter)
			}
			noCharge(t, resp)
		})
	}

	t.Run("an error event right after message_start ends the stream in band and charges nothing", func(t *testing.T) {
		resetHealth()
		env.anth.handle(anthropicHandler(env.anthKey, func(w http.ResponseWriter, _ *http.Request, req anthropicRequest) {
			writeMessageStart(w, req.Model, brokenReply)
			writeAnthropicEvent(w, "ping", map[string]any{"type": "ping"})
			writeAnthropicEvent(w, "error", overloaded)
		}))
		resp := settledChat(t, http.MethodPost, env.key.Key, chatBody(claudeModel, `,"stream":true,"stream_options":{"include_usage":true}`))
		_, chunks := streamChunks(t, resp, brokenReply.ID)
		if len(chunks) != 2 || chunks[1].Error == nil || !slices.Equal(finishReasons(chunks), []string{"error"}) {
			t.Fatalf("chunks %+v, want the role chunk and the error chunk", chunks)
		}
		noCharge(t, resp)
	})

	t.Run("a stream cut after message_delta is billed at Anthropic's figures", func(t *testing.T) {
		resetHealth()
		rep := brokenReply
		rep.StopReason, rep.Usage.Output = "end_turn", 11
		env.anth.handle(anthropicHandler(env.anthKey, func(w http.ResponseWriter, _ *http.Request, req anthropicRequest) {
			writeMessageStart(w, req.Model, rep)
			writeBlock(w, 0, rep.Blocks[0])
			writeAnthropicEvent(w, "message_delta", map[string]any{"type": "message_delta",
				"delta": map[string]any{"stop_reason": "end_turn", "stop_sequence": nil}, "usage": map[string]any{"output_tokens": rep.Usage.Output}})
		}))
		resp := settledChat(t, http.MethodPost, env.key.Key, chatBody(claudeModel, `,"stream":true`))
		_, chunks := streamChunks(t, resp, rep.ID)
		if got := streamedText(chunks); got != delivered {
			t.Errorf("delivered %q, want %q", got, delivered)
		}
		id := requestID(t, resp.Header)
		row := requestRow(t, env.acct.ID, id)
		full := claudePrice.cost(prompt, 0, rep.Usage.Output)
		if row.Basis != "upstream" || row.PromptTokens != prompt || row.CompletionTokens != rep.Usage.Output || row.cost(t) != full {
			t.Errorf("row %+v, want Anthropic's %d and %d tokens, basis upstream, charged %s", row, prompt, rep.Usage.Output, full)
		}
		spent += row.cost(t)
		assertFunds(t, env.acct.ID, opening-spent)
	})

	t.Run("the SDK reports the in-band error after the delivered text", func(t *testing.T) {
		resetHealth()
		env.anth.handle(anthropicHandler(env.anthKey, func(w http.ResponseWriter, _ *http.Request, req anthropicRequest) {
			writeMessageStart(w, req.Model, brokenReply)
			writeBlock(w, 0, brokenReply.Blocks[0])
			writeAnthropicEvent(w, "error", map[string]any{"type": "error", "error": map[string]any{"type": "overloaded_error", "message": "Overloaded"}})
		}))
		client := env.sdk(true)
		stream := client.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
			Model: claudeModel, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Tell me a story.")},
		})
		defer stream.Close()
		var content strings.Builder
		for stream.Next() {
			for _, ch := range stream.Current().Choices {
				content.WriteString(ch.Delta.Content)
			}
		}
		if content.String() != delivered {
			t.Errorf("the SDK got %q before the error, want %q", content.String(), delivered)
		}
		if err := stream.Err(); err == nil || !strings.Contains(err.Error(), "Overloaded") {
			t.Errorf("stream error %v, want the provider's Overloaded", err)
		}
		spent += cost
		assertFunds(t, env.acct.ID, opening-spent)
	})
	assertAudit(t)
}

// --- 7. errors before the first byte ---

func TestAnthropicUpstreamErrors(t *testing.T) {
	env := startAnthropic(t, chatOptions{balance: true})
	const opening = 10 * billing.Dollar
	creditAccount(t, env.acct.ID, opening.String())
	body := chatBody(claudeModel, "")
	streamBody := chatBody(claudeModel, `,"stream":true`)
	refuse := func(status int, typ, message string, header http.Header) upstreamHandler {
		return anthropicHandler(env.anthKey, func(w http.ResponseWriter, _ *http.Request, _ anthropicRequest) {
			for k, v := range header {
				w.Header()[k] = v
			}
			writeAnthropicError(w, status, typ, message)
		})
	}
	// notCharged checks an upstream refusal left a zero-cost row and the
	// funds as they were.
	notCharged := func(t *testing.T, resp chatResponse, outcome string) {
		t.Helper()
		id := requestID(t, resp.Header)
		assertCharge(t, requestRow(t, env.acct.ID, id), ledgerRow{RequestID: id, KeyID: env.key.ID, Model: claudeModel,
			Deployment: "claude/" + claudeDeployment, Outcome: outcome}, 0)
		assertFunds(t, env.acct.ID, opening)
	}

	for _, tc := range []struct {
		name       string
		body       string
		handler    upstreamHandler
		status     int
		typ, code  string
		retryAfter string
	}{
		{name: "529 overloaded_error is 503 with the upstream's Retry-After", body: body, status: 503, typ: "server_error", code: "upstream_overloaded", retryAfter: "17",
			handler: refuse(529, "overloaded_error", "Overloaded", http.Header{"Retry-After": {"17"}, "X-Should-Retry": {"true"}})},
		{name: "529 on a stream is a 503 JSON answer, not a stream", body: streamBody, status: 503, typ: "server_error", code: "upstream_overloaded", retryAfter: "1",
			handler: refuse(529, "overloaded_error", "Overloaded", http.Header{"X-Should-Retry": {"true"}})},
		{name: "429 rate_limit_error is 429 with Retry-After", body: body, status: 429, typ: "requests", code: "rate_limit_exceeded", retryAfter: "23",
			handler: refuse(429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit", http.Header{"Retry-After": {"23"}})},
		{name: "404 not_found_error is 502 upstream_model_unavailable", body: body, status: 502, typ: "server_error", code: "upstream_model_unavailable",
			handler: refuse(404, "not_found_error", "model: "+claudeDeployment, nil)},
		{name: "500 api_error is 502", body: body, status: 502, typ: "server_error", code: "upstream_error",
			handler: refuse(500, "api_error", "Internal server error", nil)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resetHealth()
			env.anth.handle(tc.handler)
			resp := settledChat(t, http.MethodPost, env.key.Key, tc.body)
			e := clientError(t, resp, tc.status, tc.typ, tc.code)
			if got := resp.Header.Values("Retry-After"); tc.retryAfter != "" && (len(got) != 1 || got[0] != tc.retryAfter) {
				t.Errorf("Retry-After %q, want %s", got, tc.retryAfter)
			}
			if strings.Contains(string(resp.Body), claudeDeployment) || strings.Contains(e.Message, "req_011") {
				t.Errorf("the error shows the deployment's model or Anthropic's request id: %s", resp.Body)
			}
			notCharged(t, resp, "upstream_error")
		})
	}

	t.Run("the SDK sees a 529 as a 503 it may retry", func(t *testing.T) {
		resetHealth()
		env.anth.handle(refuse(529, "overloaded_error", "Overloaded", nil))
		client := env.sdk(true)
		_, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model: claudeModel, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hi.")},
		})
		var apierr *openai.Error
		if !errors.As(err, &apierr) || apierr.StatusCode != http.StatusServiceUnavailable || apierr.Code != "upstream_overloaded" {
			t.Fatalf("error %v, want an *openai.Error 503 upstream_overloaded", err)
		}
		if apierr.Response.Header.Get("Retry-After") == "" {
			t.Error("no Retry-After")
		}
	})

	t.Run("Anthropic refusing the gateway's key is 502 upstream_auth_failed, never the client's key", func(t *testing.T) {
		resetHealth()
		for _, b := range []string{body, streamBody} {
			// The real upstream, with the provider key changed under it.
			env.anth.handle(anthropicReplies("sk-ant-api03-rotated", plainReply))
			resp := settledChat(t, http.MethodPost, env.key.Key, b)
			e := clientError(t, resp, http.StatusBadGateway, "server_error", "upstream_auth_failed")
			for _, s := range []string{env.key.Key, env.key.Last4 + ".", env.anthKey, "x-api-key", "invalid"} {
				if strings.Contains(string(resp.Body), s) {
					t.Errorf("the error mentions %q: %s", s, resp.Body)
				}
			}
			if !strings.Contains(e.Message, "not a problem with your API key") {
				t.Errorf("message %q does not say the client's key is fine", e.Message)
			}
			if got := env.anth.last(t).Header.Get("X-Api-Key"); got != env.anthKey {
				t.Errorf("x-api-key %q, want the configured key", got)
			}
			notCharged(t, resp, "upstream_error")
		}
	})

	t.Run("400 invalid_request_error passes Anthropic's message on with the public model id", func(t *testing.T) {
		resetHealth()
		msg := "`temperature` and `top_p` cannot both be specified for this model (" + claudeDeployment + "). Please use only one."
		env.anth.handle(refuse(400, "invalid_request_error", msg, nil))
		resp := settledChat(t, http.MethodPost, env.key.Key, chatBody(claudeModel, `,"temperature":0.5,"top_p":0.9`))
		e := clientError(t, resp, http.StatusBadRequest, "invalid_request_error", "")
		if want := strings.ReplaceAll(msg, claudeDeployment, claudeModel); e.Message != want {
			t.Errorf("message %q, want %q", e.Message, want)
		}
		if req := env.lastAnthropic(t, claudeDeployment); req.Temperature == nil || *req.Temperature != 0.5 || req.TopP == nil || *req.TopP != 0.9 {
			t.Errorf("upstream temperature %s, top_p %s; want 0.5 and 0.9", show(req.Temperature), show(req.TopP))
		}
		notCharged(t, resp, "invalid_request")
	})

	env.anth.handle(anthropicReplies(env.anthKey, plainReply))
	for _, tc := range unsupportedByAnthropic {
		t.Run(tc.name+" is refused with 400 before any upstream call", func(t *testing.T) {
			resetHealth()
			calls := env.anth.calls.Load()
			resp := settledChat(t, http.MethodPost, env.key.Key, tc.body())
			e := clientError(t, resp, http.StatusBadRequest, "invalid_request_error", tc.code)
			if e.Param == nil || !strings.HasPrefix(*e.Param, tc.param) {
				t.Errorf("param %v, want %s", e.Param, tc.param)
			}
			if n := env.anth.calls.Load(); n != calls {
				t.Errorf("the request reached the upstream")
			}
			requestID(t, resp.Header)
			assertFunds(t, env.acct.ID, opening)
		})
	}
	assertAudit(t)
}

// unsupportedByAnthropic are valid OpenAI requests an Anthropic model
// cannot serve as asked.
var unsupportedByAnthropic = []unsupportedCase{
	{"n=2", `,"n":2`, "n", "unsupported_value"},
	{"n=2 on a stream", `,"n":2,"stream":true`, "n", "unsupported_value"},
	{"logprobs", `,"logprobs":true`, "logprobs", "unsupported_parameter"},
	{"a json_schema response_format", `,"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object"}}}`, "response_format", "unsupported_value"},
	{"input_audio", `,"messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"AAAA","format":"wav"}}]}]`, "messages[0].content[0]", "unsupported_value"},
}

type unsupportedCase struct {
	name, extra string
	// param is the error's param, or its prefix.
	param, code string
}

// body is the case's request for claudeModel.
func (tc unsupportedCase) body() string {
	if strings.HasPrefix(tc.extra, `,"messages"`) {
		return `{"model":"` + claudeModel + `"` + tc.extra + `}`
	}
	return chatBody(claudeModel, tc.extra)
}

// Promise 6 for requests the provider's format cannot carry: like any bad
// input they are refused before a hold is placed, and leave no ledger row.
func TestAnthropicRefusedInputLeavesNoLedgerRow(t *testing.T) {
	env := startAnthropic(t, chatOptions{balance: true})
	const opening = 10 * billing.Dollar
	creditAccount(t, env.acct.ID, opening.String())
	for _, tc := range unsupportedByAnthropic {
		t.Run(tc.name, func(t *testing.T) {
			rows := len(ledgerRows(t, env.acct.ID))
			resp := settledChat(t, http.MethodPost, env.key.Key, tc.body())
			clientError(t, resp, http.StatusBadRequest, "invalid_request_error", tc.code)
			if n := len(ledgerRows(t, env.acct.ID)); n != rows {
				t.Errorf("the refused request left a ledger row: %+v", ledgerRows(t, env.acct.ID)[0])
			}
			assertFunds(t, env.acct.ID, opening)
		})
	}
	if n := env.anth.calls.Load(); n != 0 {
		t.Errorf("%d refused requests reached the upstream", n)
	}
}

// --- 8. the built-in mock speaking Anthropic ---

func TestAnthropicMockProvider(t *testing.T) {
	const mockDeployment = "claude-haiku-4-5-20251001"
	path := filepath.Join(t.TempDir(), "arcane.db")
	caddytest.NewTester(t).InitServer(testCaddyfile(path, `provider m {
			type mock
			format anthropic
		}
		model `+claudeModel+` {
			deploy m `+mockDeployment+`
			price input 3 output 15
		}`, chatRoutes), "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	acct := createAccount(t, "mock")
	key := createKey(t, acct.ID, nil)
	client := openai.NewClient(option.WithBaseURL(siteURL+"/v1/"), option.WithAPIKey(key.Key),
		option.WithMaxRetries(0), option.WithRequestTimeout(streamWait))
	params := openai.ChatCompletionNewParams{
		Model: claudeModel,
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.SystemMessage("Be brief."), openai.UserMessage("Hello, world!"), openai.UserMessage("Anyone there?"),
		},
	}

	resp, err := client.Chat.Completions.New(context.Background(), params)
	if err != nil {
		t.Fatalf("Chat.Completions.New: %s", explain(err))
	}
	if resp.Model != claudeModel || !strings.HasPrefix(resp.ID, "chatcmpl-msg_") || len(resp.Choices) != 1 ||
		resp.Choices[0].Message.Content == "" || resp.Choices[0].FinishReason != "stop" {
		t.Fatalf("completion %s, want the public model, a chatcmpl-msg_ id, text, finished with stop", resp.RawJSON())
	}
	u := resp.Usage
	if u.PromptTokens <= 0 || u.CompletionTokens <= 0 || u.TotalTokens != u.PromptTokens+u.CompletionTokens {
		t.Errorf("usage %s, want positive counts that add up", resp.JSON.Usage.Raw())
	}
	if strings.Contains(resp.RawJSON(), mockDeployment) {
		t.Errorf("the answer names the deployment: %s", resp.RawJSON())
	}

	t.Run("a stream has the same words and usage", func(t *testing.T) {
		p := params
		p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
		stream := client.Chat.Completions.NewStreaming(context.Background(), p)
		defer stream.Close()
		var acc openai.ChatCompletionAccumulator
		n := 0
		for stream.Next() {
			c := stream.Current()
			if c.Model != claudeModel || !strings.HasPrefix(c.ID, "chatcmpl-msg_") || strings.Contains(c.RawJSON(), mockDeployment) {
				t.Errorf("chunk %d: %s", n, c.RawJSON())
			}
			acc.AddChunk(c)
			n++
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("stream: %s", explain(err))
		}
		if len(acc.Choices) != 1 || acc.Choices[0].Message.Content != resp.Choices[0].Message.Content || acc.Choices[0].FinishReason != "stop" {
			t.Errorf("streamed %+v, want %q finished with stop", acc.Choices, resp.Choices[0].Message.Content)
		}
		if acc.Usage.PromptTokens != u.PromptTokens || acc.Usage.CompletionTokens != u.CompletionTokens || acc.Usage.TotalTokens != u.TotalTokens {
			t.Errorf("streamed usage %+v, want the completion's %+v", acc.Usage, u)
		}
	})

	t.Run("max_tokens cuts the reply with finish_reason length", func(t *testing.T) {
		p := params
		p.MaxTokens = openai.Int(3)
		short, err := client.Chat.Completions.New(context.Background(), p)
		if err != nil {
			t.Fatalf("Chat.Completions.New: %s", explain(err))
		}
		if short.Choices[0].FinishReason != "length" || short.Usage.CompletionTokens != 3 {
			t.Errorf("finish %q with %d tokens, want length and 3", short.Choices[0].FinishReason, short.Usage.CompletionTokens)
		}
		stream := client.Chat.Completions.NewStreaming(context.Background(), p)
		defer stream.Close()
		var finishes []string
		for stream.Next() {
			for _, ch := range stream.Current().Choices {
				if ch.FinishReason != "" {
					finishes = append(finishes, ch.FinishReason)
				}
			}
		}
		if err := stream.Err(); err != nil || !slices.Equal(finishes, []string{"length"}) {
			t.Errorf("stream finish reasons %q (%v), want one length", finishes, err)
		}
	})
}

// --- 9. a client that leaves mid-stream ---

func TestAnthropicClientDisconnectMidStream(t *testing.T) {
	env := startAnthropic(t, chatOptions{balance: true})
	const opening = 10 * billing.Dollar
	creditAccount(t, env.acct.ID, opening.String())
	rep := anthropicReply{
		ID:     "msg_01Hn8N3zvGTbwXLGsjU1QG2m",
		Blocks: []anthropicBlock{{Pieces: []string{"It was", " a dark", " and stormy", " night"}}},
		Usage:  anthropicUsage{Input: 35, CacheCreation: 600, CacheRead: 1800},
	}
	pieces := rep.Blocks[0].Pieces
	cancelled := make(chan struct{})
	gate, _ := releaser(t)
	env.anth.handle(anthropicHandler(env.anthKey, func(w http.ResponseWriter, r *http.Request, req anthropicRequest) {
		writeMessageStart(w, req.Model, rep)
		writeAnthropicEvent(w, "content_block_start", map[string]any{"type": "content_block_start", "index": 0, "content_block": map[string]any{"type": "text", "text": ""}})
		for _, p := range pieces {
			writeAnthropicEvent(w, "content_block_delta", map[string]any{"type": "content_block_delta", "index": 0, "delta": map[string]any{"type": "text_delta", "text": p}})
		}
		select {
		case <-r.Context().Done():
			close(cancelled)
		case <-gate:
		}
	}))

	var id string
	var got strings.Builder
	leaveAfter(t, env.key.Key, chatBody(claudeModel, `,"stream":true,"max_tokens":2000`), nil, cancelled, func(req *http.Request, br *bufio.Reader) {
		resp := readStreamStart(t, req, br)
		id = requestID(t, resp.Header)
		er := newEventReader(resp.Body)
		if c := decodeAnthropicChunk(t, er.next(t)); len(c.Choices) != 1 || c.Choices[0].Delta.Role == nil {
			t.Fatalf("the first chunk is %+v, want the role chunk", c)
		}
		for _, want := range pieces {
			c := decodeAnthropicChunk(t, er.next(t))
			if len(c.Choices) != 1 || c.Choices[0].Delta.Content == nil || *c.Choices[0].Delta.Content != want {
				t.Fatalf("chunk %+v, want content %q", c, want)
			}
			got.WriteString(want)
		}
	})

	completion := int64(tokenCounter.Count(claudeModel, []byte(got.String())))
	u := rep.Usage
	// message_start's prompt figures, cache writes included, still count.
	cost := claudePrice.costWithWrites(u.prompt(), u.CacheRead, u.CacheCreation, completion)
	if completion <= 0 || cost <= 0 {
		t.Fatalf("test setup: %d tokens, cost %s", completion, cost)
	}
	assertCharge(t, requestRow(t, env.acct.ID, id), ledgerRow{RequestID: id, KeyID: env.key.ID, Model: claudeModel,
		Deployment: "claude/" + claudeDeployment, PromptTokens: u.prompt(), CachedTokens: u.CacheRead, CacheWriteTokens: u.CacheCreation,
		CompletionTokens: completion, Basis: "counted", Outcome: "client_closed"}, cost)
	assertFunds(t, env.acct.ID, opening-cost)
	assertAudit(t)
}

// The fake upstream's streams are framed as Anthropic frames them: an
// event line and a data line whose type is the event's name, per event.
func TestAnthropicFakeUpstreamFraming(t *testing.T) {
	rec := httptest.NewRecorder()
	writeAnthropicStream(rec, claudeDeployment, toolReply)
	sc := bufio.NewScanner(bytes.NewReader(rec.Body.Bytes()))
	var name string
	n := 0
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			var d struct {
				Type string `json:"type"`
			}
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &d); err != nil || d.Type != name {
				t.Errorf("event %q has data type %q (%v)", name, d.Type, err)
			}
			n++
		case line != "":
			t.Errorf("unexpected line %q", line)
		}
	}
	if n == 0 || name != "message_stop" {
		t.Errorf("%d events, last %q", n, name)
	}
}
