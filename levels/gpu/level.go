package gpu

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/levels"
	"github.com/ai-guardian/adaptivethrottle/sensors"
)

// hysteresisOf is the level's hysteresis: one reading over the threshold
// trips it (an OOM does not wait), two below recover it, after at least 5 s
// (more after quick re-trips). An upstream's gauge (Upstream.For) has no
// least time tripped: its trip only cuts that upstream's limit, the
// others' room takes up the rest, and nobody is shed by it, so two
// readings below are enough to take it back.
func hysteresisOf(c Config) breaker.HysteresisConfig {
	h := breaker.HysteresisConfig{TripAfter: 1, RecoverAfter: 2, MinTripped: 5 * time.Second, Period: c.Interval.D()}
	if c.member {
		h.MinTripped = -1
	}
	return h
}

// Level is the GPU level. Its Sensor runs on its own goroutine and only
// publishes readings; Sample, on the engine's sampler, observes the latest
// one, so the level's state has one writer and the sensor waits for nobody.
// SetConfig and Close (a reload, the last cleanup) may run at any time.
type Level struct {
	cfg    atomic.Pointer[Config]
	h      *breaker.Hysteresis
	sensor atomic.Pointer[sensors.Sensor] // nil: off
	warn   atomic.Pointer[string]         // why the level is off or its source unavailable; "" if neither

	mu   sync.Mutex // serialises opening and closing the source; the sampler never takes it
	src  sensors.Source
	stop context.CancelFunc
	done chan struct{}

	// Sampler only: the reading last observed, and when; the memory floor.
	lastAt, lastObserved time.Time
	fl                   floor

	forget  atomic.Bool               // Forget asked the sampler to drop the floor
	judged  atomic.Pointer[judgement] // the last memory reading as judged, for Status
	noteSeq atomic.Uint64             // counts notes worth a log line (Note)
}

// judgement is the last memory reading as the level judged it.
type judgement struct {
	value, limit, floor float64
	growth              bool   // judged as growth above the floor
	note                string // what memory can and cannot judge here; "" when nothing to say
}

// New opens cfg's source and starts its sensor; cfg is defaulted. A source
// that cannot work on this host is an error only under on_error shed (see
// Open); otherwise Warning says why the level is off or blind.
func New(cfg Config) (*Level, error) {
	cfg.Defaults()
	l := &Level{h: breaker.NewHysteresis("gpu", hysteresisOf(cfg))}
	l.cfg.Store(&cfg)
	empty := ""
	l.warn.Store(&empty)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.open(cfg); err != nil {
		return nil, err
	}
	return l, nil
}

// open starts cfg's source, replacing the running one only once the new one
// is open: a source that fails to open leaves the running one as it was.
// l.mu is held.
func (l *Level) open(cfg Config) error {
	src, warning, err := Open(cfg)
	if err != nil {
		return fmt.Errorf("gpu: %w", err)
	}
	l.close()
	l.warn.Store(&warning)
	l.cfg.Store(&cfg)
	l.forget.Store(true) // a floor is learned of one source
	l.judged.Store(nil)
	if src == nil {
		l.sensor.Store(nil)
		l.h.Reset()
		return nil
	}
	s := sensors.NewSensor(src, cfg.sensor())
	ctx, cancel := context.WithCancel(context.Background())
	l.src, l.stop, l.done = src, cancel, make(chan struct{})
	go func(done chan struct{}) {
		defer close(done)
		s.SampleOnce(ctx, time.Now())
		s.Run(ctx)
	}(l.done)
	l.sensor.Store(s)
	return nil
}

// close stops the running sensor and closes its source. l.mu is held.
func (l *Level) close() {
	if l.stop != nil {
		l.stop()
		<-l.done
		l.stop = nil
	}
	if l.src != nil {
		_ = l.src.Close()
		l.src = nil
	}
	l.sensor.Store(nil)
}

// Close stops the sensor. The level stays usable: it reads as off.
func (l *Level) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.close()
	return nil
}

// Warning says why the level is off or its source unavailable, or "".
func (l *Level) Warning() string { return *l.warn.Load() }

// SetConfig applies a reloaded config. When the source's settings changed
// it opens the new source first and reports reopened; if that fails, the
// running source and config stay as they were.
func (l *Level) SetConfig(cfg Config) (reopened bool, err error) {
	cfg.Defaults()
	l.mu.Lock()
	defer l.mu.Unlock()
	old := l.cfg.Load()
	if reflect.DeepEqual(*old, cfg) {
		return false, nil
	}
	if sameSource(*old, cfg) {
		l.cfg.Store(&cfg)
	} else if err := l.open(cfg); err != nil {
		return false, err
	}
	if hysteresisOf(*old) != hysteresisOf(cfg) {
		l.h.SetConfig(hysteresisOf(cfg))
	}
	return !sameSource(*old, cfg), nil
}

