package tokens

import "strings"

// Encoding names, as tiktoken spells them.
const (
	O200kBase  = "o200k_base"
	CL100kBase = "cl100k_base"
)

// encodingRule maps a model id, or every id with that prefix, to an
// encoding. The tables follow tiktoken's MODEL_TO_ENCODING and
// MODEL_PREFIX_TO_ENCODING (openai/tiktoken tiktoken/model.py) for the
// models still served; legacy completion models (p50k/r50k) are retired and
// fall to the default like any unknown name.
type encodingRule struct {
	model, encoding string
}

var exactEncodings = []encodingRule{
	{"gpt-4", CL100kBase},
	{"gpt-3.5-turbo", CL100kBase},
	{"text-embedding-ada-002", CL100kBase},
	{"davinci-002", CL100kBase},
	{"babbage-002", CL100kBase},
}

var prefixEncodings = []encodingRule{
	{"gpt-5", O200kBase},
	{"o1", O200kBase},
	{"o3", O200kBase},
	{"o4", O200kBase},
	{"gpt-4o", O200kBase},
	{"gpt-4.1", O200kBase},
	{"gpt-4.5", O200kBase},
	{"chatgpt-4o", O200kBase},
	// gpt-oss uses o200k_harmony, which is o200k_base plus the harmony
	// special tokens; ordinary text encodes the same in both.
	{"gpt-oss", O200kBase},
	{"gpt-4-", CL100kBase},
	{"gpt-3.5", CL100kBase},
	{"gpt-35", CL100kBase}, // Azure's spelling
	{"text-embedding-3-", CL100kBase},
}

// EncodingFor returns the name of the encoding that counts tokens for model:
// O200kBase or CL100kBase. Matching ignores case, looks only at
// what follows the last '/' (so "openai/gpt-4o" is "gpt-4o") and ignores a
// fine-tune's "ft:" prefix; exact names are tried before prefixes, as in
// tiktoken. Every model it does not know, Claude, Llama, Qwen and Mistral
// included, gets O200kBase: their own tokenizers differ, so the count is an
// approximation that can be off by 10-30% or more, and upstream usage should
// be preferred whenever the upstream reports it.
func EncodingFor(model string) string {
	if i := strings.LastIndexByte(model, '/'); i >= 0 {
		model = model[i+1:]
	}
	if hasPrefixFold(model, "ft:") {
		model = model[len("ft:"):]
	}
	for _, r := range exactEncodings {
		if strings.EqualFold(model, r.model) {
			return r.encoding
		}
	}
	for _, r := range prefixEncodings {
		if hasPrefixFold(model, r.model) {
			return r.encoding
		}
	}
	return O200kBase
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
