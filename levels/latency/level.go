// Package latency is the latency level: a percentile (P99) of time to first
// byte per window, in sharded HDR histograms, against a history of healthy
// windows that is never taken below an absolute allowance (min_threshold),
// with a fast path on the one-second median and an absolute ceiling; or,
// with slo, the percentile of the last two seconds against the operator's
// objective. Recovery is judged on the last two seconds. See the README,
// "What each level does".
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

// sloSeconds is how many seconds in a row the recent percentile must be
// above the slo to trip the level; recoverSeconds how many below 90% of its
// threshold recover it; minTripped the least a trip lasts (doubled by a
// quick re-trip, see breaker.Hysteresis).
const (
	sloSeconds     = 2
	recoverSeconds = 2
	minTripped     = 2 * time.Second
)

// hysteresisOf is the level's hysteresis. Without slo, `consecutive` bad
// windows trip it; with slo, sloSeconds bad seconds. Either way it recovers
// on the seconds: recoverSeconds good ones, after at least minTripped, so it
// lets go within seconds of the pressure's end instead of waiting for
// windows (or a history learned at light load) to allow it.
func hysteresisOf(c Config) breaker.HysteresisConfig {
	trip := c.Consecutive
	if c.SLO > 0 {
		trip = sloSeconds
	}
	return breaker.HysteresisConfig{TripAfter: trip, RecoverAfter: recoverSeconds, MinTripped: minTripped, Period: time.Second}
}

