package caddymodule

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// End-to-end tests of POST /v1/chat/completions, /v1/models and
// /v1/status through the real server, with an OpenAI-shaped upstream of
// our own behind it (chat_helpers_test.go).

// clientHeaders are headers a client sends that must stay at the gateway.
var clientHeaders = http.Header{
	"Cookie":          {"session=s3cret-cookie"},
	"X-Forwarded-For": {"203.0.113.7"},
	"Forwarded":       {"for=203.0.113.7"},
	"X-Real-Ip":       {"203.0.113.7"},
}

func TestChatRequestReachesTheUpstreamRewritten(t *testing.T) {
	env := startChat(t, chatOptions{})
	// Fields the gateway has no business touching, one of them written
	// with unusual spacing and escapes so a re-encoding would show.
	const passThrough = `,"temperature":0.7,"metadata":{"a":"b"},"x_custom":[1, 2.50, "\u00e9"]`

	for _, tc := range []struct {
		name  string
		extra string
		// stream: the upstream must be asked for the usage chunk.
		stream bool
		// keptOptions are stream_options members that must reach the
		// upstream byte for byte.
		keptOptions map[string]string
	}{
		{name: "a completion reaches the upstream with only its model changed", extra: passThrough},
		{name: "a stream without stream_options gets include_usage switched on upstream",
			extra: passThrough + `,"stream":true`, stream: true},
		{name: "a stream with null stream_options gets include_usage switched on upstream",
			extra: passThrough + `,"stream":true,"stream_options":null`, stream: true},
		{name: "a stream with include_usage false gets it switched on upstream",
			extra: passThrough + `,"stream":true,"stream_options":{"include_usage":false}`, stream: true},
		{name: "a stream with other stream options keeps them and gets include_usage",
			extra: passThrough + `,"stream":true,"stream_options":{"include_obfuscation":false}`, stream: true,
			keptOptions: map[string]string{"include_obfuscation": "false"}},
		{name: "a stream that asked for usage still asks for it upstream",
			extra: passThrough + `,"stream":true,"stream_options":{"include_usage":true}`, stream: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := chatBody(publicModel, tc.extra)
			resp := sendChat(t, http.MethodPost, env.key.Key, body, clientHeaders)
			if resp.Status != http.StatusOK {
				t.Fatalf("status %d, want 200; body %s", resp.Status, resp.Body)
			}
			got := env.up.last(t)
			if got.Method != http.MethodPost || got.Path != "/v1/chat/completions" {
				t.Errorf("the upstream got %s %s, want POST /v1/chat/completions", got.Method, got.Path)
			}
			if auth := got.Header.Get("Authorization"); auth != "Bearer "+env.providerKey {
				t.Errorf("upstream Authorization %q, want Bearer and the provider's key", auth)
			}

			var dump strings.Builder
			_ = got.Header.Write(&dump)
			dump.Write(got.Body)
			for _, secret := range []string{env.key.Key, "ak_", "s3cret-cookie", "203.0.113.7"} {
				if strings.Contains(dump.String(), secret) {
					t.Errorf("%q reached the upstream:\n%s", secret, dump.String())
				}
			}
			for name := range clientHeaders {
				if v := got.Header.Values(name); len(v) > 0 {
					t.Errorf("the client's %s header reached the upstream: %q", name, v)
				}
			}

			for _, literal := range []string{`"metadata":{"a":"b"}`, `"temperature":0.7`, `"x_custom":[1, 2.50, "\u00e9"]`} {
				if !strings.Contains(string(got.Body), literal) {
					t.Errorf("the upstream body lacks %s byte for byte: %s", literal, got.Body)
				}
			}
			if !tc.stream {
				want := strings.Replace(body, `"model":"`+publicModel+`"`, `"model":"`+upstreamModel+`"`, 1)
				if string(got.Body) != want {
					t.Errorf("upstream body\n%s\nwant\n%s", got.Body, want)
				}
				return
			}

			var sent, upstream map[string]json.RawMessage
			if err := json.Unmarshal([]byte(body), &sent); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(got.Body, &upstream); err != nil {
				t.Fatalf("the upstream body is not a JSON object: %v; %s", err, got.Body)
			}
			if string(upstream["model"]) != `"`+upstreamModel+`"` {
				t.Errorf("upstream model %s, want %q", upstream["model"], upstreamModel)
			}
			for name, raw := range sent {
				if name == "model" || name == "stream_options" {
					continue
				}
				if string(upstream[name]) != string(raw) {
					t.Errorf("%s reached the upstream as %s, want %s", name, upstream[name], raw)
				}
			}
			for name := range upstream {
				if _, ok := sent[name]; !ok && name != "stream_options" {
					t.Errorf("the upstream body has a member %q the client did not send", name)
				}
			}
			var opts map[string]json.RawMessage
			if err := json.Unmarshal(upstream["stream_options"], &opts); err != nil {
				t.Fatalf("upstream stream_options %s is not an object: %v", upstream["stream_options"], err)
			}
			if string(opts["include_usage"]) != "true" {
				t.Errorf("upstream stream_options %s, want include_usage true", upstream["stream_options"])
			}
			for name, raw := range tc.keptOptions {
				if string(opts[name]) != raw {
					t.Errorf("stream_options.%s reached the upstream as %s, want %s", name, opts[name], raw)
				}
			}
			if len(opts) != 1+len(tc.keptOptions) {
				t.Errorf("upstream stream_options %s has members the client did not send", upstream["stream_options"])
			}
		})
	}
}

