package openai

import "encoding/json"

// errorEnvelope is OpenAI's error body. All four inner keys are always
// present; param and code are null when there is none.
type errorEnvelope struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

// MarshalError returns OpenAI's error body,
// {"error":{"message","type","param","code"}}, with param and code null
// when empty.
func MarshalError(message, typ, param, code string) []byte {
	var env errorEnvelope
	env.Error.Message, env.Error.Type = message, typ
	if param != "" {
		env.Error.Param = &param
	}
	if code != "" {
		env.Error.Code = &code
	}
	body, _ := json.Marshal(&env) // cannot fail: strings and pointers to strings
	return body
}
