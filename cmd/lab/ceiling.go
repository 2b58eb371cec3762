package main

import (
	"cmp"
	"math"
	"slices"
	"time"

	"github.com/ai-guardian/adaptivethrottle/internal/llmsim"
	"github.com/ai-guardian/adaptivethrottle/internal/loadgen"
)

// ceiling is the goodput an ideal gateway reaches on a run's arrivals,
// simulated on llmsim's model: it admits in the order the module does (the
// highest priority first, then the oldest), keeps no slot for anyone, never
// lets the upstream queue, and lets each request wait exactly as long as
// it can and still start within the SLO (the TTFB objective less a
// prefill and one token at a full batch; an end-to-end objective less
// the whole answer at a full batch); a request that would have to
// wait longer is refused. It knows every slot's state at every moment
// and loses no time to timers or scheduling. Within the SLO no order of
// admission can start work that has not arrived, so what is left idle
// when no request is waiting is lost to every gateway that keeps the SLO:
// with answers of many seconds, a lull of long requests empties slots
// that nothing can fill.
//
// Keeping no slot, a high request finds every slot held by answers many
// seconds long and waits for the first to end; keep = 1 or 2 is the same
// gateway keeping slots that medium and low requests with long answers
// may not take (short ones, at most half the mean length asked, may), as
// the module's reserve does: what high's promise costs. One kept slot is
// not enough where a high request's long answer may take it: the next
// high request then waits for the first long answer to end.
//
// It counts as analyze does: the tokens of answers streamed in the window
// (or answers completed in it), ÷ the capacity, with high's attainment.
type ceiling struct {
	Goodput   float64 `json:"goodput_ratio"`
	High      int     `json:"high"`             // high requests planned in the window
	HighMet   int     `json:"high_within_slo"`  // of them, answered within the SLO
	Idle      float64 `json:"idle_slots"`       // slots idle on average in the window
	IdleEmpty float64 `json:"idle_slots_empty"` // of them, with nobody waiting
}

// ceilingOf is the ceiling of sc on the arrivals of its run (the same in
// every set-up: one seed), the i-th keeping i slots: keeping none, where
// answer lengths are mixed also one and two, and up to the scenario's
// IdealKeep; nil for drop, whose
// slots change, or when no records were kept.
func ceilingOf(sc scenario, outs []outcome) []ceiling {
	if sc.DropTo != 0 || len(sc.Pool) > 0 || len(outs) == 0 || outs[0].Res == nil || len(outs[0].Res.Records) == 0 {
		return nil
	}
	keeps := max(1, sc.IdealKeep+1)
	if sc.tokens() {
		keeps = max(keeps, 3)
	}
	cs := make([]ceiling, keeps)
	for keep := range cs {
		cs[keep] = simulateCeiling(llmsim.Config{}, sc, outs[0].Res.Records, keep)
	}
	return cs
}

// simStep is the simulation's clock step; simShortShare: an answer of at
// most this share of the mean length asked is short, as the module's
// weigher judges.
const (
	simStep       = 2 * time.Millisecond
	simShortShare = 0.5
)

