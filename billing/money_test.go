package billing

import (
	"encoding/json"
	"errors"
	"math"
	"math/big"
	"regexp"
	"strings"
	"testing"
)

// amountPattern is the exact language ParseAmount documents: an optional
// '-', digits, and an optional fraction of one to six digits.
var amountPattern = regexp.MustCompile(`^-?[0-9]+(\.[0-9]{1,6})?$`)

// acceptedAmounts are inputs ParseAmount must accept, with their value.
var acceptedAmounts = []struct {
	name string
	in   string
	want Amount
}{
	{"zero is zero", "0", 0},
	{"minus zero is zero", "-0", 0},
	{"a whole number of dollars is scaled to micro-dollars", "12", 12 * Dollar},
	{"one decimal is tenths of a dollar", "12.5", 12_500_000},
	{"six decimals reach a single micro-dollar", "0.000001", 1},
	{"a negative amount keeps its sign", "-3.25", -3_250_000},
	{"a negative amount with all six decimals is exact", "-3.250000", -3_250_000},
	{"leading zeros are ignored", "007.5", 7_500_000},
	{"half a dollar is half a million micro-dollars", "0.5", 500_000},
	{"the largest whole number of dollars fits", "9223372036854", 9_223_372_036_854_000_000},
	{"an amount just below the largest whole-digit boundary fits", "9223372036854.775799", math.MaxInt64 - 8},
	// Regression: the overflow check once refused the last eight amounts
	// below MaxInt64 (see testdata/fuzz/FuzzParseAmount).
	{"the largest amount fits", "9223372036854.775807", math.MaxInt64},
	{"the most negative amount that String produces for -MaxInt64 fits", "-9223372036854.775807", -math.MaxInt64},
	{"an amount within eight of the largest fits", "9223372036854.775800", math.MaxInt64 - 7},
}

// refusedAmounts are inputs ParseAmount must refuse.
var refusedAmounts = []struct {
	name string
	in   string
}{
	{"an empty string is refused", ""},
	{"a lone minus sign is refused", "-"},
	{"a fraction without a whole part is refused", ".5"},
	{"a negative fraction without a whole part is refused", "-.5"},
	{"a trailing decimal point is refused", "5."},
	{"seven decimals are refused", "1.0000001"},
	{"a plus sign is refused", "+1"},
	{"an exponent is refused", "1e3"},
	{"NaN is refused", "NaN"},
	{"Inf is refused", "Inf"},
	{"a leading space is refused", " 1"},
	{"a trailing space is refused", "1 "},
	{"a decimal comma is refused", "1,5"},
	{"a hexadecimal literal is refused", "0x10"},
	{"a whole part one dollar past the largest amount overflows", "9223372036855"},
	{"one micro-dollar past the largest amount overflows", "9223372036854.775808"},
	{"the most negative int64 is refused as documented", "-9223372036854.775808"},
	{"a twenty-digit number overflows", "99999999999999999999"},
	{"two decimal points are refused", "1.2.3"},
	{"a double minus sign is refused", "--1"},
	{"a lone decimal point is refused", "."},
	{"non-ASCII digits are refused", "١٢"},
	{"an underscore separator is refused", "1_000"},
}

func TestParseAmountAcceptsExactDecimals(t *testing.T) {
	for _, tc := range acceptedAmounts {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseAmount(tc.in)
			if err != nil {
				t.Fatalf("ParseAmount(%q) failed: %v", tc.in, err)
			}
			if got != tc.want {
				t.Fatalf("ParseAmount(%q) = %d, want %d", tc.in, int64(got), int64(tc.want))
			}
		})
	}
}

