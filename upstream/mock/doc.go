// Package mock is a deterministic LLM upstream that speaks both wire
// formats the gateway talks to: OpenAI's chat completions
// (POST {base}/chat/completions, GET {base}/models) and Anthropic's
// Messages API (POST {base}/messages, with its anthropic-version header,
// event-named stream and error envelope). Its Handler answers, streamed or
// not, with replies that depend only on the request and on a per-handler
// request counter: the same words and the same token counts in both
// formats, the same finish (stop or length; end_turn, max_tokens or
// stop_sequence), and failures injected on a fixed schedule (an OpenAI 500
// or an Anthropic 529 overloaded_error), optionally paced by a time to
// first token and a token rate. The gateway uses it in process, through
// Transport, as the built-in `mock` provider so `make run` works without a
// provider account, for OpenAI- and Anthropic-shaped models alike; served
// over a socket it is the upstream of the load benchmark. It deliberately
// models only what the gateway relies on (request validation, the wire
// shapes of responses, chunks, events, usage and errors, pacing, client
// disconnects), not generation: it accepts tools but never calls one, has
// no n>1, no logprobs, no thinking, no prompt caching (cache token counts
// are always 0), and no count_tokens endpoint. It imports only the
// standard library.
package mock
