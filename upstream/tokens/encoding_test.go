package tokens

import "testing"

func TestEncodingFor(t *testing.T) {
	tests := []struct {
		name, model, want string
	}{
		{"gpt-5.2 uses o200k_base", "gpt-5.2", O200kBase},
		{"a dated gpt-5 snapshot uses o200k_base", "gpt-5-2025-08-07", O200kBase},
		{"gpt-5-mini uses o200k_base", "gpt-5-mini", O200kBase},
		{"o1 uses o200k_base", "o1", O200kBase},
		{"o3-mini uses o200k_base", "o3-mini", O200kBase},
		{"o4-mini uses o200k_base", "o4-mini-2025-04-16", O200kBase},
		{"gpt-4o-mini uses o200k_base", "gpt-4o-mini", O200kBase},
		{"gpt-4o uses o200k_base although gpt-4 does not", "gpt-4o", O200kBase},
		{"gpt-4.1-nano uses o200k_base", "gpt-4.1-nano", O200kBase},
		{"gpt-4.5-preview uses o200k_base", "gpt-4.5-preview", O200kBase},
		{"chatgpt-4o-latest uses o200k_base", "chatgpt-4o-latest", O200kBase},
		{"gpt-oss is counted with o200k_base, harmony's base", "gpt-oss-120b", O200kBase},
		{"gpt-4 uses cl100k_base", "gpt-4", CL100kBase},
		{"gpt-4-turbo uses cl100k_base", "gpt-4-turbo", CL100kBase},
		{"gpt-4-32k uses cl100k_base", "gpt-4-32k", CL100kBase},
		{"gpt-3.5-turbo-0125 uses cl100k_base", "gpt-3.5-turbo-0125", CL100kBase},
		{"Azure's gpt-35-turbo uses cl100k_base", "gpt-35-turbo-16k", CL100kBase},
		{"text-embedding-3-small uses cl100k_base", "text-embedding-3-small", CL100kBase},
		{"text-embedding-ada-002 uses cl100k_base", "text-embedding-ada-002", CL100kBase},
		{"a fine-tuned gpt-4o-mini uses its base's encoding", "ft:gpt-4o-mini-2024-07-18:acme::9xYz", O200kBase},
		{"a fine-tuned gpt-3.5-turbo uses its base's encoding", "ft:gpt-3.5-turbo-0125:acme::9xYz", CL100kBase},
		{"a provider-qualified id is matched on its last segment", "openai/gpt-4", CL100kBase},
		{"matching ignores case", "GPT-4-Turbo", CL100kBase},
		{"claude-sonnet-4-6 is approximated with o200k_base", "claude-sonnet-4-6", O200kBase},
		{"an empty model is approximated with o200k_base", "", O200kBase},
		{"llama-3.1-8b is approximated with o200k_base", "llama-3.1-8b", O200kBase},
		{"a Qwen repository id is approximated with o200k_base", "Qwen/Qwen2.5-7B-Instruct", O200kBase},
		{"mistral-large-latest is approximated with o200k_base", "mistral-large-latest", O200kBase},
		{"a retired completion model falls to the default", "text-davinci-003", O200kBase},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := EncodingFor(tt.model); got != tt.want {
				t.Errorf("EncodingFor(%q) = %q, want %q", tt.model, got, tt.want)
			}
		})
	}
}
