package latency

import (
	"fmt"
	"math"
	"time"
)

// Snapshot is what the latency level has learned, as a restart keeps it:
// the history mean of healthy windows and the per-minute floors, with the
// settings that give them their meaning (a mean of P99s over 10 s windows
// is no reference for P95s, nor for whole answers).
type Snapshot struct {
	WindowS      float64 `json:"window_s"`
	Percentile   float64 `json:"percentile"`
	Measure      string  `json:"measure"`
	HistoryMeanS float64 `json:"history_mean_s"` // 0: no history yet
	// Floors are the lowest one-second medians of the last minutes, each
	// with its minute (Unix time / 60).
	Floors []Floor `json:"floors,omitempty"`
}

// Floor is one minute's lowest one-second median.
type Floor struct {
	Minute int64   `json:"minute"`
	S      float64 `json:"s"`
}

// Empty reports whether s holds nothing learned.
func (s Snapshot) Empty() bool { return s.HistoryMeanS == 0 && len(s.Floors) == 0 }

// Snapshot returns the history and the floors.
func (l *Level) Snapshot() Snapshot {
	h := l.hist
	h.mu.Lock()
	defer h.mu.Unlock()
	s := Snapshot{WindowS: h.cfg.Window.D().Seconds(), Percentile: h.cfg.Percentile, Measure: h.cfg.Measure,
		HistoryMeanS: h.mean.Seconds()}
	for k := h.floorMinute - floorMinutes + 1; k <= h.floorMinute; k++ {
		if v := h.floors[((k%floorMinutes)+floorMinutes)%floorMinutes]; v > 0 {
			s.Floors = append(s.Floors, Floor{Minute: k, S: v.Seconds()})
		}
	}
	return s
}

// Restore replaces the history and the floors by s's, at now: floors
// older than the last 10 minutes are dropped as they would have been. It
// refuses, changing nothing, a snapshot taken with another window,
// percentile or measure, or holding times no answer can take.
func (l *Level) Restore(s Snapshot, now time.Time) error {
	h := l.hist
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.cfg
	switch {
	case s.WindowS != c.Window.D().Seconds():
		return fmt.Errorf("latency window %gs in storage, %gs configured", s.WindowS, c.Window.D().Seconds())
	case s.Percentile != c.Percentile:
		return fmt.Errorf("latency percentile %g in storage, %g configured", s.Percentile, c.Percentile)
	case s.Measure != c.Measure:
		return fmt.Errorf("latency measure %q in storage, %q configured", s.Measure, c.Measure)
	}
	valid := func(v float64) bool { return !math.IsNaN(v) && v >= 0 && v <= time.Hour.Seconds() }
	if !valid(s.HistoryMeanS) {
		return fmt.Errorf("latency: stored history %v is no time", s.HistoryMeanS)
	}
	m := now.Unix() / 60
	var floors [floorMinutes]time.Duration
	for _, f := range s.Floors {
		if !valid(f.S) {
			return fmt.Errorf("latency: stored floor %v is no time", f.S)
		}
		if f.Minute > m-floorMinutes && f.Minute <= m && f.S > 0 {
			floors[f.Minute%floorMinutes] = seconds(f.S)
		}
	}
	h.mean = seconds(s.HistoryMeanS)
	h.floors, h.floorMinute = floors, m
	return nil
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
