package breaker

import "time"

// epoch is the package's time origin. It is the only time.Now call in the
// package. Atomics hold instants as int64 nanoseconds since epoch (mono), so
// real times use the monotonic clock and ignore wall-clock jumps, while
// synthetic times without a monotonic reading (tests) fall back to wall time
// in Sub and still compare exactly.
var epoch = time.Now()

// mono converts t to nanoseconds since epoch. time.Time.Sub saturates, so
// the result never overflows.
func mono(t time.Time) int64 { return int64(t.Sub(epoch)) }

// Mono is t as this package's monotonic nanoseconds: what DoneMono takes,
// so that a caller holding the instant as an integer need not convert.
func Mono(t time.Time) int64 { return mono(t) }

// floorDiv is a/b rounded toward negative infinity (b > 0), so synthetic
// times before epoch still map to distinct, ordered buckets.
func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && (a < 0) {
		q--
	}
	return q
}
