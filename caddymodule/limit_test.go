package caddymodule

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/arcaneapi/caddy-arcane/billing"
)

// End-to-end tests of arcane_limit through the real server, with the fake
// upstream behind it and a fake clock in the limiters.
//
// Each test loads a config whose arcane_limit names a zone of its own, so
// the zone is created, with the test's fake clock, when the config is
// loaded; the clock only moves when the test moves it. Requests go through
// settledChat, which returns once the handler chain has returned, so a
// request's token reservation has been corrected before the next one is
// sent. Expected figures are computed here from the GCRA definition (a
// budget of C per W restores one unit every W/C; a key with nothing in use
// may spend all C at once), not by the ratelimit package.

// limitClock is a clock that stands still until the test moves it.
type limitClock struct {
	base time.Time
	off  atomic.Int64
}

func (c *limitClock) now() time.Time { return c.base.Add(time.Duration(c.off.Load())) }

// advance moves the clock forward by d.
func (c *limitClock) advance(d time.Duration) { c.off.Add(int64(d)) }

// limitEnv is a running arcane with an arcane_limit in its route.
type limitEnv struct {
	*chatEnv
	clock *limitClock
	// zone is the limit's zone, fresh for the test.
	zone string
}

// startLimit starts a chat config (see startChat) whose route has
// arcane_limit with block as its options, in a zone of its own, and whose
// limiters run on a fake clock.
func startLimit(t *testing.T, block string, opts chatOptions) *limitEnv {
	t.Helper()
	clock := &limitClock{base: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	saved := limitNow
	limitNow = clock.now
	t.Cleanup(func() { limitNow = saved })
	zone := newLimitZoneName(t)
	opts.limit = block + "\n\t\t\tzone " + zone
	return &limitEnv{chatEnv: startChat(t, opts), clock: clock, zone: zone}
}

// newLimitZoneName returns a zone name no other test uses.
func newLimitZoneName(t testing.TB) string {
	t.Helper()
	var raw [8]byte
	if _, err := rand.Read(raw[:]); err != nil {
		t.Fatal(err)
	}
	return "test-" + hex.EncodeToString(raw[:])
}

// unitsTime is n units of a budget of count per window as time, rounded
// up to the nanosecond: how long n units take to be restored.
func unitsTime(n, count int64, window time.Duration) time.Duration {
	x := new(big.Int).Mul(big.NewInt(n), big.NewInt(int64(window)))
	q, r := x.QuoRem(x, big.NewInt(count), new(big.Int))
	if r.Sign() > 0 {
		q.Add(q, big.NewInt(1))
	}
	return time.Duration(q.Int64())
}

// ceilUnits is d in whole units, rounded up, at least 1.
func ceilUnits(d, unit time.Duration) int64 {
	n := int64(d / unit)
	if d%unit > 0 {
		n++
	}
	return max(n, 1)
}

// resetString is a wait as OpenAI's x-ratelimit-reset-* headers write it:
// rounded up to the millisecond, in Go's duration format.
func resetString(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	return (time.Duration(ceilUnits(d, time.Millisecond)) * time.Millisecond).String()
}

// limitRate is what one kind of x-ratelimit-* headers should say.
type limitRate struct {
	limit, remaining int64
	reset            string
}

// assertRateHeaders checks the x-ratelimit-{limit,remaining,reset}-<kind>
// headers (kind is requests or tokens): one value each, as want says, or
// none at all when want is nil.
func assertRateHeaders(t testing.TB, h http.Header, kind string, want *limitRate) {
	t.Helper()
	names := [3]string{"X-Ratelimit-Limit-" + kind, "X-Ratelimit-Remaining-" + kind, "X-Ratelimit-Reset-" + kind}
	var got [3][]string
	for i, name := range names {
		got[i] = h.Values(name)
	}
	if want == nil {
		for i, name := range names {
			if len(got[i]) != 0 {
				t.Errorf("%s: %q, want no such header", name, got[i])
			}
		}
		return
	}
	for i, v := range [3]string{strconv.FormatInt(want.limit, 10), strconv.FormatInt(want.remaining, 10), want.reset} {
		if len(got[i]) != 1 || got[i][0] != v {
			t.Errorf("%s: %q, want %q", names[i], got[i], v)
		}
	}
}

// assertLimited checks a 429 of the given type (requests or tokens) in
// OpenAI's envelope, with Retry-After and Retry-After-Ms for wait (rounded
// up) and the given message.
func assertLimited(t testing.TB, resp chatResponse, kind string, wait time.Duration, message string) {
	t.Helper()
	assertChatError(t, resp, http.StatusTooManyRequests, kind, "rate_limit_exceeded", "")
	if got, want := resp.Header.Values("Retry-After"), strconv.FormatInt(ceilUnits(wait, time.Second), 10); len(got) != 1 || got[0] != want {
		t.Errorf("Retry-After %q, want %q (%v rounded up to the second)", got, want, wait)
	}
	if got, want := resp.Header.Values("Retry-After-Ms"), strconv.FormatInt(ceilUnits(wait, time.Millisecond), 10); len(got) != 1 || got[0] != want {
		t.Errorf("Retry-After-Ms %q, want %q (%v rounded up to the millisecond)", got, want, wait)
	}
	if got := errorMessage(t, string(resp.Body)); got != message {
		t.Errorf("message\n%q, want\n%q", got, message)
	}
}

// assertOK checks a 200.
func assertOK(t testing.TB, resp chatResponse) {
	t.Helper()
	if resp.Status != http.StatusOK {
		t.Fatalf("status %d, want 200; body %s", resp.Status, resp.Body)
	}
}

// limitMessage is the 429's message for a key's (or account's) budget.
func limitMessage(who, per string, limit, remaining, requested int64, wait time.Duration) string {
	return fmt.Sprintf("Rate limit reached for %s on %s: Limit %d, Remaining %d, Requested %d. Please try again in %s.",
		who, per, limit, remaining, requested, resetString(wait))
}

// tokenReply answers with a completion reporting prompt and completion
// tokens.
func tokenReply(prompt, completion int64) upstreamHandler {
	return replyWith(upstreamReply{Pieces: []string{"ok"}, Usage: usageOf(prompt, completion, 0)})
}

// limitBody is a gpt-5.2 request with max_tokens, and the tokens it
// reserves: its bytes plus max_tokens (below the model's cap).
func limitBody(maxTokens int64) (body string, reserved int64) {
	body = chatBody(publicModel, fmt.Sprintf(`,"max_tokens":%d`, maxTokens))
	return body, int64(len(body)) + maxTokens
}

// Three requests per second: three at once, then the fourth exactly
// 333,333,334ns later, not a nanosecond earlier.
func TestLimitRequestsAtTheWindowBoundary(t *testing.T) {
	env := startLimit(t, "requests 3 1s", chatOptions{})
	body := chatBody(publicModel, "")
	message := func(wait time.Duration) string {
		return limitMessage("this API key", "requests per 1s", 3, 0, 1, wait)
	}

	for i, reset := range []string{"334ms", "667ms", "1s"} {
		resp := settledChat(t, http.MethodPost, env.key.Key, body)
		assertOK(t, resp)
		assertRateHeaders(t, resp.Header, "Requests", &limitRate{3, int64(2 - i), reset})
		assertRateHeaders(t, resp.Header, "Tokens", nil)
	}

	// A fourth request needs one unit, restored 1s/3 after the first.
	resp := settledChat(t, http.MethodPost, env.key.Key, body)
	assertLimited(t, resp, "requests", 333_333_334, message(333_333_334))
	if ra, ms := resp.Header.Get("Retry-After"), resp.Header.Get("Retry-After-Ms"); ra != "1" || ms != "334" {
		t.Errorf("Retry-After %q and Retry-After-Ms %q, want 1 and 334", ra, ms)
	}
	assertRateHeaders(t, resp.Header, "Requests", &limitRate{3, 0, "1s"})

	env.clock.advance(333_333_333)
	resp = settledChat(t, http.MethodPost, env.key.Key, body)
	assertLimited(t, resp, "requests", 1, message(1))
	assertRateHeaders(t, resp.Header, "Requests", &limitRate{3, 0, "667ms"})

	env.clock.advance(1)
	resp = settledChat(t, http.MethodPost, env.key.Key, body)
	assertOK(t, resp)
	// Admitted at 333,333,334ns: fully restored 999,999,999⅓ns later.
	assertRateHeaders(t, resp.Header, "Requests", &limitRate{3, 0, "1s"})

	if n := env.up.calls.Load(); n != 4 {
		t.Errorf("the upstream received %d requests, want the 4 admitted", n)
	}
}

// A token budget admits a request of weight N in one step: requests whose
// reservation is known fit as many times as the budget holds, then wait
// exactly as long as the missing tokens take to restore.
func TestLimitTokensAtTheWindowBoundary(t *testing.T) {
	body, reserved := limitBody(500)
	budget := 3*reserved + reserved/2
	env := startLimit(t, fmt.Sprintf("tokens %d 1m", budget), chatOptions{})
	// The upstream reports exactly the reservation: corrections change nothing.
	env.up.handle(tokenReply(int64(len(body)), 500))

	for i := int64(1); i <= 3; i++ {
		resp := settledChat(t, http.MethodPost, env.key.Key, body)
		assertOK(t, resp)
		assertRateHeaders(t, resp.Header, "Tokens", &limitRate{budget, budget - i*reserved, resetString(unitsTime(i*reserved, budget, time.Minute))})
		assertRateHeaders(t, resp.Header, "Requests", nil)
	}

	wait := unitsTime(4*reserved-budget, budget, time.Minute)
	resp := settledChat(t, http.MethodPost, env.key.Key, body)
	assertLimited(t, resp, "tokens", wait,
		limitMessage("this API key", "tokens per min (TPM)", budget, budget-3*reserved, reserved, wait))
	assertRateHeaders(t, resp.Header, "Tokens", &limitRate{budget, budget - 3*reserved, resetString(unitsTime(3*reserved, budget, time.Minute))})

	env.clock.advance(wait - 1)
	resp = settledChat(t, http.MethodPost, env.key.Key, body)
	assertLimited(t, resp, "tokens", 1,
		limitMessage("this API key", "tokens per min (TPM)", budget, reserved-1, reserved, 1))

	env.clock.advance(1)
	resp = settledChat(t, http.MethodPost, env.key.Key, body)
	assertOK(t, resp)
	assertRateHeaders(t, resp.Header, "Tokens", &limitRate{budget, 0, "1m0s"})

	if n := env.up.calls.Load(); n != 4 {
		t.Errorf("the upstream received %d requests, want the 4 admitted", n)
	}
}

// The x-ratelimit-* headers on answers, in OpenAI's formats; a key's own
// rpm and tpm replace the defaults.
func TestLimitHeaders(t *testing.T) {
	env := startLimit(t, "requests 600 1m\n\t\t\ttokens 1000000 1m", chatOptions{})
	const tpm = 1_000_000
	body, reserved := limitBody(1000)
	used := standardReply.Usage.TotalTokens

	t.Run("600 per minute: one request is restored in 100ms", func(t *testing.T) {
		resp := settledChat(t, http.MethodPost, env.key.Key, body)
		assertOK(t, resp)
		assertRateHeaders(t, resp.Header, "Requests", &limitRate{600, 599, "100ms"})
		assertRateHeaders(t, resp.Header, "Tokens", &limitRate{tpm, tpm - reserved, resetString(unitsTime(reserved, tpm, time.Minute))})

		// The first request's reservation was corrected to what it used.
		resp = settledChat(t, http.MethodPost, env.key.Key, body)
		assertOK(t, resp)
		assertRateHeaders(t, resp.Header, "Requests", &limitRate{600, 598, "200ms"})
		assertRateHeaders(t, resp.Header, "Tokens", &limitRate{tpm, tpm - used - reserved, resetString(unitsTime(used+reserved, tpm, time.Minute))})
	})

	t.Run("a stream carries them too", func(t *testing.T) {
		key := createKey(t, env.acct.ID, nil)
		resp := settledChat(t, http.MethodPost, key.Key, chatBody(publicModel, `,"stream":true,"max_tokens":1000`))
		assertOK(t, resp)
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
			t.Errorf("Content-Type %q, want a stream", ct)
		}
		streamed := int64(len(chatBody(publicModel, `,"stream":true,"max_tokens":1000`))) + 1000
		assertRateHeaders(t, resp.Header, "Requests", &limitRate{600, 599, "100ms"})
		assertRateHeaders(t, resp.Header, "Tokens", &limitRate{tpm, tpm - streamed, resetString(unitsTime(streamed, tpm, time.Minute))})
	})

	t.Run("without max_tokens the model's output cap is reserved, n times", func(t *testing.T) {
		key := createKey(t, env.acct.ID, nil)
		plain := chatBody(publicModel, "")
		resp := settledChat(t, http.MethodPost, key.Key, plain)
		assertOK(t, resp)
		r1 := int64(len(plain)) + 128_000 // chatArcane's max_output_tokens
		assertRateHeaders(t, resp.Header, "Tokens", &limitRate{tpm, tpm - r1, resetString(unitsTime(r1, tpm, time.Minute))})

		twice := chatBody(publicModel, `,"n":2,"max_tokens":1000`)
		resp = settledChat(t, http.MethodPost, key.Key, twice)
		assertOK(t, resp)
		r2 := int64(len(twice)) + 2*1000
		assertRateHeaders(t, resp.Header, "Tokens", &limitRate{tpm, tpm - used - r2, resetString(unitsTime(used+r2, tpm, time.Minute))})
	})

	t.Run("a file part reserves what the request bounds, not the model's context", func(t *testing.T) {
		// The balance holds gpt-5.2's context_length (400,000) of prompt
		// for it; a reservation that large would take most of the budget
		// for every request with a file, and it is corrected to the tokens
		// used anyway.
		key := createKey(t, env.acct.ID, nil)
		file := `{"model":"` + publicModel + `","max_tokens":1000,"messages":[{"role":"user","content":[{"type":"file","file":{"file_id":"file-x"}}]}]}`
		resp := settledChat(t, http.MethodPost, key.Key, file)
		assertOK(t, resp)
		r := int64(len(file)) + 1000
		assertRateHeaders(t, resp.Header, "Tokens", &limitRate{tpm, tpm - r, resetString(unitsTime(r, tpm, time.Minute))})
	})

	t.Run("a key's rpm and tpm replace the defaults, per minute", func(t *testing.T) {
		key := createKey(t, env.acct.ID, map[string]any{"rpm": 5, "tpm": 50_000})
		resp := settledChat(t, http.MethodPost, key.Key, body)
		assertOK(t, resp)
		assertRateHeaders(t, resp.Header, "Requests", &limitRate{5, 4, "12s"})
		assertRateHeaders(t, resp.Header, "Tokens", &limitRate{50_000, 50_000 - reserved, resetString(unitsTime(reserved, 50_000, time.Minute))})

		for range 4 {
			assertOK(t, settledChat(t, http.MethodPost, key.Key, body))
		}
		resp = settledChat(t, http.MethodPost, key.Key, body)
		assertLimited(t, resp, "requests", 12*time.Second,
			limitMessage("this API key", "requests per min (RPM)", 5, 0, 1, 12*time.Second))
		assertRateHeaders(t, resp.Header, "Requests", &limitRate{5, 0, "1m0s"})
		// A refusal for requests still reports the tokens: five used 18 each.
		assertRateHeaders(t, resp.Header, "Tokens", &limitRate{50_000, 50_000 - 5*used, resetString(unitsTime(5*used, 50_000, time.Minute))})
	})

	t.Run("a key with only rpm keeps the default tokens", func(t *testing.T) {
		key := createKey(t, env.acct.ID, map[string]any{"rpm": 7})
		resp := settledChat(t, http.MethodPost, key.Key, body)
		assertOK(t, resp)
		assertRateHeaders(t, resp.Header, "Requests", &limitRate{7, 6, resetString(unitsTime(1, 7, time.Minute))})
		assertRateHeaders(t, resp.Header, "Tokens", &limitRate{tpm, tpm - reserved, resetString(unitsTime(reserved, tpm, time.Minute))})
	})

	t.Run("a reservation above the budget reserves the whole budget", func(t *testing.T) {
		key := createKey(t, env.acct.ID, map[string]any{"tpm": 1000})
		big, _ := limitBody(5000)
		resp := settledChat(t, http.MethodPost, key.Key, big)
		assertOK(t, resp)
		assertRateHeaders(t, resp.Header, "Tokens", &limitRate{1000, 0, "1m0s"})
		// Corrected to the 18 used; the next reserves the whole budget again.
		wait := unitsTime(used, 1000, time.Minute)
		resp = settledChat(t, http.MethodPost, key.Key, big)
		assertLimited(t, resp, "tokens", wait, limitMessage("this API key", "tokens per min (TPM)", 1000, 1000-used, 1000, wait))
		env.clock.advance(wait)
		assertOK(t, settledChat(t, http.MethodPost, key.Key, big))
	})

	t.Run("other requests pass without headers", func(t *testing.T) {
		status, header, b := apiGet(t, env.tester, "/v1/models", "Bearer "+env.key.Key)
		if status != http.StatusOK {
			t.Fatalf("GET /v1/models: status %d; %s", status, b)
		}
		assertRateHeaders(t, header, "Requests", nil)
		assertRateHeaders(t, header, "Tokens", nil)
	})
}