// sameSource reports whether a and b read the same thing the same way, so
// that going from one to the other needs no new sensor: only on_error
// differs, which Sample reads at each step.
func sameSource(a, b Config) bool {
	a.OnError, b.OnError = "", ""
	return reflect.DeepEqual(a, b)
}

// Name implements levels.Level.
func (l *Level) Name() string { return "gpu" }

// Hysteresis implements levels.Level.
func (l *Level) Hysteresis() *breaker.Hysteresis { return l.h }

// Forget implements levels.Level: the memory floor is dropped and the
// next reading sets it (a model that loaded is taken as held at once). A
// trip stays: a GPU over its threshold is no less full for a reset.
func (l *Level) Forget() { l.forget.Store(true) }

// Note says what the memory readings can and cannot judge here ("" when
// a fixed threshold over them is meaningful), with a sequence number that
// changes when the note is worth a new log line: it appeared, went, or its
// floor moved.
func (l *Level) Note() (seq uint64, note string) {
	seq = l.noteSeq.Load()
	if j := l.judged.Load(); j != nil {
		note = j.note
	}
	return seq, note
}

// memory reports whether source reads memory (whose floor the level
// learns) rather than a server's own saturation gauge.
func memory(source string, cfg *Config) bool {
	return source == "nvml" || source == "nvidia-smi" || (source == "prometheus" && cfg.PairKind != "")
}

// Sample implements levels.Level: it observes each new reading once, and
// a stale one (the sensor stopped publishing) once an interval. A reading
// over the threshold trips the level; a memory reading at the default
// threshold trips it above the floor's limit instead (floor.go). A source
// that cannot be read is no evidence of pressure under on_error allow, and
// trips it at once under on_error shed.
func (l *Level) Sample(now time.Time, in levels.Inputs, report func(breaker.Transition)) {
	s := l.sensor.Load()
	if s == nil {
		return
	}
	if l.forget.Swap(false) {
		l.fl.reset()
	}
	l.fl.load(in.InFlight)
	cfg := l.cfg.Load()
	r := s.LatestAt(now)
	if r.At.IsZero() || (r.At.Equal(l.lastAt) && (r.Available || now.Sub(l.lastObserved) < cfg.Interval.D())) {
		return
	}
	l.lastAt, l.lastObserved = r.At, now
	value, limit := r.Value, cfg.Threshold
	o := breaker.Observation{Value: r.Value, Threshold: cfg.Threshold,
		Reason: fmt.Sprintf("gpu %s %.1f%% > %.1f%%", r.Source, 100*r.Value, 100*cfg.Threshold),
		Recovery: func(o breaker.Observation, recoverBelow float64, recoverAfter int) string {
			return recovery(r.Source, o, recoverBelow, recoverAfter)
		}}
	switch {
	case !r.Available && cfg.OnError == "shed":
		o = breaker.Observation{Threshold: cfg.Threshold, Hard: true, Reason: "gpu source unavailable (on_error shed): " + r.Reason}
	case !r.Available:
		// No evidence of pressure: enough such readings recover a trip.
		o = breaker.Observation{Threshold: cfg.Threshold,
			Recovery: func(_ breaker.Observation, _ float64, recoverAfter int) string {
				return fmt.Sprintf("source unavailable for %d %s (on_error allow): %s", recoverAfter, readings(recoverAfter), r.Reason)
			}}
	case memory(r.Source, cfg):
		limit, o = l.judgeMemory(r, cfg, now, o)
	}
	if tr, ok := l.h.Observe(now, o); ok {
		if r.Available {
			tr.Value, tr.Threshold = value, limit
		}
		report(tr)
	}
}

