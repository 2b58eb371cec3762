package sensors

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Reading is the sensor's latest view, safe to copy: its Devices slice is
// never written after it is published.
type Reading struct {
	Source      string
	Available   bool      // false when the last read failed or the last good sample is stale / never came
	Reason      string    // why unavailable
	Value       float64   // aggregated ratio over the selected devices of the last good sample
	Devices     []Device  // selected devices of the last good sample
	LastGood    time.Time // zero when never
	LastAttempt time.Time //
	Errors      uint64    // failed samples since start
	Hung        uint64    // reads abandoned after the timeout (the source ignored its deadline)
	At          time.Time // when this reading was produced
}

// neverAge stands for the age of a sample that never came.
const neverAge = time.Duration(math.MaxInt64)

// Age is the time since LastGood; a large value when never.
func (r Reading) Age(now time.Time) time.Duration {
	if r.LastGood.IsZero() {
		return neverAge
	}
	return now.Sub(r.LastGood)
}

// Config is how a Sensor samples its Source. Interval, Timeout and
// StaleAfter must be positive; the caller validates them (the gpu block
// does, naming its keys).
type Config struct {
	Interval   time.Duration // between reads, in Run
	Timeout    time.Duration // per read; a read still running then is abandoned
	StaleAfter time.Duration // a last good sample older than this reads as unavailable
	Devices    []string      // device IDs or UUIDs to select; all when empty
	Aggregate  string        // across the selected devices: "mean", or the max otherwise
}

// Sensor samples a Source on its own timer, off any request path.
type Sensor struct {
	src  Source
	cfg  Config
	name string

	sampleMu sync.Mutex // serialises SampleOnce; guards the fields below
	pending  chan readResult
	since    time.Time // when the pending (hung) read started, wall clock
	lastGood time.Time
	devices  []Device
	value    float64
	errors   uint64
	hung     uint64

	latest atomic.Pointer[Reading]
}

type readResult struct {
	devs []Device
	err  error
}

// NewSensor wraps src (nil: a sensor that is off). Each sample is
// published for Latest and LatestAt; the sensor calls nobody.
func NewSensor(src Source, cfg Config) *Sensor {
	s := &Sensor{src: src, cfg: cfg, name: "off"}
	if src != nil {
		s.name = src.Name()
	}
	s.latest.Store(&Reading{Source: s.name, Reason: "no sample yet"})
	return s
}

// Latest is the last reading, as produced.
func (s *Sensor) Latest() Reading { return *s.latest.Load() }

// LatestAt is the last reading judged at now: if its good sample is older
// than StaleAfter it is unavailable, so a stalled or stopped sampler can
// never leave a healthy reading standing.
func (s *Sensor) LatestAt(now time.Time) Reading {
	r := s.Latest()
	if r.Available && r.Age(now) > s.cfg.StaleAfter {
		r.Available = false
		r.Reason = staleReason(r.Age(now))
	}
	return r
}

func staleReason(age time.Duration) string {
	return fmt.Sprintf("stale: last good sample %v ago", age.Round(time.Millisecond))
}

// Run samples every Interval until ctx is done. It does not take a first
// sample at once: call SampleOnce for that.
func (s *Sensor) Run(ctx context.Context) {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.SampleOnce(ctx, time.Now())
		}
	}
}

// SampleOnce reads the source once, waiting at most Timeout (wall clock);
// now stamps the reading and judges staleness.
func (s *Sensor) SampleOnce(ctx context.Context, now time.Time) Reading {
	s.sampleMu.Lock()
	r := s.sampleLocked(ctx, now)
	s.latest.Store(&r)
	s.sampleMu.Unlock()
	return r
}