// A dimension without a budget is neither limited nor reported; a key's
// own rpm or tpm applies even when arcane_limit sets no default.
func TestLimitOnlyWhatIsBudgeted(t *testing.T) {
	env := startLimit(t, "requests 2 1m", chatOptions{})
	body, reserved := limitBody(1000)

	resp := settledChat(t, http.MethodPost, env.key.Key, body)
	assertOK(t, resp)
	assertRateHeaders(t, resp.Header, "Requests", &limitRate{2, 1, "30s"})
	assertRateHeaders(t, resp.Header, "Tokens", nil)

	key := createKey(t, env.acct.ID, map[string]any{"tpm": 10_000})
	resp = settledChat(t, http.MethodPost, key.Key, body)
	assertOK(t, resp)
	assertRateHeaders(t, resp.Header, "Requests", &limitRate{2, 1, "30s"})
	assertRateHeaders(t, resp.Header, "Tokens", &limitRate{10_000, 10_000 - reserved, resetString(unitsTime(reserved, 10_000, time.Minute))})

	// No budget at all: nothing is limited, nothing reported.
	bare := startLimit(t, "", chatOptions{})
	for range 5 {
		resp := settledChat(t, http.MethodPost, bare.key.Key, body)
		assertOK(t, resp)
		assertRateHeaders(t, resp.Header, "Requests", nil)
		assertRateHeaders(t, resp.Header, "Tokens", nil)
	}
}

