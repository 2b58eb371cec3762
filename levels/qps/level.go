// Package qps is the QPS level: requests arriving per second against a
// baseline it learns (mean + sigma·σ over a window), and an optional fixed
// ceiling. See the README, "What each level does".
package qps

import (
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/levels"
)

// hysteresis: two busy seconds in a row trip the level (one busy second is
// noise), three calm ones recover it, and it stays tripped at least 5 s.
var hysteresis = breaker.HysteresisConfig{TripAfter: 2, RecoverAfter: 3, MinTripped: 5 * time.Second, Period: time.Second}

// hardFactor: a rate more than this many times the threshold is no noise
// and trips at once, on a whole second or on a burst check.
const hardFactor = 2

// Level is the QPS level. Sample belongs to the engine's sampler; SetConfig
// may run at the same time (a reload).
type Level struct {
	cfg   atomic.Pointer[Config]
	rates *rates
	h     *breaker.Hysteresis

	// Sampler only: the burst check's last look.
	lastBurst    time.Time
	lastArrivals uint64
}

// New returns the level with nothing learned; cfg is defaulted.
func New(cfg Config) *Level {
	cfg.Defaults()
	l := &Level{rates: newRates(cfg), h: breaker.NewHysteresis("qps", hysteresis)}
	l.cfg.Store(&cfg)
	return l
}

// Name implements levels.Level.
func (l *Level) Name() string { return "qps" }

// Hysteresis implements levels.Level.
func (l *Level) Hysteresis() *breaker.Hysteresis { return l.h }

// SetConfig applies a reloaded config and keeps what was learned, unless
// the window's length changed: then it reports that the baseline was
// forgotten.
func (l *Level) SetConfig(cfg Config) (forgot bool) {
	cfg.Defaults()
	l.cfg.Store(&cfg)
	return l.rates.setConfig(cfg)
}

// Sample implements levels.Level. On a whole second it closes the second:
// two busy seconds in a row trip the level, and one at more than twice the
// threshold trips it at once. On the steps between, it runs the burst
// check: arrivals since the last step at more than twice the threshold
// trip it at once, so a surge is caught within a quarter of a second,
// before the upstream's queue grows. The burst check learns nothing.
func (l *Level) Sample(now time.Time, in levels.Inputs, report func(breaker.Transition)) {
	if !in.Second {
		l.burst(now, in, report)
		return
	}
	l.lastArrivals, l.lastBurst = in.Arrivals, now
	q := l.rates.sample(now, in.Arrivals, in.Learn)
	judge := q.Threshold
	if q.Fixed {
		// A learned threshold has the arrivals' spread in it (sigma);
		// a fixed limit does not, and random arrivals at 90% of it exceed
		// it in a third of all seconds. A second is judged against the
		// limit plus twice the Poisson spread of a second at the limit.
		judge += 2 * math.Sqrt(q.Threshold)
	}
	o := breaker.Observation{Value: q.Rate, Threshold: judge, Hard: judge > 0 && q.Rate > hardFactor*judge,
		Reason:   fmt.Sprintf("%.1f req/s > %.1f (baseline %.1f × %.2g)", q.Rate, q.Threshold, q.Baseline, l.cfg.Load().TripFactor),
		Recovery: recovery}
	if q.Fixed {
		o.Reason = fmt.Sprintf("%.1f req/s > limit %.1f + 2√limit (the spread of random arrivals)", q.Rate, q.Threshold)
	}
	if tr, ok := l.h.Observe(now, o); ok {
		report(tr)
	}
}

// recovery words a recovery (breaker.Observation.Recovery): the level is
// judged on whole seconds, so recoverAfter samples are as many seconds.
func recovery(o breaker.Observation, recoverBelow float64, recoverAfter int) string {
	return fmt.Sprintf("%.1f req/s < %g × %.1f req/s for %d s", o.Value, recoverBelow, o.Threshold, recoverAfter)
}

func (l *Level) burst(now time.Time, in levels.Inputs, report func(breaker.Transition)) {
	seen, dt := in.Arrivals-l.lastArrivals, now.Sub(l.lastBurst)
	l.lastArrivals, l.lastBurst = in.Arrivals, now
	th := l.rates.lastSample().Threshold
	if th <= 0 || dt <= 0 || dt > time.Second || l.h.Tripped() {
		return
	}
	// Arrivals bunch: over a quarter second, random (Poisson) arrivals at
	// half the threshold bring four at once now and then. The burst must
	// beat twice the threshold by three times the spread of a count at that
	// rate over the window, a tolerance that grows as the window shrinks.
	expected := hardFactor * th * dt.Seconds()
	if float64(seen) > expected+3*math.Sqrt(expected) {
		rate := float64(seen) / dt.Seconds()
		o := breaker.Observation{Value: rate, Threshold: th, Hard: true,
			Reason: fmt.Sprintf("burst: %d arrivals in %v (%.1f req/s) > %d × %.1f req/s and its spread", seen, dt.Round(time.Millisecond), rate, hardFactor, th)}
		if tr, ok := l.h.Observe(now, o); ok {
			report(tr)
		}
	}
}

// Forget implements levels.Level: the baseline and a trip it caused.
func (l *Level) Forget() {
	l.rates.reset()
	l.h.Reset()
}

// Status is the QPS level in /throttle/status: value and threshold in req/s.
type Status struct {
	levels.Common
	Baseline float64 `json:"baseline"`           // 0 while warming up
	LearnedS int     `json:"learned_s"`          // seconds of history in the baseline
	Learning bool    `json:"learning"`           // false while shedding: the baseline is frozen
	MaxRate  float64 `json:"max_rate,omitempty"` // the fixed ceiling, if any
}

// Status returns the level's status at now.
func (l *Level) Status(now time.Time) Status {
	q := l.rates.lastSample()
	return Status{Common: levels.CommonOf(l.h, now), Baseline: levels.Round(q.Baseline),
		LearnedS: l.rates.learnedSeconds(), Learning: q.Learning, MaxRate: l.cfg.Load().MaxRate}
}

var _ levels.Level = (*Level)(nil)
