package main

import (
	"fmt"
	"strconv"
	"strings"
)

// byteSize is a flag value for memory sizes: plain bytes or a number with a
// binary (KiB, MiB, GiB, TiB) or decimal (KB, MB, GB, TB) suffix; the "B" is
// optional ("80Gi", "80G").
type byteSize int64

var byteUnits = []struct {
	suffix string
	mult   float64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"ki", 1 << 10}, {"mi", 1 << 20}, {"gi", 1 << 30}, {"ti", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"k", 1e3}, {"m", 1e6}, {"g", 1e9}, {"t", 1e12},
	{"b", 1},
}

func (b *byteSize) String() string { return strconv.FormatInt(int64(*b), 10) }

func (b *byteSize) Set(s string) error {
	v := strings.ToLower(strings.TrimSpace(s))
	mult := 1.0
	for _, u := range byteUnits {
		if strings.HasSuffix(v, u.suffix) {
			v, mult = strings.TrimSpace(strings.TrimSuffix(v, u.suffix)), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || !(f >= 0) || f*mult >= 1<<62 { // !(f >= 0) also refuses NaN
		return fmt.Errorf("%q: want a size such as 81920MiB, 80GiB or a number of bytes", s)
	}
	*b = byteSize(f * mult)
	return nil
}
