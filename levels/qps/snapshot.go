package qps

import (
	"fmt"
	"math"
)

// Snapshot is what the QPS level has learned, as a restart keeps it: the
// one-second rates of its ring, oldest first, and the window they cover.
// The baseline is rebuilt from them.
type Snapshot struct {
	WindowS int       `json:"window_s"` // the ring's length in seconds (the qps window)
	Rates   []float64 `json:"rates"`    // the learned seconds, oldest first; len = the count
}

// Snapshot returns the learned rates; nil Rates when nothing is learned.
func (l *Level) Snapshot() Snapshot {
	q := l.rates
	q.mu.Lock()
	defer q.mu.Unlock()
	s := Snapshot{WindowS: len(q.ring)}
	if q.n == 0 {
		return s
	}
	s.Rates = make([]float64, q.n)
	start := (q.head - q.n + len(q.ring)) % len(q.ring)
	for i := range s.Rates {
		s.Rates[i] = q.ring[(start+i)%len(q.ring)]
	}
	return s
}

// Restore replaces what was learned by s. It refuses, changing nothing, a
// snapshot of another window (its seconds mean nothing in a ring of
// another length) or one holding rates no second can have.
func (l *Level) Restore(s Snapshot) error {
	q := l.rates
	q.mu.Lock()
	defer q.mu.Unlock()
	if s.WindowS != len(q.ring) {
		return fmt.Errorf("qps window %d s in storage, %d s configured", s.WindowS, len(q.ring))
	}
	if len(s.Rates) > len(q.ring) {
		return fmt.Errorf("qps: %d rates stored for a window of %d s", len(s.Rates), len(q.ring))
	}
	for _, r := range s.Rates {
		if math.IsNaN(r) || math.IsInf(r, 0) || r < 0 {
			return fmt.Errorf("qps: stored rate %v is no rate", r)
		}
	}
	clear(q.ring)
	q.head, q.n, q.sum, q.sq = 0, 0, 0, 0
	for _, r := range s.Rates {
		q.push(r)
	}
	// The threshold is in force at once (the burst check reads it), not
	// from the next whole second.
	q.last = rateSample{Learned: q.n}
	q.last.Baseline, q.last.Threshold = q.learned()
	if q.cfg.MaxRate > 0 && (q.last.Threshold == 0 || q.cfg.MaxRate < q.last.Threshold) {
		q.last.Threshold, q.last.Fixed = q.cfg.MaxRate, true
	}
	return nil
}
