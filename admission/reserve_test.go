package admission

import (
	"testing"
	"time"
)

// The reserve's sizes, each case one rule of Reserve's doc.
func TestReserveSizes(t *testing.T) {
	now := time.Unix(1000, 0)
	base := ReserveSignal{Now: now, Limit: 10, Serving: 10, Cap: 2, Slow: true}
	steps := func(r *Reserve, n int, s ReserveSignal) (slots int, guard bool) {
		for range n {
			s.Now = s.Now.Add(250 * time.Millisecond)
			slots, guard = r.Step(s)
		}
		return slots, guard
	}
	fast := base
	fast.Slow = false
	if n, g := steps(NewReserve(0), 1, fast); n != 0 || g {
		t.Errorf("slots turn over fast: %d, guard %v; want 0, off", n, g)
	}
	if n, g := steps(NewReserve(1<<RuleTurnover), 1, fast); n != 2 || g {
		t.Errorf("turnover off: %d, guard %v; want the cap, 2", n, g)
	}
	if n, g := steps(NewReserve(0), 1, base); n != 2 || g {
		t.Errorf("slow, nothing about: %d, guard %v; want the cap, not held", n, g)
	}
	shed := base
	shed.Shedding = true
	if n, _ := steps(NewReserve(0), 1, shed); n != 1 {
		t.Errorf("shedding, no short request: %d; want one slot for the next high", n)
	}
	// Three short requests about: the guard comes on and keeps as many
	// slots as they want plus one, above the cap up to half the limit,
	// and the probes above the measured capacity.
	shorts := base
	shorts.Shorts, shorts.Serving = 3, 8
	r := NewReserve(0)
	if n, g := steps(r, 40, shorts); !g || n != 4+2 {
		t.Errorf("short requests about: %d, guard %v; want 3 + 1 + 2 probes, held", n, g)
	}
	// Their demand decays: the guard lets go under guardOn.
	for range 40 {
		if _, g := steps(r, 1, base); !g {
			break
		}
	}
	if d := r.Demand(); d >= guardOn {
		t.Errorf("guard let go at demand %.2f; want under %v", d, guardOn)
	}
	// A high request holds the reserve for highMemory.
	high := base
	high.Highs = 1
	r = NewReserve(0)
	if _, g := steps(r, 1, high); !g {
		t.Error("a high request came: guard off")
	}
	if _, g := steps(r, int(highMemory/(250*time.Millisecond))+1, high); g {
		t.Error("no high request for highMemory: guard still on")
	}
	if _, g := steps(NewReserve(1<<RuleGuard), 1, high); g {
		t.Error("guard off: held")
	}
}
