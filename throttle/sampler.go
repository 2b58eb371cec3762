package throttle

import (
	"context"
	"math"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/ai-guardian/adaptivethrottle/admission"
	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/levels"
	"github.com/ai-guardian/adaptivethrottle/pool"
	"github.com/ai-guardian/adaptivethrottle/priority"
)

// stepsPerSecond is how many sampler steps make a second.
const stepsPerSecond = int(time.Second / levels.Step)

// run is the sampler: a step every levels.Step, a whole second every
// stepsPerSecond steps.
func (t *Throttle) run(ctx context.Context) {
	defer close(t.done)
	tk := time.NewTicker(levels.Step)
	defer tk.Stop()
	t.step(time.Now(), true)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
			t.steps++
			t.step(time.Now(), t.steps%stepsPerSecond == 0)
		}
	}
}

// step is one sampler step at now: every level samples what it watches,
// the concurrency limit learns from the step's first bytes, and once a
// second the circuit's timer runs. Then the shedding state is published.
// The sampler is its only caller, so the levels' statistics, the limit and
// the shedding state have one writer.
func (t *Throttle) step(now time.Time, second bool) {
	t.expireOverride(now)
	in := levels.Inputs{Second: second, Learn: !t.shedding(now), Arrivals: t.seen(), InFlight: t.inflight()}
	for _, l := range t.levels {
		l.Sample(now, in, t.transition)
	}
	t.logGPUNote()
	if second {
		if tr, ok := t.circuit.Poll(now); ok {
			t.transition(tr)
		}
		t.measureDrain(now)
		t.fullSecond(now)
	}
	t.service.step(time.Duration(t.slo.Load()))
	t.setHighWait()
	t.admitStep(now)
	t.watchQueues(now)
	t.refresh(now)
}

// setHighWait publishes how long a high request may wait for a slot:
// its max_wait, or under an slo its budget if shorter (the budget of a
// request of unknown length: what most of them are). Whether slots turn
// over fast enough for high to find one within it decides whether the
// reserve is held.
func (t *Throttle) setHighWait() {
	w := time.Duration(t.maxWait[priority.High].Load())
	if b, ok := t.service.waitBudget(classUnknown); ok && t.slo.Load() > 0 {
		w = max(0, min(w, b))
	}
	t.highWait.Store(int64(w))
}

// watchQueues has the gate judge which queues are standing: a queue that
// has neither emptied nor served a waiter within a quarter of its
// priority's max_wait for a whole max_wait (admission.Gate.Watch).
func (t *Throttle) watchQueues(now time.Time) {
	var after [priority.Count]time.Duration
	for p := range after {
		after[p] = time.Duration(t.maxWait[p].Load())
	}
	t.gate.Watch(breaker.Mono(now), after)
}

// guardOn and guardOff: the short requests' average slots at which the
// reserve starts to be held while not shedding, and stops.
const (
	guardOn  = 0.5
	guardOff = 0.25
)

// highMemory: how long after a high request the reserve is held while not
// shedding (when slots turn over slowly): high requests come and go, and
// one that finds every slot held by answers many seconds long waits past
// its max_wait.
const highMemory = time.Minute

// admitStep hands the limit the step's signal and publishes the new limit,
// the reserve within it (0 while the slots turn over fast enough, see
// admission.Turnover), and the medium lane's pacing: the rate at which
// medium's share of the slots turns over (Little's law: slots ÷ the time
// a request holds one, that time being in flight ÷ completions per
// second), never less than medium_floor. Arrivals never set any of it.
func (t *Throttle) admitStep(now time.Time) {
	sum, count := t.firstBytes.sum.Load(), t.firstBytes.count.Load()
	fulls := t.gate.Fulls()
	// Started: every slot taken is finished or in flight. Finished before
	// in flight and both before answered, so that the gap is never
	// overstated: a request between its release and its finished count
	// is missing from started, never from answered.
	started := t.finished.Load()
	inflight := t.gate.InFlight()
	started += uint64(max(0, inflight))
	sig := admission.Signal{Now: now, TTFB: time.Duration(sum - t.lastFirst[0]), Count: count - t.lastFirst[1],
		InFlight: inflight, Waiting: fulls != t.lastFulls || (t.gate.Waiting() > 0 && inflight >= int64(t.gate.Limit())),
		Started: started, Answered: t.firstBytes.answered(),
		Pressure: t.gpu.Hysteresis().Tripped() || t.circuit.State() != breaker.Closed,
		Hold:     t.latency.Hysteresis().Tripped()}
	sig.Full, sig.FullInFlight = t.full.step()
	t.lastFirst, t.lastFulls = [2]uint64{sum, count}, fulls
	n := t.limit.Step(sig)
	// Judged on the slots that serve, not the probes above them.
	serving := t.limit.Serving()
	// With a pool, the limit is what its members can take.
	ps := pool.Signal{Now: now, Pressure: t.gpu.Hysteresis().Tripped(), Hold: sig.Hold, Waiting: t.gate.Waiting() > 0}
	if pn, pserving, ok := t.pool.Step(ps, t.memberChanged); ok {
		n, serving = pn, pserving
	}
	t.turnover.Step(inflight)

	t.mu.Lock()
	pc := t.cfg.Priority
	t.mu.Unlock()
	reserve := pc.Reserve(n)
	drain := math.Float64frombits(t.drain.Load())
	if !t.turnover.Slow(serving, time.Duration(t.highWait.Load())) {
		reserve = 0 // slots turn over fast enough: the hand-off serves high in time (admission.Turnover)
	}
	// The reserve is sized to what uses it: as many slots as the short
	// requests want, and one more for the next high request, so that it
	// is seldom idle and a high request with a long answer does not take
	// the last slot that turns over (the gate counts high requests in
	// flight against the long ones' room as they come). While shedding,
	// at most high_reserve; while not, it is held too when high requests
	// are about (one within highMemory) or short ones are, at most half
	// the limit or high_reserve if more. Held only once short requests
	// waited for slots, it came when answers many seconds long already
	// held every slot, and high waited for the first of them to end. Then
	// the probes above the measured capacity.
	inShort, waitShort := t.gate.Shorts()
	t.weigher.step(inShort + waitShort)
	d := t.weigher.demand
	if h := t.decided(priority.High); h != t.lastHighs {
		t.lastHighs, t.lastHigh = h, now
	}
	highAbout := !t.lastHigh.IsZero() && now.Sub(t.lastHigh) < highMemory
	guard := reserve > 0 && (highAbout || d >= guardOn || (t.gate.Guarding() && d >= guardOff))
	switch want := int(math.Round(d)) + 1; {
	case reserve == 0:
	case t.shedding(now):
		reserve = min(reserve, want)
	case guard:
		reserve = min(want, max(reserve, n/2))
	}
	if guard {
		// Slots above what the upstream was measured to serve are probes:
		// a long answer that probes holds its slot, stuck or not, for as
		// long as it lasts, and only short or high requests probe.
		reserve += n - serving
	}
	t.gate.Set(n, reserve, guard)
	r := pc.MediumFloor
	if drain > 0 {
		r = math.Max(r, float64(n-reserve)*drain/float64(max(inflight, 1)))
	}
	t.pacer.SetLimitAt(now, rate.Limit(r))
	t.pacer.SetBurstAt(now, max(1, int(r/4)))
}

