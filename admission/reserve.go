package admission

import (
	"math"
	"time"
)

// Reserve sizes high's reserve each sampler step: the slots of the limit
// that medium and low requests not known to be short may not take (Gate
// enforces it; see the package doc, rules 9 to 11). With
//
//	cap    = high_reserve's slots of the limit (priority.Config.Reserve)
//	want   = round(short demand) + 1   (the short requests' slots, and one for the next high request)
//	probes = limit − serving           (slots above the measured capacity)
//
// the reserve is
//
//	0                                 while slots turn over fast enough for high's wait (Turnover.Slow is false);
//	min(cap, want)                    while shedding;
//	min(want, max(cap, limit/2))      while guarding (below);
//	cap                               otherwise, in force only once shedding begins,
//
// plus the probes while guarding: a long answer that probes holds its slot
// for as long as it lasts, and only short or high requests should.
//
// The guard holds the reserve while nothing is tripped: when a high
// request came within highMemory, or short requests are about (their
// demand, averaged over some steps, reaches guardOn). Held only once short requests waited for slots,
// it came when answers many seconds long already held every slot, and
// high waited for the first of them to end.
//
// Step is the sampler's; Reserve is not safe for concurrent use.
type Reserve struct {
	off      Rules
	demand   float64   // short requests holding a slot or waiting for one, averaged
	highs    uint64    // high requests decided on, at lastHigh
	lastHigh time.Time // when a high request was last seen
}

// Tuning of the reserve.
const (
	// guardOn: the short requests' average demand (slots) at which the
	// guard comes on.
	guardOn = 0.5
	// highMemory: how long after a high request the guard holds the
	// reserve (when slots turn over slowly): high requests come and go,
	// and one that finds every slot held by answers many seconds long
	// waits past its max_wait.
	highMemory = time.Minute
	// demandAlpha: the weight of a step in the short requests' demand
	// (memory: 10 steps, 2.5 s).
	demandAlpha = 0.1
)

// ReserveSignal is what the sampler saw at one step, for Reserve.Step.
type ReserveSignal struct {
	Now time.Time
	// Limit is the limit now; Serving, the slots of it that serve
	// (Limit.Serving); Cap, high_reserve's slots of Limit.
	Limit, Serving, Cap int
	// Slow: a wait of high's on the serving slots may pass with no slot
	// freed more often than once in 200 (Turnover.Slow).
	Slow bool
	// Shedding: a level is tripped, or an override sheds.
	Shedding bool
	// Shorts: the requests known to be short that hold a slot or wait
	// for one now.
	Shorts int64
	// Highs: the high requests decided on since start (a running total).
	Highs uint64
}

// NewReserve returns a reserve that has seen nothing, with the rules in
// off turned off.
func NewReserve(off Rules) *Reserve { return &Reserve{off: off} }

// Step sizes the reserve for one step: the slots, and whether the guard
// holds them while nothing is tripped (Gate.Set takes both).
func (r *Reserve) Step(s ReserveSignal) (slots int, guard bool) {
	r.demand += demandAlpha * (float64(s.Shorts) - r.demand)
	if s.Highs != r.highs {
		r.highs, r.lastHigh = s.Highs, s.Now
	}
	slots = s.Cap
	if !s.Slow && r.off.On(RuleTurnover) {
		slots = 0
	}
	highAbout := !r.lastHigh.IsZero() && s.Now.Sub(r.lastHigh) < highMemory
	guard = slots > 0 && r.off.On(RuleGuard) && (highAbout || r.demand >= guardOn)
	switch want := int(math.Round(r.demand)) + 1; {
	case slots == 0:
	case s.Shedding:
		slots = min(slots, want)
	case guard:
		slots = min(want, max(slots, s.Limit/2))
	}
	if guard {
		slots += s.Limit - s.Serving
	}
	return slots, guard
}

// Demand is the short requests' average demand, in slots.
func (r *Reserve) Demand() float64 { return r.demand }