func TestChatThroughTheOpenAISDK(t *testing.T) {
	env := startChat(t, chatOptions{})
	client := openai.NewClient(
		option.WithBaseURL(siteURL+"/v1/"),
		option.WithAPIKey(env.key.Key),
		option.WithMaxRetries(0),
		option.WithRequestTimeout(streamWait),
	)
	params := openai.ChatCompletionNewParams{
		Model:    publicModel,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hello.")},
	}
	want := standardReply.Usage

	t.Run("a completion has the public model, the upstream's content and its usage", func(t *testing.T) {
		resp, err := client.Chat.Completions.New(context.Background(), params)
		if err != nil {
			t.Fatalf("Chat.Completions.New: %v", err)
		}
		if resp.Model != publicModel {
			t.Errorf("model %q, want %q", resp.Model, publicModel)
		}
		if len(resp.Choices) != 1 || resp.Choices[0].Message.Content != standardReply.content() {
			t.Errorf("choices %+v, want one with content %q", resp.Choices, standardReply.content())
		}
		u := resp.Usage
		if u.PromptTokens != want.PromptTokens || u.CompletionTokens != want.CompletionTokens || u.TotalTokens != want.TotalTokens ||
			u.PromptTokensDetails.CachedTokens != want.PromptTokensDetails.CachedTokens {
			t.Errorf("usage %+v, want the upstream's %+v", u, want)
		}
		if strings.Contains(resp.RawJSON(), upstreamModel) {
			t.Errorf("the answer names the upstream model: %s", resp.RawJSON())
		}
	})

	for _, tc := range []struct {
		name         string
		includeUsage bool
	}{
		{name: "a stream that asks for usage ends with the upstream's usage chunk", includeUsage: true},
		{name: "a stream that does not ask for usage carries none", includeUsage: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := params
			if tc.includeUsage {
				p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
			}
			stream := client.Chat.Completions.NewStreaming(context.Background(), p)
			defer stream.Close()
			var chunks []openai.ChatCompletionChunk
			for stream.Next() {
				chunks = append(chunks, stream.Current())
			}
			if err := stream.Err(); err != nil {
				t.Fatalf("stream: %v", err)
			}
			if len(chunks) == 0 {
				t.Fatal("the stream had no chunks")
			}
			var content strings.Builder
			for i, c := range chunks {
				if c.Model != publicModel {
					t.Errorf("chunk %d has model %q, want %q", i, c.Model, publicModel)
				}
				for _, ch := range c.Choices {
					content.WriteString(ch.Delta.Content)
				}
				last := i == len(chunks)-1
				if c.JSON.Usage.Valid() && !(tc.includeUsage && last) {
					t.Errorf("chunk %d of %d carries usage %s", i, len(chunks), c.JSON.Usage.Raw())
				}
			}
			if content.String() != standardReply.content() {
				t.Errorf("streamed content %q, want %q", content.String(), standardReply.content())
			}
			if !env.upstreamAskedForUsage(t) {
				t.Error("the gateway did not ask the upstream for usage")
			}
			if !tc.includeUsage {
				return
			}
			last := chunks[len(chunks)-1]
			if !last.JSON.Usage.Valid() || len(last.Choices) != 0 {
				t.Fatalf("the last chunk is not the usage chunk: %s", last.RawJSON())
			}
			if last.Usage.PromptTokens != want.PromptTokens || last.Usage.CompletionTokens != want.CompletionTokens ||
				last.Usage.TotalTokens != want.TotalTokens {
				t.Errorf("usage %+v, want the upstream's %+v", last.Usage, want)
			}
		})
	}
}

// upstreamAskedForUsage reports whether the last upstream request had
// stream_options.include_usage true.
func (env *chatEnv) upstreamAskedForUsage(t testing.TB) bool {
	t.Helper()
	req, err := parseUpstreamRequest(env.up.last(t).Body)
	if err != nil {
		t.Fatalf("the upstream body is not JSON: %v", err)
	}
	return req.StreamOptions != nil && req.StreamOptions.IncludeUsage
}

func TestChatStreamFraming(t *testing.T) {
	env := startChat(t, chatOptions{})
	for _, tc := range []struct {
		name         string
		streamExtra  string
		includeUsage bool
	}{
		{name: "a stream without usage is data events ending in [DONE]", streamExtra: `,"stream":true`},
		{name: "a stream with usage is data events with the usage chunk before [DONE]",
			streamExtra: `,"stream":true,"stream_options":{"include_usage":true}`, includeUsage: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := postChat(t, env.key.Key, chatBody(publicModel, tc.streamExtra))
			if resp.Status != http.StatusOK {
				t.Fatalf("status %d, want 200; body %s", resp.Status, resp.Body)
			}
			if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "text/event-stream" {
				t.Errorf("Content-Type %q, want text/event-stream", resp.Header.Get("Content-Type"))
			}
			if strings.Contains(string(resp.Body), upstreamModel) {
				t.Errorf("the stream names the upstream model:\n%s", resp.Body)
			}
			events := splitEvents(t, resp.Body)
			if events[len(events)-1] != "[DONE]" {
				t.Fatalf("the stream ends with %q, want [DONE]", head(events[len(events)-1]))
			}
			chunks := events[:len(events)-1]
			var content strings.Builder
			usageChunks := 0
			for i, payload := range chunks {
				c := decodeChunk(t, payload)
				if c.Model != publicModel {
					t.Errorf("event %d has model %q, want %q", i, c.Model, publicModel)
				}
				for _, ch := range c.Choices {
					if ch.Delta.Content != nil {
						content.WriteString(*ch.Delta.Content)
					}
				}
				if c.Usage != nil {
					usageChunks++
					if i != len(chunks)-1 || len(c.Choices) != 0 {
						t.Errorf("event %d of %d carries usage: %s", i, len(chunks), payload)
					}
				}
			}
			if content.String() != standardReply.content() {
				t.Errorf("content %q, want %q", content.String(), standardReply.content())
			}
			// role, the pieces, the finish chunk, and the usage chunk if asked.
			want := 2 + len(standardReply.Pieces)
			if tc.includeUsage {
				want++
			}
			if len(chunks) != want || (tc.includeUsage && usageChunks != 1) || (!tc.includeUsage && usageChunks != 0) {
				t.Errorf("%d chunks with %d usage chunks, want %d with %v", len(chunks), usageChunks, want, tc.includeUsage)
			}
		})
	}
}

