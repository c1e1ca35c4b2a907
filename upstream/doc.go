// Package upstream will own the model catalog, deployments and their
// selection, and the proxy that speaks to providers (OpenAI-shaped and
// Anthropic wire formats, SSE, usage metering). It imports no Caddy. It is
// empty until the chat-completions work lands; the arcane_proxy handler in
// caddymodule will adapt it.
package upstream
