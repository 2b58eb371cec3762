package qps

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/levels"
)

// A recovery is worded like a trip, in req/s, with how long it held.
func TestLevelRecoveryReason(t *testing.T) {
	l := New(Config{MaxRate: 15})
	now, arrivals := time.Unix(1000, 0), uint64(0)
	var trs []breaker.Transition
	second := func(rate uint64) {
		now, arrivals = now.Add(time.Second), arrivals+rate
		l.Sample(now, levels.Inputs{Second: true, Learn: !l.h.Tripped(), Arrivals: arrivals}, func(tr breaker.Transition) { trs = append(trs, tr) })
	}
	second(0)
	second(30)
	second(30)
	if len(trs) != 1 || !trs[0].Tripped || trs[0].Reason != "30.0 req/s > limit 15.0 + 2√limit (the spread of random arrivals)" {
		t.Fatalf("transitions %+v, want a trip over the limit", trs)
	}
	for range 5 {
		second(9)
	}
	if len(trs) != 2 || trs[1].Tripped {
		t.Fatalf("transitions %+v, want a trip and a recovery", trs)
	}
	if want := "qps: 9.0 req/s < 0.9 × 22.7 req/s for 3 s"; trs[1].Reason != want {
		t.Fatalf("recovery %q, want %q", trs[1].Reason, want)
	}
}

// poisson draws a Poisson count of mean m (Knuth; m is small here).
func poisson(r *rand.Rand, m float64) uint64 {
	limit, p, k := math.Exp(-m), 1.0, uint64(0)
	for {
		p *= r.Float64()
		if p <= limit {
			return k
		}
		k++
	}
}

// A fixed limit at the server's capacity does not trip on the bunching of
// random arrivals below it: Poisson arrivals at half and at 90% of the
// limit, an hour of quarter-second steps each, trip nothing; at three
// times the limit the level trips within two seconds.
func TestFixedLimitToleratesPoissonArrivals(t *testing.T) {
	const limit = 7.1 // the 4-slot server
	for _, c := range []struct {
		load     float64
		seconds  int
		maxTrips int
	}{{0.5, 3600, 0}, {0.9, 3600, 0}} {
		l := New(Config{MaxRate: limit})
		r := rand.New(rand.NewPCG(1, uint64(c.load*10)))
		now, arrivals, trips := time.Unix(1000, 0), uint64(0), 0
		last := ""
		report := func(tr breaker.Transition) {
			if tr.Tripped {
				trips++
				last = tr.Reason
			}
		}
		for step := range c.seconds * 4 {
			now, arrivals = now.Add(levels.Step), arrivals+poisson(r, c.load*limit/4)
			l.Sample(now, levels.Inputs{Second: step%4 == 3, Learn: !l.h.Tripped(), Arrivals: arrivals}, report)
		}
		if trips > c.maxTrips {
			t.Errorf("Poisson arrivals at %.0f%% of a limit of %v: %d trips in %d s, last %q", 100*c.load, limit, trips, c.seconds, last)
		}
	}

	l := New(Config{MaxRate: limit})
	r := rand.New(rand.NewPCG(2, 2))
	now, arrivals, tripped := time.Unix(1000, 0), uint64(0), time.Duration(0)
	l.Sample(now, levels.Inputs{Second: true, Learn: true}, func(breaker.Transition) {}) // the level was running before
	for step := range 40 {
		now, arrivals = now.Add(levels.Step), arrivals+poisson(r, 3*limit/4)
		l.Sample(now, levels.Inputs{Second: step%4 == 3, Learn: !l.h.Tripped(), Arrivals: arrivals}, func(breaker.Transition) {})
		if l.h.Tripped() {
			tripped = time.Duration(step+1) * levels.Step
			break
		}
	}
	if tripped == 0 || tripped > 2*time.Second {
		t.Fatalf("three times the limit tripped after %v, want within 2 s", tripped)
	}
}
