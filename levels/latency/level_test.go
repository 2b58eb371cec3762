package latency

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/config"
	"github.com/ai-guardian/adaptivethrottle/levels"
)

// sim steps a Level by hand, one second at a time, on a clock of its own.
type sim struct {
	t   *testing.T
	l   *Level
	now time.Time
	trs []breaker.Transition
}

func newSim(t *testing.T, cfg Config) *sim {
	s := &sim{t: t, l: New(cfg), now: time.Unix(1000, 0)}
	s.l.Sample(s.now, levels.Inputs{Second: true, Learn: true}, s.report)
	return s
}

func (s *sim) report(tr breaker.Transition) { s.trs = append(s.trs, tr) }

// second records n answers spread evenly over [median/2, 3·median/2] (so
// the P99 is about 1.5 × the median), then a second passes with inflight
// requests waiting. Learning is frozen while the level sheds, as the
// engine does.
func (s *sim) second(n int, median time.Duration, inflight int64) {
	for i := range n {
		d := median/2 + time.Duration(float64(median)*float64(i)/float64(max(n-1, 1)))
		s.l.Record(d, uint32(i))
	}
	s.now = s.now.Add(time.Second)
	s.l.Sample(s.now, levels.Inputs{Second: true, Learn: !s.l.h.Tripped(), InFlight: inflight}, s.report)
}

func (s *sim) tripped() bool { return s.l.h.Tripped() }

// A recovery is worded like a trip: the recent percentile in milliseconds
// against its threshold, and how many seconds held: a recovery is judged
// on the seconds, not on a whole good window.
func TestLevelRecoveryReason(t *testing.T) {
	s := newSim(t, Config{Window: config.Duration(2 * time.Second), Factor: 1.5, Consecutive: 1,
		MinThreshold: config.Duration(time.Millisecond)})
	// One window of 80 ms makes the history (threshold 120 ms); one of
	// 150 ms is over, not twice over.
	window := func(d time.Duration) {
		for range 2 {
			for range 20 {
				s.l.Record(d, 0)
			}
			s.now = s.now.Add(time.Second)
			s.l.Sample(s.now, levels.Inputs{Second: true, Learn: !s.tripped()}, s.report)
		}
	}
	window(80 * time.Millisecond)
	window(150 * time.Millisecond)
	if len(s.trs) != 1 || !s.trs[0].Tripped {
		t.Fatalf("transitions %+v, want a trip", s.trs)
	}
	// The last two seconds hold the slow one at first: the third recovers.
	window(64 * time.Millisecond)
	window(64 * time.Millisecond)
	if len(s.trs) != 2 || s.trs[1].Tripped {
		t.Fatalf("transitions %+v, want a trip and a recovery", s.trs)
	}
	// The histogram's buckets put 80 ms at 80.6 ms or so.
	if want := `^latency: p99 of the last 2 s 64ms < 0\.9 × 12[01]ms for 2 s$`; !regexp.MustCompile(want).MatchString(s.trs[1].Reason) {
		t.Fatalf("recovery %q, want %s (trip %q)", s.trs[1].Reason, want, s.trs[0].Reason)
	}
}

// Started cold at a steady load that makes time to first byte five times
// what the first, idle second showed (continuous batching at 0.9×
// capacity), the level does not trip: that is a loaded server, healthy.
func TestLevelColdStartAtElevatedTTFBDoesNotTrip(t *testing.T) {
	s := newSim(t, Config{})
	s.second(5, 16*time.Millisecond, 0) // idle: the floor
	for i := range 120 {
		s.second(40, 97*time.Millisecond, 9)
		if s.tripped() {
			t.Fatalf("tripped after %d s at a steady 97 ms: %+v", i+1, s.l.Status(s.now))
		}
	}
	// The history learned the load actually served.
	if st := s.l.Status(s.now); st.HistoryMeanS < 0.1 || st.Threshold < 0.5 {
		t.Fatalf("status %+v", st)
	}
	// The medium lane reads the same threshold: a second at 97 ms is not slow.
	if sec := s.l.LastSecond(); float64(sec.Median) > float64(sec.Reference)*sec.Factor || float64(sec.Reference)*sec.Factor < float64(499*time.Millisecond) {
		t.Fatalf("last second %+v is judged slow", sec)
	}
}

