package qps

import (
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/levels"
)

// A recovery is worded like a trip, in req/s, with how long it held.
func TestLevelRecoveryReason(t *testing.T) {
	l := New(Config{Limit: 15})
	now, arrivals := time.Unix(1000, 0), uint64(0)
	var trs []breaker.Transition
	second := func(rate uint64) {
		now, arrivals = now.Add(time.Second), arrivals+rate
		l.Sample(now, levels.Inputs{Second: true, Learn: !l.h.Tripped(), Arrivals: arrivals}, func(tr breaker.Transition) { trs = append(trs, tr) })
	}
	second(0)
	second(20)
	second(20)
	if len(trs) != 1 || !trs[0].Tripped || trs[0].Reason != "20.0 req/s > limit 15.0" {
		t.Fatalf("transitions %+v, want a trip over the limit", trs)
	}
	for range 5 {
		second(9)
	}
	if len(trs) != 2 || trs[1].Tripped {
		t.Fatalf("transitions %+v, want a trip and a recovery", trs)
	}
	if want := "qps: 9.0 req/s < 0.9 × 15.0 req/s for 3 s"; trs[1].Reason != want {
		t.Fatalf("recovery %q, want %q", trs[1].Reason, want)
	}
}
