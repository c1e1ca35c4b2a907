package billing

import (
	"strconv"
	"strings"
)

// Price is what a model costs, as Amounts per one million tokens. Prices
// are quoted that way by providers, and six decimals of a dollar per
// million tokens keep every quoted price exact.
type Price struct {
	Input  Amount `json:"input"`
	Output Amount `json:"output"`
	// CachedInput prices prompt tokens the provider served from its cache;
	// nil means they cost the Input price.
	CachedInput *Amount `json:"cached_input,omitempty"`
	// CacheWrite prices prompt tokens the provider wrote to its cache
	// (Anthropic's cache_creation_input_tokens, billed at a premium over
	// input); nil means they cost the Input price.
	CacheWrite *Amount `json:"cache_write,omitempty"`
}

// PerToken formats a per-million price as US dollars per token, exactly,
// without trailing zeros: 1.75 per million is "0.00000175". This is the
// form /v1/models answers with.
func PerToken(perMillion Amount) string {
	neg := perMillion < 0
	u := uint64(perMillion)
	if neg {
		u = uint64(-perMillion)
	}
	// perMillion is in 1e-6 dollars per 1e6 tokens: 1e-12 dollars per token.
	const scale = 1_000_000_000_000
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	b.WriteString(strconv.FormatUint(u/scale, 10))
	frac := u % scale
	if frac == 0 {
		return b.String()
	}
	digits := []byte(strconv.FormatUint(frac, 10))
	b.WriteByte('.')
	for i := len(digits); i < 12; i++ {
		b.WriteByte('0')
	}
	b.WriteString(strings.TrimRight(string(digits), "0"))
	return b.String()
}
