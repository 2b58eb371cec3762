package priority

import (
	"math"
	"math/rand/v2"
	"time"
)

// RetryAfter turns the controller's estimate of when capacity returns into
// the whole seconds a client is told to wait: at least floor and at most
// ceiling (never below floor), plus up to jitter (a fraction, e.g. 0.2)
// more, so refused clients do not all come back in the same second. An
// estimate the jitter takes past ceiling is told as ceiling less up to
// jitter, so that clients held at the cap spread too. It never returns
// less than 1 and does not allocate.
func RetryAfter(until, floor, ceiling time.Duration, jitter float64) int {
	ceiling = max(ceiling, floor)
	d := max(until, floor)
	if jitter > 0 {
		j := rand.Float64() * jitter
		if d += time.Duration(j * float64(d)); d > ceiling {
			d = max(floor, ceiling-time.Duration(j*float64(ceiling)))
		}
	}
	d = min(d, ceiling)
	return max(1, int(math.Ceil(d.Seconds())))
}
