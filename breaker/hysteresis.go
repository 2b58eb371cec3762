package breaker

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// HysteresisConfig tunes a Hysteresis's hysteresis. Zero fields take the defaults.
type HysteresisConfig struct {
	TripAfter    int           // consecutive bad observations before tripping (default 1)
	RecoverBelow float64       // good means value < threshold*RecoverBelow (default 0.9); between is neutral
	RecoverAfter int           // consecutive good observations before recovering (default 2)
	MinTripped   time.Duration // stay tripped at least this long (default 5s; negative: no minimum)
	Period       time.Duration // how often Observe is called; only for the RecoverIn estimate
}

// Hysteresis defaults.
const (
	DefaultTripAfter    = 1
	DefaultRecoverBelow = 0.9
	DefaultRecoverAfter = 2
	DefaultMinTripped   = 5 * time.Second
)

// Validate reports a config that NewHysteresis would have to correct.
func (c HysteresisConfig) Validate() error {
	var errs []error
	if c.TripAfter < 0 {
		errs = append(errs, fmt.Errorf("trip_after must be >= 0, got %d", c.TripAfter))
	}
	if math.IsNaN(c.RecoverBelow) || c.RecoverBelow < 0 || c.RecoverBelow > 1 {
		errs = append(errs, fmt.Errorf("recover_below must be within (0, 1], got %v", c.RecoverBelow))
	}
	if c.RecoverAfter < 0 {
		errs = append(errs, fmt.Errorf("recover_after must be >= 0, got %d", c.RecoverAfter))
	}
	if c.Period < 0 {
		errs = append(errs, fmt.Errorf("period must be >= 0, got %v", c.Period))
	}
	return errors.Join(errs...)
}

// normalize fills defaults and replaces invalid values, so a Hysteresis never
// misbehaves on bad input; Validate is where bad input gets its error.
func (c HysteresisConfig) normalize() HysteresisConfig {
	if c.TripAfter <= 0 {
		c.TripAfter = DefaultTripAfter
	}
	if !(c.RecoverBelow > 0 && c.RecoverBelow <= 1) {
		c.RecoverBelow = DefaultRecoverBelow
	}
	if c.RecoverAfter <= 0 {
		c.RecoverAfter = DefaultRecoverAfter
	}
	switch {
	case c.MinTripped == 0:
		c.MinTripped = DefaultMinTripped
	case c.MinTripped < 0:
		c.MinTripped = 0
	}
	if c.Period < 0 {
		c.Period = 0
	}
	return c
}

// Observation is one sample of the signal.
type Observation struct {
	Value, Threshold float64
	// Hard trips at once, ignoring TripAfter: an absolute ceiling crossed,
	// a failed sensor under on_error shed. A Hard sample is never good.
	Hard bool
	// Reason is human text, e.g. "p99 2.4s > 1.8 × 1.1s for 3 periods";
	// kept as the last reason when the sample trips the Hysteresis.
	Reason string
	// Recovery words a recovery on this sample in the level's units, given
	// the Hysteresis's RecoverBelow and RecoverAfter, e.g.
	// "p99 64ms < 0.9 × 126ms for 1 window"; the Hysteresis puts its name
	// in front. It is called only when the sample recovers the Hysteresis,
	// and only with a threshold. Nil: plain numbers.
	Recovery func(o Observation, recoverBelow float64, recoverAfter int) string
}

