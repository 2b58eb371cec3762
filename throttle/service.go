package throttle

import (
	"math"
	"sync/atomic"
	"time"

	"github.com/ai-guardian/adaptivethrottle/internal/shard"
)

// service learns, per class of request, how long the upstream takes to
// serve one once it holds a slot, as the latency level measures it (to
// the first byte, or to the end with measure total), and publishes how
// long a request of each class may wait for a slot and still be answered
// within the objective (latency slo): its wait budget.
//
// A class is the answer length a request asks for (max_tokens), in
// buckets, or "unknown" for a request whose body was not read: one that
// found a free slot, or that could not be weighed. A class not learned
// yet borrows the unknown class's figure.
//
// The request path adds on sharded counters only; the sampler learns and
// publishes (step), so a budget costs one atomic load to read.
type service struct {
	// Per class, counted by the request path: the times (µs), their
	// squares (µs²) and how many.
	sum, sq, count [serviceClasses]*shard.Counter

	// Per class, read by the request path: the budget in ns, noBudget
	// while nothing is learned; for medium and low, and for high.
	budget, high [serviceClasses]atomic.Int64

	// Sampler only: the counters at the last step, and the decaying sums
	// of the times, their squares and their number.
	last             [serviceClasses][3]uint64
	mean, meanSq, nn [serviceClasses]float64
}

// Classes of request for the wait budget: unknown length, then max_tokens
// up to 16, 64, 256, and longer.
const (
	classUnknown   = 0
	serviceClasses = 5
)

// Tuning of the service times.
const (
	// serviceAlpha: the decay per sampler step (memory: 10 steps, 2.5 s,
	// so that a batch filling up at the start of a surge shows within
	// seconds).
	serviceAlpha = 0.1
	// serviceLearn: the decayed number of answers a class needs before
	// its figure is trusted.
	serviceLearn = 4
	// serviceSpread: the expected service time is the mean plus this many
	// standard deviations, so that most answers that waited their whole
	// budget are still on time; serviceFloor: and at least this share
	// over the mean, for what the service time does not see (the way
	// from the gateway to the upstream and back to the client).
	serviceSpread = 2
	serviceFloor  = 0.05
	// noBudget: no budget is known; the wait is max_wait's.
	noBudget = math.MaxInt64
)

func newService() *service {
	s := &service{}
	for c := range serviceClasses {
		s.sum[c], s.sq[c], s.count[c] = shard.NewCounter(), shard.NewCounter(), shard.NewCounter()
		s.budget[c].Store(noBudget)
		s.high[c].Store(noBudget)
	}
	return s
}

// classOf is the class of a request asking for tokens (0: unknown).
func classOf(tokens int64) uint8 {
	switch {
	case tokens <= 0:
		return classUnknown
	case tokens <= 16:
		return 1
	case tokens <= 64:
		return 2
	case tokens <= 256:
		return 3
	}
	return 4
}

// record adds one service time d of class c, on shard sh.
func (s *service) record(sh uint32, c uint8, d time.Duration) {
	us := uint64(max(0, d.Microseconds()))
	s.sum[c].AddN(sh, us)
	s.sq[c].AddN(sh, us*us)
	s.count[c].Add(sh)
}

// step learns what the request path counted since the last step and
// publishes each class's budgets: slo less the expected service time,
// noBudget with no slo or while neither the class nor the unknown class
// is learned. The expected time is, for medium and low, the mean +
// serviceSpread standard deviations, at least serviceFloor over the mean;
// for high (highMean: admission.RuleHighBudget), serviceFloor over the
// mean.
func (s *service) step(slo time.Duration, highMean bool) {
	var expect, expectHigh [serviceClasses]float64 // µs; 0: not learned
	for c := range serviceClasses {
		now := [3]uint64{s.sum[c].Load(), s.sq[c].Load(), s.count[c].Load()}
		d := [3]float64{float64(now[0] - s.last[c][0]), float64(now[1] - s.last[c][1]), float64(now[2] - s.last[c][2])}
		s.last[c] = now
		s.mean[c] = s.mean[c]*(1-serviceAlpha) + d[0]
		s.meanSq[c] = s.meanSq[c]*(1-serviceAlpha) + d[1]
		s.nn[c] = s.nn[c]*(1-serviceAlpha) + d[2]
		if s.nn[c] >= serviceLearn {
			m := s.mean[c] / s.nn[c]
			sd := math.Sqrt(max(0, s.meanSq[c]/s.nn[c]-m*m))
			expect[c] = max(m+serviceSpread*sd, (1+serviceFloor)*m)
			expectHigh[c] = expect[c]
			if highMean {
				expectHigh[c] = (1 + serviceFloor) * m
			}
		}
	}
	budget := func(e [serviceClasses]float64, c int) int64 {
		if e[c] == 0 {
			c = classUnknown
		}
		if slo <= 0 || e[c] == 0 {
			return noBudget
		}
		return int64(slo) - int64(e[c]*float64(time.Microsecond))
	}
	for c := range serviceClasses {
		s.budget[c].Store(budget(expect, c))
		s.high[c].Store(budget(expectHigh, c))
	}
}

// waitBudget is how long a request of class c may wait for a slot and
// still be answered within the slo (≤ 0: it cannot), and whether that is
// known; high's if high.
func (s *service) waitBudget(c uint8, high bool) (time.Duration, bool) {
	b := s.budget[c].Load()
	if high {
		b = s.high[c].Load()
	}
	return time.Duration(b), b != noBudget
}

// shortestBudget is high's shortest wait budget of the classes learned,
// and whether any is.
func (s *service) shortestBudget() (time.Duration, bool) {
	shortest, known := time.Duration(noBudget), false
	for c := range serviceClasses {
		if b, ok := s.waitBudget(uint8(c), true); ok {
			shortest, known = min(shortest, b), true
		}
	}
	return shortest, known
}
