package priority

import (
	"math"
	"math/rand/v2"
	"time"
)

// RetryAfter turns the controller's estimate of when capacity returns into
// the whole seconds a client is told to wait: at least floor, plus up to
// jitter (a fraction, e.g. 0.2) more, so refused clients do not all come
// back in the same second. It never returns less than 1 and does not
// allocate.
func RetryAfter(until, floor time.Duration, jitter float64) int {
	d := max(until, floor)
	if jitter > 0 {
		d += time.Duration(rand.Float64() * jitter * float64(d))
	}
	return max(1, int(math.Ceil(d.Seconds())))
}
