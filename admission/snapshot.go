package admission

import (
	"fmt"
	"math"
	"time"
)

// Snapshot is what the limit has learned, as a restart keeps it: the limit
// and the long-run average time to first byte it is judged against.
type Snapshot struct {
	Limit     float64 `json:"limit"`
	TTFBLongS float64 `json:"ttfb_long_s"`
}

// Snapshot returns the learned limit; ok is false when there is nothing to
// keep (a fixed limit, or no first byte judged yet).
func (l *Limit) Snapshot() (s Snapshot, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cfg.Limit > 0 || l.long == 0 {
		return Snapshot{}, false
	}
	return Snapshot{Limit: l.limit, TTFBLongS: l.long / 1e9}, true
}

// Restore takes a learned limit (within the configured bounds) and its
// long-run average. The limit was learned, so it is probed from, not
// doubled as at a cold start. It refuses, changing nothing, when the limit
// is fixed or s holds values no limit can have.
func (l *Limit) Restore(s Snapshot) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.cfg.Limit > 0:
		return fmt.Errorf("concurrency limit is fixed at %d: nothing to restore", l.cfg.Limit)
	case !(s.Limit >= 1 && s.Limit <= 1e9):
		return fmt.Errorf("concurrency: stored limit %v is no limit", s.Limit)
	case !(s.TTFBLongS > 0 && s.TTFBLongS <= time.Hour.Seconds()):
		return fmt.Errorf("concurrency: stored ttfb_long_s %v is no time", s.TTFBLongS)
	}
	l.start()
	l.limit, l.long = l.clamp(s.Limit), math.Round(s.TTFBLongS*1e9)
	l.slowStart, l.why = false, "restored"
	return nil
}
