package latency

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/config"
)

// mixed records a second of answers: most at fast, a tenth at slow, so
// the median stays at fast and the P99 is slow.
func (s *sim) mixed(n int, fast, slow time.Duration) {
	for i := range n {
		d := fast
		if i%10 == 9 {
			d = slow
		}
		s.l.Record(d, uint32(i))
	}
	s.second(0, 0, 0)
}

// A restored level judges its first window against the history it had
// learned: a tail of 1.5 s answers behind a 300 ms median trips it at the
// first window, while a fresh level, with no history yet, does not judge
// the window at all (and would learn the overload as its normal).
func TestSnapshotRestoreTripsAtOnce(t *testing.T) {
	cfg := Config{Window: config.Duration(2 * time.Second)}
	old := newSim(t, cfg)
	for range 10 {
		old.second(40, 100*time.Millisecond, 0)
	}
	snap := old.l.Snapshot()
	if snap.HistoryMeanS == 0 || len(snap.Floors) != 1 || snap.WindowS != 2 || snap.Percentile != 99 || snap.Measure != "ttfb" {
		t.Fatalf("snapshot %+v: want a history, one minute's floor and the settings", snap)
	}
	b, _ := json.Marshal(snap)
	var back Snapshot
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}

	restored, fresh := newSim(t, cfg), newSim(t, cfg)
	restored.now, fresh.now = old.now.Add(time.Minute), old.now.Add(time.Minute)
	if err := restored.l.Restore(back, restored.now); err != nil {
		t.Fatal(err)
	}
	if got := restored.l.Snapshot(); got.HistoryMeanS != snap.HistoryMeanS || len(got.Floors) != 1 || got.Floors[0] != snap.Floors[0] {
		t.Fatalf("restored %+v, want %+v", got, snap)
	}
	for range 2 {
		restored.mixed(40, 300*time.Millisecond, 1500*time.Millisecond)
		fresh.mixed(40, 300*time.Millisecond, 1500*time.Millisecond)
	}
	if !restored.tripped() {
		t.Fatalf("restored level not tripped by a P99 of 1.5 s against a history of %gs", snap.HistoryMeanS)
	}
	if fresh.tripped() {
		t.Fatal("a fresh level tripped: the test shows nothing")
	}
}

// Floors older than the last 10 minutes are dropped; a snapshot of another
// window, percentile or measure is refused and changes nothing.
func TestRestoreRefusesOtherSettings(t *testing.T) {
	cfg := Config{Window: config.Duration(2 * time.Second)}
	s := newSim(t, cfg)
	now := time.Unix(6000, 0) // minute 100
	good := Snapshot{WindowS: 2, Percentile: 99, Measure: "ttfb", HistoryMeanS: 0.2,
		Floors: []Floor{{Minute: 85, S: 0.01}, {Minute: 95, S: 0.05}, {Minute: 100, S: 0.08}}}
	if err := s.l.Restore(good, now); err != nil {
		t.Fatal(err)
	}
	if got := s.l.Snapshot(); len(got.Floors) != 2 || got.Floors[0].Minute != 95 || s.l.hist.floor() != 50*time.Millisecond {
		t.Fatalf("floors after the restore %+v (floor %v): want minutes 95 and 100", got.Floors, s.l.hist.floor())
	}
	for _, c := range []struct {
		edit func(*Snapshot)
		want string
	}{
		{func(x *Snapshot) { x.WindowS = 10 }, "latency window 10s in storage, 2s configured"},
		{func(x *Snapshot) { x.Percentile = 95 }, "latency percentile 95 in storage, 99 configured"},
		{func(x *Snapshot) { x.Measure = "total" }, `latency measure "total" in storage, "ttfb" configured`},
		{func(x *Snapshot) { x.HistoryMeanS = -1 }, "no time"},
		{func(x *Snapshot) { x.Floors = []Floor{{Minute: 100, S: 1e9}} }, "no time"},
	} {
		bad := good
		bad.HistoryMeanS = 0.9
		c.edit(&bad)
		err := s.l.Restore(bad, now)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Restore(%+v) = %v, want %q", bad, err, c.want)
		}
	}
	if s.l.hist.historyMean() != 200*time.Millisecond {
		t.Fatalf("a refused restore changed the history: %v", s.l.hist.historyMean())
	}
}