// Hysteresis is one signal's tripped state with hysteresis.
//
// A sample is bad when Hard or Value > Threshold; a Threshold <= 0 or NaN
// means "no threshold yet" and is never bad unless Hard. The Hysteresis trips
// after TripAfter consecutive bad samples (a Hard one trips at once). While
// tripped, a sample is good when !Hard and Value < Threshold*RecoverBelow (or
// there is no threshold); samples between the two lines are neutral. It
// recovers once RecoverAfter consecutive good samples have been seen and it
// has been tripped for at least MinTripped. The neutral band and the two
// streaks are the hysteresis: a signal hovering around the threshold trips
// once and stays tripped instead of flapping.
//
// Observe is serialised by a mutex (one sampler goroutine calls it); Tripped
// and RecoverIn are lock-free for the request path.
type Hysteresis struct {
	name string
	cfg  atomic.Pointer[HysteresisConfig] // replaced whole by SetConfig; read lock-free

	// Written only under mu; read lock-free. Observe stores trippedAt and
	// goodStreak before setting tripped, so a reader that sees tripped sees
	// the episode's start.
	tripped    atomic.Bool
	trippedAt  atomic.Int64 // mono of the trip
	goodStreak atomic.Int64
	hold       atomic.Int64 // this episode's minimum time tripped (ns): MinTripped, doubled on quick re-trips

	mu          sync.Mutex
	badStreak   int
	value       float64
	threshold   float64
	since       time.Time // last transition; zero if none
	lastReason  string
	transitions uint64
	recoveredAt int64 // mono of the last recovery; 0 if none
}

// NewHysteresis returns an untripped Hysteresis. Invalid config fields are replaced by
// their defaults (see HysteresisConfig.Validate for the errors).
func NewHysteresis(name string, cfg HysteresisConfig) *Hysteresis {
	l := &Hysteresis{name: name}
	l.SetConfig(cfg)
	return l
}

// Name returns the level's name.
func (l *Hysteresis) Name() string { return l.name }

// Config returns the effective (defaulted) config.
func (l *Hysteresis) Config() HysteresisConfig { return *l.cfg.Load() }

// SetConfig replaces the hysteresis settings (a config reload) and keeps
// the state: a tripped level stays tripped under the new settings.
func (l *Hysteresis) SetConfig(cfg HysteresisConfig) {
	c := cfg.normalize()
	l.cfg.Store(&c)
}

// Tripped reports whether the level is tripped: one atomic load.
func (l *Hysteresis) Tripped() bool { return l.tripped.Load() }