// simulateCeiling runs the ideal gateway on recs' arrivals (planned send
// time, priority, max_tokens) in front of llmsim cfg (its delays; the
// slots are sc's),
// keeping keep slots from medium and low requests with long answers. It
// is meaningful only while the slots do not change (not for drop).
func simulateCeiling(cfg llmsim.Config, sc scenario, recs []loadgen.Record, keep int) ceiling {
	type req struct {
		at       float64 // arrival, s
		prio     loadgen.Priority
		tokens   int
		long     bool    // an answer longer than short
		prefill  float64 // s left
		done     float64 // tokens streamed
		first    float64 // first token, s (0: none yet)
		inWindow bool
	}
	if cfg.DefaultMaxTokens == 0 {
		cfg.DefaultMaxTokens = llmsim.DefaultDefaultMaxTokens
	}
	slots := sc.Slots
	sec := func(d time.Duration) float64 { return d.Seconds() }
	prefill := sec(llmsim.DefaultPrefillTime)
	if cfg.PrefillTime > 0 {
		prefill = sec(cfg.PrefillTime)
	}
	// A TTFB objective leaves a prefill and a token at a full batch to
	// wait; an end-to-end one (Total) the whole answer, per request.
	slo := math.Inf(1)
	if sc.SLO.TTFB > 0 {
		slo = sec(sc.SLO.TTFB)
	}
	total := math.Inf(1)
	if sc.SLO.Total > 0 {
		total = sec(sc.SLO.Total)
	}
	full := sec(cfg.TokenDelay(slots, slots))
	waitFor := func(tokens int) float64 {
		return math.Min(slo-prefill-full, total-prefill-float64(tokens)*full)
	}
	from, to := sc.WindowFrom.Seconds(), sc.WindowTo.Seconds()

	arrivals := make([]*req, 0, len(recs))
	for _, r := range recs {
		n := r.MaxTokens
		if n <= 0 {
			n = sc.MaxTokens
		}
		if n <= 0 {
			n = cfg.DefaultMaxTokens
		}
		at := r.AtMS / 1000
		long := !sc.tokens() || float64(n) > simShortShare*sc.Sizes.Mean()
		arrivals = append(arrivals, &req{at: at, prio: r.Priority, tokens: n, long: long, prefill: prefill, inWindow: at >= from && at < to})
	}
	slices.SortStableFunc(arrivals, func(a, b *req) int { return cmp.Compare(a.at, b.at) })

	var c ceiling
	var waiting [3][]*req // per priority, oldest first
	var running []*req
	good, idle, idleEmpty := 0.0, 0.0, 0.0
	step := sec(simStep)
	next := 0
	end := to + 60 // every answer of the window has ended by then
	if len(arrivals) > 0 {
		end = math.Max(end, arrivals[len(arrivals)-1].at+60)
	}
	for t := 0.0; t < end; t += step {
		for ; next < len(arrivals) && arrivals[next].at <= t; next++ {
			r := arrivals[next]
			waiting[r.prio] = append(waiting[r.prio], r)
			if r.inWindow && r.prio == loadgen.High {
				c.High++
			}
		}
		for p := range waiting {
			waiting[p] = slices.DeleteFunc(waiting[p], func(r *req) bool { return t-r.at > waitFor(r.tokens) })
		}
		longs := 0
		for _, r := range running {
			if r.long {
				longs++
			}
		}
		for p := range waiting {
			waiting[p] = slices.DeleteFunc(waiting[p], func(r *req) bool {
				if len(running) >= slots || r.long && r.prio != loadgen.High && longs >= slots-keep {
					return false
				}
				running = append(running, r)
				if r.long {
					longs++
				}
				return true
			})
		}
		n := len(running)
		if t >= from && t < to {
			idle += float64(slots-n) * step
			if len(waiting[0])+len(waiting[1])+len(waiting[2]) == 0 {
				idleEmpty += float64(slots-n) * step
			}
		}
		perToken := sec(cfg.TokenDelay(n, slots))
		running = slices.DeleteFunc(running, func(r *req) bool {
			if r.prefill > 0 {
				r.prefill -= step
				return false
			}
			before := r.done
			r.done = math.Min(float64(r.tokens), r.done+step/perToken)
			if r.first == 0 {
				if r.done < 1 {
					return false
				}
				r.first, before = t+step, 0 // the first byte carries what came before it
			}
			// Tokens are counted as they stream, as analyze spreads them
			// from the first byte to the end.
			if sc.tokens() && r.first-r.at <= slo && t >= from && t < to {
				good += r.done - before
			}
			if r.done < float64(r.tokens) {
				return false
			}
			if r.first-r.at <= slo && t+step-r.at <= total {
				if r.inWindow && r.prio == loadgen.High {
					c.HighMet++
				}
				if !sc.tokens() && t+step >= from && t+step < to {
					good++
				}
			}
			return true
		})
	}
	secs := to - from
	if secs <= 0 {
		return c
	}
	c.Idle, c.IdleEmpty = idle/secs, idleEmpty/secs
	switch {
	case sc.tokens() && sc.TokenCapacity > 0:
		c.Goodput = good / secs / sc.TokenCapacity
	case !sc.tokens() && sc.WindowCapacity > 0:
		c.Goodput = good / secs / sc.WindowCapacity
	}
	return c
}
