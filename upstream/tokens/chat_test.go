package tokens

import "testing"

// cookbookMessages are the example messages of OpenAI's cookbook notebook
// How_to_count_tokens_with_tiktoken, two of them with a name.
var cookbookMessages = []Message{
	{Role: "system", Texts: [][]byte{[]byte("You are a helpful, pattern-following assistant that translates corporate jargon into plain English.")}},
	{Role: "system", Name: "example_user", Texts: [][]byte{[]byte("New synergies will help drive top-line growth.")}},
	{Role: "system", Name: "example_assistant", Texts: [][]byte{[]byte("Things working well together will increase revenue.")}},
	{Role: "system", Name: "example_user", Texts: [][]byte{[]byte("Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage.")}},
	{Role: "system", Name: "example_assistant", Texts: [][]byte{[]byte("Let's talk later when we're less busy about how to do better.")}},
	{Role: "user", Texts: [][]byte{[]byte("This late pivot means we don't have time to boil the ocean for the client deliverable.")}},
}

// cookbookFormula is num_tokens_from_messages written out with Count.
func cookbookFormula(c *Counter, model string, messages []Message) int {
	n := 3
	for _, m := range messages {
		n += 3 + c.Count(model, []byte(m.Role))
		if m.Name != "" {
			n += 1 + c.Count(model, []byte(m.Name))
		}
		for _, t := range m.Texts {
			n += c.Count(model, t)
		}
	}
	return n
}

func TestCountChatFollowsTheCookbookFormula(t *testing.T) {
	tests := []struct {
		name     string
		messages []Message
	}{
		{"the cookbook's example conversation", cookbookMessages},
		{"no messages cost only the reply priming", nil},
		{"a message without text still pays its overhead and role", []Message{{Role: "assistant"}}},
		{"a named message pays for its name", []Message{{Role: "user", Name: "alice", Texts: [][]byte{[]byte("hi")}}}},
		{"every text part and tool call counts", []Message{
			{Role: "user", Texts: [][]byte{[]byte("What is the weather in Paris?"), []byte("And in Lyon?")}},
			{Role: "assistant", Texts: [][]byte{[]byte("get_weather"), []byte(`{"city":"Paris"}`), []byte("get_weather"), []byte(`{"city":"Lyon"}`)}},
			{Role: "tool", Texts: [][]byte{[]byte(`{"temp_c":21}`)}},
		}},
	}
	c := NewCounter()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, model := range []string{o200kModel, cl100kModel} {
				want := cookbookFormula(c, model, tt.messages)
				if got := c.CountChat(model, tt.messages); got != want {
					t.Errorf("CountChat(%q) = %d, want %d", model, got, want)
				}
			}
		})
	}
	t.Logf("cookbook example: %d tokens with cl100k_base, %d with o200k_base",
		c.CountChat(cl100kModel, cookbookMessages), c.CountChat(o200kModel, cookbookMessages))
}

func TestCountChatOfNoMessagesIsTheReplyPriming(t *testing.T) {
	if got := NewCounter().CountChat(o200kModel, nil); got != 3 {
		t.Errorf("CountChat(nil) = %d, want 3", got)
	}
}
