// Package openai owns the OpenAI Chat Completions wire format at the byte
// level, so the gateway never decodes and re-encodes a body on the hot path.
// It scans and validates a client's request in one pass (ScanRequest: the
// model, stream, max_tokens, n and stream_options the handlers need, or a
// *RequestError naming the bad param for the 400), rewrites the request for
// the upstream by splicing byte spans (AppendUpstream: upstream model ID,
// stream_options.include_usage), rewrites the model of every response and
// stream chunk back to the public ID (AppendWithModel), and reads what the
// upstream reported and delivered (ParseUsage, IsUsageOnlyChunk,
// AppendContent). All of it rests on a small allocation-free walker over
// JSON objects whose notion of valid JSON is exactly encoding/json's.
//
// It deliberately does not do HTTP, SSE framing (upstream/sse), token
// counting (upstream/tokens), translation to other providers'
// formats (upstream/anthropic), or choose models and deployments; and it does
// not validate fields the gateway does not act on: those pass through
// byte-for-byte for the upstream to judge. It imports no Caddy.
package openai
