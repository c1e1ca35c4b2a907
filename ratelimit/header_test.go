package ratelimit

import (
	"math"
	"testing"
	"time"
)

func TestFormatReset(t *testing.T) {
	tests := []struct {
		name string
		d    time.Duration
		want string
	}{
		{"a full second, as OpenAI sends it", time.Second, "1s"},
		{"milliseconds, as OpenAI sends them", 12 * time.Millisecond, "12ms"},
		{"minutes keep Go's 0s suffix, as OpenAI sends them", 6 * time.Minute, "6m0s"},
		{"a fraction of a millisecond rounds up", 11*time.Millisecond + 1, "12ms"},
		{"a third of a second rounds up to the next millisecond", 333333334, "334ms"},
		{"anything above zero is at least a millisecond", 1, "1ms"},
		{"fractional seconds keep Go's decimal form", 1500 * time.Millisecond, "1.5s"},
		{"minutes with a fraction", 90*time.Second + 500*time.Millisecond, "1m30.5s"},
		{"a minute less a nanosecond rounds up to a minute", time.Minute - 1, "1m0s"},
		{"hours", 2*time.Hour + 3*time.Second, "2h0m3s"},
		{"zero", 0, "0s"},
		{"negative", -time.Second, "0s"},
		{"the largest duration does not wrap", math.MaxInt64, "2562047h47m16.854s"},
	}
	for _, tt := range tests {
		if got := FormatReset(tt.d); got != tt.want {
			t.Errorf("%s: FormatReset(%d) = %q, want %q", tt.name, int64(tt.d), got, tt.want)
		}
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	tests := []struct {
		name string
		d    time.Duration
		want int64
	}{
		{"a whole second", time.Second, 1},
		{"a nanosecond over rounds up", time.Second + 1, 2},
		{"a third of a second is at least one", 333333334, 1},
		{"zero is at least one", 0, 1},
		{"negative is at least one", -time.Minute, 1},
		{"a minute", time.Minute, 60},
		{"a minute and a millisecond", time.Minute + time.Millisecond, 61},
		{"the largest duration does not wrap", math.MaxInt64, 9223372037},
	}
	for _, tt := range tests {
		if got := RetryAfterSeconds(tt.d); got != tt.want {
			t.Errorf("%s: RetryAfterSeconds(%d) = %d, want %d", tt.name, int64(tt.d), got, tt.want)
		}
	}
}

func TestRetryAfterMillis(t *testing.T) {
	tests := []struct {
		name string
		d    time.Duration
		want int64
	}{
		{"a whole millisecond", time.Millisecond, 1},
		{"a nanosecond over rounds up", time.Millisecond + 1, 2},
		{"a third of a second", 333333334, 334},
		{"zero is at least one", 0, 1},
		{"negative is at least one", -time.Second, 1},
		{"the largest duration does not wrap", math.MaxInt64, 9223372036855},
	}
	for _, tt := range tests {
		if got := RetryAfterMillis(tt.d); got != tt.want {
			t.Errorf("%s: RetryAfterMillis(%d) = %d, want %d", tt.name, int64(tt.d), got, tt.want)
		}
	}
}
