package billing

import (
	"errors"
	"fmt"
	"math"
	"strconv"
)

// Amount is money in micro-dollars: one US dollar is 1,000,000. Every
// balance, hold, price and cost is an integer Amount, so sums are exact and
// rounding happens only where a caller rounds on purpose. Six decimals make
// every catalog price (quoted in USD per million tokens, to the cent or
// below) exact, and match the "12.500000" form amounts take on the wire.
type Amount int64

// Dollar is one US dollar as an Amount.
const Dollar Amount = 1_000_000

// amountDecimals is how many decimal places an Amount holds.
const amountDecimals = 6

// ErrAmountSyntax is wrapped by every error ParseAmount returns.
var ErrAmountSyntax = errors.New("invalid amount")

// ParseAmount parses a decimal string of US dollars, such as "12", "0.5" or
// "-3.250000", into an Amount, exactly. It accepts an optional leading '-',
// digits, and an optional fraction of one to six digits. It refuses
// everything else rather than guess: '+', exponents, NaN and Inf, spaces,
// a bare or trailing '.', more decimals than an Amount holds, and values
// that do not fit. Callers reject negative amounts where they make no sense.
func ParseAmount(s string) (Amount, error) {
	in := s
	neg := false
	if len(s) > 0 && s[0] == '-' {
		neg = true
		s = s[1:]
	}
	whole, frac := s, ""
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			whole, frac = s[:i], s[i+1:]
			if frac == "" {
				return 0, fmt.Errorf("%w %q: nothing after the decimal point", ErrAmountSyntax, in)
			}
			break
		}
	}
	if whole == "" {
		return 0, fmt.Errorf("%w %q: expected digits before the decimal point", ErrAmountSyntax, in)
	}
	if len(frac) > amountDecimals {
		return 0, fmt.Errorf("%w %q: at most %d decimal places", ErrAmountSyntax, in, amountDecimals)
	}
	var v uint64
	for _, part := range [2]string{whole, frac} {
		for i := 0; i < len(part); i++ {
			c := part[i]
			if c < '0' || c > '9' {
				return 0, fmt.Errorf("%w %q: unexpected character %q", ErrAmountSyntax, in, c)
			}
			d := uint64(c - '0')
			if v > (math.MaxInt64-d)/10 {
				return 0, fmt.Errorf("%w %q: too large", ErrAmountSyntax, in)
			}
			v = v*10 + d
		}
	}
	for i := len(frac); i < amountDecimals; i++ {
		if v > math.MaxInt64/10 {
			return 0, fmt.Errorf("%w %q: too large", ErrAmountSyntax, in)
		}
		v *= 10
	}
	if neg {
		return -Amount(v), nil
	}
	return Amount(v), nil
}

// String formats a as dollars with exactly six decimals: "12.500000",
// "-0.000001". ParseAmount(a.String()) == a for every a except
// math.MinInt64, which no operation produces.
func (a Amount) String() string {
	var buf [24]byte
	return string(a.appendTo(buf[:0]))
}

func (a Amount) appendTo(b []byte) []byte {
	u := uint64(a)
	if a < 0 {
		b = append(b, '-')
		u = uint64(-a)
	}
	b = strconv.AppendUint(b, u/uint64(Dollar), 10)
	b = append(b, '.')
	frac := u % uint64(Dollar)
	var digits [amountDecimals]byte
	for i := amountDecimals - 1; i >= 0; i-- {
		digits[i] = byte('0' + frac%10)
		frac /= 10
	}
	return append(b, digits[:]...)
}

// MarshalJSON writes a as a decimal string, never a float: "12.500000".
func (a Amount) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 24)
	b = append(b, '"')
	b = a.appendTo(b)
	return append(b, '"'), nil
}

// UnmarshalJSON reads a decimal string ("12.5"). Bare JSON numbers are
// refused: a float cannot carry money exactly, and accepting 0.1 as a number
// would invite clients to compute amounts in floating point.
func (a *Amount) UnmarshalJSON(b []byte) error {
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return fmt.Errorf("%w: amounts are decimal strings such as \"12.50\", not %s", ErrAmountSyntax, b)
	}
	v, err := ParseAmount(string(b[1 : len(b)-1]))
	if err != nil {
		return err
	}
	*a = v
	return nil
}
