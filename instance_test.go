package adaptivethrottle

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"go.uber.org/zap"

	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/priority"
	"github.com/ai-guardian/adaptivethrottle/sensors/gpu"
)

// testInstance builds an instance with nothing running; the test ticks it.
func testInstance(t *testing.T, h *Handler) *instance {
	t.Helper()
	if h.GPU == nil {
		h.GPU = &GPUConfig{Source: "off"}
	}
	s, err := h.settings()
	if err != nil {
		t.Fatal(err)
	}
	return buildInstance("test", s, zap.NewNop())
}

// steady ticks the instance for the given seconds at rate requests a
// second, from *now.
func steady(in *instance, now *time.Time, seconds, rate int) {
	for range seconds {
		arrive(in, rate)
		*now = now.Add(time.Second)
		in.tick(*now)
	}
}

// answered records n responses of d, then one second passes.
func answered(in *instance, now *time.Time, n int, d time.Duration) {
	for range n {
		in.latency.Record(d)
	}
	*now = now.Add(time.Second)
	in.tick(*now)
}

// arrive makes n requests come and go, as the request path counts them:
// one verdict each (medium, passed) and one finish.
func arrive(in *instance, n int) {
	for range n {
		in.verdicts[priority.Medium][priority.Pass].Inc()
		in.finished.Inc()
	}
}

func TestQPSSurgeShedsAndRecovers(t *testing.T) {
	in := testInstance(t, &Handler{QPS: &QPSConfig{Warmup: 10}})
	now := time.Unix(1000, 0)
	in.tick(now)
	steady(in, &now, 20, 10)
	if in.shedding(now) {
		t.Fatal("shedding at the learned rate")
	}
	baseline := in.qps.Last().Baseline

	// One busy second (above the threshold of 15) is noise; the second
	// one trips.
	arrive(in, 25)
	now = now.Add(time.Second)
	in.tick(now)
	if in.shedding(now) {
		t.Fatal("tripped on a single busy second")
	}
	arrive(in, 25)
	now = now.Add(time.Second)
	in.tick(now)
	if !in.shedding(now) || in.shedCause() != levelQPS {
		t.Fatalf("not shedding after two seconds at 2.5× the baseline: %+v", in.levels[levelQPS].Status(now))
	}
	if v := in.lanes.Admit(priority.Low, in.shedding(now), now); v != priority.ShedLow {
		t.Fatalf("low while shedding: %v", v)
	}
	// The surge goes on: the baseline must not learn it.
	steady(in, &now, 20, 40)
	if got := in.qps.Last().Baseline; got != baseline || !in.shedding(now) {
		t.Fatalf("baseline moved from %v to %v during the surge (shedding %v)", baseline, got, in.shedding(now))
	}
	if until := time.Duration(in.shedAt.Load() - now.UnixNano()); until <= 0 {
		t.Fatalf("no recovery estimate while shedding: %v", until)
	}
	// Load back to normal: three good seconds recover it.
	for i := range 3 {
		arrive(in, 10)
		now = now.Add(time.Second)
		in.tick(now)
		if i < 2 && !in.shedding(now) {
			t.Fatalf("recovered after %d good seconds", i+1)
		}
	}
	if in.shedding(now) {
		t.Fatalf("still shedding after the surge: %+v", in.levels[levelQPS].Status(now))
	}
	if st := in.levels[levelQPS].Status(now); st.Transitions != 2 {
		t.Fatalf("one episode made %d transitions", st.Transitions)
	}
}

// A second at more than twice the threshold is no noise: it trips at once.
func TestQPSFarAboveTripsAtOnce(t *testing.T) {
	in := testInstance(t, &Handler{QPS: &QPSConfig{Warmup: 10}})
	now := time.Unix(1000, 0)
	in.tick(now)
	steady(in, &now, 20, 10)
	arrive(in, 31) // threshold 15: above 2 × 15
	now = now.Add(time.Second)
	in.tick(now)
	if !in.shedding(now) {
		t.Fatalf("3× the baseline for a second did not trip: %+v", in.levels[levelQPS].Status(now))
	}
}

