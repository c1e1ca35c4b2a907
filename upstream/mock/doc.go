// Package mock is a deterministic OpenAI-compatible chat completions
// upstream. Its Handler answers POST {base}/chat/completions (streamed or
// not) and GET {base}/models with replies that depend only on the request
// and on a per-handler request counter: the same words, the same usage, the
// same finish_reason, and failures injected on a fixed schedule, optionally
// paced by a time to first token and a token rate. The gateway uses it in
// process, through Transport, as the built-in `mock` provider so `make run`
// works without a provider account; served over a socket it is the upstream
// of the load benchmark. It deliberately models only what the gateway
// relies on (request validation, the wire shapes of responses, chunks,
// usage and errors, pacing, client disconnects), not generation: no tools,
// no n>1, no logprobs. It imports only the standard library.
package mock
