package qps

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/config"
	"github.com/ai-guardian/adaptivethrottle/levels"
)

// stepper drives a Level one second at a time.
type stepper struct {
	l        *Level
	now      time.Time
	arrivals uint64
	trs      []breaker.Transition
}

func newStepper(l *Level) *stepper {
	s := &stepper{l: l, now: time.Unix(1000, 0)}
	s.second(0)
	return s
}

func (s *stepper) second(rate uint64) {
	s.now, s.arrivals = s.now.Add(time.Second), s.arrivals+rate
	s.l.Sample(s.now, levels.Inputs{Second: true, Learn: !s.l.h.Tripped(), Arrivals: s.arrivals},
		func(tr breaker.Transition) { s.trs = append(s.trs, tr) })
}

// A restored level judges at once against the baseline it had learned: an
// overload that a fresh level, warming up, lets through trips it within two
// seconds. The ring comes back in order, the oldest second first, also
// once it has wrapped.
func TestSnapshotRestoreTripsAtOnce(t *testing.T) {
	cfg := Config{Window: config.Duration(20 * time.Second), Warmup: 10}
	old := newStepper(New(cfg))
	for i := range 25 { // wraps the 20-slot ring
		old.second(uint64(10 + i%3))
	}
	snap := old.l.Snapshot()
	if snap.WindowS != 20 || len(snap.Rates) != 20 || snap.Rates[0] != 10+float64(5%3) || snap.Rates[19] != 10+float64(24%3) {
		t.Fatalf("snapshot %+v: want the last 20 seconds, oldest first", snap)
	}
	b, err := json.Marshal(snap)
	if err != nil {
		t.Fatal(err)
	}
	var back Snapshot
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}

	restored, fresh := New(cfg), New(cfg)
	if err := restored.Restore(back); err != nil {
		t.Fatal(err)
	}
	want := old.l.Status(old.now)
	if got := restored.Status(old.now); got.Baseline != want.Baseline || got.LearnedS != 20 || got.Threshold != 0 && got.Threshold != want.Threshold {
		t.Fatalf("restored status %+v, want the baseline %v of %+v", got, want.Baseline, want)
	}
	if th := restored.rates.lastSample().Threshold; th == 0 {
		t.Fatal("no threshold in force right after the restore: the burst check would wait a second")
	}
	r, f := newStepper(restored), newStepper(fresh)
	for range 2 {
		r.second(40)
		f.second(40)
	}
	if !restored.h.Tripped() {
		t.Fatalf("restored level not tripped by 40 req/s against a baseline of %v", want.Baseline)
	}
	if fresh.h.Tripped() {
		t.Fatal("a fresh level, warming up, tripped")
	}
}

// A snapshot of another window, or with rates no second has, is refused
// and changes nothing.
func TestRestoreRefuses(t *testing.T) {
	l := New(Config{Window: config.Duration(30 * time.Second)})
	s := newStepper(l)
	s.second(7)
	s.second(7)
	for _, c := range []struct {
		snap Snapshot
		want string
	}{
		{Snapshot{WindowS: 300, Rates: []float64{1, 2}}, "qps window 300 s in storage, 30 s configured"},
		{Snapshot{WindowS: 30, Rates: make([]float64, 31)}, "31 rates"},
		{Snapshot{WindowS: 30, Rates: []float64{1, -2}}, "no rate"},
	} {
		err := l.Restore(c.snap)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Restore(%+v) = %v, want %q", c.snap, err, c.want)
		}
	}
	if got := l.Snapshot(); len(got.Rates) != 2 || got.Rates[0] != 7 {
		t.Fatalf("a refused restore changed the ring: %+v", got)
	}
}
