package llmsim

import "time"

// pacer spaces one request's prefill and tokens on a schedule instead of
// one sleep after another. A timer fires late (about half a millisecond on
// an idle machine, more under a lab's load); sleeping a token's delay after
// each late wake would lengthen every answer by its tokens' slop, 2–5% of a
// 512-token answer, so the upstream would serve less than its stated
// capacity (Config.CapacityFor). On the schedule each step is due its delay
// after the last one was due, not after the late wake. A wake later than a
// whole step is not made up: the schedule restarts from it, so a stalled
// process does not burst tokens out to catch up.
//
// The zero pacer starts its schedule at its first call.
type pacer struct{ due time.Time }

// next returns how long to sleep at now before the next step, d after the
// last one was due (≤ 0: it is due already).
func (p *pacer) next(now time.Time, d time.Duration) time.Duration {
	if p.due.IsZero() || now.Sub(p.due) > d {
		p.due = now
	}
	p.due = p.due.Add(d)
	return p.due.Sub(now)
}