func TestChatStreamFlushesEachEvent(t *testing.T) {
	env := startChat(t, chatOptions{})
	next, release := releaser(t)
	env.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
		req, _ := parseUpstreamRequest(body)
		startUpstreamStream(w)
		writeUpstreamEvent(w, chunkJSON(req.Model, contentDelta("first"), nil, true))
		select {
		case <-next:
		case <-r.Context().Done():
			return
		}
		writeUpstreamEvent(w, chunkJSON(req.Model, contentDelta("second"), nil, true))
		writeUpstreamEvent(w, finishChunkJSON(req.Model, true))
		writeUpstreamEvent(w, []byte("[DONE]"))
	})

	resp := openStream(t, env.key.Key, chatBody(publicModel, `,"stream":true`), nil)
	er := newEventReader(resp.Body)
	if c := decodeChunk(t, er.next(t)); len(c.Choices) != 1 || c.Choices[0].Delta.Content == nil || *c.Choices[0].Delta.Content != "first" {
		t.Fatalf("first event %+v, want the content \"first\"", c)
	}
	// Only now may the upstream go on: the first event came through alone.
	release()
	if c := decodeChunk(t, er.next(t)); len(c.Choices) != 1 || c.Choices[0].Delta.Content == nil || *c.Choices[0].Delta.Content != "second" {
		t.Fatalf("second event %+v, want the content \"second\"", c)
	}
	if c := decodeChunk(t, er.next(t)); len(c.Choices) != 1 || c.Choices[0].FinishReason == nil || *c.Choices[0].FinishReason != "stop" {
		t.Fatalf("third event %+v, want the finish chunk", c)
	}
	if done := er.next(t); done != "[DONE]" {
		t.Fatalf("last event %q, want [DONE]", done)
	}
}

func TestChatClientDisconnectCancelsTheUpstream(t *testing.T) {
	env := startChat(t, chatOptions{accessLog: true})

	t.Run("a client leaving mid-stream cancels the upstream request", func(t *testing.T) {
		cancelled := make(chan struct{})
		stop, _ := releaser(t)
		env.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
			req, _ := parseUpstreamRequest(body)
			startUpstreamStream(w)
			writeUpstreamEvent(w, chunkJSON(req.Model, contentDelta("first"), nil, true))
			select {
			case <-r.Context().Done():
				close(cancelled)
			case <-stop:
			}
		})

		resp := openStream(t, env.key.Key, chatBody(publicModel, `,"stream":true`), http.Header{"X-Arcane-Test": {"disconnect-stream"}})
		er := newEventReader(resp.Body)
		if c := decodeChunk(t, er.next(t)); c.Model != publicModel {
			t.Fatalf("first event %+v", c)
		}
		resp.Body.Close()
		waitFor(t, cancelled, "cancelling the upstream request after the client went away")
		if entry, line := accessLogLine(t, env.logPath, "disconnect-stream"); entry["arcane_outcome"] != "client_closed" {
			t.Errorf("arcane_outcome %v, want client_closed; line %s", entry["arcane_outcome"], line)
		}
	})

	t.Run("a client leaving while a completion is read is logged as gone, not as an upstream failure", func(t *testing.T) {
		reading, cancelled := make(chan struct{}), make(chan struct{})
		stop, _ := releaser(t)
		env.up.handle(leavingCompletion(reading, cancelled, stop))

		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req := newChatRequest(t, ctx, http.MethodPost, env.key.Key, chatBody(publicModel, ""), http.Header{"X-Arcane-Test": {"disconnect-completion"}})
		done := make(chan struct{})
		go func() {
			defer close(done)
			if resp, err := apiClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
		waitFor(t, reading, "the gateway reading the upstream's answer")
		cancel()
		waitFor(t, done, "the client giving up")
		waitFor(t, cancelled, "cancelling the upstream request after the client went away")
		entry, line := accessLogLine(t, env.logPath, "disconnect-completion")
		if entry["arcane_outcome"] != "client_closed" || entry["status"] != float64(499) {
			t.Errorf("arcane_outcome %v and status %v, want client_closed and 499; line %s", entry["arcane_outcome"], entry["status"], line)
		}
	})
}

func TestChatStreamCarriesAOneMebibyteLine(t *testing.T) {
	env := startChat(t, chatOptions{})
	// Printable, varied and free of JSON escapes, so any lost or
	// reordered byte shows in the hash.
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;"
	rng := rand.New(rand.NewPCG(1, 2))
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = alphabet[rng.IntN(len(alphabet))]
	}
	wantSum := sha256.Sum256(big)
	env.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
		req, _ := parseUpstreamRequest(body)
		startUpstreamStream(w)
		writeUpstreamEvent(w, chunkJSON(req.Model, roleDelta, nil, true))
		writeUpstreamEvent(w, chunkJSON(req.Model, contentDelta(string(big)), nil, true))
		writeUpstreamEvent(w, finishChunkJSON(req.Model, true))
		writeUpstreamEvent(w, usageChunkJSON(req.Model, usageOf(5, 300000, 0)))
		writeUpstreamEvent(w, []byte("[DONE]"))
	})

	resp := postChat(t, env.key.Key, chatBody(publicModel, `,"stream":true`))
	if resp.Status != http.StatusOK {
		t.Fatalf("status %d, want 200; body %s", resp.Status, head(string(resp.Body)))
	}
	events := splitEvents(t, resp.Body)
	if len(events) != 4 || events[3] != "[DONE]" {
		t.Fatalf("got %d events ending %q, want role, content, finish and [DONE]", len(events), head(events[len(events)-1]))
	}
	c := decodeChunk(t, events[1])
	if c.Model != publicModel || len(c.Choices) != 1 || c.Choices[0].Delta.Content == nil {
		t.Fatalf("the big event is not a content chunk of %s: %s", publicModel, head(events[1]))
	}
	got := *c.Choices[0].Delta.Content
	if len(got) != len(big) || sha256.Sum256([]byte(got)) != wantSum {
		t.Errorf("the content arrived as %d bytes with another hash, want %d bytes intact", len(got), len(big))
	}
}