// A slow ramp of load below capacity raises time to first byte from the
// idle floor to several times it; nothing trips.
func TestLevelSlowRampDoesNotTrip(t *testing.T) {
	s := newSim(t, Config{})
	for i := range 300 {
		median := 10*time.Millisecond + time.Duration(i)*time.Millisecond // 10 ms → 310 ms
		s.second(10+i/5, median, int64(1+i/20))
		if s.tripped() {
			t.Fatalf("tripped %d s into a ramp, at a median of %v: %+v", i+1, median, s.l.Status(s.now))
		}
	}
}

// A queue at the upstream that grows without bound (its capacity halved
// under steady load: TTFB climbs by half a second a second) trips the level
// within a few seconds, by the fast path; and once the queue is gone, the
// level recovers within three seconds, although the history was learned at
// light load.
func TestLevelUnboundedQueueTripsAndRecoversQuickly(t *testing.T) {
	s := newSim(t, Config{})
	for range 60 {
		s.second(10, 6*time.Millisecond, 1) // light load: a 6 ms history
	}
	for range 30 {
		s.second(30, 70*time.Millisecond, 8)
	}
	if s.tripped() {
		t.Fatalf("tripped at a steady 70 ms: %+v", s.l.Status(s.now))
	}
	var at int
	for i := 1; i <= 20 && !s.tripped(); i++ {
		s.second(15, 70*time.Millisecond+time.Duration(i)*500*time.Millisecond, int64(8+8*i))
		at = i
	}
	if !s.tripped() || at > 5 {
		t.Fatalf("tripped %v after %d s of a growing queue: %+v", s.tripped(), at, s.l.Status(s.now))
	}
	if r := s.trs[0].Reason; !strings.Contains(r, "median time to first byte") {
		t.Fatalf("trip reason %q", r)
	}
	// The overload goes on while the level sheds, then ends.
	for range 20 {
		s.second(15, 3*time.Second, 60)
	}
	if !s.tripped() {
		t.Fatal("recovered in the middle of the overload")
	}
	for i := 1; i <= 3; i++ {
		s.second(30, 70*time.Millisecond, 8)
		if !s.tripped() {
			return
		}
	}
	t.Fatalf("still tripped 3 s after TTFB came back to 70 ms: %+v", s.l.Status(s.now))
}

// After an overload, an upstream that answers nothing because nothing is
// sent to it is idle, not slow: the level recovers.
func TestLevelRecoversOnAnIdleUpstream(t *testing.T) {
	s := newSim(t, Config{})
	for range 20 {
		s.second(20, 50*time.Millisecond, 4)
	}
	for range 10 {
		s.second(10, 4*time.Second, 40)
	}
	if !s.tripped() {
		t.Fatalf("not tripped: %+v", s.l.Status(s.now))
	}
	s.second(0, 0, 0)
	s.second(0, 0, 0)
	if s.second(0, 0, 0); s.tripped() {
		t.Fatalf("still tripped after 3 idle seconds: %+v", s.l.Status(s.now))
	}
	// A hung upstream (requests waiting, none answered) is no recovery.
	for range 10 {
		s.second(10, 4*time.Second, 40)
	}
	for range 10 {
		if s.second(0, 0, 5); !s.tripped() {
			t.Fatal("recovered while requests waited and none was answered")
		}
	}
}