// Account budgets hold all of an account's keys together; the headers
// show the key's budget when it has one, else the account's.
func TestLimitAccountBudgets(t *testing.T) {
	body, reserved := limitBody(1000)
	const accountTokens = 1_000_000
	env := startLimit(t, fmt.Sprintf("account_requests 3 1m\n\t\t\taccount_tokens %d 1m", accountTokens), chatOptions{})
	used := standardReply.Usage.TotalTokens
	a, b := env.key, createKey(t, env.acct.ID, nil)

	for i, key := range []testKey{a, a, b} {
		resp := settledChat(t, http.MethodPost, key.Key, body)
		assertOK(t, resp)
		spent := int64(i) * used // the earlier requests, corrected
		assertRateHeaders(t, resp.Header, "Requests", &limitRate{3, int64(2 - i), resetString(unitsTime(int64(i+1), 3, time.Minute))})
		assertRateHeaders(t, resp.Header, "Tokens", &limitRate{accountTokens, accountTokens - spent - reserved,
			resetString(unitsTime(spent+reserved, accountTokens, time.Minute))})
	}
	resp := settledChat(t, http.MethodPost, b.Key, body)
	assertLimited(t, resp, "requests", 20*time.Second, limitMessage("this account", "requests per min (RPM)", 3, 0, 1, 20*time.Second))
	assertRateHeaders(t, resp.Header, "Requests", &limitRate{3, 0, "1m0s"})
	accountSpent := &limitRate{accountTokens, accountTokens - 3*used, resetString(unitsTime(3*used, accountTokens, time.Minute))}
	assertRateHeaders(t, resp.Header, "Tokens", accountSpent)

	// Another account has budgets of its own.
	other := createAccount(t, "other")
	assertOK(t, settledChat(t, http.MethodPost, createKey(t, other.ID, nil).Key, body))

	// A key's own rpm does not lift its account's budget, and its headers
	// show the key's.
	c := createKey(t, env.acct.ID, map[string]any{"rpm": 10})
	resp = settledChat(t, http.MethodPost, c.Key, body)
	assertLimited(t, resp, "requests", 20*time.Second, limitMessage("this account", "requests per min (RPM)", 3, 0, 1, 20*time.Second))
	// The refused request consumed nothing of the key's own budget.
	assertRateHeaders(t, resp.Header, "Requests", &limitRate{10, 10, "0s"})
	assertRateHeaders(t, resp.Header, "Tokens", accountSpent)

	env.clock.advance(20 * time.Second)
	resp = settledChat(t, http.MethodPost, c.Key, body)
	assertOK(t, resp)
	assertRateHeaders(t, resp.Header, "Requests", &limitRate{10, 9, "6s"})
	if n := env.up.calls.Load(); n != 5 {
		t.Errorf("the upstream received %d requests, want the 5 admitted", n)
	}
}