// assertChatError checks an OpenAI error envelope with a non-null param;
// param "" delegates to assertOpenAIError, which wants it null.
func assertChatError(t testing.TB, resp chatResponse, status int, typ, code, param string) {
	t.Helper()
	if param == "" {
		assertOpenAIError(t, resp.Status, resp.Header, string(resp.Body), status, typ, code)
		return
	}
	if resp.Status != status {
		t.Fatalf("status %d, want %d; body %s", resp.Status, status, resp.Body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var env struct {
		Error map[string]*string `json:"error"`
	}
	if err := json.Unmarshal(resp.Body, &env); err != nil {
		t.Fatalf("not an error envelope: %v; %s", err, resp.Body)
	}
	e := env.Error
	if len(e) != 4 || e["message"] == nil || *e["message"] == "" {
		t.Errorf("the error object does not have the four keys and a message: %s", resp.Body)
	}
	for k, want := range map[string]string{"type": typ, "code": code, "param": param} {
		if e[k] == nil || *e[k] != want {
			t.Errorf("%s %v, want %q; body %s", k, e[k], want, resp.Body)
		}
	}
}

func TestChatRefusesBadRequestsBeforeTheUpstream(t *testing.T) {
	env := startChat(t, chatOptions{arcaneExtra: `model other {
			deploy up other-up
			price input 1 output 2
		}`})
	const msgs = `"messages":[{"role":"user","content":"Hi"}]`
	limited := createKey(t, env.acct.ID, map[string]any{"models": []string{"other"}})

	for _, tc := range []struct {
		name, key, body      string
		method               string
		status               int
		code, param, message string
	}{
		{name: "a body that is not JSON is refused", body: `model=gpt-5.2`, status: 400},
		{name: "a JSON array body is refused", body: `[{"model":"gpt-5.2"}]`, status: 400, code: "invalid_type"},
		{name: "a request without a model is refused", body: `{` + msgs + `}`, status: 400, code: "missing_required_parameter", param: "model"},
		{name: "a model that is not a string is refused", body: `{"model":5,` + msgs + `}`, status: 400, code: "invalid_type", param: "model"},
		{name: "empty messages are refused", body: `{"model":"gpt-5.2","messages":[]}`, status: 400, code: "invalid_value", param: "messages"},
		{name: "a message without a role is refused", body: `{"model":"gpt-5.2","messages":[{"content":"Hi"}]}`, status: 400,
			code: "missing_required_parameter", param: "messages[0].role"},
		{name: "a temperature of 3 is refused", body: chatBody(publicModel, `,"temperature":3`), status: 400, code: "invalid_value", param: "temperature"},
		{name: "a temperature that is a word is refused", body: chatBody(publicModel, `,"temperature":"hot"`), status: 400, code: "invalid_type", param: "temperature"},
		{name: "max_tokens 0 is refused", body: chatBody(publicModel, `,"max_tokens":0`), status: 400, code: "invalid_value", param: "max_tokens"},
		{name: "a fractional max_tokens is refused", body: chatBody(publicModel, `,"max_tokens":1.5`), status: 400, code: "invalid_type", param: "max_tokens"},
		{name: "stream as a string is refused", body: chatBody(publicModel, `,"stream":"yes"`), status: 400, code: "invalid_type", param: "stream"},
		{name: "stream_options without stream are refused", body: chatBody(publicModel, `,"stream_options":{"include_usage":true}`), status: 400,
			code: "invalid_value", param: "stream_options"},
		{name: "an unknown model is not found", body: chatBody("gpt-9", ""), status: 404, code: "model_not_found", message: "gpt-9"},
		{name: "a model outside the key's allow-list is not found", key: limited.Key, body: chatBody(publicModel, ""), status: 404,
			code: "model_not_found", message: publicModel},
		{name: "GET is not allowed", method: http.MethodGet, status: 405, code: "method_not_allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := env.up.calls.Load()
			method, key := tc.method, tc.key
			if method == "" {
				method = http.MethodPost
			}
			if key == "" {
				key = env.key.Key
			}
			resp := sendChat(t, method, key, tc.body, nil)
			assertChatError(t, resp, tc.status, "invalid_request_error", tc.code, tc.param)
			if msg := errorMessage(t, string(resp.Body)); !strings.Contains(msg, tc.message) {
				t.Errorf("message %q does not mention %q", msg, tc.message)
			}
			if tc.status == http.StatusMethodNotAllowed && resp.Header.Get("Allow") != http.MethodPost {
				t.Errorf("Allow %q, want POST", resp.Header.Get("Allow"))
			}
			if strings.Contains(string(resp.Body), upstreamModel) {
				t.Errorf("the error names the upstream model: %s", resp.Body)
			}
			if after := env.up.calls.Load(); after != before {
				t.Errorf("the refused request reached the upstream (%d requests, was %d)", after, before)
			}
		})
	}
}

func TestChatRefusesBodiesOverMaxRequestBody(t *testing.T) {
	env := startChat(t, chatOptions{arcaneExtra: "max_request_body 1KiB"})
	message := func(n int) string {
		return `{"model":"gpt-5.2","messages":[{"role":"user","content":"` + strings.Repeat("a", n) + `"}]}`
	}
	small, big := message(900), message(1100)
	if len(small) > 1024 || len(big) <= 1024 {
		t.Fatalf("bodies of %d and %d bytes do not straddle 1 KiB", len(small), len(big))
	}

	resp := postChat(t, env.key.Key, big)
	assertChatError(t, resp, http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large", "")
	if n := env.up.calls.Load(); n != 0 {
		t.Errorf("the oversized request reached the upstream (%d requests)", n)
	}

	resp = postChat(t, env.key.Key, small)
	if resp.Status != http.StatusOK {
		t.Errorf("a %d-byte body: status %d, want 200; body %s", len(small), resp.Status, resp.Body)
	}
}

func TestChatUpstreamFailures(t *testing.T) {
	env := startChat(t, chatOptions{})
	failWith := func(status int, header http.Header, body string) upstreamHandler {
		return func(w http.ResponseWriter, _ *http.Request, _ []byte) {
			for k, v := range header {
				w.Header()[k] = v
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_, _ = io.WriteString(w, body)
		}
	}
	// OpenAI's answer to a bad key quotes part of it.
	badKeyBody := `{"error":{"message":"Incorrect API key provided: ` + env.providerKey[:14] + `****. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`

	for _, tc := range []struct {
		name    string
		handler upstreamHandler
		status  int
		typ     string
		code    string
		param   string
		check   func(t *testing.T, resp chatResponse)
	}{
		{
			name:    "an upstream refusing the gateway's key is a bad gateway, not the client's bad key",
			handler: failWith(http.StatusUnauthorized, nil, badKeyBody),
			status:  http.StatusBadGateway, typ: "server_error", code: "upstream_auth_failed",
			check: func(t *testing.T, resp chatResponse) {
				msg := errorMessage(t, string(resp.Body))
				for _, s := range []string{"Incorrect API key", "invalid_api_key", env.providerKey[:14]} {
					if strings.Contains(string(resp.Body), s) {
						t.Errorf("the answer passes on the upstream's %q: %s", s, resp.Body)
					}
				}
				if strings.Contains(strings.ToLower(msg), "your api key is invalid") || strings.Contains(strings.ToLower(msg), "incorrect") {
					t.Errorf("the message blames the client's key: %q", msg)
				}
			},
		},
		{
			name:    "an upstream rate limit passes on with its Retry-After",
			handler: failWith(http.StatusTooManyRequests, http.Header{"Retry-After": {"7"}}, `{"error":{"message":"Rate limit reached for requests","type":"requests","param":null,"code":"rate_limit_exceeded"}}`),
			status:  http.StatusTooManyRequests, typ: "requests", code: "rate_limit_exceeded",
			check: func(t *testing.T, resp chatResponse) {
				if ra := resp.Header.Get("Retry-After"); ra != "7" {
					t.Errorf("Retry-After %q, want 7", ra)
				}
			},
		},
		{
			name:    "an upstream server error is a bad gateway",
			handler: failWith(http.StatusInternalServerError, nil, `{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}`),
			status:  http.StatusBadGateway, typ: "server_error", code: "upstream_error",
		},
		{
			name: "an upstream's refusal of the request names the public model",
			handler: failWith(http.StatusBadRequest, nil,
				`{"error":{"message":"The model 'up-model-2025' does not support 'logit_bias' with this value.","type":"invalid_request_error","param":"logit_bias","code":"unsupported_value"}}`),
			status: http.StatusBadRequest, typ: "invalid_request_error", code: "unsupported_value", param: "logit_bias",
			check: func(t *testing.T, resp chatResponse) {
				if msg := errorMessage(t, string(resp.Body)); !strings.Contains(msg, "'"+publicModel+"'") {
					t.Errorf("message %q does not name %s", msg, publicModel)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resetHealth()
			env.up.handle(tc.handler)
			resp := postChat(t, env.key.Key, chatBody(publicModel, ""))
			assertChatError(t, resp, tc.status, tc.typ, tc.code, tc.param)
			if strings.Contains(string(resp.Body), upstreamModel) {
				t.Errorf("the answer names the upstream model: %s", resp.Body)
			}
			if tc.check != nil {
				tc.check(t, resp)
			}
		})
	}

	for _, tc := range []struct {
		name string
		// end finishes the upstream's answer after two chunks.
		end func(w http.ResponseWriter)
	}{
		{name: "a stream the upstream ends without [DONE] gets an in-band error and [DONE]", end: func(http.ResponseWriter) {}},
		{name: "a stream whose upstream connection drops gets an in-band error and [DONE]", end: func(w http.ResponseWriter) {
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resetHealth()
			env.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
				req, _ := parseUpstreamRequest(body)
				startUpstreamStream(w)
				writeUpstreamEvent(w, chunkJSON(req.Model, contentDelta("one"), nil, true))
				writeUpstreamEvent(w, chunkJSON(req.Model, contentDelta("two"), nil, true))
				tc.end(w)
			})
			resp := postChat(t, env.key.Key, chatBody(publicModel, `,"stream":true`))
			if resp.Status != http.StatusOK {
				t.Fatalf("status %d, want 200; body %s", resp.Status, resp.Body)
			}
			events := splitEvents(t, resp.Body)
			if len(events) != 4 {
				t.Fatalf("%d events, want two chunks, an error chunk and [DONE]: %q", len(events), events)
			}
			for i, want := range []string{"one", "two"} {
				c := decodeChunk(t, events[i])
				if c.Model != publicModel || len(c.Choices) != 1 || c.Choices[0].Delta.Content == nil || *c.Choices[0].Delta.Content != want {
					t.Errorf("event %d is %s, want the upstream's %q chunk", i, events[i], want)
				}
			}
			e := decodeChunk(t, events[2])
			if e.Error == nil || len(e.Choices) != 1 || e.Choices[0].FinishReason == nil || *e.Choices[0].FinishReason != "error" {
				t.Errorf("event 2 is %s, want an error chunk with finish_reason error", events[2])
			}
			if events[3] != "[DONE]" {
				t.Errorf("the stream ends with %q, want [DONE]", events[3])
			}
		})
	}

	t.Run("an upstream's own error event mid-stream does not reveal the upstream model", func(t *testing.T) {
		resetHealth()
		env.up.handle(func(w http.ResponseWriter, r *http.Request, body []byte) {
			req, _ := parseUpstreamRequest(body)
			startUpstreamStream(w)
			writeUpstreamEvent(w, chunkJSON(req.Model, contentDelta("one"), nil, true))
			writeUpstreamEvent(w, []byte(`{"error":{"message":"The model `+req.Model+` is currently overloaded. Please try again later.","type":"server_error","param":null,"code":null}}`))
		})
		resp := postChat(t, env.key.Key, chatBody(publicModel, `,"stream":true`))
		if resp.Status != http.StatusOK {
			t.Fatalf("status %d, want 200; body %s", resp.Status, resp.Body)
		}
		events := splitEvents(t, resp.Body)
		if events[len(events)-1] != "[DONE]" {
			t.Errorf("the stream ends with %q, want [DONE]", head(events[len(events)-1]))
		}
		errs := 0
		for _, e := range events[:len(events)-1] {
			if decodeChunk(t, e).Error != nil {
				errs++
			}
		}
		if errs == 0 {
			t.Errorf("no error event reached the client:\n%s", resp.Body)
		}
		if strings.Contains(string(resp.Body), upstreamModel) {
			t.Errorf("the stream names the upstream model:\n%s", resp.Body)
		}
	})
}

func TestChatUpstreamUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	env := startChat(t, chatOptions{baseURL: "http://" + addr + "/v1"})

	resp := postChat(t, env.key.Key, chatBody(publicModel, ""))
	assertChatError(t, resp, http.StatusServiceUnavailable, "server_error", "upstream_unavailable", "")
	if strings.Contains(string(resp.Body), addr) {
		t.Errorf("the answer reveals the provider's address: %s", resp.Body)
	}
}

type testModelList struct {
	Object string `json:"object"`
	Data   []struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
		Pricing struct {
			Prompt          string  `json:"prompt"`
			Completion      string  `json:"completion"`
			InputCacheRead  *string `json:"input_cache_read"`
			InputCacheWrite *string `json:"input_cache_write"`
		} `json:"pricing"`
		ContextLength *int64 `json:"context_length"`
	} `json:"data"`
}