// Observe records one sample taken at now and returns the transition it
// caused, if any.
func (l *Hysteresis) Observe(now time.Time, o Observation) (t Transition, changed bool) {
	if math.IsNaN(o.Value) || math.IsInf(o.Value, 0) {
		o.Value = 0 // a broken statistic is no evidence either way
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.value, l.threshold = o.Value, o.Threshold
	hasThreshold := o.Threshold > 0 // false for NaN too

	if !l.tripped.Load() {
		if !(o.Hard || (hasThreshold && o.Value > o.Threshold)) {
			l.badStreak = 0 // good or neutral
			return Transition{}, false
		}
		l.badStreak++
		if !o.Hard && l.badStreak < l.cfg.Load().TripAfter {
			return Transition{}, false
		}
		reason := o.Reason
		if reason == "" {
			reason = l.defaultReason(o, true)
		}
		l.badStreak = 0
		l.goodStreak.Store(0)
		l.hold.Store(int64(l.nextHold(int64(MonoOf(now)))))
		l.trippedAt.Store(int64(MonoOf(now)))
		l.tripped.Store(true)
		l.lastReason = reason
		return l.transition(now, o, true, reason), true
	}

	good := !o.Hard && (!hasThreshold || o.Value < o.Threshold*l.cfg.Load().RecoverBelow)
	if !good {
		l.goodStreak.Store(0) // bad or neutral
		return Transition{}, false
	}
	streak := l.goodStreak.Add(1)
	if streak < int64(l.cfg.Load().RecoverAfter) ||
		int64(MonoOf(now))-l.trippedAt.Load() < l.hold.Load() {
		return Transition{}, false
	}
	l.recoveredAt = int64(MonoOf(now))
	l.tripped.Store(false)
	l.goodStreak.Store(0)
	l.badStreak = 0
	// Observation.Reason explains a trip; a recovery says what held.
	reason := ""
	if cfg := l.cfg.Load(); o.Recovery != nil && hasThreshold {
		reason = l.name + ": " + o.Recovery(o, cfg.RecoverBelow, cfg.RecoverAfter)
	} else {
		reason = l.defaultReason(o, false)
	}
	return l.transition(now, o, false, reason), true
}

// maxHoldFactor caps how far quick re-trips stretch the minimum time
// tripped: 16 × MinTripped.
const maxHoldFactor = 16

// nextHold is the minimum time tripped for an episode starting at m. A trip
// soon after the last recovery (within twice the last hold) means the
// recovery was premature — the pressure is still there, only hidden by the
// shedding — so the hold doubles, up to maxHoldFactor × MinTripped; a trip
// after a calm spell starts again from MinTripped. l.mu is held.
func (l *Hysteresis) nextHold(m int64) time.Duration {
	base := l.cfg.Load().MinTripped
	last := time.Duration(l.hold.Load())
	if l.recoveredAt == 0 || last == 0 || time.Duration(m-l.recoveredAt) > 2*last {
		return base
	}
	return min(2*last, maxHoldFactor*base)
}

// transition records a state change; l.mu is held.
func (l *Hysteresis) transition(now time.Time, o Observation, tripped bool, reason string) Transition {
	l.since = now
	l.transitions++
	return Transition{
		Name:      l.name,
		Tripped:   tripped,
		Reason:    reason,
		Value:     finite(o.Value),
		Threshold: finite(o.Threshold),
		At:        now,
	}
}

func (l *Hysteresis) defaultReason(o Observation, trip bool) string {
	switch {
	case trip && o.Hard:
		return fmt.Sprintf("%s: hard limit (value %g, threshold %g)", l.name, o.Value, o.Threshold)
	case trip:
		return fmt.Sprintf("%s: %g > %g for %d observations", l.name, o.Value, o.Threshold, l.cfg.Load().TripAfter)
	default:
		return fmt.Sprintf("%s: %g < %g × %g for %d observations", l.name, o.Value, l.cfg.Load().RecoverBelow, o.Threshold, l.cfg.Load().RecoverAfter)
	}
}

// RecoverIn estimates how long until the level recovers: 0 when not
// tripped, else max(MinTripped left, (RecoverAfter-goodStreak)*Period). It
// assumes every coming sample is good, so it is a lower bound; Retry-After is
// derived from it. Lock-free.
func (l *Hysteresis) RecoverIn(now time.Time) time.Duration {
	if !l.tripped.Load() {
		return 0
	}
	left := l.hold.Load() - (int64(MonoOf(now)) - l.trippedAt.Load())
	if need := int64(l.cfg.Load().RecoverAfter) - l.goodStreak.Load(); need > 0 {
		left = max(left, need*int64(l.cfg.Load().Period))
	}
	return time.Duration(max(left, 0))
}

// HysteresisSnapshot is a JSON-ready snapshot of a Hysteresis. Non-finite values read 0.
type HysteresisSnapshot struct {
	Name        string        `json:"name"`
	Value       float64       `json:"value"`     // last sample
	Threshold   float64       `json:"threshold"` // last sample's threshold; 0: none
	Tripped     bool          `json:"tripped"`
	Since       time.Time     `json:"since,omitzero"` // last transition; zero if none
	LastReason  string        `json:"last_reason,omitempty"`
	RecoverIn   time.Duration `json:"recover_in"` // nanoseconds in JSON
	Transitions uint64        `json:"transitions"`
	// MinTripped is the current episode's minimum time tripped: the
	// configured one, doubled by each premature recovery. Nanoseconds in JSON.
	MinTripped time.Duration `json:"min_tripped"`
}

// Status returns a snapshot of the level.
func (l *Hysteresis) Status(now time.Time) HysteresisSnapshot {
	l.mu.Lock()
	defer l.mu.Unlock()
	return HysteresisSnapshot{
		Name:        l.name,
		Value:       finite(l.value),
		Threshold:   finite(l.threshold),
		Tripped:     l.tripped.Load(),
		Since:       l.since,
		LastReason:  l.lastReason,
		RecoverIn:   l.RecoverIn(now),
		Transitions: l.transitions,
		MinTripped:  time.Duration(l.hold.Load()),
	}
}

// Reset forgets the live state: not tripped, streaks zero. It reports no
// transition; the history in Status (last value, since, last reason,
// transition count) is kept.
func (l *Hysteresis) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tripped.Store(false)
	l.goodStreak.Store(0)
	l.trippedAt.Store(0)
	l.badStreak = 0
}