func TestParseAmountRefusesEverythingElse(t *testing.T) {
	for _, tc := range refusedAmounts {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseAmount(tc.in)
			if err == nil {
				t.Fatalf("ParseAmount(%q) = %d, want an error", tc.in, int64(got))
			}
			if !errors.Is(err, ErrAmountSyntax) {
				t.Fatalf("ParseAmount(%q) error %v does not wrap ErrAmountSyntax", tc.in, err)
			}
			if got != 0 {
				t.Fatalf("ParseAmount(%q) returned %d alongside its error, want 0", tc.in, int64(got))
			}
		})
	}
}

func TestAmountStringHasExactlySixDecimals(t *testing.T) {
	cases := []struct {
		name string
		in   Amount
		want string
	}{
		{"zero prints six zero decimals", 0, "0.000000"},
		{"one micro-dollar prints as the last decimal", 1, "0.000001"},
		{"minus one micro-dollar keeps its sign", -1, "-0.000001"},
		{"twelve and a half dollars", 12_500_000, "12.500000"},
		{"one dollar", Dollar, "1.000000"},
		{"a negative amount with a whole part", -3_250_000, "-3.250000"},
		{"the largest amount", math.MaxInt64, "9223372036854.775807"},
		{"minus the largest amount", -math.MaxInt64, "-9223372036854.775807"},
		{"the most negative int64 still prints exactly", math.MinInt64, "-9223372036854.775808"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.in.String(); got != tc.want {
				t.Fatalf("Amount(%d).String() = %q, want %q", int64(tc.in), got, tc.want)
			}
		})
	}
}

func TestParseAmountReadsBackWhatStringWrites(t *testing.T) {
	values := []Amount{
		0, 1, -1, 9, 10, 999_999, Dollar, -Dollar, 12_500_000, -3_250_000,
		1 << 40, -(1 << 40), 1<<62 + 12345,
		math.MaxInt64 / 10, math.MaxInt64/10 + 1,
		math.MaxInt64 - 8, // the largest value the old, too strict overflow check let through
		math.MaxInt64 - 7, math.MaxInt64 - 1, math.MaxInt64,
		-math.MaxInt64,
	}
	for _, a := range values {
		s := a.String()
		t.Run("the string "+s+" reads back as the same amount", func(t *testing.T) {
			got, err := ParseAmount(s)
			if err != nil {
				t.Fatalf("ParseAmount(%q) failed: %v", s, err)
			}
			if got != a {
				t.Fatalf("ParseAmount(%q) = %d, want %d", s, int64(got), int64(a))
			}
		})
	}
}