func TestModelsList(t *testing.T) {
	env := startChat(t, chatOptions{arcaneExtra: `model other {
			deploy up other-up
			price input 0.5 output 1.5 cache_write 0.625
		}`})
	limited := createKey(t, env.acct.ID, map[string]any{"models": []string{"other"}})

	list := func(t *testing.T, key string) (testModelList, string) {
		t.Helper()
		status, header, body := apiGet(t, env.tester, "/v1/models", "Bearer "+key)
		if status != http.StatusOK {
			t.Fatalf("GET /v1/models: status %d; body %s", status, body)
		}
		if ct := header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q, want application/json", ct)
		}
		for _, hidden := range []string{upstreamModel, "other-up"} {
			if strings.Contains(body, hidden) {
				t.Errorf("the list names the upstream model %q: %s", hidden, body)
			}
		}
		var l testModelList
		if err := json.Unmarshal([]byte(body), &l); err != nil {
			t.Fatalf("decoding %s: %v", body, err)
		}
		if l.Object != "list" {
			t.Errorf("object %q, want list", l.Object)
		}
		return l, body
	}

	t.Run("the list has OpenAI's shape with per-token prices as strings", func(t *testing.T) {
		l, body := list(t, env.key.Key)
		if len(l.Data) != 2 || l.Data[0].ID != publicModel || l.Data[1].ID != "other" {
			t.Fatalf("models %s, want gpt-5.2 and other in that order", body)
		}
		g, o := l.Data[0], l.Data[1]
		if g.Object != "model" || g.Created <= 0 || g.OwnedBy != "openai" {
			t.Errorf("gpt-5.2 is %+v, want object model, a created time and owned_by openai", g)
		}
		if g.Pricing.Prompt != "0.00000175" || g.Pricing.Completion != "0.000014" ||
			g.Pricing.InputCacheRead == nil || *g.Pricing.InputCacheRead != "0.000000175" || g.Pricing.InputCacheWrite != nil {
			t.Errorf("gpt-5.2 pricing %+v, want 0.00000175, 0.000014, 0.000000175 and no input_cache_write", g.Pricing)
		}
		if g.ContextLength == nil || *g.ContextLength != 400000 {
			t.Errorf("gpt-5.2 context_length %v, want 400000", g.ContextLength)
		}
		if o.Pricing.Prompt != "0.0000005" || o.Pricing.Completion != "0.0000015" || o.Pricing.InputCacheRead != nil ||
			o.Pricing.InputCacheWrite == nil || *o.Pricing.InputCacheWrite != "0.000000625" {
			t.Errorf("other pricing %+v, want 0.0000005, 0.0000015, no input_cache_read and 0.000000625 input_cache_write", o.Pricing)
		}
		if o.ContextLength != nil || o.OwnedBy != "up" {
			t.Errorf("other is %+v, want no context_length and owned_by its provider", o)
		}
	})

	t.Run("a key with an allow-list sees only its models", func(t *testing.T) {
		l, body := list(t, limited.Key)
		if len(l.Data) != 1 || l.Data[0].ID != "other" {
			t.Errorf("models %s, want only other", body)
		}
	})

	t.Run("the OpenAI SDK lists the model ids", func(t *testing.T) {
		client := openai.NewClient(option.WithBaseURL(siteURL+"/v1/"), option.WithAPIKey(env.key.Key),
			option.WithMaxRetries(0), option.WithRequestTimeout(streamWait))
		page, err := client.Models.List(context.Background())
		if err != nil {
			t.Fatalf("Models.List: %v", err)
		}
		var ids []string
		for _, m := range page.Data {
			ids = append(ids, m.ID)
			if m.OwnedBy == "" || m.Created == 0 {
				t.Errorf("model %+v lacks owned_by or created", m)
			}
		}
		if !slices.Equal(ids, []string{publicModel, "other"}) {
			t.Errorf("ids %q, want gpt-5.2 and other", ids)
		}
	})
}

