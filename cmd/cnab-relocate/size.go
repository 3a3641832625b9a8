package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// sizeUnits are the units parseSize takes, longest first: binary (KiB,
// MiB, GiB, TiB: powers of 1024) and decimal (KB, MB, GB, TB: powers of
// 1000, as media sizes are sold: a DVD holds 4.7GB), in any case; no unit
// means bytes.
var sizeUnits = []struct {
	suffix string
	n      int64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"b", 1},
}

// parseSize parses a size in bytes: a number (a fraction allowed with a
// unit: 4.7GB) with an optional unit from sizeUnits. It must be a whole
// number of bytes, at least 1.
func parseSize(s string) (int64, error) {
	num, mult := strings.TrimSpace(s), int64(1)
	l := strings.ToLower(num)
	for _, u := range sizeUnits {
		if strings.HasSuffix(l, u.suffix) {
			num, mult = strings.TrimSpace(num[:len(num)-len(u.suffix)]), u.n
			break
		}
	}
	// Digits and a point only (a sign for a clearer error below): no
	// exponent, hex, underscores, NaN or Inf, which ParseFloat takes.
	if strings.Trim(strings.TrimPrefix(num, "-"), "0123456789.") != "" || strings.Trim(num, "-.") == "" {
		return 0, fmt.Errorf("not a size: want a number of bytes with an optional unit (KiB, MiB, GiB, TiB; KB, MB, GB, TB)")
	}
	var n int64
	if i, err := strconv.ParseInt(num, 10, 64); err == nil {
		if i > 0 && i > math.MaxInt64/mult {
			return 0, fmt.Errorf("too big")
		}
		n = i * mult
	} else if f, ferr := strconv.ParseFloat(num, 64); ferr == nil && strings.Contains(num, ".") {
		v := f * float64(mult)
		if v >= math.MaxInt64 {
			return 0, fmt.Errorf("too big")
		}
		if v != math.Trunc(v) {
			return 0, fmt.Errorf("not a whole number of bytes")
		}
		n = int64(v)
	} else if !strings.Contains(num, ".") {
		return 0, fmt.Errorf("too big")
	} else {
		return 0, fmt.Errorf("not a size: want a number of bytes with an optional unit (KiB, MiB, GiB, TiB; KB, MB, GB, TB)")
	}
	if n < 1 {
		return 0, fmt.Errorf("must be at least 1 byte")
	}
	return n, nil
}
