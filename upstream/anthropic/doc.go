// Package anthropic translates between OpenAI Chat Completions, which the
// gateway's clients speak, and Anthropic's Messages API, which Anthropic
// models are served with: the request one way (AppendRequest), the answer the
// other (AppendCompletion, and Stream for server-sent events), with
// Anthropic's usage mapped to OpenAI's and its error envelope read
// (ParseError). Clients see OpenAI's shapes, the public model id and
// OpenAI-style ids throughout.
//
// It deliberately does not do HTTP (headers, status mapping, retries and
// failover belong to the proxy: it sends x-api-key and anthropic-version:
// Version), SSE parsing (upstream/sse), the [DONE] sentinel or the cost in
// the usage chunk (the proxy's), or token counting. It imports no Caddy.
//
// # Request
//
//   - system and developer messages, wherever they stand, become the
//     top-level system, one text block per text, in order.
//   - user, assistant and tool messages become turns. Consecutive messages
//     of one role are merged into one turn, as Anthropic wants user and
//     assistant to alternate; tool messages are user turns, so consecutive
//     tool messages become one user turn of tool_result blocks (tool_use_id =
//     tool_call_id, content = the message's text), and the tool_result
//     blocks of a turn are moved before its other blocks. A first message
//     that is assistant is kept (a prefill), and trailing white space is
//     trimmed from a final assistant text, which Anthropic refuses.
//   - Text that is empty or white space only is dropped, and so is a
//     message left with no content: Anthropic refuses both. A request with
//     no user or assistant content at all is refused.
//   - Content parts: text; image_url with a base64 data URL (image/jpeg,
//     png, gif, webp; image/jpg is read as jpeg) becomes a base64 image
//     source, with an http(s) URL a url source; detail is dropped. Any other
//     part (input_audio, file, ...) is refused, naming the part's type.
//     Assistant refusal parts, and an assistant message's refusal when it
//     has no text, are sent as text. A cache_control object on a text or
//     image part is passed on, so clients can use Anthropic's prompt cache.
//   - Assistant tool_calls become tool_use blocks: id, name, and input =
//     the arguments parsed, which must be a JSON object ("" means {});
//     anything else is refused. Only function tool calls are accepted.
//     Tool call ids keep only letters, digits, '_' and '-' (Anthropic's
//     rule; others become '_'), in tool_use and tool_result alike.
//   - max_tokens is max_completion_tokens, else max_tokens, lowered to
//     RequestOptions.MaxOutputTokens when that is set; else
//     RequestOptions.MaxTokens, else DefaultMaxTokens (4096). It is never 0.
//   - temperature is accepted over OpenAI's 0-2 and clamped to Anthropic's
//     0-1: anything above 1 is sent as 1, the most random Anthropic allows.
//   - top_p is passed on, except 1 (its default, a no-op), left out because
//     newer Claude models refuse temperature and top_p together.
//   - stop (a string or an array) becomes stop_sequences, without the
//     empty or blank ones Anthropic refuses.
//   - tools of type function become tools (parameters -> input_schema,
//     {"type":"object"} when missing); strict is dropped (not enforced).
//     tool_choice "auto" -> auto, "required" -> any, "none" -> none, a named
//     function -> tool; parallel_tool_calls false sets
//     disable_parallel_tool_use (on an auto choice when none was given).
//     Without tools, "auto" and "none" are dropped and the others refused.
//   - safety_identifier, else user, becomes metadata.user_id, unless it
//     looks like an email address or a phone number (digits with '+' or
//     separators; bare digits pass as a database id), which Anthropic
//     refuses: then it is dropped.
//   - stream comes from RequestOptions.Stream; stream_options is dropped,
//     as Anthropic always reports usage in streams.
//   - Refused, because dropping them would change what the client gets:
//     n other than 1, logprobs true, top_logprobs, a non-empty logit_bias
//     (OpenAI token ids mean nothing to Claude), response_format other than
//     text (json_object, json_schema), modalities other than text, audio,
//     web_search_options, the deprecated functions, function_call and
//     function role.
//   - Invalid UTF-8 anywhere in the body is replaced by U+FFFD, as
//     encoding/json does, so values passed on raw (parameters schemas,
//     cache_control) cannot carry it upstream.
//   - Dropped, because they only tune or label the request:
//     frequency_penalty, presence_penalty, seed, reasoning_effort,
//     verbosity, prediction, store, metadata, service_tier,
//     prompt_cache_key, message names, and any parameter this package does
//     not know.
//
// # Response
//
//   - id is "chatcmpl-" + the message id; created is the time given; model
//     is the public model id.
//   - Text blocks are concatenated into message.content, which is null when
//     there are none. tool_use blocks become message.tool_calls, keeping the
//     toolu_ id (it must come back as tool_call_id), with the input as a
//     compact JSON string. Thinking, redacted thinking and server tool
//     blocks are dropped: the gateway never asks for them.
//   - stop_reason: end_turn, stop_sequence -> stop; max_tokens and
//     model_context_window_exceeded -> length; tool_use -> tool_calls;
//     refusal -> content_filter; pause_turn (a server tool's turn, never
//     asked for), none and unknown values -> stop.
//   - usage: prompt_tokens = input + cache_creation_input +
//     cache_read_input tokens, prompt_tokens_details.cached_tokens =
//     cache_read_input_tokens, prompt_tokens_details.cache_write_tokens =
//     cache_creation_input_tokens when there are any (the name OpenAI's SDKs
//     and OpenRouter use), completion_tokens = output_tokens, total_tokens =
//     their sum.
//
// # Stream
//
// message_start gives the first chunk, with the assistant role; text deltas
// become content chunks; a tool_use block start becomes a tool call chunk
// with OpenAI's index (0, 1, 2… over tool calls, whatever Anthropic's block
// index), its id and name, and input_json_delta its argument pieces; a tool
// call that got no arguments gets "{}" when its block stops; the first
// message_delta with a stop_reason gives the chunk with finish_reason (or
// message_stop, "stop", when none did); thinking, signatures, citations and
// ping are dropped, and so is content after the finish chunk, which
// Anthropic never sends and OpenAI clients would not expect. An error event
// ends the stream with one in-band error chunk, OpenRouter's convention:
// finish_reason "error" and OpenAI's error object beside choices. Every chunk
// carries the same id, created and public model. Usage comes from
// message_start (input and cache counts) and the last message_delta
// (output_tokens, a running total that replaces, never adds);
// OutputReported says whether that count has come, so that a stream cut
// short can be billed for the text delivered instead.
//
// Every error AppendRequest returns is a *RequestError; Stream.Event fails
// only on data that is not a JSON object, reading values of unexpected types
// as absent.
package anthropic
