package billing

import "testing"

func TestPerToken(t *testing.T) {
	cases := []struct {
		name       string
		perMillion string
		want       string
	}{
		{"a price in dollars and cents per million is exact per token", "1.75", "0.00000175"},
		{"a whole dollar per million is one micro-dollar per token", "1", "0.000001"},
		{"the smallest amount per million is a trillionth per token", "0.000001", "0.000000000001"},
		{"a free model costs zero", "0", "0"},
		{"a million dollars per million tokens is a dollar per token", "1000000", "1"},
		{"fourteen dollars per million", "14.00", "0.000014"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, err := ParseAmount(tc.perMillion)
			if err != nil {
				t.Fatal(err)
			}
			if got := PerToken(a); got != tc.want {
				t.Fatalf("PerToken(%s) = %s, want %s", tc.perMillion, got, tc.want)
			}
		})
	}
}
