package throttle

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/levels"
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
// and once a second the circuit's timer and the medium lane's controller
// run. Then the shedding state is published. The sampler is its only
// caller, so the levels' statistics and the shedding state have one writer.
func (t *Throttle) step(now time.Time, second bool) {
	t.expireOverride(now)
	in := levels.Inputs{Second: second, Learn: !t.shedding(now), Arrivals: t.seen(), InFlight: t.inflight()}
	for _, l := range t.levels {
		l.Sample(now, in, t.transition)
	}
	if second {
		if tr, ok := t.circuit.Poll(now); ok {
			t.transition(tr)
		}
		t.tune(now)
	}
	t.refresh(now)
}

// tune runs the medium lane's controller once a second. The lane follows
// the upstream's health, never the arrival rate: a one-second median time
// to first byte above its reference, GPU pressure or a circuit that is not
// closed mean the upstream stopped keeping up. A queue at the upstream
// moves the median; over a single second the high percentile is one
// unlucky answer.
func (t *Throttle) tune(now time.Time) {
	dt := now.Sub(t.lastSecond)
	t.lastSecond = now
	fin := t.finished.Load()
	high := t.verdicts[priority.High][priority.Pass].Load() + t.verdicts[priority.High][priority.PassReserved].Load()
	served, reserved := 0.0, 0.0
	if dt > 0 && dt < time.Minute {
		served = float64(fin-t.lastFinish) / dt.Seconds()
		reserved = float64(high-t.lastHigh) / dt.Seconds()
	}
	t.lastFinish, t.lastHigh = fin, high

	s := t.latency.LastSecond()
	slow := s.Count > 0 && s.Reference > 0 && float64(s.Median) > float64(s.Reference)*s.Factor
	congested := slow || t.gpu.Hysteresis().Tripped() || t.circuit.State() != breaker.Closed
	draining := s.Count > 0 && t.lastMedian > 0 && float64(s.Median) < 0.9*float64(t.lastMedian)
	if s.Count > 0 {
		t.lastMedian = s.Median
	}
	t.lanes.Bucket.Tune(now, priority.Health{Shedding: t.shedding(now), Served: served, Reserved: reserved,
		InFlight: float64(t.inflight()), Congested: congested, Draining: draining})
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
}

// shedding reports whether any level is tripped or an override sheds.
func (t *Throttle) shedding(now time.Time) bool {
	return t.tripped.Load() != 0 || t.overrideAt(now) == "shed"
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
		t.logger.Load().Info("override expired", zap.String("instance", t.name), zap.String("state", o.State))
	}
}

// seen is the number of requests decided on: each counts exactly one
// verdict.
func (t *Throttle) seen() uint64 {
	var n uint64
	for p := range t.verdicts {
		for v := range t.verdicts[p] {
			n += t.verdicts[p][v].Load()
		}
	}
	return n
}

// admitted is the number of requests sent on to the upstream.
func (t *Throttle) admitted() uint64 {
	var n uint64
	for p := range t.verdicts {
		for v := priority.Pass; v <= priority.PassBucket; v++ {
			n += t.verdicts[p][v].Load()
		}
	}
	return n
}

// inflight is the number of admitted requests not yet answered.
func (t *Throttle) inflight() int64 {
	f := t.finished.Load() // first, so a racing finish cannot make it negative
	return max(0, int64(t.admitted())-int64(f))
}