type testStatus struct {
	Status string `json:"status"`
	Models map[string]struct {
		Status      string `json:"status"`
		Deployments []struct {
			Provider string `json:"provider"`
			Status   string `json:"status"`
		} `json:"deployments"`
	} `json:"models"`
}

func TestStatusReportsDeploymentHealth(t *testing.T) {
	resetHealth()
	env := startChat(t, chatOptions{})
	status := func(t *testing.T, wantHTTP int) testStatus {
		t.Helper()
		code, _, body := apiGet(t, env.tester, "/v1/status", "Bearer "+env.key.Key)
		if code != wantHTTP {
			t.Fatalf("GET /v1/status: status %d, want %d; body %s", code, wantHTTP, body)
		}
		if strings.Contains(body, upstreamModel) {
			t.Errorf("the status names the upstream model: %s", body)
		}
		var s testStatus
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			t.Fatalf("decoding %s: %v", body, err)
		}
		return s
	}
	assertHealth := func(t *testing.T, s testStatus, overall, health string) {
		t.Helper()
		m, ok := s.Models[publicModel]
		if s.Status != overall || !ok || m.Status != health || len(m.Deployments) != 1 ||
			m.Deployments[0].Provider != "up" || m.Deployments[0].Status != health {
			t.Errorf("status %+v, want %s overall and gpt-5.2 %s on provider up", s, overall, health)
		}
	}

	assertHealth(t, status(t, http.StatusOK), "ok", "ok")

	env.up.handle(func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		writeUpstreamError(w, http.StatusInternalServerError, "server_error", "The server had an error.")
	})
	// The default breaker opens after five failures in a row.
	for i := 1; i <= 5; i++ {
		if resp := postChat(t, env.key.Key, chatBody(publicModel, "")); resp.Status != http.StatusBadGateway {
			t.Fatalf("failure %d: status %d, want 502; body %s", i, resp.Status, resp.Body)
		}
		if i == 4 {
			assertHealth(t, status(t, http.StatusOK), "ok", "ok")
		}
	}
	s := status(t, http.StatusServiceUnavailable)
	if m := s.Models[publicModel]; s.Status != "down" || m.Status != "down" || len(m.Deployments) != 1 || m.Deployments[0].Status != "open" {
		t.Errorf("status %+v, want down overall, gpt-5.2 down and its deployment open", s)
	}
}