func TestGPUReadingsAndOnError(t *testing.T) {
	in := testInstance(t, &Handler{GPU: &GPUConfig{Source: "off", OnError: "shed"}})
	now := time.Unix(1000, 0)
	in.onGPU(gpu.Reading{Source: "nvidia-smi", Available: true, Value: 0.5, Threshold: 0.75, At: now})
	if in.shedding(now) {
		t.Fatal("50% of memory tripped")
	}
	now = now.Add(2 * time.Second)
	in.onGPU(gpu.Reading{Source: "nvidia-smi", Available: true, Value: 0.9, Threshold: 0.75, At: now})
	if !in.shedding(now) || in.shedCause() != levelGPU {
		t.Fatal("90% of memory did not trip")
	}
	if r := in.levels[levelGPU].Status(now).LastReason; r != "gpu nvidia-smi 90.0% > 75.0%" {
		t.Fatalf("reason %q", r)
	}
	for range 4 {
		now = now.Add(2 * time.Second)
		in.onGPU(gpu.Reading{Source: "nvidia-smi", Available: true, Value: 0.3, Threshold: 0.75, At: now})
	}
	if in.shedding(now) {
		t.Fatal("did not recover at 30%")
	}
	// on_error shed: a failing source trips at once, with its reason.
	now = now.Add(2 * time.Second)
	in.onGPU(gpu.Reading{Source: "nvidia-smi", Reason: "exit status 9", Threshold: 0.75, At: now})
	if !in.shedding(now) {
		t.Fatal("an unreadable source under on_error shed did not trip")
	}
	if r := in.levels[levelGPU].Status(now).LastReason; r != "gpu source unavailable (on_error shed): exit status 9" {
		t.Fatalf("reason %q", r)
	}

	// on_error allow: the same failure is no pressure.
	allow := testInstance(t, &Handler{GPU: &GPUConfig{Source: "off"}})
	allow.onGPU(gpu.Reading{Source: "nvidia-smi", Reason: "exit status 9", Threshold: 0.75, At: now})
	if allow.shedding(now) {
		t.Fatal("an unreadable source under on_error allow tripped")
	}
}

func TestMediumLaneFollowsUpstreamHealth(t *testing.T) {
	in := testInstance(t, &Handler{})
	now := time.Unix(1000, 0)
	in.tick(now)
	// Healthy and not shedding: the lane tracks what the upstream serves.
	steady(in, &now, 20, 20)
	if r := in.lanes.Bucket.Limit(); r != 20 {
		t.Fatalf("medium rate %v, want the served 20 req/s", r)
	}
	// Shedding, and the circuit says the upstream is failing: decrease.
	in.setOverride("shed", now, time.Time{})
	for range 25 {
		tk, _, _ := in.circuit.Allow(now)
		in.circuit.Done(now, tk, true)
	}
	if in.circuit.State() != breaker.Open {
		t.Fatal("circuit did not open")
	}
	arrive(in, 20)
	now = now.Add(time.Second)
	in.tick(now)
	if r := in.lanes.Bucket.Limit(); r != 18 {
		t.Fatalf("medium rate %v after a congested second, want 20 × 0.9", r)
	}
}

