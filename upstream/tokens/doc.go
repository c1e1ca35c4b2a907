// Package tokens counts tokens locally, for the requests whose upstream
// reports no usage: the gateway then counts the prompt and the text it
// actually delivered and records the result with basis "counted". It owns the
// mapping from a model id to a tiktoken encoding (o200k_base or cl100k_base;
// every model that is not OpenAI's, Claude, Llama, Qwen and Mistral included,
// is approximated with o200k_base), the byte-pair counting itself, with
// vocabularies embedded in the binary and never fetched or cached on disk,
// and the OpenAI cookbook's per-message overhead for chat requests. It
// deliberately does not parse request or response bodies, which the caller
// reduces to Messages and text; does not estimate images, hidden tool
// definitions or reasoning tokens; and does not call a provider's own
// counter (Anthropic's count_tokens), because upstream usage, when there is
// any, is always preferred to a count made here. It imports no Caddy.
package tokens
