package mock

import "time"

// DefaultReplyTokens is the length of a reply when neither the Config nor
// the request says otherwise.
const DefaultReplyTokens = 16

// Config shapes the mock's replies. The zero value answers at once with
// DefaultReplyTokens tokens and never fails.
type Config struct {
	// TimeToFirstToken is how long the mock "thinks" before the first token
	// of a reply: in a stream, the wait between the role chunk and the first
	// content chunk; without streaming, part of the wait before the answer.
	// Default: 0 (no wait).
	TimeToFirstToken time.Duration

	// TokensPerSecond paces a reply: after the first token, each further
	// token waits 1/TokensPerSecond. A non-streamed reply waits as long as
	// the stream would have, then arrives whole. Default: 0 (as fast as
	// the client reads).
	TokensPerSecond float64

	// ReplyTokens is the natural length of a reply, in tokens (one token is
	// one word and one streamed chunk). A request's max_completion_tokens or
	// max_tokens caps it, and finish_reason is "length" when the cap cuts
	// the reply short, "stop" otherwise. Default: DefaultReplyTokens.
	ReplyTokens int

	// ErrorRate is the fraction of chat completion requests, 0 to 1,
	// answered with an OpenAI-style 500 instead of a reply. Failures are
	// spread evenly and deterministically: request n (counting from 1)
	// fails when floor(n*ErrorRate) > floor((n-1)*ErrorRate), so 0.25
	// fails requests 4, 8, 12, ... Requests refused with a 400 are not
	// counted. Default: 0 (never). Values outside 0..1 are clamped.
	ErrorRate float64
}
