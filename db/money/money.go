// Package money holds amounts of US dollars exactly, as whole nano-dollars
// (1e-9 USD), so that one cheap token's price is an integer and every sum is
// exact. Amounts are read from and written as decimal text, never floats.
package money

import (
	"errors"
	"math"
	"math/bits"
	"strconv"
	"strings"
)

// USD is an amount in nano-dollars: USD(1_000_000_000) is one dollar.
type USD int64

// Dollar is one US dollar.
const Dollar USD = 1_000_000_000

// Places is how many decimal places an amount can have.
const Places = 9

// Max is the largest amount Parse accepts: a billion dollars.
const Max = 1_000_000_000 * Dollar

var (
	ErrSyntax = errors.New("not a decimal amount of US dollars, like 12.50")
	ErrPlaces = errors.New("more than 9 decimal places")
	ErrRange  = errors.New("over a billion dollars")
)

// Parse reads a decimal amount of dollars: "12.5", "-3", "0.000000001".
// Exponents, signs other than a leading '-', and more than 9 decimal
// places are refused rather than rounded.
func Parse(s string) (USD, error) {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	whole, frac, dotted := strings.Cut(s, ".")
	if whole == "" || (dotted && frac == "") || !digits(whole) || !digits(frac) {
		return 0, ErrSyntax
	}
	if len(frac) > Places {
		return 0, ErrPlaces
	}
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil || w > int64(Max/Dollar) {
		return 0, ErrRange
	}
	f := int64(0)
	if frac != "" {
		f, _ = strconv.ParseInt(frac+strings.Repeat("0", Places-len(frac)), 10, 64)
	}
	v := USD(w)*Dollar + USD(f)
	if v > Max {
		return 0, ErrRange
	}
	if neg {
		v = -v
	}
	return v, nil
}

func digits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// String is the amount in dollars with no trailing zeros: "12.5", "0", "-0.000001".
func (v USD) String() string {
	sign := ""
	u := uint64(v)
	if v < 0 {
		sign = "-"
		u = uint64(-v)
		if v == math.MinInt64 {
			u = uint64(math.MaxInt64) + 1
		}
	}
	whole, frac := u/uint64(Dollar), u%uint64(Dollar)
	s := sign + strconv.FormatUint(whole, 10)
	if frac != 0 {
		f := strconv.FormatUint(frac, 10)
		s += "." + strings.TrimRight(strings.Repeat("0", Places-len(f))+f, "0")
	}
	return s
}

// MarshalJSON writes the amount as a JSON number of dollars, exactly.
func (v USD) MarshalJSON() ([]byte, error) { return []byte(v.String()), nil }

// PerMillion is a price in nano-dollars per million tokens, so that a price
// of $0.0375 per million tokens is exact too.
type PerMillion int64

// Cost is what n tokens cost at price p, rounded up to the next nano-dollar.
func (p PerMillion) Cost(n int64) USD {
	if n <= 0 || p <= 0 {
		return 0
	}
	hi, lo := bits.Mul64(uint64(n), uint64(p))
	if hi >= 1_000_000 {
		return USD(math.MaxInt64)
	}
	q, r := bits.Div64(hi, lo, 1_000_000)
	if r > 0 {
		q++
	}
	if q > math.MaxInt64 {
		return USD(math.MaxInt64)
	}
	return USD(q)
}

// ParsePrice reads a price in dollars per million tokens: "0.15".
func ParsePrice(s string) (PerMillion, error) {
	v, err := Parse(s)
	return PerMillion(v), err
}

// String is the price in dollars per million tokens.
func (p PerMillion) String() string { return USD(p).String() }

// MarshalJSON writes the price as a JSON number of dollars per million tokens.
func (p PerMillion) MarshalJSON() ([]byte, error) { return []byte(p.String()), nil }