// After a request, its token reservation is corrected to the tokens it
// used: unused tokens come back, tokens beyond it are charged, and a
// request that delivered nothing gives all back but still counts as a
// request.
func TestLimitCorrectsTokensAfterSettle(t *testing.T) {
	const maxTokens = 1000
	body, reserved := limitBody(maxTokens)
	budget := reserved + reserved/2 // one reservation fits, two do not
	env := startLimit(t, fmt.Sprintf("requests 2 1m\n\t\t\ttokens %d 1m", budget), chatOptions{})
	tpm := func(spent int64) *limitRate {
		return &limitRate{budget, max(budget-spent, 0), resetString(unitsTime(spent, budget, time.Minute))}
	}
	message := func(remaining int64, wait time.Duration) string {
		return limitMessage("this API key", "tokens per min (TPM)", budget, remaining, reserved, wait)
	}

	t.Run("refund: unused reservation comes back", func(t *testing.T) {
		key := createKey(t, env.acct.ID, nil)
		const used = 40
		env.up.handle(tokenReply(30, 10))
		resp := settledChat(t, http.MethodPost, key.Key, body)
		assertOK(t, resp)
		assertRateHeaders(t, resp.Header, "Tokens", tpm(reserved))
		// Only fits because reserved-used came back.
		resp = settledChat(t, http.MethodPost, key.Key, body)
		assertOK(t, resp)
		assertRateHeaders(t, resp.Header, "Tokens", tpm(used+reserved))
	})

	t.Run("extra charge: usage above the reservation makes the next wait", func(t *testing.T) {
		key := createKey(t, env.acct.ID, nil)
		// More prompt tokens than the body has bytes.
		prompt := int64(len(body)) + 100
		used := prompt + maxTokens
		env.up.handle(tokenReply(prompt, maxTokens))
		assertOK(t, settledChat(t, http.MethodPost, key.Key, body))

		wait := unitsTime(used+reserved-budget, budget, time.Minute)
		resp := settledChat(t, http.MethodPost, key.Key, body)
		assertLimited(t, resp, "tokens", wait, message(budget-used, wait))
		assertRateHeaders(t, resp.Header, "Tokens", tpm(used))
		// The tokens refusal gave back the request it had counted.
		assertRateHeaders(t, resp.Header, "Requests", &limitRate{2, 1, "30s"})

		env.clock.advance(wait - 1)
		resp = settledChat(t, http.MethodPost, key.Key, body)
		assertLimited(t, resp, "tokens", 1, message(reserved-1, 1))
		env.clock.advance(1)
		env.up.handle(tokenReply(int64(len(body)), maxTokens))
		assertOK(t, settledChat(t, http.MethodPost, key.Key, body))
	})

	t.Run("extra charge beyond the whole budget puts the key in debt", func(t *testing.T) {
		key := createKey(t, env.acct.ID, nil)
		used := 3 * budget
		env.up.handle(tokenReply(used-maxTokens, maxTokens))
		assertOK(t, settledChat(t, http.MethodPost, key.Key, body))
		wait := unitsTime(used+reserved-budget, budget, time.Minute)
		if wait <= time.Minute {
			t.Fatalf("test setup: the wait %v is within one window", wait)
		}
		resp := settledChat(t, http.MethodPost, key.Key, body)
		assertLimited(t, resp, "tokens", wait, message(0, wait))
		assertRateHeaders(t, resp.Header, "Tokens", tpm(used))
	})

	t.Run("nothing delivered: all tokens come back, the request still counts", func(t *testing.T) {
		key := createKey(t, env.acct.ID, nil)
		env.up.handle(func(w http.ResponseWriter, _ *http.Request, _ []byte) {
			writeUpstreamError(w, http.StatusInternalServerError, "server_error", "The server had an error while processing your request.")
		})
		resp := settledChat(t, http.MethodPost, key.Key, body)
		assertChatError(t, resp, http.StatusBadGateway, "server_error", "upstream_error", "")
		assertRateHeaders(t, resp.Header, "Requests", &limitRate{2, 1, "30s"})
		assertRateHeaders(t, resp.Header, "Tokens", tpm(reserved))

		env.up.handle(replyWith(standardReply))
		resp = settledChat(t, http.MethodPost, key.Key, body)
		assertOK(t, resp)
		assertRateHeaders(t, resp.Header, "Requests", &limitRate{2, 0, "1m0s"})
		assertRateHeaders(t, resp.Header, "Tokens", tpm(reserved))

		resp = settledChat(t, http.MethodPost, key.Key, body)
		assertLimited(t, resp, "requests", 30*time.Second, limitMessage("this API key", "requests per min (RPM)", 2, 0, 1, 30*time.Second))
	})
}

