package openai

import "testing"

func TestMarshalError(t *testing.T) {
	cases := []struct {
		name                      string
		message, typ, param, code string
		want                      string
	}{
		{"empty param and code are null", "No.", "invalid_request_error", "", "", `{"error":{"message":"No.","type":"invalid_request_error","param":null,"code":null}}`},
		{"param and code are strings when set", "Bad temperature.", "invalid_request_error", "temperature", "invalid_value", `{"error":{"message":"Bad temperature.","type":"invalid_request_error","param":"temperature","code":"invalid_value"}}`},
		{"messages are escaped", "a \"quoted\" <word>\n", "server_error", "", "", `{"error":{"message":"a \"quoted\" \u003cword\u003e\n","type":"server_error","param":null,"code":null}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(MarshalError(tc.message, tc.typ, tc.param, tc.code)); got != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}
