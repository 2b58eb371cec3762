package throttle

import (
	"context"
	"math"
	"time"

	"go.uber.org/zap"

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
		if tr, ok := t.circuit.Poll(breaker.MonoOf(now)); ok {
			t.transition(tr)
		}
		t.measureDrain(now)
		t.fullSecond(now)
	}
	t.service.step(time.Duration(t.slo.Load()), t.off.On(admission.RuleHighBudget))
	t.setHighWait()
	t.admitStep(now)
	t.watchQueues(now)
	t.refresh(now)
}

// setHighWait publishes how long a high request may wait for a slot:
// its max_wait, or under an slo its shortest budget of any class learned
// if shorter (a high request that waits is weighed, and waits its own
// class's budget: the class of the shortest budget is the one a freed
// slot must reach in time). Whether slots turn over fast enough for high
// to find one within it decides whether the reserve is held.
func (t *Throttle) setHighWait() {
	w := time.Duration(t.maxWait[priority.High].Load())
	if t.slo.Load() > 0 && t.off.On(admission.RuleWaitBudget) {
		if b, ok := t.service.shortestBudget(); ok {
			w = max(0, min(w, b))
		}
	}
	t.highWait.Store(int64(w))
}

// watchQueues has the gate judge which queues are standing: a queue that
// has neither emptied nor served a waiter within a quarter of its
// priority's max_wait for a whole max_wait (admission.Gate.Watch).
func (t *Throttle) watchQueues(now time.Time) {
	var after [priority.Count]time.Duration
	for p := range after {
		if t.off.On(admission.RuleStandingQueue) {
			after[p] = time.Duration(t.maxWait[p].Load())
		}
	}
	t.gate.Watch(int64(breaker.MonoOf(now)), after)
}

// admitStep hands the limit the step's signal, has the reserve sized
// (admission.Reserve), and publishes both to the gate. Arrivals never set
// either.
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
		Pressure: t.gpu.Hysteresis().Tripped() || t.circuit.State() != breaker.Closed}
	sig.Full, sig.FullInFlight = t.full.step()
	t.lastFirst, t.lastFulls = [2]uint64{sum, count}, fulls
	n := t.limit.Step(sig)
	// Judged on the slots that serve, not the probes above them.
	serving := t.limit.Serving()
	// With a pool, the limit is what its members can take.
	ps := pool.Signal{Now: now, Pressure: t.gpu.Hysteresis().Tripped(), Waiting: t.gate.Waiting() > 0}
	if pn, pserving, ok := t.pool.Step(ps, t.memberChanged); ok {
		n, serving = pn, pserving
	}
	t.turnover.Step(inflight)

	t.mu.Lock()
	pc := t.cfg.Priority
	t.mu.Unlock()
	inShort, waitShort := t.gate.Shorts()
	t.weigher.step()
	reserve, guard := t.reserve.Step(admission.ReserveSignal{Now: now, Limit: n, Serving: serving, Cap: pc.Reserve(n),
		Slow: t.turnover.Slow(serving, time.Duration(t.highWait.Load())), Shedding: t.shedding(now),
		Shorts: inShort + waitShort, Highs: t.decided(priority.High)})
	t.gate.Set(n, reserve, guard)
}

// measureDrain updates, once a second, the rate at which requests
// complete: what Retry-After and the bound on the waiters ahead are
// derived from.
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
