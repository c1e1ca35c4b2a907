package billing

import (
	"encoding/json"
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
)

// usd parses a decimal dollar amount for a test table.
func usd(t testing.TB, s string) Amount {
	t.Helper()
	a, err := ParseAmount(s)
	if err != nil {
		t.Fatalf("ParseAmount(%q): %v", s, err)
	}
	return a
}

func amountPtr(a Amount) *Amount { return &a }

// bigCost is Cost written the obvious way in math/big: clamp the counts,
// sum tokens times per-million prices in 1e-12 dollars, add half a
// micro-dollar, divide, saturate. Prices must not be negative.
func bigCost(p Price, u Usage) Amount {
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
	sum := new(big.Int)
	term := func(tokens int64, price Amount) {
		sum.Add(sum, new(big.Int).Mul(big.NewInt(tokens), big.NewInt(int64(price))))
	}
	term(prompt-cached-written, p.Input)
	term(cached, cachedPrice)
	term(written, writePrice)
	term(completion, p.Output)
	sum.Add(sum, big.NewInt(500_000))
	sum.Quo(sum, big.NewInt(1_000_000))
	if !sum.IsInt64() {
		return math.MaxInt64
	}
	return Amount(sum.Int64())
}

func TestCostMoneyEdgeCases(t *testing.T) {
	gpt := Price{Input: usd(t, "1.75"), Output: usd(t, "14")}
	sonnet := Price{Input: usd(t, "3"), Output: usd(t, "15"), CachedInput: amountPtr(usd(t, "0.30"))}
	sonnetNoCache := Price{Input: usd(t, "3"), Output: usd(t, "15")}
	sonnetWrite := Price{Input: usd(t, "3"), Output: usd(t, "15"), CachedInput: amountPtr(usd(t, "0.30")), CacheWrite: amountPtr(usd(t, "3.75"))}
	const maxTokens = math.MaxInt64
	cases := []struct {
		name  string
		price Price
		usage Usage
		want  Amount
	}{
		{"zero prices cost nothing however many tokens", Price{}, Usage{PromptTokens: 1e12, CachedTokens: 5e11, CompletionTokens: 1e12}, 0},
		{"zero prices with a zero cached price cost nothing", Price{CachedInput: amountPtr(0)}, Usage{PromptTokens: 10, CachedTokens: 10}, 0},
		{"no tokens cost nothing", sonnet, Usage{}, 0},
		{"a typical request is exact", gpt, Usage{PromptTokens: 1000, CompletionTokens: 500}, 1750 + 7000},
		{"one micro-dollar per million tokens: a million tokens cost one micro-dollar", Price{Input: 1}, Usage{PromptTokens: 1_000_000}, 1},
		{"one micro-dollar per million tokens: half a million tokens round up to one", Price{Input: 1}, Usage{PromptTokens: 500_000}, 1},
		{"one micro-dollar per million tokens: one token under half a million rounds down to zero", Price{Input: 1}, Usage{PromptTokens: 499_999}, 0},
		{"one micro-dollar per million output tokens: 1.5 million tokens round up to two", Price{Output: 1}, Usage{CompletionTokens: 1_500_000}, 2},
		{"exactly half a micro-dollar rounds up", Price{Input: usd(t, "0.5")}, Usage{PromptTokens: 1}, 1},
		{"a hair under half a micro-dollar rounds down", Price{Input: usd(t, "0.499999")}, Usage{PromptTokens: 1}, 0},
		{"a hair over half a micro-dollar rounds up", Price{Input: usd(t, "0.500001")}, Usage{PromptTokens: 1}, 1},
		{"1.5 micro-dollars round up to 2", Price{Output: usd(t, "1.5")}, Usage{CompletionTokens: 1}, 2},
		{"1 token at $0.40 per million costs 0", Price{Input: usd(t, "0.40")}, Usage{PromptTokens: 1}, 0},
		{"2 tokens at $0.40 per million cost 1 micro-dollar", Price{Input: usd(t, "0.40")}, Usage{PromptTokens: 2}, 1},
		{"parts are summed before the one rounding (0.4+0.4 rounds to 1, not 0+0)", Price{Input: usd(t, "0.40"), Output: usd(t, "0.40")}, Usage{PromptTokens: 1, CompletionTokens: 1}, 1},
		{"three parts of 0.4 round once to 1 (1.2), not to 0", Price{Input: usd(t, "0.40"), Output: usd(t, "0.40"), CachedInput: amountPtr(usd(t, "0.40"))}, Usage{PromptTokens: 2, CachedTokens: 1, CompletionTokens: 1}, 1},
		{"three parts of 0.5 round once to 2 (1.5), not to 3", Price{Input: usd(t, "0.5"), Output: usd(t, "0.5"), CachedInput: amountPtr(usd(t, "0.5"))}, Usage{PromptTokens: 2, CachedTokens: 1, CompletionTokens: 1}, 2},
		{"cached tokens cost the cached-input price", sonnet, Usage{PromptTokens: 1000, CachedTokens: 400, CompletionTokens: 200}, 600*3 + 400*3/10 + 200*15},
		{"cached tokens cost the input price when the model has no cached price", sonnetNoCache, Usage{PromptTokens: 1000, CachedTokens: 400, CompletionTokens: 200}, 1000*3 + 200*15},
		{"a zero cached price makes cached tokens free", Price{Input: usd(t, "3"), CachedInput: amountPtr(0)}, Usage{PromptTokens: 1000, CachedTokens: 1000}, 0},
		{"a cached price above the input price is honoured", Price{Input: usd(t, "1"), CachedInput: amountPtr(usd(t, "2"))}, Usage{PromptTokens: 10, CachedTokens: 4}, 6 + 8},
		{"a cached count above the prompt count is capped at it", sonnet, Usage{PromptTokens: 100, CachedTokens: 500}, 30},
		{"cache writes cost the cache-write price", sonnetWrite, Usage{PromptTokens: 1000, CacheWriteTokens: 400, CompletionTokens: 200}, 600*3 + 400*375/100 + 200*15},
		{"cache reads, cache writes and plain input each cost their own price", sonnetWrite, Usage{PromptTokens: 10_000, CachedTokens: 3000, CacheWriteTokens: 5000, CompletionTokens: 100}, 2000*3 + 3000*3/10 + 5000*375/100 + 100*15},
		{"cache writes cost the input price when the model has no cache-write price", sonnet, Usage{PromptTokens: 1000, CacheWriteTokens: 400, CompletionTokens: 200}, 1000*3 + 200*15},
		{"a whole prompt written to the cache costs the cache-write price for every token", sonnetWrite, Usage{PromptTokens: 1000, CacheWriteTokens: 1000}, 3750},
		{"a cache-write count above the prompt count is capped at it", sonnetWrite, Usage{PromptTokens: 100, CacheWriteTokens: 500}, 375},
		{"a cache-write count above what the cached tokens leave is capped at that", sonnetWrite, Usage{PromptTokens: 100, CachedTokens: 60, CacheWriteTokens: 100}, 60*3/10 + 40*375/100},
		{"cache writes without prompt tokens cost nothing", sonnetWrite, Usage{CacheWriteTokens: 1_000_000}, 0},
		{"a negative cache-write count reads as zero", sonnetWrite, Usage{PromptTokens: 1000, CacheWriteTokens: -400}, 3000},
		{"a zero cache-write price makes cache writes free", Price{Input: usd(t, "3"), CacheWrite: amountPtr(0)}, Usage{PromptTokens: 1000, CacheWriteTokens: 1000}, 0},
		{"cache-write parts round once with the others (0.4 * 3 rounds to 1)", Price{Input: usd(t, "0.40"), Output: usd(t, "0.40"), CacheWrite: amountPtr(usd(t, "0.40"))}, Usage{PromptTokens: 2, CacheWriteTokens: 1, CompletionTokens: 1}, 1},
		{"cached tokens without prompt tokens cost nothing", sonnet, Usage{CachedTokens: 1_000_000}, 0},
		{"a negative prompt count reads as zero", sonnet, Usage{PromptTokens: -1000, CompletionTokens: 10}, 150},
		{"a negative cached count reads as zero", sonnet, Usage{PromptTokens: 1000, CachedTokens: -400}, 3000},
		{"a negative completion count reads as zero", sonnet, Usage{PromptTokens: 1000, CompletionTokens: -1}, 3000},
		{"the most negative counts read as zero", sonnetWrite, Usage{PromptTokens: math.MinInt64, CachedTokens: math.MinInt64, CacheWriteTokens: math.MinInt64, CompletionTokens: math.MinInt64}, 0},
		{"1e15 tokens at $1000 per million are exact", Price{Input: 1000 * Dollar}, Usage{PromptTokens: 1e15}, 1e18},
		{"1e15 tokens in each part at $1000 per million are exact", Price{Input: 1000 * Dollar, Output: 1000 * Dollar, CachedInput: amountPtr(1000 * Dollar)}, Usage{PromptTokens: 2e15, CachedTokens: 1e15, CompletionTokens: 1e15}, 3e18},
		{"1e16 tokens at $1000 per million saturate", Price{Input: 1000 * Dollar}, Usage{PromptTokens: 1e16}, math.MaxInt64},
		{"1e15 tokens in each of four parts at $1000 per million are exact", Price{Input: 1000 * Dollar, Output: 1000 * Dollar, CachedInput: amountPtr(1000 * Dollar), CacheWrite: amountPtr(1000 * Dollar)}, Usage{PromptTokens: 3e15, CachedTokens: 1e15, CacheWriteTokens: 1e15, CompletionTokens: 1e15}, 4e18},
		{"the largest counts at the largest prices saturate", Price{Input: math.MaxInt64, Output: math.MaxInt64, CachedInput: amountPtr(math.MaxInt64), CacheWrite: amountPtr(math.MaxInt64)}, Usage{PromptTokens: maxTokens, CachedTokens: maxTokens / 2, CacheWriteTokens: maxTokens / 4, CompletionTokens: maxTokens}, math.MaxInt64},
		{"the largest count at $1 per million is exactly the largest Amount", Price{Input: Dollar}, Usage{PromptTokens: maxTokens}, math.MaxInt64},
		{"one micro-dollar over the largest Amount saturates", Price{Input: Dollar, Output: Dollar}, Usage{PromptTokens: maxTokens, CompletionTokens: 1}, math.MaxInt64},
		{"0.4 micro-dollars over the largest Amount round down to it", Price{Input: Dollar, Output: usd(t, "0.4")}, Usage{PromptTokens: maxTokens, CompletionTokens: 1}, math.MaxInt64},
		{"the largest price for one token is exact", Price{Output: math.MaxInt64}, Usage{CompletionTokens: 1}, (math.MaxInt64 + 500_000) / 1_000_000},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.price.Cost(tc.usage)
			if got != tc.want {
				t.Errorf("Cost(%+v) with %+v = %d (%s), want %d (%s)", tc.usage, tc.price, got, got, tc.want, tc.want)
			}
			if ref := bigCost(tc.price, tc.usage); got != ref {
				t.Errorf("Cost = %d, math/big says %d", got, ref)
			}
		})
	}
}