func TestAmountMarshalsAsAQuotedDecimalString(t *testing.T) {
	cases := []struct {
		name string
		in   any
		want string
	}{
		{"a bare amount is a quoted string", Amount(12_500_000), `"12.500000"`},
		{"a negative amount is a quoted string", Amount(-1), `"-0.000001"`},
		{"zero is a quoted string, not 0", Amount(0), `"0.000000"`},
		{"an amount field inside an object is a quoted string", struct {
			Balance Amount `json:"balance"`
		}{Balance: 3 * Dollar}, `{"balance":"3.000000"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := json.Marshal(tc.in)
			if err != nil {
				t.Fatalf("json.Marshal: %v", err)
			}
			if string(got) != tc.want {
				t.Fatalf("json.Marshal = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestAmountUnmarshalAcceptsDecimalStrings(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want Amount
	}{
		{"a quoted decimal is read exactly", `"1.5"`, 1_500_000},
		{"a quoted whole number is read as dollars", `"12"`, 12 * Dollar},
		{"a quoted negative micro-dollar is read exactly", `"-0.000001"`, -1},
		{"what MarshalJSON writes is read back", `"12.500000"`, 12_500_000},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var a Amount
			if err := json.Unmarshal([]byte(tc.in), &a); err != nil {
				t.Fatalf("json.Unmarshal(%s): %v", tc.in, err)
			}
			if a != tc.want {
				t.Fatalf("json.Unmarshal(%s) = %d, want %d", tc.in, int64(a), int64(tc.want))
			}
			var obj struct {
				Balance Amount `json:"balance"`
			}
			if err := json.Unmarshal([]byte(`{"balance":`+tc.in+`}`), &obj); err != nil {
				t.Fatalf("json.Unmarshal into a struct: %v", err)
			}
			if obj.Balance != tc.want {
				t.Fatalf("struct field = %d, want %d", int64(obj.Balance), int64(tc.want))
			}
		})
	}
}

func TestAmountUnmarshalRefusesNumbersAndJunk(t *testing.T) {
	cases := []struct {
		name string
		in   string
	}{
		{"a bare decimal number is refused", `1.5`},
		{"a bare integer is refused", `1`},
		{"null is refused", `null`},
		{"true is refused", `true`},
		{"an empty string is refused", `""`},
		{"an object is refused", `{}`},
		{"an array is refused", `[]`},
		{"a quoted exponent is refused", `"1e3"`},
		{"a quoted amount with a space is refused", `" 1"`},
		{"a quoted amount with seven decimals is refused", `"1.0000001"`},
		{"a quoted NaN is refused", `"NaN"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			const sentinel = Amount(42)
			a := sentinel
			err := json.Unmarshal([]byte(tc.in), &a)
			if err == nil {
				t.Fatalf("json.Unmarshal(%s) = %d, want an error", tc.in, int64(a))
			}
			if !errors.Is(err, ErrAmountSyntax) {
				t.Fatalf("json.Unmarshal(%s) error %v does not wrap ErrAmountSyntax", tc.in, err)
			}
			if a != sentinel {
				t.Fatalf("a refused input changed the amount to %d", int64(a))
			}
		})
	}
	// Inputs encoding/json would reject before reaching UnmarshalJSON,
	// handed to the method directly.
	direct := []struct {
		name string
		in   string
	}{
		{"a lone quote is refused", `"`},
		{"an unterminated string is refused", `"1.5`},
		{"an empty input is refused", ``},
		{"a string missing its opening quote is refused", `1.5"`},
	}
	for _, tc := range direct {
		t.Run(tc.name, func(t *testing.T) {
			var a Amount
			if err := a.UnmarshalJSON([]byte(tc.in)); !errors.Is(err, ErrAmountSyntax) {
				t.Fatalf("UnmarshalJSON(%s) = %v, want an error wrapping ErrAmountSyntax", tc.in, err)
			}
		})
	}
}

// exactMicros is a reference implementation of ParseAmount's value for an
// input already known to match amountPattern, using arbitrary precision.
func exactMicros(s string) *big.Int {
	whole, frac, _ := strings.Cut(s, ".")
	digits := whole + frac + strings.Repeat("0", amountDecimals-len(frac))
	v, ok := new(big.Int).SetString(digits, 10)
	if !ok {
		panic("exactMicros: not a decimal: " + s)
	}
	return v
}

func FuzzParseAmount(f *testing.F) {
	for _, tc := range acceptedAmounts {
		f.Add(tc.in)
	}
	for _, tc := range refusedAmounts {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAmount(s)
		if err != nil {
			if !errors.Is(err, ErrAmountSyntax) {
				t.Fatalf("ParseAmount(%q) error %v does not wrap ErrAmountSyntax", s, err)
			}
			return
		}
		if !amountPattern.MatchString(s) {
			t.Fatalf("ParseAmount accepted %q, which is not of the form %s", s, amountPattern)
		}
		if want := exactMicros(s); want.Cmp(big.NewInt(int64(a))) != 0 {
			t.Fatalf("ParseAmount(%q) = %d, want %s", s, int64(a), want)
		}
		back, err := ParseAmount(a.String())
		if err != nil {
			t.Fatalf("ParseAmount(%q) = %d, but its String %q does not parse: %v", s, int64(a), a.String(), err)
		}
		if back != a {
			t.Fatalf("ParseAmount(%q) = %d, but its String %q parses to %d", s, int64(a), a.String(), int64(back))
		}
	})
}