// Level is the latency level. Record, Slower and NoteSlow belong to the
// request path; Sample to the engine's sampler; SetConfig may run at the
// same time (a reload).
type Level struct {
	cfg   atomic.Pointer[Config]
	ttfb  atomic.Bool // measure ttfb: one plain load for the request path
	hist  *history
	sizes sizeFloors // the fastest whole answer per size
	h     *breaker.Hysteresis
	slow  slowest

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

// RecordWhole records, under measure ttfb, an answer of n bytes that was
// not streamed, whose first byte is its end and came after d: it is judged
// by what is normal for its size (see sizeFloors), and returns what it is
// judged as. The slowest of the last minutes, twice, is how long requests
// may be in flight with no answer before that is a hang. It does not
// allocate.
func (l *Level) RecordWhole(d time.Duration, n int64, shard uint32) time.Duration {
	j := l.sizes.judged(d, n)
	l.hist.record(j, shard)
	l.hist.recordWhole(d)
	return j
}

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
// period and, when the window is over, the window.
//
// Without slo, the level trips on the window (its percentile above the
// history × factor) or on the fast path (the median far above it); with
// slo, on the recent percentile above the slo. Either way no time under the
// threshold's floor is slow: min_threshold without slo, the slo with it.
// While tripped, only the seconds speak: the recent percentile back under
// 90% of the threshold for recoverSeconds recovers it.
func (l *Level) Sample(now time.Time, in levels.Inputs, report func(breaker.Transition)) {
	if !in.Second {
		return
	}
	cfg := l.cfg.Load()
	l.sizes.rotate(now)
	s := l.hist.sample(now, in.Learn, in.InFlight)
	observe := func(o breaker.Observation, trace string) {
		if tr, ok := l.h.Observe(now, o); ok {
			tr.TraceID = trace
			report(tr)
		}
	}
	switch {
	case l.h.Tripped():
		l.fastBad = 0
		observe(l.recoverySecond(s, cfg, in.InFlight), "")
	case cfg.SLO > 0:
		l.sloSecond(s, cfg, observe)
	default:
		l.fastPath(s, cfg, observe)
	}
	if !s.Closed {
		return
	}
	trace := l.slow.take()
	if l.h.Tripped() {
		return // the seconds judge the recovery; a window would only lag them
	}
	o := l.windowObservation(s, cfg)
	if cfg.SLO > 0 && !o.Hard {
		return // the slo is judged on the seconds; the window only for the ceiling
	}
	observe(o, trace)
}

// windowObservation judges a closed window: its percentile against the
// history × factor (at least min_threshold), the ceiling, or no answer.
func (l *Level) windowObservation(s historySample, cfg *Config) breaker.Observation {
	reason := fmt.Sprintf("p%g %v > %.2g × history %v", cfg.Percentile, s.Value.Round(time.Millisecond),
		cfg.Factor, s.Mean.Round(time.Millisecond))
	if s.Threshold > 0 && s.Threshold == cfg.MinThreshold.D() {
		reason = fmt.Sprintf("p%g %v > min_threshold %v", cfg.Percentile, s.Value.Round(time.Millisecond), cfg.MinThreshold.D())
	}
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
	return breaker.Observation{Value: s.Value.Seconds(), Threshold: s.Threshold.Seconds(), Hard: s.OverCeiling || farAbove, Reason: reason}
}

// threshold is what the recent seconds are judged against: the slo, or the
// reference × factor but at least min_threshold.
func threshold(s historySample, cfg *Config) time.Duration {
	if cfg.SLO > 0 {
		return cfg.SLO.D()
	}
	return s.Limit
}

// sloSecond judges the last seconds against the slo: the recent percentile
// above it is a bad second, sloSeconds of them in a row trip the level.
// The recent percentile is never above the third-slowest answer of the
// span, so one slow answer cannot trip it; a span with no answer says
// nothing (a hung upstream is the window's to catch).
func (l *Level) sloSecond(s historySample, cfg *Config, observe func(breaker.Observation, string)) {
	if s.RecentCount == 0 {
		return
	}
	slo := cfg.SLO.D()
	observe(breaker.Observation{Value: s.Recent.Seconds(), Threshold: slo.Seconds(),
		Reason: fmt.Sprintf("p%g of the last %d s %v > slo %v for %d s", cfg.Percentile, recentSeconds,
			s.Recent.Round(time.Millisecond), slo, sloSeconds)}, "")
}

// recoverySecond is the observation of one second while tripped: the recent
// percentile against the threshold (good below 90% of it), over the
// ceiling never good. A second with no answer is good only when nothing is
// waiting either (the upstream idle); with requests in flight it is
// neutral.
func (l *Level) recoverySecond(s historySample, cfg *Config, inflight int64) breaker.Observation {
	th := threshold(s, cfg)
	o := breaker.Observation{Value: s.Recent.Seconds(), Threshold: th.Seconds(),
		Recovery: func(o breaker.Observation, recoverBelow float64, recoverAfter int) string {
			return recovery(cfg.Percentile, o, recoverBelow, recoverAfter)
		}}
	switch {
	case s.RecentCount == 0 && inflight > 0:
		o.Value = o.Threshold // neutral: between the recovery line and the threshold
	case s.Recent > cfg.Ceiling.D():
		o.Hard = true
	}
	return o
}

// recovery words a recovery (breaker.Observation.Recovery) of the
// percentile p: value and threshold are seconds, each sample a second.
func recovery(p float64, o breaker.Observation, recoverBelow float64, recoverAfter int) string {
	return fmt.Sprintf("p%g of the last %d s %v < %g × %v for %d s", p, recentSeconds, ms(o.Value), recoverBelow, ms(o.Threshold), recoverAfter)
}

// ms is seconds as a duration rounded to the millisecond, as trips word it.
func ms(seconds float64) time.Duration {
	return time.Duration(seconds * float64(time.Second)).Round(time.Millisecond)
}

// fastPath trips the level between windows when the median time to first
// byte has been far above its threshold for fastSeconds seconds in a row:
// a queue building at the upstream (it lost a GPU, say) shows there within
// seconds, and waiting for the window would let it grow for up to `window`
// more. Far above is hardFactor × the reference × factor, but never below
// min_threshold: the idle floor is no measure of a loaded server, whose
// healthy median under continuous batching is several times it. The median
// ignores a lone slow answer; two seconds ignore a lone slow second.
func (l *Level) fastPath(s historySample, cfg *Config, observe func(breaker.Observation, string)) {
	bar := max(time.Duration(hardFactor*float64(s.Reference)*cfg.Factor), cfg.MinThreshold.D())
	if s.ShortCount == 0 || s.ShortMedian <= bar {
		l.fastBad = 0
		return
	}
	l.fastBad++
	if l.fastBad < fastSeconds {
		return
	}
	reason := fmt.Sprintf("median time to first byte %v > %v for %d s", s.ShortMedian.Round(time.Millisecond),
		bar.Round(time.Millisecond), l.fastBad)
	observe(breaker.Observation{Value: s.ShortMedian.Seconds(), Threshold: bar.Seconds(), Hard: true, Reason: reason}, "")
}

// Second is the last one-second period, as the medium lane's controller
// reads it: a queue at the upstream moves the median, a lone slow answer
// does not.
type Second struct {
	Median time.Duration // median response time of the period
	Count  int64         // responses in it
	// Reference × Factor is what the level judges a second against: the
	// history, or 2 × the floor, × factor, but at least min_threshold; with
	// slo, the slo.
	Reference time.Duration
	Factor    float64 // the configured factor
}

// LastSecond returns the last one-second period.
func (l *Level) LastSecond() Second {
	cfg, s := l.cfg.Load(), l.hist.lastSample()
	ref := time.Duration(0)
	if th := threshold(s, cfg); th > 0 {
		ref = time.Duration(float64(th) / cfg.Factor)
	}
	return Second{Median: s.ShortMedian, Count: s.ShortCount, Reference: ref, Factor: cfg.Factor}
}

// Forget implements levels.Level: the history, the floor and a trip they
// caused.
func (l *Level) Forget() {
	l.hist.reset()
	l.sizes.reset()
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
	// SLOS is the configured objective (0: none); MinThresholdS the time
	// below which nothing is slow without one.
	SLOS          float64 `json:"slo_s"`
	MinThresholdS float64 `json:"min_threshold_s"`
	// RecentS is the percentile of the last two seconds (never above their
	// third-slowest answer): what the slo and a recovery are judged on.
	RecentS float64 `json:"recent_s"`
	// WholeSlowestS is the slowest answer sent whole (not streamed) of the
	// last 10 minutes, 0 if none: requests in flight with no answer for
	// longer than twice that, all window, are a hang.
	WholeSlowestS float64 `json:"whole_slowest_s"`
}

// Status returns the level's status at now.
func (l *Level) Status(now time.Time) Status {
	cfg, s := l.cfg.Load(), l.hist.lastSample()
	return Status{Common: levels.CommonOf(l.h, now), Percentile: cfg.Percentile, Measure: cfg.Measure,
		HistoryMeanS: levels.Round(l.hist.historyMean().Seconds()), LastSecondS: levels.Round(s.Short.Seconds()),
		FloorS: levels.Round(s.Floor.Seconds()), WindowCount: s.Count, CeilingS: cfg.Ceiling.D().Seconds(),
		SLOS: cfg.SLO.D().Seconds(), MinThresholdS: cfg.MinThreshold.D().Seconds(), RecentS: levels.Round(s.Recent.Seconds()),
		WholeSlowestS: levels.Round(s.WholeSlowest.Seconds())}
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