// With an slo, the level trips when the recent percentile misses it, never
// on one slow answer, and lets go as soon as it is met again.
func TestLevelSLO(t *testing.T) {
	s := newSim(t, Config{SLO: config.Duration(2 * time.Second)})
	// Steady answers at 1.2 s (P99 1.8 s), each second one outlier at 5 s.
	for i := range 60 {
		for range 1 {
			s.l.Record(5*time.Second, 0)
		}
		s.second(50, 1200*time.Millisecond, 20)
		if s.tripped() {
			t.Fatalf("tripped after %d s within the slo: %+v", i+1, s.l.Status(s.now))
		}
	}
	// 10% of answers at 3 s: the P99 misses the slo.
	var at int
	for i := 1; i <= 5 && !s.tripped(); i++ {
		for range 6 {
			s.l.Record(3*time.Second, 0)
		}
		s.second(50, 1200*time.Millisecond, 20)
		at = i
	}
	if !s.tripped() || at > 3 {
		t.Fatalf("tripped %v after %d s missing the slo: %+v", s.tripped(), at, s.l.Status(s.now))
	}
	if r := s.trs[0].Reason; !strings.Contains(r, "> slo 2s") {
		t.Fatalf("trip reason %q", r)
	}
	for range 10 {
		for range 6 {
			s.l.Record(3*time.Second, 0)
		}
		s.second(50, 1200*time.Millisecond, 20)
	}
	if !s.tripped() {
		t.Fatal("recovered while the slo was missed")
	}
	for i := 1; i <= 3; i++ {
		if s.second(50, 1000*time.Millisecond, 20); !s.tripped() {
			if r := s.trs[len(s.trs)-1].Reason; !strings.Contains(r, "< 0.9 × 2s for 2 s") {
				t.Fatalf("recovery reason %q", r)
			}
			if st := s.l.Status(s.now); st.SLOS != 2 || st.Threshold != 2 {
				t.Fatalf("status %+v", st)
			}
			return
		}
	}
	t.Fatalf("still tripped 3 s after the slo was met: %+v", s.l.Status(s.now))
}

// The slo is judged on the seconds, not on the history: a steady load far
// above the idle floor but within the objective does not trip it, and one
// far above the objective trips it within seconds from a cold start.
func TestLevelSLOFromColdStart(t *testing.T) {
	s := newSim(t, Config{SLO: config.Duration(500 * time.Millisecond)})
	s.second(5, 10*time.Millisecond, 0)
	for range 30 {
		s.second(40, 200*time.Millisecond, 8)
	}
	if s.tripped() {
		t.Fatalf("tripped within the slo: %+v", s.l.Status(s.now))
	}
	s.second(40, 900*time.Millisecond, 30)
	s.second(40, 1500*time.Millisecond, 50)
	if !s.tripped() {
		t.Fatalf("not tripped two seconds past the slo: %+v", s.l.Status(s.now))
	}
}

func TestConfigValidateNamesKeys(t *testing.T) {
	cases := []struct {
		c   Config
		msg string
	}{
		{Config{SLO: config.Duration(-time.Second)}, "latency: slo must be a positive duration"},
		{Config{SLO: 1}, "latency: slo must be at least 1ms"},
		{Config{SLO: config.Duration(10 * time.Second), Ceiling: config.Duration(5 * time.Second)}, "latency: slo 10s must not be above the ceiling 5s"},
		{Config{MinThreshold: config.Duration(-time.Second)}, "latency: min_threshold must be a positive duration"},
		{Config{MinThreshold: config.Duration(time.Second), Ceiling: config.Duration(500 * time.Millisecond)}, "latency: min_threshold 1s must not be above the ceiling 500ms"},
	}
	for _, c := range cases {
		if err := c.c.Validate(); err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%+v: %v, want %q", c.c, err, c.msg)
		}
	}
	ok := []Config{{SLO: config.Duration(2 * time.Second)}, {SLO: config.Duration(10 * time.Second)},
		{SLO: config.Duration(time.Second), Ceiling: config.Duration(time.Second)}, {Ceiling: config.Duration(100 * time.Millisecond)}}
	for _, c := range ok {
		if err := c.Validate(); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
	// A slo above the default ceiling raises it; a ceiling below the
	// default allowance lowers the allowance.
	c := Config{SLO: config.Duration(10 * time.Second)}
	c.Defaults()
	if c.Ceiling.D() != 20*time.Second || c.MinThreshold.D() != DefaultMinThreshold {
		t.Errorf("defaults with slo 10s: %+v", c)
	}
	c = Config{Ceiling: config.Duration(150 * time.Millisecond)}
	c.Defaults()
	if c.MinThreshold.D() != 150*time.Millisecond {
		t.Errorf("defaults with ceiling 150ms: %+v", c)
	}
}