func TestChatUsageReachesTheAccessLog(t *testing.T) {
	env := startChat(t, chatOptions{accessLog: true})
	noUsage := upstreamReply{Pieces: standardReply.Pieces}

	for i, tc := range []struct {
		name     string
		reply    upstreamReply
		extra    string
		basis    string
		upstream *wireUsage // nil: counted, so only > 0 is known
	}{
		{name: "a completion is metered with the upstream's usage", reply: standardReply, basis: "upstream", upstream: standardReply.Usage},
		{name: "a stream is metered with the usage chunk the gateway asked for", reply: standardReply, extra: `,"stream":true`,
			basis: "upstream", upstream: standardReply.Usage},
		{name: "a completion without usage is counted", reply: noUsage, basis: "counted"},
		{name: "a stream without a usage chunk is counted", reply: noUsage, extra: `,"stream":true`, basis: "counted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env.up.handle(replyWith(tc.reply))
			marker := "chat-usage-" + string(rune('a'+i))
			resp := sendChat(t, http.MethodPost, env.key.Key, chatBody(publicModel, tc.extra), http.Header{"X-Arcane-Test": {marker}})
			if resp.Status != http.StatusOK {
				t.Fatalf("status %d, want 200; body %s", resp.Status, resp.Body)
			}
			entry, line := accessLogLine(t, env.logPath, marker)
			if entry["arcane_model"] != publicModel || entry["arcane_usage_basis"] != tc.basis || entry["arcane_outcome"] != "ok" {
				t.Errorf("model %v, basis %v, outcome %v; want %s, %s, ok; line %s",
					entry["arcane_model"], entry["arcane_usage_basis"], entry["arcane_outcome"], publicModel, tc.basis, line)
			}
			prompt, _ := entry["arcane_prompt_tokens"].(float64)
			completion, _ := entry["arcane_completion_tokens"].(float64)
			cached, _ := entry["arcane_cached_tokens"].(float64)
			if u := tc.upstream; u != nil {
				if int64(prompt) != u.PromptTokens || int64(completion) != u.CompletionTokens || int64(cached) != u.PromptTokensDetails.CachedTokens {
					t.Errorf("tokens %v/%v/%v (prompt/completion/cached), want the upstream's %d/%d/%d; line %s",
						prompt, completion, cached, u.PromptTokens, u.CompletionTokens, u.PromptTokensDetails.CachedTokens, line)
				}
			} else if prompt <= 0 || completion <= 0 || completion > 50 {
				t.Errorf("counted tokens %v/%v (prompt/completion), want both above 0 and a few for %q; line %s",
					prompt, completion, tc.reply.content(), line)
			}
		})
	}

	t.Run("the access log holds neither the client's key nor the provider's", func(t *testing.T) {
		_, _ = accessLogLine(t, env.logPath, "chat-usage-d")
		data := readFile(t, env.logPath)
		for _, secret := range []string{env.key.Key, env.providerKey} {
			if strings.Contains(data, secret) {
				t.Errorf("the access log contains a secret:\n%s", data)
			}
		}
	})
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestChatWithTheMockProvider(t *testing.T) {
	path := filepath.Join(t.TempDir(), "arcane.db")
	caddytest.NewTester(t).InitServer(testCaddyfile(path, `provider mock {
			type mock
		}
		model gpt-5.2 {
			deploy mock gpt-5.2-2025-12-11
			price input 1.75 output 14.00
		}`, chatRoutes), "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	acct := createAccount(t, "mock")
	key := createKey(t, acct.ID, nil)

	t.Run("the seed's curl example answers with content and usage", func(t *testing.T) {
		resp := postChat(t, key.Key, `{"model":"gpt-5.2","messages":[{"role":"user","content":"Hello, world!"}]}`)
		if resp.Status != http.StatusOK {
			t.Fatalf("status %d, want 200; body %s", resp.Status, resp.Body)
		}
		var got struct {
			Model   string `json:"model"`
			Choices []struct {
				Message struct {
					Content string `json:"content"`
				} `json:"message"`
			} `json:"choices"`
			Usage *wireUsage `json:"usage"`
		}
		if err := json.Unmarshal(resp.Body, &got); err != nil {
			t.Fatalf("decoding %s: %v", resp.Body, err)
		}
		if got.Model != publicModel || len(got.Choices) == 0 || got.Choices[0].Message.Content == "" {
			t.Errorf("answer %s, want model gpt-5.2 and a message", resp.Body)
		}
		if got.Usage == nil || got.Usage.PromptTokens <= 0 || got.Usage.CompletionTokens <= 0 ||
			got.Usage.TotalTokens != got.Usage.PromptTokens+got.Usage.CompletionTokens {
			t.Errorf("usage %+v, want positive counts that add up", got.Usage)
		}
		if strings.Contains(string(resp.Body), "gpt-5.2-2025-12-11") {
			t.Errorf("the answer names the deployment's model: %s", resp.Body)
		}
	})

	t.Run("a stream from the mock ends in [DONE] with the public model", func(t *testing.T) {
		resp := postChat(t, key.Key, chatBody(publicModel, `,"stream":true`))
		if resp.Status != http.StatusOK {
			t.Fatalf("status %d, want 200; body %s", resp.Status, resp.Body)
		}
		events := splitEvents(t, resp.Body)
		if events[len(events)-1] != "[DONE]" || len(events) < 3 {
			t.Fatalf("events %q, want chunks and [DONE]", events)
		}
		for i, e := range events[:len(events)-1] {
			if c := decodeChunk(t, e); c.Model != publicModel || c.Usage != nil {
				t.Errorf("event %d is %s, want model gpt-5.2 and no usage", i, e)
			}
		}
		if strings.Contains(string(resp.Body), "gpt-5.2-2025-12-11") {
			t.Errorf("the stream names the deployment's model:\n%s", resp.Body)
		}
	})
}

func TestCatalogErrorsFailTheLoad(t *testing.T) {
	tester, _ := startArcane(t)
	acct := createAccount(t, "kept")
	key := createKey(t, acct.ID, nil)
	t.Setenv(upstreamKeyEnv, "")

	for _, tc := range []struct {
		name    string
		catalog string
		want    []string
	}{
		{
			name: "a model deployed on an undefined provider names the model and the provider",
			catalog: `model gpt-5.2 {
			deploy nowhere gpt-5.2-2025-12-11
			price input 1 output 2
		}`,
			want: []string{"model gpt-5.2", "unknown provider", "nowhere"},
		},
		{
			name: "format on a provider that is not the mock is refused",
			catalog: `provider claude {
			type anthropic
			format anthropic
		}
		model claude-sonnet-4-6 {
			deploy claude claude-sonnet-4-6
			price input 3 output 15
		}`,
			want: []string{"provider claude", "format is an option of type mock"},
		},
		{
			name: "the mock refuses a format it does not speak",
			catalog: `provider m {
			type mock
			format gemini
		}
		model x {
			deploy m x
			price input 3 output 15
		}`,
			want: []string{"provider m", "format", "gemini"},
		},
		{
			name:    "a provider key from an unset variable fails the load",
			catalog: chatArcane("https://api.example.com/v1", ""),
			want:    []string{"provider up", "api_key"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := loadCaddyfile(t, testCaddyfile(filepath.Join(t.TempDir(), "other.db"), tc.catalog, chatRoutes))
			if status == http.StatusOK {
				t.Fatal("the config loaded")
			}
			for _, w := range tc.want {
				if !strings.Contains(body, w) {
					t.Errorf("the error does not contain %s: %s", w, body)
				}
			}
			assertStatusOK(t, tester, key.Key)
		})
	}
}

func TestDeploymentHealthSurvivesReload(t *testing.T) {
	resetHealth()
	clock := &limitClock{base: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	saved := healthNow
	healthNow = clock.now
	t.Cleanup(func() { healthNow = saved })
	env := startChat(t, chatOptions{})
	env.up.handle(func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		writeUpstreamError(w, http.StatusInternalServerError, "server_error", "The server had an error.")
	})
	for i := 1; i <= 5; i++ {
		if resp := postChat(t, env.key.Key, chatBody(publicModel, "")); resp.Status != http.StatusBadGateway {
			t.Fatalf("failure %d: status %d, want 502", i, resp.Status)
		}
	}
	statusOf := func() string {
		_, _, body := apiGet(t, env.tester, "/v1/status", "Bearer "+env.key.Key)
		var s testStatus
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			t.Fatalf("decoding %s: %v", body, err)
		}
		return s.Models[publicModel].Deployments[0].Status
	}
	if got := statusOf(); got != "open" {
		t.Fatalf("before the reload the deployment is %s, want open", got)
	}

	// The same deployment in a changed config (an extra route) keeps its
	// health; Caddy would skip a reload of an identical config.
	reloaded := strings.Replace(env.cfg, "http://localhost:9080 {\n", "http://localhost:9080 {\n\trespond /reload-marker 204\n", 1)
	if reloaded == env.cfg {
		t.Fatal("could not change the config")
	}
	env.tester.InitServer(reloaded, "caddyfile")
	if got := statusOf(); got != "open" {
		t.Fatalf("after the reload the deployment is %s, want open: reloads must keep health", got)
	}

	// After the cool-down the next request is the probe; its success
	// closes the circuit.
	clock.advance(30 * time.Second)
	if got := statusOf(); got != "half_open" {
		t.Fatalf("after the cool-down the deployment is %s, want half_open", got)
	}
	env.up.handle(replyWith(standardReply))
	if resp := postChat(t, env.key.Key, chatBody(publicModel, "")); resp.Status != http.StatusOK {
		t.Fatalf("status %d after the upstream recovered", resp.Status)
	}
	if got := statusOf(); got != "ok" {
		t.Fatalf("after a success the deployment is %s, want ok", got)
	}
}
