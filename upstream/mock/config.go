package mock

import "time"

// DefaultReplyTokens is the length of a reply when neither the Config nor
// the request says otherwise.
const DefaultReplyTokens = 16

// Config shapes the mock's replies. The zero value answers at once with
// DefaultReplyTokens tokens and never fails.
type Config struct {
	// TimeToFirstToken is how long the mock "thinks" before the first token
	// of a reply: in a stream, the wait between the role chunk (Anthropic:
	// the ping after message_start and content_block_start) and the first
	// content chunk (content_block_delta); without streaming, part of the
	// wait before the answer. Default: 0 (no wait).
	TimeToFirstToken time.Duration

	// TokensPerSecond paces a reply: after the first token, each further
	// token waits 1/TokensPerSecond. A non-streamed reply waits as long as
	// the stream would have, then arrives whole. Default: 0 (as fast as
	// the client reads).
	TokensPerSecond float64

	// ReplyTokens is the natural length of a reply, in tokens (one token is
	// one word and one streamed chunk). A request's max_completion_tokens or
	// max_tokens caps it, and finish_reason is "length" when the cap cuts
	// the reply short, "stop" otherwise (Anthropic: stop_reason max_tokens
	// or end_turn; a stop sequence the reply's text reaches ends it there
	// with stop_reason stop_sequence). Default: DefaultReplyTokens.
	ReplyTokens int

	// ErrorRate is the fraction of chat completion and messages requests,
	// 0 to 1, answered with an error instead of a reply: an OpenAI-style
	// 500 server_error for chat completions, Anthropic's usual transient
	// failure, a 529 overloaded_error, for messages. Failures are spread
	// evenly and deterministically over both kinds together: request n
	// (counting from 1) fails when floor(n*ErrorRate) > floor((n-1)*ErrorRate),
	// so 0.25 fails requests 4, 8, 12, ... Requests refused with a 4xx are
	// not counted. Default: 0 (never). Values outside 0..1 are clamped.
	ErrorRate float64
}
