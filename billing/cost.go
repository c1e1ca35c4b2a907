package billing

import (
	"math"
	"math/bits"
)

// Usage is what a request consumed, in tokens. CachedTokens are the part of
// PromptTokens the provider served from its prompt cache; they are priced
// at the cached-input price when the model has one. CacheWriteTokens are
// the part of PromptTokens the provider wrote to its prompt cache (Anthropic
// bills them at a premium); they are priced at the cache-write price when
// the model has one.
type Usage struct {
	PromptTokens     int64
	CachedTokens     int64
	CacheWriteTokens int64
	CompletionTokens int64
}

// Cost prices u: prompt tokens neither read from nor written to the cache at
// the input price, cached prompt tokens at the cached-input price, prompt
// tokens written to the cache at the cache-write price (each the input price
// when not set) and completion tokens at the output price.
//
// Prices are per million tokens, so the exact cost is a whole number of
// 1e-12 dollars. Cost sums it exactly in 128 bits and rounds once, to the
// nearest micro-dollar with halves rounded up: 1 token at $0.40 per million
// (0.4 micro-dollars) costs 0, 2 tokens (0.8) cost 1 micro-dollar, and a
// request's cost never depends on the order of its parts. Negative counts
// read as zero; a cached count above the prompt count is capped at it, and
// a cache-write count above what is left of the prompt after the cached
// tokens is capped at that. A cost beyond what an Amount holds saturates at
// the largest Amount.
func (p Price) Cost(u Usage) Amount {
	prompt := max(u.PromptTokens, 0)
	cached := min(max(u.CachedTokens, 0), prompt)
	written := min(max(u.CacheWriteTokens, 0), prompt-cached)
	completion := max(u.CompletionTokens, 0)
	cachedPrice := p.Input
	if p.CachedInput != nil {
		cachedPrice = *p.CachedInput
	}
	writePrice := p.Input
	if p.CacheWrite != nil {
		writePrice = *p.CacheWrite
	}
	var hi, lo uint64
	add := func(tokens int64, price Amount) {
		if tokens <= 0 || price <= 0 {
			return
		}
		h, l := bits.Mul64(uint64(tokens), uint64(price))
		var carry uint64
		lo, carry = bits.Add64(lo, l, 0)
		hi, _ = bits.Add64(hi, h, carry)
	}
	add(prompt-cached-written, p.Input)
	add(cached, cachedPrice)
	add(written, writePrice)
	add(completion, p.Output)
	// Round half up: add half a micro-dollar before dividing.
	const perMillion = 1_000_000
	var carry uint64
	lo, carry = bits.Add64(lo, perMillion/2, 0)
	hi += carry
	if hi >= perMillion {
		return math.MaxInt64
	}
	q, _ := bits.Div64(hi, lo, perMillion)
	if q > math.MaxInt64 {
		return math.MaxInt64
	}
	return Amount(q)
}

// Worst is p with every prompt token at the dearest price a prompt token
// can have (input, cached input or cache write): the price of a hold.
// Whatever part of a prompt the provider then reads from or writes to its
// cache, p.Cost of the actual usage is at most p.Worst().Cost of the same
// token counts.
func (p Price) Worst() Price {
	in := p.Input
	if p.CachedInput != nil {
		in = max(in, *p.CachedInput)
	}
	if p.CacheWrite != nil {
		in = max(in, *p.CacheWrite)
	}
	return Price{Input: in, Output: p.Output}
}

// AppendNumber appends a as a JSON number of dollars with six decimals
// ("0.000123"), the form usage.cost takes in responses. The digits are
// exact; a client that reads them as a float sees the nearest float.
func (a Amount) AppendNumber(b []byte) []byte { return a.appendTo(b) }