// randomTokens draws counts that cover small requests, huge ones, the
// edges of int64 and negatives.
func randomTokens(r *rand.Rand) int64 {
	switch r.IntN(8) {
	case 0:
		return 0
	case 1:
		return -r.Int64N(1 << 20)
	case 2:
		return math.MaxInt64 - r.Int64N(1<<10)
	case 3:
		return r.Int64()
	case 4:
		return r.Int64N(1 << 40)
	default:
		return r.Int64N(200_000)
	}
}

func randomPrice(r *rand.Rand) Amount {
	switch r.IntN(6) {
	case 0:
		return 0
	case 1:
		return Amount(r.Int64N(10))
	case 2:
		return math.MaxInt64 - Amount(r.Int64N(1<<10))
	case 3:
		return Amount(r.Int64())
	default:
		return Amount(r.Int64N(100 * int64(Dollar)))
	}
}

func randomCostInput(r *rand.Rand) (Price, Usage) {
	p := Price{Input: randomPrice(r), Output: randomPrice(r)}
	if r.IntN(2) == 0 {
		p.CachedInput = amountPtr(randomPrice(r))
	}
	if r.IntN(2) == 0 {
		p.CacheWrite = amountPtr(randomPrice(r))
	}
	u := Usage{PromptTokens: randomTokens(r), CachedTokens: randomTokens(r), CacheWriteTokens: randomTokens(r), CompletionTokens: randomTokens(r)}
	return p, u
}