// sendLinedUp sends n copies of a request at once (each on its own
// connection, all bodies completed together) and returns their statuses
// and bodies, once every handler chain has returned.
func sendLinedUp(t *testing.T, n int, key, body string) []chatResponse {
	t.Helper()
	primed, start := make(chan struct{}, n), make(chan struct{})
	client := &http.Client{Transport: settledTransport{primed: primed, start: start}}
	type result struct {
		resp chatResponse
		err  error
	}
	results := make(chan result, n)
	for range n {
		req := newChatRequest(t, context.Background(), http.MethodPost, key, body, nil)
		go func() {
			resp, err := client.Do(req)
			if err != nil {
				results <- result{err: err}
				return
			}
			data, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			results <- result{resp: chatResponse{Status: resp.StatusCode, Header: resp.Header, Body: data}, err: err}
		}()
	}
	for i := range n {
		select {
		case <-primed:
		case r := <-results:
			t.Fatalf("request %d failed before it was sent whole: %v", i+1, r.err)
		case <-time.After(streamWait):
			t.Fatalf("request %d was not sent within %v", i+1, streamWait)
		}
	}
	close(start)
	var out []chatResponse
	for range n {
		select {
		case r := <-results:
			if r.err != nil {
				t.Fatalf("a request failed: %v", r.err)
			}
			out = append(out, r.resp)
		case <-time.After(2 * streamWait):
			t.Fatal("the requests did not finish")
		}
	}
	return out
}