// measureDrain updates, once a second, the rate at which requests
// complete: what Retry-After and the medium pacing are derived from.
func (t *Throttle) measureDrain(now time.Time) {
	fin := t.finished.Load()
	dt := now.Sub(t.lastSec)
	if !t.lastSec.IsZero() && dt > 0 && dt < time.Minute {
		r := float64(fin-t.lastFin) / dt.Seconds()
		if old := math.Float64frombits(t.drain.Load()); old > 0 {
			r = old + 0.5*(r-old)
		}
		t.drain.Store(math.Float64bits(r))
	}
	t.lastFin, t.lastSec = fin, now
	t.turnover.Second()
}

// refresh publishes the levels' state to the atomics the request path
// reads: which are tripped, and when shedding is expected to end.
func (t *Throttle) refresh(now time.Time) {
	var mask uint32
	var until time.Duration
	for i, l := range t.levels {
		if h := l.Hysteresis(); h.Tripped() {
			mask |= 1 << i
			until = max(until, h.RecoverIn(now))
		}
	}
	t.tripped.Store(mask)
	t.shedUntil.Store(now.Add(until).UnixNano())
	t.gate.SetShedding(t.shedding(now))
}

// shedding reports whether any level is tripped or an override sheds or
// drains: the levels do not learn from such a time.
func (t *Throttle) shedding(now time.Time) bool {
	mode := t.overrideAt(now)
	return t.tripped.Load() != 0 || mode == "shed" || mode == "drain"
}

// refusing reports whether requests are refused or graded for anything
// but the concurrency limit: shedding, or a circuit that is not closed
// (it refuses all but its probes), unless an override passes everything.
// Status and the shedding metric say so.
func (t *Throttle) refusing(now time.Time) bool {
	if t.overrideAt(now) == "pass" {
		return false
	}
	return t.shedding(now) || t.circuit.State() != breaker.Closed
}

// overrideLeft is the time until the override in force expires; 0 when
// it does not.
func (t *Throttle) overrideLeft(now time.Time) time.Duration {
	if o := t.override.Load(); o != nil && !o.Until.IsZero() {
		return max(0, o.Until.Sub(now))
	}
	return 0
}

// overrideAt returns the operator's override in force at now, or "".
func (t *Throttle) overrideAt(now time.Time) string {
	if o := t.override.Load(); o != nil { // apart, so that the common case inlines
		return o.at(now)
	}
	return ""
}

// at is the override's state at now, or "" once it has expired.
func (o *override) at(now time.Time) string {
	if !o.Until.IsZero() && !now.Before(o.Until) {
		return ""
	}
	return o.State
}

func (t *Throttle) expireOverride(now time.Time) {
	o := t.override.Load()
	if o != nil && !o.Until.IsZero() && !now.Before(o.Until) && t.override.CompareAndSwap(o, nil) {
		t.logger.Load().Info("override expired", zap.String("name", t.name), zap.String("state", o.State))
	}
}

// seen is the number of requests decided on: each counts exactly one
// verdict.
func (t *Throttle) seen() uint64 {
	var n uint64
	for p := range t.verdicts {
		n += t.decided(priority.Priority(p))
	}
	return n
}

// decided is the number of requests of priority p decided on.
func (t *Throttle) decided(p priority.Priority) uint64 {
	var n uint64
	for v := range t.verdicts[p] {
		n += t.verdicts[p][v].Load()
	}
	return n
}

// inflight is the number of admitted requests not yet answered.
func (t *Throttle) inflight() int64 { return t.gate.InFlight() }
