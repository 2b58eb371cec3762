// Package latency is the latency level: a percentile (P99) of time to first
// byte per window, in sharded HDR histograms, against a history of healthy
// windows, with a fast path on the one-second median and an absolute
// ceiling. See the README, "What each level does".
package latency

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/levels"
)

// fastSeconds is how many seconds in a row the median time to first byte
// must stay far (hardFactor ×) above the threshold to trip the level before
// its window ends.
const fastSeconds = 2

// hardFactor: a window, or fastSeconds of medians, more than this many
// times the threshold is no noise and trips at once.
const hardFactor = 2

// hysteresisOf is the level's hysteresis: `consecutive` bad windows trip
// it, one good window recovers it, after at least one window tripped.
func hysteresisOf(c Config) breaker.HysteresisConfig {
	return breaker.HysteresisConfig{TripAfter: c.Consecutive, RecoverAfter: 1, MinTripped: c.Window.D(), Period: c.Window.D()}
}

// Level is the latency level. Record, Slower and NoteSlow belong to the
// request path; Sample to the engine's sampler; SetConfig may run at the
// same time (a reload).
type Level struct {
	cfg  atomic.Pointer[Config]
	ttfb atomic.Bool // measure ttfb: one plain load for the request path
	hist *history
	h    *breaker.Hysteresis
	slow slowest

	fastBad int // sampler only: seconds in a row the median was far above the threshold
}

// New returns the level with no history; cfg is defaulted.
func New(cfg Config) *Level {
	cfg.Defaults()
	l := &Level{hist: newHistory(cfg), h: breaker.NewHysteresis("latency", hysteresisOf(cfg))}
	l.cfg.Store(&cfg)
	l.ttfb.Store(cfg.Measure == "ttfb")
	return l
}

// Name implements levels.Level.
func (l *Level) Name() string { return "latency" }

// Hysteresis implements levels.Level.
func (l *Level) Hysteresis() *breaker.Hysteresis { return l.h }

// SetConfig applies a reloaded config; the history is kept (it is a
// property of the upstream, not of the thresholds).
func (l *Level) SetConfig(cfg Config) {
	cfg.Defaults()
	if old := l.cfg.Swap(&cfg); hysteresisOf(*old) != hysteresisOf(cfg) {
		l.h.SetConfig(hysteresisOf(cfg))
	}
	l.ttfb.Store(cfg.Measure == "ttfb")
	l.hist.setConfig(cfg)
}

// TTFB reports whether the request path should time the first byte
// (measure ttfb) rather than the whole response.
func (l *Level) TTFB() bool { return l.ttfb.Load() }

// Record adds one response time on the shard that shard selects. It does
// not allocate.
func (l *Level) Record(d time.Duration, shard uint32) { l.hist.record(d, shard) }

// Slower reports whether d is the slowest response since the last window
// closed: only then is its trace id worth reading (NoteSlow). One atomic load.
func (l *Level) Slower(d time.Duration) bool { return int64(d) > l.slow.max.Load() }

// NoteSlow remembers traceID as the slowest traced response of the window,
// if d still beats the record; a latency trip names it.
func (l *Level) NoteSlow(d time.Duration, traceID string) {
	if traceID != "" {
		l.slow.note(d, traceID)
	}
}

// Sample implements levels.Level. Once a second it closes the one-second
// period (the fast path) and, when the window is over, judges the window.
func (l *Level) Sample(now time.Time, in levels.Inputs, report func(breaker.Transition)) {
	if !in.Second {
		return
	}
	cfg := l.cfg.Load()
	s := l.hist.sample(now, in.Learn, in.InFlight)
	l.fastPath(now, s, cfg, report)
	if !s.Closed {
		return
	}
	reason := fmt.Sprintf("p%g %v > %.2g × history %v", cfg.Percentile, s.Value.Round(time.Millisecond),
		cfg.Factor, s.Mean.Round(time.Millisecond))
	// A window more than twice over its threshold is no noise: like one
	// over the ceiling, it trips at once instead of after `consecutive`.
	farAbove := s.Threshold > 0 && s.Value > hardFactor*s.Threshold
	switch {
	case s.Stuck:
		reason = fmt.Sprintf("no response for %v with requests in flight", s.Value.Round(time.Millisecond))
	case s.OverCeiling:
		reason = fmt.Sprintf("p%g %v > ceiling %v", cfg.Percentile, s.Value.Round(time.Millisecond), cfg.Ceiling.D())
	case farAbove:
		reason += ", more than twice the threshold"
	}
	o := breaker.Observation{Value: s.Value.Seconds(), Threshold: s.Threshold.Seconds(), Hard: s.OverCeiling || farAbove, Reason: reason,
		Recovery: func(o breaker.Observation, recoverBelow float64, recoverAfter int) string {
			return recovery(cfg.Percentile, o, recoverBelow, recoverAfter)
		}}
	trace := l.slow.take()
	if tr, ok := l.h.Observe(now, o); ok {
		tr.TraceID = trace
		report(tr)
	}
}

