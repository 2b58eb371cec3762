package llmsim

import (
	"testing"
	"time"
)

// A late wake is made up by the next sleep, so N steps of d that each wake
// late still end N×d after the start (plus the last wake's slop), not N×(d +
// slop) after it.
func TestPacerAbsorbsLateWakes(t *testing.T) {
	start := time.Unix(1000, 0)
	const d, slop, n = 30 * time.Millisecond, 700 * time.Microsecond, 512
	var p pacer
	now := start
	for i := range n {
		s := p.next(now, d)
		if i > 0 && s != d-slop {
			t.Fatalf("step %d: sleep %v, want %v (d less the last wake's slop)", i, s, d-slop)
		}
		now = now.Add(s + slop) // the timer fires late
	}
	if got, want := now.Sub(start), n*d+slop; got != want {
		t.Fatalf("%d steps took %v, want %v (one slop, not %d)", n, got, want, n)
	}
}

// The delay may change from step to step (a batch filling up): each step
// is due its own delay after the last was due.
func TestPacerFollowsChangingDelays(t *testing.T) {
	start := time.Unix(1000, 0)
	var p pacer
	if s := p.next(start, 40*time.Millisecond); s != 40*time.Millisecond {
		t.Fatalf("first step: sleep %v, want the whole 40ms", s)
	}
	now := start.Add(41 * time.Millisecond)
	if s := p.next(now, 15*time.Millisecond); s != 14*time.Millisecond {
		t.Fatalf("second step: sleep %v, want 14ms (due 55ms after the start)", s)
	}
	now = start.Add(56 * time.Millisecond)
	if s := p.next(now, 30*time.Millisecond); s != 29*time.Millisecond {
		t.Fatalf("third step: sleep %v, want 29ms (due 85ms after the start)", s)
	}
}

// A wake later than a whole step (the process stalled) is not made up by a
// burst: the schedule restarts from the wake.
func TestPacerDoesNotBurstAfterAStall(t *testing.T) {
	start := time.Unix(1000, 0)
	const d = 30 * time.Millisecond
	var p pacer
	p.next(start, d)
	now := start.Add(d + 200*time.Millisecond) // woke 200ms late
	if s := p.next(now, d); s != d {
		t.Fatalf("after a stall: sleep %v, want a whole %v", s, d)
	}
	// A wake late by less than a step is made up, even to a sleep of 0.
	now = now.Add(d + d)
	if s := p.next(now, d); s != 0 {
		t.Fatalf("late by one step: sleep %v, want 0 (due now)", s)
	}
}