// N requests at once against a budget of k admit exactly k, for requests
// and for tokens (run with -race).
func TestLimitConcurrentRequestsAdmitExactlyTheBudget(t *testing.T) {
	const n = 64
	body, reserved := limitBody(1000)
	env := startLimit(t, "requests 10 1h", chatOptions{})
	count := func(t *testing.T, resps []chatResponse, kind string, wait time.Duration) (ok int) {
		t.Helper()
		for _, r := range resps {
			switch r.Status {
			case http.StatusOK:
				ok++
			case http.StatusTooManyRequests:
				assertChatError(t, r, http.StatusTooManyRequests, kind, "rate_limit_exceeded", "")
				if ms := r.Header.Get("Retry-After-Ms"); ms != strconv.FormatInt(ceilUnits(wait, time.Millisecond), 10) {
					t.Errorf("Retry-After-Ms %q, want %v", ms, wait)
				}
			default:
				t.Errorf("status %d; body %s", r.Status, r.Body)
			}
		}
		return ok
	}

	t.Run("requests 10 1h", func(t *testing.T) {
		resps := sendLinedUp(t, n, env.key.Key, body)
		if ok := count(t, resps, "requests", 6*time.Minute); ok != 10 {
			t.Errorf("%d of %d admitted, want 10", ok, n)
		}
		if calls := env.up.calls.Load(); calls != 10 {
			t.Errorf("the upstream received %d requests, want 10", calls)
		}
	})

	t.Run("tokens for 7 reservations", func(t *testing.T) {
		// The upstream reports the reservation: corrections change nothing.
		env.up.handle(tokenReply(int64(len(body)), 1000))
		tpm := 7*reserved + reserved - 1
		key := createKey(t, env.acct.ID, map[string]any{"rpm": 1000, "tpm": tpm})
		before := env.up.calls.Load()
		resps := sendLinedUp(t, n, key.Key, body)
		if ok := count(t, resps, "tokens", unitsTime(1, tpm, time.Minute)); ok != 7 {
			t.Errorf("%d of %d admitted, want 7", ok, n)
		}
		if calls := env.up.calls.Load() - before; calls != 7 {
			t.Errorf("the upstream received %d requests, want 7", calls)
		}
	})
}

// A limited request goes no further: no upstream call, no hold, no ledger
// row. Bad input is refused before any budget is touched.
func TestLimitRefusedRequestTouchesNothing(t *testing.T) {
	env := startLimit(t, "requests 1 1h", chatOptions{balance: true})
	creditAccount(t, env.acct.ID, "10")
	body := chatBody(publicModel, `,"max_tokens":1000`)

	used := standardReply.Usage.TotalTokens
	// Spend each key's budget: tokensKey's first request reserves its
	// whole 100 and uses 18.
	tokensKey := createKey(t, env.acct.ID, map[string]any{"rpm": 100, "tpm": 100})
	assertOK(t, settledChat(t, http.MethodPost, env.key.Key, body))
	assertOK(t, settledChat(t, http.MethodPost, tokensKey.Key, body))
	balance, held := funds(t, env.acct.ID)
	if want := 10*billing.Dollar - 2*gptPrice.cost(11, 3, 7); balance != want || held != 0 {
		t.Fatalf("balance %s and held %s after two settled requests, want %s and 0", balance, held, want)
	}
	rows := len(ledgerRows(t, env.acct.ID))
	calls := env.up.calls.Load()

	t.Run("over requests", func(t *testing.T) {
		resp := settledChat(t, http.MethodPost, env.key.Key, body)
		assertLimited(t, resp, "requests", time.Hour, limitMessage("this API key", "requests per 1h0m0s", 1, 0, 1, time.Hour))
		requestID(t, resp.Header)
	})
	t.Run("over tokens", func(t *testing.T) {
		resp := settledChat(t, http.MethodPost, tokensKey.Key, body)
		wait := unitsTime(used, 100, time.Minute)
		assertLimited(t, resp, "tokens", wait, limitMessage("this API key", "tokens per min (TPM)", 100, 100-used, 100, wait))
	})
	if n := env.up.calls.Load(); n != calls {
		t.Errorf("the upstream received %d requests, want %d: limited requests reached it", n, calls)
	}
	assertFunds(t, env.acct.ID, balance)
	if n := len(ledgerRows(t, env.acct.ID)); n != rows {
		t.Errorf("%d ledger rows, want %d: a limited request left one", n, rows)
	}

	t.Run("bad input does not spend the budget", func(t *testing.T) {
		key := createKey(t, env.acct.ID, nil)
		assertChatError(t, settledChat(t, http.MethodPost, key.Key, `{"model":`), http.StatusBadRequest, "invalid_request_error", "", "")
		resp := settledChat(t, http.MethodPost, key.Key, chatBody("no-such-model", ""))
		assertChatError(t, resp, http.StatusNotFound, "invalid_request_error", "model_not_found", "")
		resp = settledChat(t, http.MethodPost, key.Key, body)
		assertOK(t, resp)
		assertRateHeaders(t, resp.Header, "Requests", &limitRate{1, 0, "1h0m0s"})
	})

	t.Run("a balance refusal gives the tokens back but counts the request", func(t *testing.T) {
		broke := createAccount(t, "broke")
		key := createKey(t, broke.ID, map[string]any{"rpm": 3, "tpm": 100_000})
		reserved := int64(len(body)) + 1000
		for i := range int64(2) {
			resp := settledChat(t, http.MethodPost, key.Key, body)
			assertChatError(t, resp, http.StatusForbidden, "insufficient_balance", "insufficient_balance", "")
			assertRateHeaders(t, resp.Header, "Requests", &limitRate{3, 2 - i, resetString(unitsTime(i+1, 3, time.Minute))})
			assertRateHeaders(t, resp.Header, "Tokens", &limitRate{100_000, 100_000 - reserved, resetString(unitsTime(reserved, 100_000, time.Minute))})
		}
	})
}