func (s *Sensor) sampleLocked(ctx context.Context, now time.Time) Reading {
	if s.src == nil {
		return s.fail(now, "sensor off")
	}
	if s.pending != nil {
		select {
		case <-s.pending: // the hung read finally ended; its data is old, drop it
			s.pending = nil
		default:
			return s.fail(now, fmt.Sprintf("previous read still hung (started %v ago)", time.Since(s.since).Round(time.Millisecond)))
		}
	}
	if err := ctx.Err(); err != nil {
		return s.fail(now, "read cancelled: "+err.Error())
	}
	// The source's deadline comes a little before we give up on it, so a
	// source that honours ctx reports its own timeout and is not counted hung.
	rctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout*9/10)
	defer cancel()
	ch := make(chan readResult, 1)
	start := time.Now()
	go func() {
		devs, err := s.src.Read(rctx)
		ch <- readResult{devs, err}
	}()
	wait := time.NewTimer(s.cfg.Timeout)
	defer wait.Stop()
	var res readResult
	select {
	case res = <-ch:
	case <-wait.C:
		s.pending, s.since = ch, start
		s.hung++
		return s.fail(now, fmt.Sprintf("read timed out after %v", s.cfg.Timeout))
	case <-ctx.Done():
		select {
		case res = <-ch: // finished in the same instant: use it
		default:
			s.pending, s.since = ch, start
			return s.fail(now, "read cancelled: "+ctx.Err().Error())
		}
	}
	if res.err != nil {
		if ctx.Err() == nil && errors.Is(rctx.Err(), context.DeadlineExceeded) {
			return s.fail(now, fmt.Sprintf("read timed out after %v: %v", s.cfg.Timeout, res.err))
		}
		return s.fail(now, res.err.Error())
	}
	sel, err := s.selectDevices(res.devs, now)
	if err != nil {
		return s.fail(now, err.Error())
	}
	s.lastGood, s.devices, s.value = now, sel, aggregate(sel, s.cfg.Aggregate)
	return s.reading(now, true, "")
}

// fail counts an error and builds an unavailable reading, saying also when
// the last good sample has gone stale.
func (s *Sensor) fail(now time.Time, reason string) Reading {
	s.errors++
	if s.src != nil && !strings.HasPrefix(reason, s.name+":") {
		reason = s.name + ": " + reason
	}
	if !s.lastGood.IsZero() && now.Sub(s.lastGood) > s.cfg.StaleAfter {
		reason += "; " + staleReason(now.Sub(s.lastGood))
	}
	return s.reading(now, false, reason)
}

func (s *Sensor) reading(now time.Time, ok bool, reason string) Reading {
	return Reading{
		Source: s.name, Available: ok, Reason: reason, Value: s.value, Devices: s.devices, LastGood: s.lastGood, LastAttempt: now, Errors: s.errors, Hung: s.hung,
		At: now,
	}
}

// selectDevices picks the configured devices (all when none configured) and
// fails loudly on an absent or broken one, or on an old source timestamp.
func (s *Sensor) selectDevices(devs []Device, now time.Time) ([]Device, error) {
	if len(devs) == 0 {
		return nil, fmt.Errorf("no devices")
	}
	var sel []Device
	if len(s.cfg.Devices) == 0 {
		sel = slices.Clone(devs)
	} else {
		for _, want := range s.cfg.Devices {
			i := slices.IndexFunc(devs, func(d Device) bool { return d.ID == want || (d.UUID != "" && d.UUID == want) })
			if i < 0 {
				return nil, fmt.Errorf("device %s not found; have %s", want, deviceIDs(devs))
			}
			sel = append(sel, devs[i])
		}
	}
	for _, d := range sel {
		if d.Err != "" {
			if d.UUID != "" && d.UUID != d.ID {
				return nil, fmt.Errorf("device %s (%s): %s", d.ID, d.UUID, d.Err)
			}
			return nil, fmt.Errorf("device %s: %s", d.ID, d.Err)
		}
		if !d.Timestamp.IsZero() && now.Sub(d.Timestamp) > s.cfg.StaleAfter {
			return nil, fmt.Errorf("stale: device %s sample is %v old", d.ID, now.Sub(d.Timestamp).Round(time.Millisecond))
		}
	}
	return sel, nil
}

func deviceIDs(devs []Device) string {
	ids := make([]string, len(devs))
	for i, d := range devs {
		ids[i] = d.ID
	}
	return strings.Join(ids, ",")
}

func aggregate(devs []Device, how string) float64 {
	if how == "mean" {
		var sum float64
		for _, d := range devs {
			sum += d.Ratio()
		}
		return sum / float64(len(devs))
	}
	v := math.Inf(-1)
	for _, d := range devs {
		v = max(v, d.Ratio())
	}
	return v
}
