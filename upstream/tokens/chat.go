package tokens

// Message is the part of a chat message that costs prompt tokens.
type Message struct {
	// Role is the author's role ("system", "user", "assistant", "tool").
	Role string
	// Name is the optional participant name; empty when the message has
	// none.
	Name string
	// Texts are the message's string contents: its content, or the text of
	// each text part of a content array, and the name and arguments of each
	// tool call.
	Texts [][]byte
}

// The overhead of the chat format, from the OpenAI cookbook's
// num_tokens_from_messages (examples/How_to_count_tokens_with_tiktoken.ipynb)
// for gpt-3.5-turbo-0613 and every later model. The cookbook calls the
// result an estimate that can change between model versions.
const (
	tokensPerMessage = 3 // each message is wrapped in start/role/end markers
	tokensPerName    = 1 // a message with a name pays one more
	replyPriming     = 3 // every reply is primed with the assistant's start
)

// CountChat returns the prompt tokens of messages for model: for each
// message tokensPerMessage plus the tokens of its role, of its name and of
// each of its texts, plus tokensPerName when it has a name; then
// replyPriming for the reply. Images and tool definitions are not counted.
func (c *Counter) CountChat(model string, messages []Message) int {
	v := c.vocabulary(model)
	n := replyPriming
	for _, m := range messages {
		n += tokensPerMessage + v.count(m.Role)
		if m.Name != "" {
			n += tokensPerName + v.count(m.Name)
		}
		for _, t := range m.Texts {
			n += v.count(string(t))
		}
	}
	return n
}