// recovery words a recovery (breaker.Observation.Recovery) of the
// percentile p: value and threshold are seconds, each sample a window.
func recovery(p float64, o breaker.Observation, recoverBelow float64, recoverAfter int) string {
	windows := "windows"
	if recoverAfter == 1 {
		windows = "window"
	}
	return fmt.Sprintf("p%g %v < %g × %v for %d %s", p, ms(o.Value), recoverBelow, ms(o.Threshold), recoverAfter, windows)
}

// ms is seconds as a duration rounded to the millisecond, as trips word it.
func ms(seconds float64) time.Duration {
	return time.Duration(seconds * float64(time.Second)).Round(time.Millisecond)
}

// fastPath trips the level between windows when the median time to first
// byte has been more than twice its threshold for fastSeconds seconds in a
// row: a queue building at the upstream (it lost a GPU, say) shows there
// within seconds, and waiting for the window would let it grow for up to
// `window` more. The median ignores a lone slow answer; two seconds ignore
// a lone slow second.
func (l *Level) fastPath(now time.Time, s historySample, cfg *Config, report func(breaker.Transition)) {
	threshold := time.Duration(float64(s.Reference) * cfg.Factor)
	if s.Reference == 0 || s.ShortCount == 0 || s.ShortMedian <= hardFactor*threshold {
		l.fastBad = 0
		return
	}
	l.fastBad++
	if l.fastBad < fastSeconds || l.h.Tripped() {
		return
	}
	o := breaker.Observation{Value: s.ShortMedian.Seconds(), Threshold: threshold.Seconds(), Hard: true,
		Reason: fmt.Sprintf("median time to first byte %v > %d × %v for %d s", s.ShortMedian.Round(time.Millisecond),
			hardFactor, threshold.Round(time.Millisecond), l.fastBad)}
	if tr, ok := l.h.Observe(now, o); ok {
		report(tr)
	}
}

// Second is the last one-second period, as the medium lane's controller
// reads it: a queue at the upstream moves the median, a lone slow answer
// does not.
type Second struct {
	Median    time.Duration // median response time of the period
	Count     int64         // responses in it
	Reference time.Duration // what it is judged against: the history, or 2 × the floor
	Factor    float64       // the configured factor
}

// LastSecond returns the last one-second period.
func (l *Level) LastSecond() Second {
	s := l.hist.lastSample()
	return Second{Median: s.ShortMedian, Count: s.ShortCount, Reference: s.Reference, Factor: l.cfg.Load().Factor}
}

// Forget implements levels.Level: the history, the floor and a trip they
// caused.
func (l *Level) Forget() {
	l.hist.reset()
	l.h.Reset()
}

// Status is the latency level in /throttle/status: value and threshold in
// seconds.
type Status struct {
	levels.Common
	Percentile   float64 `json:"percentile"`
	Measure      string  `json:"measure"`
	HistoryMeanS float64 `json:"history_mean_s"` // 0 before the first healthy window
	// FloorS is the fastest one-second median of the last 10 minutes: the
	// upstream unloaded. Before any history, twice it is the reference.
	FloorS      float64 `json:"floor_s"`
	LastSecondS float64 `json:"last_second_s"` // the percentile over the last second
	WindowCount int64   `json:"window_count"`
	CeilingS    float64 `json:"ceiling_s"`
}

// Status returns the level's status at now.
func (l *Level) Status(now time.Time) Status {
	cfg, s := l.cfg.Load(), l.hist.lastSample()
	return Status{Common: levels.CommonOf(l.h, now), Percentile: cfg.Percentile, Measure: cfg.Measure,
		HistoryMeanS: levels.Round(l.hist.historyMean().Seconds()), LastSecondS: levels.Round(s.Short.Seconds()),
		FloorS: levels.Round(s.Floor.Seconds()), WindowCount: s.Count, CeilingS: cfg.Ceiling.D().Seconds()}
}

// slowest remembers the trace id of the slowest traced response since it
// was last taken. The request path only compares against an atomic unless
// it beats the record.
type slowest struct {
	max   atomic.Int64 // ns
	mu    sync.Mutex
	trace string
}

func (s *slowest) note(d time.Duration, id string) {
	s.mu.Lock()
	if int64(d) > s.max.Load() {
		s.max.Store(int64(d))
		s.trace = id
	}
	s.mu.Unlock()
}

// take returns the recorded trace id and starts over.
func (s *slowest) take() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.trace
	s.trace = ""
	s.max.Store(0)
	return id
}

var _ levels.Level = (*Level)(nil)
