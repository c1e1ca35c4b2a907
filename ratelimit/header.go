package ratelimit

import (
	"math"
	"time"
)

// FormatReset formats d for OpenAI's x-ratelimit-reset-requests and
// x-ratelimit-reset-tokens headers: a Go duration string as OpenAI sends it
// ("1s", "12ms", "6m0s"), after rounding d UP to the millisecond, so a client
// that waits that long finds the budget restored. Sub-second values are whole
// milliseconds ("334ms" for 333.33ms); longer ones keep Go's decimal
// seconds ("1.5s", "1m30.5s"). "0s" when d <= 0.
func FormatReset(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	ms := ceilDiv(d, time.Millisecond)
	if ms > math.MaxInt64/int64(time.Millisecond) {
		ms = math.MaxInt64 / int64(time.Millisecond)
	}
	return (time.Duration(ms) * time.Millisecond).String()
}

// RetryAfterSeconds returns d in whole seconds for the Retry-After header,
// rounded up and at least 1: an integer Retry-After is what every client
// parses, and rounding up never invites a retry that is refused again.
func RetryAfterSeconds(d time.Duration) int64 {
	return max(ceilDiv(d, time.Second), 1)
}

// RetryAfterMillis returns d in whole milliseconds for the non-standard
// retry-after-ms header (which OpenAI's SDKs prefer to Retry-After), rounded
// up and at least 1.
func RetryAfterMillis(d time.Duration) int64 {
	return max(ceilDiv(d, time.Millisecond), 1)
}

// ceilDiv returns d/unit rounded up (toward zero for negative d).
func ceilDiv(d, unit time.Duration) int64 {
	q := int64(d / unit)
	if d%unit > 0 {
		q++
	}
	return q
}