// Counters live in the zone, not the config: a reload keeps them, and a
// changed budget applies at once to the state the keys are in (the time
// until fully restored carries over, at most one new window).
func TestLimitReloadKeepsCounters(t *testing.T) {
	env := startLimit(t, "requests 2 1m", chatOptions{})
	body := chatBody(publicModel, "")
	a, b, c := env.key, createKey(t, env.acct.ID, nil), createKey(t, env.acct.ID, nil)
	post := func(k testKey) chatResponse { return settledChat(t, http.MethodPost, k.Key, body) }
	refused := func(t *testing.T, k testKey, limit int64, wait time.Duration) {
		t.Helper()
		resp := post(k)
		assertLimited(t, resp, "requests", wait, limitMessage("this API key", "requests per min (RPM)", limit, 0, 1, wait))
	}
	reload := func(t *testing.T, cfg string) {
		t.Helper()
		before := activeApp(t)
		forceReload(t, cfg)
		if activeApp(t) == before {
			t.Fatal("the config was not reloaded: the same arcane app is running")
		}
	}

	assertOK(t, post(a))
	assertOK(t, post(a))
	refused(t, a, 2, 30*time.Second)
	assertOK(t, post(b))
	assertOK(t, post(c))

	t.Run("the same config", func(t *testing.T) {
		reload(t, env.cfg)
		refused(t, a, 2, 30*time.Second)
		resp := post(b) // the second of its two
		assertOK(t, resp)
		assertRateHeaders(t, resp.Header, "Requests", &limitRate{2, 0, "1m0s"})
		refused(t, b, 2, 30*time.Second)
	})

	raised := strings.Replace(env.cfg, "requests 2 1m", "requests 4 1m", 1)
	if raised == env.cfg {
		t.Fatal("test setup: no budget to change")
	}
	t.Run("a raised budget", func(t *testing.T) {
		reload(t, raised)
		// a spent the whole window: still spent, but one request now
		// takes 15s to restore, not 30s.
		refused(t, a, 4, 15*time.Second)
		// c spent half of 2: half of 4 is left.
		for i, reset := range []string{"45s", "1m0s"} {
			resp := post(c)
			assertOK(t, resp)
			assertRateHeaders(t, resp.Header, "Requests", &limitRate{4, int64(1 - i), reset})
		}
		refused(t, c, 4, 15*time.Second)
		d := createKey(t, env.acct.ID, nil)
		for range 4 {
			assertOK(t, post(d))
		}
		refused(t, d, 4, 15*time.Second)

		env.clock.advance(15 * time.Second)
		assertOK(t, post(a))
		refused(t, a, 4, 15*time.Second)
	})

	t.Run("a lowered budget holds a key at most one new window", func(t *testing.T) {
		reload(t, strings.Replace(env.cfg, "requests 2 1m", "requests 1 1m", 1))
		refused(t, a, 1, time.Minute)
		resp := post(createKey(t, env.acct.ID, nil))
		assertOK(t, resp)
		assertRateHeaders(t, resp.Header, "Requests", &limitRate{1, 0, "1m0s"})
	})

	t.Run("another zone has counters of its own", func(t *testing.T) {
		reload(t, strings.Replace(env.cfg, env.zone, newLimitZoneName(t), 1))
		assertOK(t, post(a))
	})
}

