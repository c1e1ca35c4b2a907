package anthropic

import (
	"encoding/json"
	"strconv"
	"strings"
)

// Typed access to the raw members of a client's request, with OpenAI-style
// errors naming the parameter.

func object(raw json.RawMessage, param string) (map[string]json.RawMessage, *RequestError) {
	if len(raw) == 0 || raw[0] != '{' {
		return nil, wrongType(raw, param, "an object")
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return nil, wrongType(raw, param, "an object")
	}
	return m, nil
}

func requiredObject(raw json.RawMessage, param string) (map[string]json.RawMessage, *RequestError) {
	if absent(raw) {
		return nil, missing(param)
	}
	return object(raw, param)
}

func array(raw json.RawMessage, param string) ([]json.RawMessage, *RequestError) {
	if len(raw) == 0 || raw[0] != '[' {
		return nil, wrongType(raw, param, "an array")
	}
	var a []json.RawMessage
	if json.Unmarshal(raw, &a) != nil {
		return nil, wrongType(raw, param, "an array")
	}
	return a, nil
}

func requiredString(raw json.RawMessage, param string) (string, *RequestError) {
	if absent(raw) {
		return "", missing(param)
	}
	s, ok := rawString(raw)
	if !ok {
		return "", wrongType(raw, param, "a string")
	}
	return s, nil
}

func nonEmptyString(raw json.RawMessage, param string) (string, *RequestError) {
	s, err := requiredString(raw, param)
	if err == nil && s == "" {
		err = &RequestError{Param: param, Code: codeValue,
			Message: "Invalid '" + param + "': expected a non-empty string, but got an empty string instead."}
	}
	return s, err
}

func optionalBool(raw json.RawMessage, param string) (*bool, *RequestError) {
	if absent(raw) {
		return nil, nil
	}
	var b bool
	switch string(raw) {
	case "true":
		b = true
	case "false":
	default:
		return nil, wrongType(raw, param, "a boolean")
	}
	return &b, nil
}

// optionalNumber reads a nullable number in [0, max].
func optionalNumber(raw json.RawMessage, param string, max float64) (*float64, *RequestError) {
	if absent(raw) {
		return nil, nil
	}
	if !isNumber(raw) {
		return nil, wrongType(raw, param, "a number")
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || f < 0 || f > max {
		return nil, &RequestError{Param: param, Code: codeValue,
			Message: "Invalid '" + param + "': expected a number from 0 to " + strconv.FormatFloat(max, 'g', -1, 64) + "."}
	}
	return &f, nil
}

// integer reads an integer literal.
func integer(raw json.RawMessage, param string) (int64, *RequestError) {
	if !isNumber(raw) {
		return 0, wrongType(raw, param, "an integer")
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
			return 0, &RequestError{Param: param, Code: codeValue,
				Message: "Invalid '" + param + "': the integer is out of range."}
		}
		return 0, wrongType(raw, param, "an integer")
	}
	return n, nil
}

func isNumber(raw json.RawMessage) bool {
	return len(raw) > 0 && (raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9')
}

func missing(param string) *RequestError {
	return &RequestError{Param: param, Code: codeMissing, Message: "Missing required parameter: '" + param + "'."}
}

func wrongType(raw json.RawMessage, param, want string) *RequestError {
	return &RequestError{Param: param, Code: codeType,
		Message: "Invalid type for '" + param + "': expected " + want + ", but got " + kindOf(raw) + " instead."}
}

// kindOf names the type of raw for an error message.
func kindOf(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	if strings.ContainsAny(string(raw), ".eE") {
		return "a decimal"
	}
	return "an integer"
}