func TestCostMatchesBigIntArithmetic(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	n := 200_000
	if testing.Short() {
		n = 20_000
	}
	for range n {
		p, u := randomCostInput(r)
		got, want := p.Cost(u), bigCost(p, u)
		if got != want {
			t.Fatalf("Cost(%+v) with price %+v (cached %v, cache write %v) = %d, math/big says %d", u, p, p.CachedInput, p.CacheWrite, got, want)
		}
	}
}

func TestWorstPrice(t *testing.T) {
	in, out, read, write := usd(t, "3"), usd(t, "15"), usd(t, "0.30"), usd(t, "3.75")
	cases := []struct {
		name  string
		price Price
		want  Price
	}{
		{"without cache prices the worst is the price itself", Price{Input: in, Output: out}, Price{Input: in, Output: out}},
		{"a cheaper cached price leaves the input price", Price{Input: in, Output: out, CachedInput: &read}, Price{Input: in, Output: out}},
		{"a dearer cache-write price is every prompt token's price", Price{Input: in, Output: out, CachedInput: &read, CacheWrite: &write}, Price{Input: write, Output: out}},
		{"a dearer cached price is every prompt token's price", Price{Input: read, Output: out, CachedInput: &in}, Price{Input: in, Output: out}},
		{"a cheaper cache-write price leaves the input price", Price{Input: write, Output: out, CacheWrite: &in}, Price{Input: write, Output: out}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.price.Worst()
			if got.Input != tc.want.Input || got.Output != tc.want.Output || got.CachedInput != nil || got.CacheWrite != nil {
				t.Fatalf("Worst() = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestWorstCoversEveryCacheSplit checks the hold's promise: whichever part
// of a prompt the provider reads from or writes to its cache, the cost is
// never above the worst-case price of the same prompt and completion.
func TestWorstCoversEveryCacheSplit(t *testing.T) {
	sonnet := Price{Input: usd(t, "3"), Output: usd(t, "15"), CachedInput: amountPtr(usd(t, "0.30")), CacheWrite: amountPtr(usd(t, "3.75"))}
	whole := Usage{PromptTokens: 10_000, CacheWriteTokens: 10_000, CompletionTokens: 1000}
	bound := Usage{PromptTokens: 10_000, CompletionTokens: 1000}
	if got, hold := sonnet.Cost(whole), sonnet.Worst().Cost(bound); got != hold || got != 10_000*375/100+1000*15 {
		t.Fatalf("a prompt written whole to the cache costs %s, its hold is %s; want both %s", got, hold, Amount(10_000*375/100+1000*15))
	}
	r := rand.New(rand.NewPCG(5, 6))
	for range 100_000 {
		p, u := randomCostInput(r)
		if p.Input < 0 || p.Output < 0 || (p.CachedInput != nil && *p.CachedInput < 0) || (p.CacheWrite != nil && *p.CacheWrite < 0) {
			continue
		}
		bound := Usage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens}
		if got, hold := p.Cost(u), p.Worst().Cost(bound); got > hold {
			t.Fatalf("Cost(%+v) with %+v (cached %v, cache write %v) = %d, above the worst case %d", u, p, p.CachedInput, p.CacheWrite, got, hold)
		}
	}
}

// TestCostDoesNotDependOnSplitting checks that tokens at the same price
// cost the same whichever part of the usage they are counted in, so the
// one rounding never depends on how a request's tokens were split.
func TestCostDoesNotDependOnSplitting(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 50_000 {
		price := randomPrice(r)
		prompt, cached, completion := r.Int64N(1<<40), r.Int64N(1<<40), r.Int64N(1<<40)
		whole := Usage{PromptTokens: prompt + completion}
		split := Usage{PromptTokens: prompt, CompletionTokens: completion}
		same := Price{Input: price, Output: price}
		if a, b := same.Cost(whole), same.Cost(split); a != b {
			t.Fatalf("input = output = %d: %+v costs %d but %+v costs %d", price, whole, a, split, b)
		}
		withCached := Usage{PromptTokens: prompt, CachedTokens: cached, CompletionTokens: completion}
		if a, b := same.Cost(split), same.Cost(withCached); a != b {
			t.Fatalf("no cached price: %+v costs %d but %+v costs %d", split, a, withCached, b)
		}
		sameCached := Price{Input: price, Output: price, CachedInput: amountPtr(price)}
		if a, b := same.Cost(split), sameCached.Cost(withCached); a != b {
			t.Fatalf("cached price = input price: %+v costs %d but %+v costs %d", split, a, withCached, b)
		}
		withWrite := Usage{PromptTokens: prompt, CacheWriteTokens: cached, CompletionTokens: completion}
		if a, b := same.Cost(split), same.Cost(withWrite); a != b {
			t.Fatalf("no cache-write price: %+v costs %d but %+v costs %d", split, a, withWrite, b)
		}
		sameWrite := Price{Input: price, Output: price, CacheWrite: amountPtr(price)}
		if a, b := same.Cost(split), sameWrite.Cost(withWrite); a != b {
			t.Fatalf("cache-write price = input price: %+v costs %d but %+v costs %d", split, a, withWrite, b)
		}
	}
}

func TestAmountAppendNumber(t *testing.T) {
	cases := []struct {
		name   string
		prefix string
		amount Amount
		want   string
	}{
		{"zero has six decimals", "", 0, "0.000000"},
		{"one micro-dollar", "", 1, "0.000001"},
		{"a typical cost", "", 123, "0.000123"},
		{"whole dollars keep their decimals", "", 12 * Dollar, "12.000000"},
		{"dollars and micro-dollars", "", 12*Dollar + 500_000, "12.500000"},
		{"negative amounts carry a sign", "", -1, "-0.000001"},
		{"it appends to what is there", `{"cost":`, 42, `{"cost":0.000042`},
		{"the largest Amount", "", math.MaxInt64, "9223372036854.775807"},
		{"the smallest Amount", "", math.MinInt64, "-9223372036854.775808"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := string(tc.amount.AppendNumber([]byte(tc.prefix)))
			if got != tc.want {
				t.Fatalf("AppendNumber(%d) = %q, want %q", tc.amount, got, tc.want)
			}
			num := got[len(tc.prefix):]
			if !json.Valid([]byte(num)) {
				t.Fatalf("%q is not a JSON number", num)
			}
			if tc.amount != math.MinInt64 {
				back, err := ParseAmount(num)
				if err != nil || back != tc.amount {
					t.Fatalf("ParseAmount(%q) = %d, %v; want %d", num, back, err, tc.amount)
				}
			}
		})
	}
}

func TestAmountAppendNumberDoesNotAllocate(t *testing.T) {
	buf := make([]byte, 0, 64)
	allocs := testing.AllocsPerRun(100, func() {
		buf = Amount(123_456_789).AppendNumber(buf[:0])
	})
	if allocs != 0 {
		t.Fatalf("AppendNumber allocates %v times per call into a buffer with room", allocs)
	}
}

func TestCostDoesNotAllocate(t *testing.T) {
	p := Price{Input: 3 * Dollar, Output: 15 * Dollar, CachedInput: amountPtr(300_000), CacheWrite: amountPtr(3_750_000)}
	u := Usage{PromptTokens: 1234, CachedTokens: 512, CacheWriteTokens: 256, CompletionTokens: 789}
	var sink Amount
	allocs := testing.AllocsPerRun(100, func() { sink += p.Cost(u) })
	if allocs != 0 {
		t.Fatalf("Cost allocates %v times per call", allocs)
	}
}

func FuzzCost(f *testing.F) {
	f.Add(int64(1_750_000), int64(14_000_000), int64(0), false, int64(0), false, int64(1000), int64(0), int64(0), int64(500))
	f.Add(int64(3_000_000), int64(15_000_000), int64(300_000), true, int64(3_750_000), true, int64(1000), int64(400), int64(300), int64(200))
	f.Add(int64(500_000), int64(0), int64(0), false, int64(0), false, int64(1), int64(0), int64(0), int64(0))
	f.Add(int64(499_999), int64(0), int64(0), false, int64(0), false, int64(1), int64(0), int64(0), int64(0))
	f.Add(int64(1), int64(1), int64(1), true, int64(1), true, int64(499_999), int64(1), int64(1), int64(1))
	f.Add(int64(1_000_000_000), int64(1_000_000_000), int64(0), false, int64(0), false, int64(1e15), int64(0), int64(0), int64(1e15))
	f.Add(int64(math.MaxInt64), int64(math.MaxInt64), int64(math.MaxInt64), true, int64(math.MaxInt64), true, int64(math.MaxInt64), int64(math.MaxInt64/2), int64(math.MaxInt64/4), int64(math.MaxInt64))
	f.Add(int64(1_000_000), int64(400_000), int64(0), false, int64(0), false, int64(math.MaxInt64), int64(0), int64(0), int64(1))
	f.Add(int64(3_000_000), int64(15_000_000), int64(300_000), true, int64(3_750_000), true, int64(100), int64(500), int64(500), int64(-7))
	f.Add(int64(-1), int64(-5), int64(-3), true, int64(-2), true, int64(10), int64(5), int64(3), int64(10))
	f.Add(int64(3_000_000), int64(15_000_000), int64(300_000), true, int64(3_750_000), true, int64(1000), int64(0), int64(1000), int64(0))
	f.Fuzz(func(t *testing.T, input, output, cachedPrice int64, hasCached bool, writePrice int64, hasWrite bool, prompt, cached, written, completion int64) {
		p := Price{Input: Amount(input), Output: Amount(output)}
		if hasCached {
			p.CachedInput = amountPtr(Amount(cachedPrice))
		}
		if hasWrite {
			p.CacheWrite = amountPtr(Amount(writePrice))
		}
		u := Usage{PromptTokens: prompt, CachedTokens: cached, CacheWriteTokens: written, CompletionTokens: completion}
		got := p.Cost(u)
		if got < 0 {
			t.Fatalf("Cost(%+v) with %+v = %d: a cost is never negative", u, p, got)
		}
		if input >= 0 && output >= 0 && (!hasCached || cachedPrice >= 0) && (!hasWrite || writePrice >= 0) {
			if want := bigCost(p, u); got != want {
				t.Fatalf("Cost(%+v) with %+v = %d, math/big says %d", u, p, got, want)
			}
			bound := Usage{PromptTokens: prompt, CompletionTokens: completion}
			if hold := p.Worst().Cost(bound); got > hold {
				t.Fatalf("Cost(%+v) with %+v = %d, above the worst case %d of %+v", u, p, got, hold, bound)
			}
			more := u
			more.PromptTokens, more.CompletionTokens = satInc(u.PromptTokens), satInc(u.CompletionTokens)
			if grown := p.Cost(more); grown < got {
				t.Fatalf("Cost(%+v) = %d but one more prompt and completion token, %+v, cost %d: cost must not fall as tokens grow", u, got, more, grown)
			}
		}
		num := got.AppendNumber(nil)
		if back, err := ParseAmount(string(num)); err != nil || back != got {
			t.Fatalf("AppendNumber(%d) = %q, which parses as %d, %v", got, num, back, err)
		}
	})
}

// satInc is n+1, or n at the largest int64.
func satInc(n int64) int64 {
	if n == math.MaxInt64 {
		return n
	}
	return n + 1
}
