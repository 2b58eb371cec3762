package qps

import (
	"math"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/config"
)

// counted is a baseline with the arrivals counted as the engine counts
// them for it.
type counted struct {
	*rates
	total uint64
}

func newCounted(cfg Config) *counted { return &counted{rates: newRates(cfg)} }

func (q *counted) Sample(now time.Time, learn bool) rateSample { return q.sample(now, q.total, learn) }

// feed makes n arrivals and closes a one-second period at *now.
func feed(q *counted, now *time.Time, n int, learn bool) rateSample {
	q.total += uint64(n)
	*now = now.Add(time.Second)
	return q.Sample(*now, learn)
}

func TestQPSRateAndBaseline(t *testing.T) {
	now := time.Unix(0, 0)
	q := newCounted(Config{Window: config.Duration(time.Minute), Sigma: 2, TripFactor: 1.5, MinBaseline: 5, Warmup: 10})
	q.Sample(now, true) // opens the first period
	var s rateSample
	for i := range 10 {
		// alternate 18 and 22 req/s: mean 20, σ 2
		s = feed(q, &now, 18+4*(i%2), true)
	}
	if s.Learned != 10 {
		t.Fatalf("learned %d", s.Learned)
	}
	if s.Rate != 22 {
		t.Fatalf("rate %v, want 22", s.Rate)
	}
	if math.Abs(s.Baseline-24) > 1e-9 || math.Abs(s.Threshold-36) > 1e-9 {
		t.Fatalf("baseline %v threshold %v, want 24 and 36", s.Baseline, s.Threshold)
	}
}

func TestQPSNoThresholdDuringWarmup(t *testing.T) {
	now := time.Unix(0, 0)
	q := newCounted(Config{Window: config.Duration(time.Minute), Warmup: 5})
	q.Sample(now, true)
	for range 4 {
		if s := feed(q, &now, 100, true); s.Threshold != 0 {
			t.Fatalf("threshold %v before warm-up", s.Threshold)
		}
	}
	if s := feed(q, &now, 100, true); s.Threshold == 0 {
		t.Fatal("no threshold after warm-up")
	}
}

func TestQPSMinBaselineAndLimit(t *testing.T) {
	now := time.Unix(0, 0)
	q := newCounted(Config{Window: config.Duration(time.Minute), MinBaseline: 5, TripFactor: 1.5, Warmup: 3})
	q.Sample(now, true)
	var s rateSample
	for range 3 {
		s = feed(q, &now, 1, true)
	}
	if s.Baseline != 5 || s.Threshold != 7.5 {
		t.Fatalf("quiet traffic: baseline %v threshold %v, want the floor 5 and 7.5", s.Baseline, s.Threshold)
	}
	q.setConfig(Config{Window: config.Duration(time.Minute), MinBaseline: 5, TripFactor: 1.5, Warmup: 3, MaxRate: 4})
	if s = feed(q, &now, 1, true); s.Threshold != 4 {
		t.Fatalf("a fixed limit below the learned threshold: %v", s.Threshold)
	}
	fresh := newCounted(Config{MaxRate: 50})
	fresh.Sample(now, true)
	if s := feed(fresh, &now, 1, true); s.Threshold != 50 {
		t.Fatalf("the fixed limit applies during warm-up: %v", s.Threshold)
	}
}

func TestQPSFrozenWhileShedding(t *testing.T) {
	now := time.Unix(0, 0)
	q := newCounted(Config{Window: config.Duration(time.Minute), Warmup: 5})
	q.Sample(now, true)
	var before rateSample
	for range 10 {
		before = feed(q, &now, 10, true)
	}
	var during rateSample
	for range 30 {
		during = feed(q, &now, 100, false)
	}
	if during.Rate != 100 || during.Learning {
		t.Fatalf("during overload: %+v", during)
	}
	if during.Baseline != before.Baseline || during.Learned != before.Learned {
		t.Fatalf("overload leaked into the baseline: before %+v during %+v", before, during)
	}
}

func TestQPSWindowSlides(t *testing.T) {
	now := time.Unix(0, 0)
	q := newCounted(Config{Window: config.Duration(10 * time.Second), Sigma: 0.001, MinBaseline: 1, Warmup: 10})
	q.Sample(now, true)
	for range 10 {
		feed(q, &now, 10, true)
	}
	var s rateSample
	for range 10 { // 14 stays below the threshold (15 and rising), so it is learned
		s = feed(q, &now, 14, true)
	}
	if s.Learned != 10 || math.Abs(s.Baseline-14) > 0.01 {
		t.Fatalf("old samples did not age out: %+v", s)
	}
}

func TestQPSSetConfigForgetsOnNewWindow(t *testing.T) {
	now := time.Unix(0, 0)
	q := newCounted(Config{Window: config.Duration(time.Minute)})
	q.Sample(now, true)
	for range 5 {
		feed(q, &now, 10, true)
	}
	if q.setConfig(Config{Window: config.Duration(time.Minute), Sigma: 3}) {
		t.Fatal("same window forgot the baseline")
	}
	if q.learnedSeconds() != 5 {
		t.Fatalf("learned %d after a threshold change", q.learnedSeconds())
	}
	if !q.setConfig(Config{Window: config.Duration(2 * time.Minute)}) || q.learnedSeconds() != 0 {
		t.Fatal("a new window kept a baseline of the wrong length")
	}
	feed(q, &now, 10, true)
	q.reset()
	if q.learnedSeconds() != 0 {
		t.Fatal("Reset kept samples")
	}
}

// The first seconds of a surge, before the level trips on them, stay out of
// the baseline; growth below the threshold is learned.
func TestQPSSpikesAboveThresholdAreNotLearned(t *testing.T) {
	now := time.Unix(0, 0)
	q := newCounted(Config{Window: config.Duration(time.Minute), Warmup: 10, MinBaseline: 1})
	q.Sample(now, true)
	var s rateSample
	for range 10 {
		s = feed(q, &now, 10, true)
	}
	if s.Threshold != 15 {
		t.Fatalf("threshold %v", s.Threshold)
	}
	if s = feed(q, &now, 40, true); s.Learning || s.Threshold != 15 {
		t.Fatalf("a spike to 40 was learned: %+v", s)
	}
	if s = feed(q, &now, 14, true); !s.Learning || s.Threshold <= 15 {
		t.Fatalf("growth to 14, below the threshold, was not learned: %+v", s)
	}
}
