package latency

import (
	"sync"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/config"
)

// window records n responses of duration d spread over the given number of
// one-second periods and returns the last sample.
func window(l *history, now *time.Time, periods int, n int, d time.Duration, learn bool) historySample {
	var s historySample
	for p := range periods {
		per := n / periods
		if p == periods-1 {
			per = n - per*(periods-1)
		}
		for range per {
			l.record(d, 0)
		}
		*now = now.Add(time.Second)
		s = l.sample(*now, learn, 0)
	}
	return s
}

func within(got, want time.Duration) bool {
	diff := got - want
	return diff >= -want/100 && diff <= want/100
}

func TestLatencyWindowPercentileAndHistory(t *testing.T) {
	now := time.Unix(0, 0)
	l := newHistory(Config{Window: config.Duration(5 * time.Second), Percentile: 99, Factor: 2, MinThreshold: config.Duration(time.Millisecond), minSamples: 10})
	l.sample(now, true, 0) // window starts

	for range 4 {
		l.record(100*time.Millisecond, 0)
	}
	now = now.Add(time.Second)
	s := l.sample(now, true, 0)
	if s.Closed || s.ShortCount != 4 || !within(s.Short, 100*time.Millisecond) {
		t.Fatalf("first period: %+v", s)
	}
	s = window(l, &now, 4, 96, 100*time.Millisecond, true)
	if !s.Closed || s.Count != 100 || !within(s.Value, 100*time.Millisecond) {
		t.Fatalf("window: %+v", s)
	}
	if !s.Learning || !within(s.Mean, 100*time.Millisecond) || s.Threshold != 0 {
		t.Fatalf("first healthy window should set the history and have no threshold yet: %+v", s)
	}
	// A window whose P99 is set by a 2% tail of slow responses.
	for range 98 {
		l.record(100*time.Millisecond, 0)
	}
	s = window(l, &now, 5, 2, 300*time.Millisecond, true)
	if !s.Closed || !within(s.Value, 300*time.Millisecond) || !within(s.Threshold, 200*time.Millisecond) {
		t.Fatalf("slow tail: %+v", s)
	}
	if s.Learning || !within(s.Mean, 100*time.Millisecond) {
		t.Fatalf("an unhealthy window taught the history: %+v", s)
	}
	// A healthy window at 150 ms moves the mean by Alpha (0.2): 110 ms.
	s = window(l, &now, 5, 50, 150*time.Millisecond, true)
	if !s.Learning || !within(s.Mean, 110*time.Millisecond) {
		t.Fatalf("EWMA: %+v", s)
	}
}

func TestLatencyLearnsNothingWhenToldNotTo(t *testing.T) {
	now := time.Unix(0, 0)
	l := newHistory(Config{Window: config.Duration(2 * time.Second), minSamples: 10})
	l.sample(now, true, 0)
	if s := window(l, &now, 2, 50, time.Second, false); s.Learning || s.Mean != 0 {
		t.Fatalf("learned while shedding: %+v", s)
	}
	if s := window(l, &now, 2, 5, time.Second, true); s.Learning {
		t.Fatalf("learned from fewer than minSamples: %+v", s)
	}
}

func TestLatencyCeilingAndStuck(t *testing.T) {
	now := time.Unix(0, 0)
	l := newHistory(Config{Window: config.Duration(2 * time.Second), Ceiling: config.Duration(time.Second)})
	l.sample(now, true, 0)
	if s := window(l, &now, 2, 30, 2*time.Second, true); !s.OverCeiling || s.Learning {
		t.Fatalf("over the ceiling: %+v", s)
	}
	// Nothing answered, nothing waiting: an idle window, not a slow one.
	if s := window(l, &now, 2, 0, 0, true); s.Value != 0 || s.Stuck || s.OverCeiling {
		t.Fatalf("idle: %+v", s)
	}
	// Nothing answered while requests waited: judged as the whole window.
	now = now.Add(time.Second)
	l.sample(now, true, 3)
	now = now.Add(time.Second)
	s := l.sample(now, true, 3)
	if !s.Closed || !s.Stuck || s.Value != 2*time.Second || !s.OverCeiling {
		t.Fatalf("stuck: %+v", s)
	}
}

func TestLatencyClampsOutOfRange(t *testing.T) {
	now := time.Unix(0, 0)
	l := newHistory(Config{Window: config.Duration(time.Second)})
	l.sample(now, true, 0)
	l.record(-time.Second, 0)
	l.record(3*time.Hour, 0)
	s := l.sample(now.Add(time.Second), true, 0)
	if s.Count != 2 || s.Value < 59*time.Minute {
		t.Fatalf("out-of-range values lost: %+v", s)
	}
}

func TestLatencyConcurrentRecord(t *testing.T) {
	now := time.Unix(0, 0)
	l := newHistory(Config{Window: config.Duration(time.Second)})
	l.sample(now, true, 0)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 500 {
				l.record(time.Millisecond, 0)
			}
		})
	}
	// The sampler runs while writers write: every record lands in one
	// period or the next, none is lost.
	var total int64
	for range 3 {
		now = now.Add(time.Second)
		total += l.sample(now, true, 0).ShortCount
	}
	wg.Wait()
	now = now.Add(time.Second)
	total += l.sample(now, true, 0).ShortCount
	if total != 4000 {
		t.Fatalf("recorded %d of 4000", total)
	}
}

func BenchmarkLatencyRecord(b *testing.B) {
	l := newHistory(Config{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.record(42*time.Millisecond, 0)
		}
	})
}

// Before any history, the reference is twice the fastest one-second
// median seen; a window during which requests piled up teaches nothing.
func TestLatencyFloorAndSteadyWindows(t *testing.T) {
	now := time.Unix(6000, 0)
	l := newHistory(Config{Window: config.Duration(2 * time.Second), minSamples: 5})
	l.sample(now, true, 0)
	second := func(d time.Duration, inflight int64) historySample {
		for range 10 {
			l.record(d, 0)
		}
		now = now.Add(time.Second)
		return l.sample(now, true, inflight)
	}
	s := second(60*time.Millisecond, 2)
	if !within(s.Floor, 60*time.Millisecond) || s.Reference != 2*s.Floor || s.Mean != 0 {
		t.Fatalf("floor %v reference %v mean %v", s.Floor, s.Reference, s.Mean)
	}
	// The queue grows through the window (2 → 40 in flight): not learned.
	if s = second(3*time.Second, 40); !s.Closed || s.Learning || s.Mean != 0 {
		t.Fatalf("a window with a growing queue was learned: %+v", s)
	}
	if !within(s.Reference, 120*time.Millisecond) {
		t.Fatalf("reference moved with the overload: %v", s.Reference)
	}
	// Steady windows teach the history, which then is the reference.
	second(80*time.Millisecond, 40)
	if s = second(80*time.Millisecond, 40); !s.Learning || s.Reference != s.Mean || !within(s.Mean, 80*time.Millisecond) {
		t.Fatalf("steady window: %+v", s)
	}
	// The floor forgets minutes older than floorMinutes.
	now = now.Add(floorMinutes * time.Minute)
	if s = second(200*time.Millisecond, 40); !within(s.Floor, 200*time.Millisecond) {
		t.Fatalf("floor after %d minutes: %v", floorMinutes, s.Floor)
	}
	l.reset()
	if s = l.sample(now.Add(time.Second), true, 0); s.Floor != 0 || s.Reference != 0 {
		t.Fatalf("reset kept %v / %v", s.Floor, s.Reference)
	}
}
