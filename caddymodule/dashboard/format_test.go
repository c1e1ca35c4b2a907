package dashboard

import (
	"math"
	"testing"

	"github.com/arcaneapi/caddy-arcane/billing"
)

func TestUSD(t *testing.T) {
	tests := []struct {
		a    billing.Amount
		want string
	}{
		{0, "$0.00"},
		{1, "$0.000001"},
		{10_000, "$0.01"},
		{120_000, "$0.12"},
		{175_000, "$0.175"},
		{500_000, "$0.50"},
		{billing.Dollar, "$1.00"},
		{4_999_981, "$4.999981"},
		{10 * billing.Dollar, "$10.00"},
		{999 * billing.Dollar, "$999.00"},
		{1000 * billing.Dollar, "$1,000.00"},
		{1_234_567*billing.Dollar + 890_000, "$1,234,567.89"},
		{-14, "-$0.000014"},
		{-2_500_000, "-$2.50"},
		{-1234 * billing.Dollar, "-$1,234.00"},
		{math.MaxInt64, "$9,223,372,036,854.775807"},
	}
	for _, tc := range tests {
		if got := usd(tc.a); got != tc.want {
			t.Errorf("usd(%d) = %q, want %q", tc.a, got, tc.want)
		}
	}
}

func TestFormatCount(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{
		{0, "0"},
		{7, "7"},
		{999, "999"},
		{1000, "1,000"},
		{12_345, "12,345"},
		{100_000, "100,000"},
		{1_234_567, "1,234,567"},
		{-1, "-1"},
		{-1234, "-1,234"},
		{-123_456, "-123,456"},
		{math.MaxInt64, "9,223,372,036,854,775,807"},
		{math.MinInt64, "-9,223,372,036,854,775,808"},
	}
	for _, tc := range tests {
		if got := formatCount(tc.n); got != tc.want {
			t.Errorf("formatCount(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}
