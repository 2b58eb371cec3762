package throttle

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/ai-guardian/adaptivethrottle/admission"
	"github.com/ai-guardian/adaptivethrottle/levels"
	"github.com/ai-guardian/adaptivethrottle/levels/latency"
	"github.com/ai-guardian/adaptivethrottle/levels/qps"
)

// SnapshotVersion is the version of the document Snapshot writes; Restore
// takes no other. (Version 1 named the throttle "instance".)
const SnapshotVersion = 2

// snapshot is the document a restart keeps: what each part learned, each
// in its own package's type. A part with nothing learned is left out.
type snapshot struct {
	Version     int                 `json:"version"`
	Name        string              `json:"name"`
	SavedAt     time.Time           `json:"saved_at"`
	QPS         *qps.Snapshot       `json:"qps,omitempty"`
	Latency     *latency.Snapshot   `json:"latency,omitempty"`
	Concurrency *admission.Snapshot `json:"concurrency,omitempty"`
}

// Snapshot is what the throttle has learned at now, as a versioned JSON
// document that Restore takes back: the QPS baseline's seconds, the
// latency history and floor, the learned concurrency limit. Trips, the
// circuit, counters and overrides are not in it: they describe the moment,
// not the upstream.
func (t *Throttle) Snapshot(now time.Time) ([]byte, error) {
	s := snapshot{Version: SnapshotVersion, Name: t.name, SavedAt: now.UTC()}
	if q := t.qps.Snapshot(); len(q.Rates) > 0 {
		s.QPS = &q
	}
	if l := t.latency.Snapshot(); !l.Empty() {
		s.Latency = &l
	}
	if c, ok := t.limit.Snapshot(); ok {
		s.Concurrency = &c
	}
	return json.Marshal(s)
}

// RestoreInfo says what Restore took: the document's age and the parts
// restored, and why the others were not. A document in which nothing was
// learned restores no part and skips none; status then shows nothing.
type RestoreInfo struct {
	Age     time.Duration
	Parts   []string          // qps, latency, concurrency
	Skipped map[string]string // part → why it was not restored
}

// ErrTooOld is wrapped by Restore's error for a document older than maxAge.
var ErrTooOld = errors.New("stored state too old")

// Restore takes back what a Snapshot of a throttle of the same name held,
// at now, if it was saved within maxAge. A part whose settings changed
// since (the QPS window; the latency window, percentile or measure; a now
// fixed concurrency limit) is skipped and said so in the info; the others
// are restored. A document that is no snapshot of this throttle (bad JSON,
// another version or name, no time, too old) changes nothing and is an
// error.
func (t *Throttle) Restore(data []byte, now time.Time, maxAge time.Duration) (RestoreInfo, error) {
	var s snapshot
	if err := json.Unmarshal(data, &s); err != nil {
		return RestoreInfo{}, fmt.Errorf("stored state is no JSON snapshot: %w", err)
	}
	switch {
	case s.Version != SnapshotVersion:
		return RestoreInfo{}, fmt.Errorf("stored state has version %d, want %d", s.Version, SnapshotVersion)
	case s.Name != t.name:
		return RestoreInfo{}, fmt.Errorf("stored state is of name %q, not %q", s.Name, t.name)
	case s.SavedAt.IsZero():
		return RestoreInfo{}, errors.New("stored state has no saved_at")
	}
	info := RestoreInfo{Age: now.Sub(s.SavedAt), Parts: []string{}, Skipped: map[string]string{}}
	switch {
	case info.Age < -time.Minute:
		return RestoreInfo{}, fmt.Errorf("stored state was saved %v in the future", (-info.Age).Round(time.Second))
	case info.Age > maxAge:
		return RestoreInfo{}, fmt.Errorf("%w: saved %v ago, max_age %v", ErrTooOld, info.Age.Round(time.Second), maxAge)
	}
	info.Age = max(info.Age, 0)
	part := func(name string, present bool, restore func() error) {
		if !present {
			return
		}
		if err := restore(); err != nil {
			info.Skipped[name] = err.Error()
			return
		}
		info.Parts = append(info.Parts, name)
	}
	part("qps", s.QPS != nil, func() error { return t.qps.Restore(*s.QPS) })
	part("latency", s.Latency != nil, func() error { return t.latency.Restore(*s.Latency, now) })
	part("concurrency", s.Concurrency != nil, func() error {
		if err := t.limit.Restore(*s.Concurrency); err != nil {
			return err
		}
		t.mu.Lock()
		pc := t.cfg.Priority
		t.mu.Unlock()
		t.resetGate(pc)
		return nil
	})
	if len(info.Skipped) == 0 {
		info.Skipped = nil
	}
	if len(info.Parts) == 0 && info.Skipped == nil {
		return info, nil // nothing had been learned: nothing to show
	}
	t.restored.Store(&RestoredStatus{AgeS: levels.Round(info.Age.Seconds()), At: now, Parts: info.Parts, Skipped: info.Skipped})
	return info, nil
}

// RestoredStatus is what was restored from storage when the throttle
// started; null in status when nothing was.
type RestoredStatus struct {
	AgeS    float64           `json:"age_s"` // how old the stored state was
	At      time.Time         `json:"at"`    // when it was restored
	Parts   []string          `json:"parts"`
	Skipped map[string]string `json:"skipped,omitempty"` // part → why not
}