// The official SDK sees a 429 as an *openai.Error with the wait in the
// headers it reads; with its retries, it waits Retry-After-Ms and is
// admitted at the first retry.
func TestLimitThroughTheOpenAISDK(t *testing.T) {
	env := startLimit(t, "requests 3 10ms", chatOptions{})
	params := openai.ChatCompletionNewParams{
		Model:    publicModel,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hi.")},
	}
	exhaust := func(t *testing.T, key testKey) {
		t.Helper()
		for range 3 {
			assertOK(t, settledChat(t, http.MethodPost, key.Key, chatBody(publicModel, "")))
		}
	}
	// The fourth of 3 per 10ms waits 3,333,334ns.
	const wantMessage = "Rate limit reached for this API key on requests per 10ms: Limit 3, Remaining 0, Requested 1. Please try again in 4ms."

	t.Run("without retries the error carries the wait", func(t *testing.T) {
		client := openai.NewClient(
			option.WithBaseURL(siteURL+"/v1/"),
			option.WithAPIKey(env.key.Key),
			option.WithHTTPClient(settledClient),
			option.WithMaxRetries(0),
			option.WithRequestTimeout(2*streamWait),
		)
		exhaust(t, env.key)
		check := func(t *testing.T, err error) {
			t.Helper()
			var apierr *openai.Error
			if !errors.As(err, &apierr) {
				t.Fatalf("error %v (%T) is not an *openai.Error", err, err)
			}
			if apierr.StatusCode != http.StatusTooManyRequests || apierr.Type != "requests" || apierr.Code != "rate_limit_exceeded" {
				t.Errorf("status %d, type %q, code %q; want 429, requests, rate_limit_exceeded", apierr.StatusCode, apierr.Type, apierr.Code)
			}
			if apierr.Message != wantMessage {
				t.Errorf("message %q, want %q", apierr.Message, wantMessage)
			}
			if apierr.Response == nil {
				t.Fatal("the error carries no response")
			}
			h := apierr.Response.Header
			if ra, ms := h.Get("Retry-After"), h.Get("Retry-After-Ms"); ra != "1" || ms != "4" {
				t.Errorf("Retry-After %q and Retry-After-Ms %q, want 1 and 4", ra, ms)
			}
			assertRateHeaders(t, h, "Requests", &limitRate{3, 0, "10ms"})
		}
		_, err := client.Chat.Completions.New(context.Background(), params)
		check(t, err)

		stream := client.Chat.Completions.NewStreaming(context.Background(), params)
		defer stream.Close()
		for stream.Next() {
			t.Errorf("the refused stream has a chunk: %s", stream.Current().RawJSON())
		}
		check(t, stream.Err())
	})

	t.Run("with retries it waits Retry-After-Ms, then is admitted", func(t *testing.T) {
		key := createKey(t, env.acct.ID, nil)
		exhaust(t, key)
		type attempt struct {
			sent, answered time.Time
			retry          string
			status         int
			retryAfterMs   string
		}
		var attempts []attempt
		// The middleware moves the fake clock by what the answer asks the
		// client to wait: the SDK's retry then finds the budget restored
		// only if the server rounded the wait up.
		wait := func(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
			a := attempt{sent: time.Now(), retry: req.Header.Get("X-Stainless-Retry-Count")}
			resp, err := next(req)
			a.answered = time.Now()
			if err == nil {
				a.status, a.retryAfterMs = resp.StatusCode, resp.Header.Get("Retry-After-Ms")
				if ms, perr := strconv.ParseInt(a.retryAfterMs, 10, 64); perr == nil && resp.StatusCode == http.StatusTooManyRequests {
					env.clock.advance(time.Duration(ms) * time.Millisecond)
				}
			}
			attempts = append(attempts, a)
			return resp, err
		}
		client := openai.NewClient(
			option.WithBaseURL(siteURL+"/v1/"),
			option.WithAPIKey(key.Key),
			option.WithHTTPClient(settledClient),
			option.WithMiddleware(wait),
			option.WithRequestTimeout(2*streamWait),
		)
		resp, err := client.Chat.Completions.New(context.Background(), params)
		if err != nil {
			t.Fatalf("Chat.Completions.New: %v", err)
		}
		if resp.Choices[0].Message.Content != standardReply.content() {
			t.Errorf("content %q", resp.Choices[0].Message.Content)
		}
		if len(attempts) != 2 {
			t.Fatalf("%d attempts, want a 429 and one retry: %+v", len(attempts), attempts)
		}
		first, second := attempts[0], attempts[1]
		if first.status != http.StatusTooManyRequests || first.retryAfterMs != "4" || first.retry != "0" {
			t.Errorf("first attempt %+v, want a 429 with Retry-After-Ms 4", first)
		}
		if second.status != http.StatusOK || second.retry != "1" {
			t.Errorf("second attempt %+v, want the first retry, admitted", second)
		}
		// It waited the 4ms of Retry-After-Ms, not Retry-After's second.
		if gap := second.sent.Sub(first.answered); gap < 4*time.Millisecond || gap >= time.Second {
			t.Errorf("the SDK waited %v before retrying, want 4ms", gap)
		}
	})
}

// Options that Caddyfile adapting cannot see: windows over a hundred years
// fail validation when the config loads.
func TestLimitValidate(t *testing.T) {
	for _, tc := range []struct {
		input string
		err   string
	}{
		{input: "arcane_limit {\n requests 600 1m\n tokens 1000000 1m\n account_requests 6000 1m\n account_tokens 1 36500d\n}"},
		{input: "arcane_limit", err: ""},
		{input: "arcane_limit {\n tokens 1 36501d\n}", err: "arcane_limit tokens: need a positive count and a window from 1ns to 100 years"},
		{input: "arcane_limit {\n account_requests 5 100000d\n}", err: "arcane_limit account_requests"},
	} {
		var l Limit
		if err := l.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input)); err != nil {
			t.Fatalf("%q: %v", tc.input, err)
		}
		err := l.Validate()
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%q: %v", tc.input, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: error %v, want one containing %q", tc.input, err, tc.err)
		}
	}
}
