package latency

import (
	"regexp"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/config"
	"github.com/ai-guardian/adaptivethrottle/levels"
)

// A recovery is worded like a trip: the percentile in milliseconds against
// its threshold, and how many windows held.
func TestLevelRecoveryReason(t *testing.T) {
	l := New(Config{Window: config.Duration(2 * time.Second), Factor: 1.5, Consecutive: 1})
	now := time.Unix(1000, 0)
	var trs []breaker.Transition
	// window runs one window of 40 responses of d (two seconds of 20).
	window := func(d time.Duration) {
		for range 2 {
			for range 20 {
				l.Record(d, 0)
			}
			now = now.Add(time.Second)
			l.Sample(now, levels.Inputs{Second: true, Learn: !l.h.Tripped()}, func(tr breaker.Transition) { trs = append(trs, tr) })
		}
	}
	now = now.Add(time.Second)
	// The first window starts; one of 80 ms makes the history (threshold
	// 120 ms); one of 150 ms is over, not twice over.
	l.Sample(now, levels.Inputs{Second: true, Learn: true}, func(breaker.Transition) {})
	window(80 * time.Millisecond)
	window(150 * time.Millisecond)
	if len(trs) != 1 || !trs[0].Tripped {
		t.Fatalf("transitions %+v, want a trip", trs)
	}
	window(64 * time.Millisecond)
	if len(trs) != 2 || trs[1].Tripped {
		t.Fatalf("transitions %+v, want a trip and a recovery", trs)
	}
	// The histogram's buckets put 80 ms at 80.6 ms or so.
	if want := `^latency: p99 6[45]ms < 0\.9 × 12[01]ms for 1 window$`; !regexp.MustCompile(want).MatchString(trs[1].Reason) {
		t.Fatalf("recovery %q, want %s (trip %q)", trs[1].Reason, want, trs[0].Reason)
	}
}