// judgeMemory learns the floor from memory reading r and returns its
// limit and the observation to judge it by: o itself at the threshold, or
// at the default threshold with the floor's limit above it, the growth
// above the floor (so that the hysteresis recovers below 90% of the way
// from the floor to the limit, not below 90% of the limit).
func (l *Level) judgeMemory(r sensors.Reading, cfg *Config, now time.Time, o breaker.Observation) (float64, breaker.Observation) {
	moved := l.fl.observe(r.Value, now)
	j := &judgement{value: r.Value, limit: cfg.Threshold, floor: l.fl.value,
		note: l.fl.note(r.Source, cfg.Threshold, !cfg.thresholdDefault)}
	if cfg.thresholdDefault {
		j.limit = l.fl.limit(cfg.Threshold)
	}
	if j.growth = j.limit > cfg.Threshold; j.growth {
		base, held := l.fl.value, l.fl.held()
		o = breaker.Observation{Value: r.Value - base, Threshold: j.limit - base,
			Reason: fmt.Sprintf("gpu %s %.1f%% > %.1f%%: memory grew above the %.1f%% held %s", r.Source, 100*r.Value, 100*j.limit, 100*base, held),
			Recovery: func(o breaker.Observation, recoverBelow float64, recoverAfter int) string {
				return fmt.Sprintf("%s %.1f%% < %.1f%% (the %.1f%% held %s + %g × its allowance) for %d %s", r.Source,
					100*(base+o.Value), 100*(base+recoverBelow*o.Threshold), 100*base, held, recoverBelow, recoverAfter, readings(recoverAfter))
			}}
	}
	prev := ""
	if p := l.judged.Load(); p != nil {
		prev = p.note
	}
	if (prev == "") != (j.note == "") || (moved && j.note != "") {
		l.noteSeq.Add(1)
	}
	l.judged.Store(j)
	return j.limit, o
}

// recovery words a recovery (breaker.Observation.Recovery) on source's
// readings: value and threshold are fractions of memory, shown as percent.
func recovery(source string, o breaker.Observation, recoverBelow float64, recoverAfter int) string {
	return fmt.Sprintf("%s %.1f%% < %g × %.1f%% for %d %s", source, 100*o.Value, recoverBelow, 100*o.Threshold, recoverAfter, readings(recoverAfter))
}

func readings(n int) string {
	if n == 1 {
		return "reading"
	}
	return "readings"
}

// Status is the GPU level in /throttle/status: value and threshold as
// fractions of memory (or of the gauge).
type Status struct {
	levels.Common
	Source     string         `json:"source"` // nvml, nvidia-smi, prometheus, or off
	Available  bool           `json:"available"`
	Reason     string         `json:"reason,omitempty"` // why unavailable or off
	OnError    string         `json:"on_error"`
	SampleAgeS *float64       `json:"sample_age_s"` // since the last good sample; null if none
	Errors     uint64         `json:"errors"`
	Hung       uint64         `json:"hung"`
	Devices    []DeviceStatus `json:"devices"`
	// Floor is the memory held whatever the load (floor.go), a fraction;
	// 0 for a server's own gauge, or before the first reading.
	Floor float64 `json:"floor"`
	// Note says what the memory readings cannot judge here, and which
	// gauge can; "" when nothing needs saying.
	Note string `json:"note,omitempty"`
}

// DeviceStatus is one GPU or gauge series in Status.
type DeviceStatus struct {
	ID    string  `json:"id"`
	UUID  string  `json:"uuid,omitempty"`
	Used  float64 `json:"used"`
	Total float64 `json:"total"`
	Ratio float64 `json:"ratio"`
}

// Status returns the level's status at now; a reading gone stale reads as
// unavailable, with the reason.
func (l *Level) Status(now time.Time) Status {
	cfg := l.cfg.Load()
	st := Status{Common: levels.CommonOf(l.h, now), Source: "off", Reason: l.Warning(), OnError: cfg.OnError,
		Devices: []DeviceStatus{}}
	st.Threshold = cfg.Threshold
	s := l.sensor.Load()
	if s == nil {
		return st
	}
	r := s.LatestAt(now)
	st.Source, st.Available, st.Reason, st.Errors, st.Hung = r.Source, r.Available, r.Reason, r.Errors, r.Hung
	if !r.LastGood.IsZero() {
		age := levels.Round(now.Sub(r.LastGood).Seconds())
		st.SampleAgeS = &age
	}
	for _, d := range r.Devices {
		st.Devices = append(st.Devices, DeviceStatus{ID: d.ID, UUID: d.UUID, Used: d.Used, Total: d.Total, Ratio: levels.Round(d.Ratio())})
	}
	if j := l.judged.Load(); j != nil && memory(r.Source, cfg) {
		st.Threshold, st.Floor, st.Note = levels.Round(j.limit), levels.Round(j.floor), j.note
		if j.growth {
			st.Value = levels.Round(j.value)
		}
	}
	return st
}

var _ levels.Level = (*Level)(nil)
