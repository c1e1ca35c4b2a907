package anthropic

import (
	"encoding/json"
	"strconv"
)

// Tools: OpenAI's function tools and tool_choice in Anthropic's terms. Tool
// calls and tool results inside messages are in messages.go.

type tool struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	InputSchema json.RawMessage `json:"input_schema"`
}

type toolChoice struct {
	Type                   string `json:"type"`
	Name                   string `json:"name,omitempty"`
	DisableParallelToolUse bool   `json:"disable_parallel_tool_use,omitempty"`
}

// translateTools maps function tools; missing parameters mean a function of
// no arguments.
func translateTools(raw json.RawMessage) ([]tool, *RequestError) {
	if absent(raw) {
		return nil, nil
	}
	items, err := array(raw, "tools")
	if err != nil {
		return nil, err
	}
	tools := make([]tool, 0, len(items))
	for i, it := range items {
		p := "tools[" + strconv.Itoa(i) + "]"
		t, err := object(it, p)
		if err != nil {
			return nil, err
		}
		if raw := t["type"]; !absent(raw) {
			typ, err := requiredString(raw, p+".type")
			if err != nil {
				return nil, err
			}
			if typ != "function" {
				return nil, &RequestError{Param: p + ".type", Code: codeUnsupportedValue,
					Message: "This model supports only tools of type 'function', not '" + typ + "'."}
			}
		}
		fn, err := requiredObject(t["function"], p+".function")
		if err != nil {
			return nil, err
		}
		name, err := nonEmptyString(fn["name"], p+".function.name")
		if err != nil {
			return nil, err
		}
		var desc string
		if raw := fn["description"]; !absent(raw) {
			if desc, err = requiredString(raw, p+".function.description"); err != nil {
				return nil, err
			}
		}
		schema := json.RawMessage(`{"type":"object"}`)
		if raw := fn["parameters"]; !absent(raw) {
			if raw[0] != '{' {
				return nil, wrongType(raw, p+".function.parameters", "an object")
			}
			schema = raw
		}
		tools = append(tools, tool{Name: name, Description: desc, InputSchema: schema})
	}
	return tools, nil
}

// translateToolChoice maps tool_choice. Without tools, "none" and "auto"
// mean what they would anyway and are left out; asking for a tool call
// without any tool is an error, as it is at OpenAI.
func translateToolChoice(raw json.RawMessage, haveTools bool) (*toolChoice, *RequestError) {
	if absent(raw) {
		return nil, nil
	}
	var c *toolChoice
	switch raw[0] {
	case '"':
		s, _ := rawString(raw)
		switch s {
		case "auto":
			c = &toolChoice{Type: "auto"}
		case "required":
			c = &toolChoice{Type: "any"}
		case "none":
			c = &toolChoice{Type: "none"}
		default:
			return nil, &RequestError{Param: "tool_choice", Code: codeValue,
				Message: "Invalid value for 'tool_choice': supported values are 'none', 'auto', 'required' and a named function."}
		}
	case '{':
		m, err := object(raw, "tool_choice")
		if err != nil {
			return nil, err
		}
		typ, err := requiredString(m["type"], "tool_choice.type")
		if err != nil {
			return nil, err
		}
		if typ != "function" {
			return nil, &RequestError{Param: "tool_choice.type", Code: codeUnsupportedValue,
				Message: "This model supports only a 'tool_choice' of type 'function', not '" + typ + "'."}
		}
		fn, err := requiredObject(m["function"], "tool_choice.function")
		if err != nil {
			return nil, err
		}
		name, err := nonEmptyString(fn["name"], "tool_choice.function.name")
		if err != nil {
			return nil, err
		}
		c = &toolChoice{Type: "tool", Name: name}
	default:
		return nil, wrongType(raw, "tool_choice", "a string or an object")
	}
	if !haveTools {
		if c.Type == "auto" || c.Type == "none" {
			return nil, nil
		}
		return nil, &RequestError{Param: "tool_choice", Code: codeValue,
			Message: "Invalid 'tool_choice': a tool call can only be required when 'tools' are given."}
	}
	return c, nil
}
