// Package upstream owns the model catalog (public models, their
// deployments on providers) and the proxy that speaks to providers: it
// builds a fresh upstream request for a chat completion, sends it, and
// streams the answer back to the client event by event with the public
// model id restored, metering the tokens it delivered.
//
// Its sub-packages own the wire formats: openai (OpenAI-shaped requests,
// responses and chunks at the byte level), sse (event framing), tokens
// (offline token counting for upstreams that report no usage) and mock (a
// deterministic OpenAI-compatible upstream). It imports no Caddy; the
// arcane_proxy handler in caddymodule adapts it.
package upstream
