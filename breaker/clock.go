package breaker

import "time"

// Mono is an instant of the process's monotonic clock: nanoseconds since
// the package's epoch. It is the one time type of the request path (the
// Circuit here, and the throttle's Admit, Finish and recorder): instants
// held in atomics, durations by integer subtraction, immune to wall-clock
// steps.
//
// MonoOf converts a time.Time and Time converts back; these two and epoch
// are the only conversions. A real time converts by its monotonic
// reading; a synthetic one (tests: no monotonic reading) by its wall time,
// so injected clocks still compare exactly.
type Mono int64

// epoch is the origin of Mono. It is the only time.Now call in the
// package.
var epoch = time.Now()

// MonoOf is t as a Mono. time.Time.Sub saturates, so it never overflows.
func MonoOf(t time.Time) Mono { return Mono(t.Sub(epoch)) }

// Time is m as a time.Time, for status, logs and APIs that take one.
func (m Mono) Time() time.Time { return epoch.Add(time.Duration(m)) }

// Sub is the duration m−u.
func (m Mono) Sub(u Mono) time.Duration { return time.Duration(m - u) }

// floorDiv is a/b rounded toward negative infinity (b > 0), so synthetic
// times before epoch still map to distinct, ordered buckets.
func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && (a < 0) {
		q--
	}
	return q
}