func TestApplyKeepsWhatWasLearned(t *testing.T) {
	in := testInstance(t, &Handler{QPS: &QPSConfig{Warmup: 3}})
	now := time.Unix(1000, 0)
	in.tick(now)
	steady(in, &now, 5, 10)
	tripFactor := func(f float64) settings {
		s, err := (&Handler{QPS: &QPSConfig{Warmup: 3, TripFactor: f}, GPU: &GPUConfig{Source: "off"}}).settings()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if err := in.apply(tripFactor(3), zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	if in.qps.Learned() != 5 {
		t.Fatalf("learned %d after a threshold change", in.qps.Learned())
	}
	arrive(in, 10)
	now = now.Add(time.Second)
	in.tick(now)
	if q := in.qps.Last(); q.Threshold != 3*q.Baseline {
		t.Fatalf("new trip factor not applied: %+v", q)
	}
}

// Latency trips after `consecutive` bad windows, or at once on a window
// more than twice over its threshold.
func TestLatencyConsecutiveAndFarAbove(t *testing.T) {
	in := testInstance(t, &Handler{Latency: &LatencyConfig{Window: caddy.Duration(time.Second), Consecutive: 2, Factor: 2}})
	now := time.Unix(1000, 0)
	in.tick(now)
	window := func(d time.Duration) { answered(in, &now, 30, d) }
	window(100 * time.Millisecond) // history: 100 ms, threshold 200 ms
	window(300 * time.Millisecond) // bad, 1 of 2
	if in.shedding(now) {
		t.Fatal("tripped after one bad window")
	}
	window(300 * time.Millisecond)
	if !in.shedding(now) {
		t.Fatal("not tripped after two bad windows")
	}

	far := testInstance(t, &Handler{Latency: &LatencyConfig{Window: caddy.Duration(time.Second), Consecutive: 3, Factor: 2}})
	in, now = far, now.Add(time.Hour)
	in.tick(now)
	window(100 * time.Millisecond)
	window(450 * time.Millisecond) // over 2 × 200 ms
	if !in.shedding(now) || !strings.Contains(in.levels[levelLatency].Status(now).LastReason, "twice") {
		t.Fatalf("a window far above its threshold did not trip at once: %+v", in.levels[levelLatency].Status(now))
	}
}

// Between full ticks, a quarter-second burst at more than twice the QPS
// threshold trips at once; a milder one waits for the tick.
func TestQPSBurstCheck(t *testing.T) {
	in := testInstance(t, &Handler{QPS: &QPSConfig{Warmup: 10}})
	now := time.Unix(1000, 0)
	in.tick(now)
	steady(in, &now, 20, 10)
	// threshold 15 req/s: 6 arrivals in 250 ms is 24 req/s, under 2 × 15.
	arrive(in, 6)
	now = now.Add(250 * time.Millisecond)
	in.burst(now)
	if in.shedding(now) {
		t.Fatal("a mild burst tripped between ticks")
	}
	arrive(in, 8) // 32 req/s
	now = now.Add(250 * time.Millisecond)
	in.burst(now)
	if !in.shedding(now) || !strings.Contains(in.levels[levelQPS].Status(now).LastReason, "burst") {
		t.Fatalf("a burst at 32 req/s did not trip: %+v", in.levels[levelQPS].Status(now))
	}
}

// A gateway started in the middle of an overload has no history: the
// fast path judges against twice the fastest second it saw, and trips.
func TestColdStartOverloadTrips(t *testing.T) {
	in := testInstance(t, &Handler{})
	now := time.Unix(1000, 0)
	in.tick(now)
	second := func(d time.Duration) { answered(in, &now, 10, d) }
	second(65 * time.Millisecond) // the first second: no queue yet
	second(300 * time.Millisecond)
	second(900 * time.Millisecond) // over 2 × 1.8 × 130 ms
	if in.shedding(now) {
		t.Fatal("tripped after one slow second")
	}
	second(1800 * time.Millisecond)
	if !in.shedding(now) || in.shedCause() != levelLatency {
		t.Fatalf("an overload from the start did not trip: %+v", in.levels[levelLatency].Status(now))
	}
}

// A reload that reopens the GPU source, or the last cleanup, holds the
// instance's lock while it waits for the GPU sensor's goroutine to stop: a
// reading delivered at that moment must not wait for the lock, or both wait
// for ever.
func TestGPUReadingNeverWaitsForTheConfigLock(t *testing.T) {
	in := testInstance(t, &Handler{GPU: &GPUConfig{Source: "off", OnError: "shed"}})
	now := time.Unix(1000, 0)
	in.mu.Lock()
	delivered := make(chan struct{})
	go func() {
		defer close(delivered)
		in.onGPU(gpu.Reading{Source: "nvidia-smi", Reason: "exit status 9", At: now})
	}()
	select {
	case <-delivered:
	case <-time.After(10 * time.Second):
		t.Fatal("a GPU reading waited for the lock a reload holds while it stops the sensor: deadlock")
	}
	in.mu.Unlock()
	if !in.levels[levelGPU].Tripped() {
		t.Fatal("an unreadable source under on_error shed did not trip the GPU level")
	}
}
