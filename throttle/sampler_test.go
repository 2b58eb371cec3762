package throttle

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/ai-guardian/adaptivethrottle/admission"
	"github.com/ai-guardian/adaptivethrottle/config"
	"github.com/ai-guardian/adaptivethrottle/levels"
	"github.com/ai-guardian/adaptivethrottle/levels/latency"
	"github.com/ai-guardian/adaptivethrottle/levels/qps"
	"github.com/ai-guardian/adaptivethrottle/priority"
)

// testThrottle builds a throttle with nothing running and the GPU level
// off; the test steps it.
func testThrottle(t *testing.T, c Config) *Throttle {
	t.Helper()
	if c.GPU.Source == "" {
		c.GPU.Source = "off"
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.Defaults()
	th, err := build("test", c, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	return th
}

// steady steps the throttle for the given seconds at rate requests a
// second, from *now.
func steady(th *Throttle, now *time.Time, seconds, rate int) {
	for range seconds {
		arrive(th, rate)
		*now = now.Add(time.Second)
		th.step(*now, true)
	}
}

// answered records n responses of d, then one second passes.
func answered(th *Throttle, now *time.Time, n int, d time.Duration) {
	for i := range n {
		th.latency.Record(d, uint32(i))
	}
	*now = now.Add(time.Second)
	th.step(*now, true)
}

// arrive makes n requests come and go, as the request path counts them:
// one verdict each (medium, passed) and one finish.
func arrive(th *Throttle, n int) {
	for range n {
		th.verdicts[priority.Medium][priority.Pass].Add(0)
		th.finished.Add(0)
	}
}

func TestQPSSurgeShedsAndRecovers(t *testing.T) {
	th := testThrottle(t, Config{QPS: qps.Config{Warmup: 10}})
	now := time.Unix(1000, 0)
	th.step(now, true)
	steady(th, &now, 20, 10)
	if th.shedding(now) {
		t.Fatal("shedding at the learned rate")
	}
	baseline := th.qps.Status(now).Baseline

	// One busy second (above the threshold of 15) is noise; the second
	// one trips.
	arrive(th, 25)
	now = now.Add(time.Second)
	th.step(now, true)
	if th.shedding(now) {
		t.Fatal("tripped on a single busy second")
	}
	arrive(th, 25)
	now = now.Add(time.Second)
	th.step(now, true)
	if !th.shedding(now) || th.shedCause() != levelQPS {
		t.Fatalf("not shedding after two seconds at 2.5× the baseline: %+v", th.qps.Status(now))
	}
	for range th.gate.Limit() - th.gate.Reserve() {
		th.gate.Force() // no slot free for low: it is refused at once
	}
	if d := th.Admit(context.Background(), priority.Low, InstantOf(now)); d.Verdict() != priority.ShedLow || d.Cause() != "qps" {
		t.Fatalf("low while shedding: %v %s", d.Verdict(), d.Cause())
	}
	for range th.gate.Limit() - th.gate.Reserve() {
		th.gate.Release(false)
	}
	// The surge goes on: the baseline must not learn it.
	steady(th, &now, 20, 40)
	if got := th.qps.Status(now).Baseline; got != baseline || !th.shedding(now) {
		t.Fatalf("baseline moved from %v to %v during the surge (shedding %v)", baseline, got, th.shedding(now))
	}
	if until := time.Duration(th.shedUntil.Load() - now.UnixNano()); until <= 0 {
		t.Fatalf("no recovery estimate while shedding: %v", until)
	}
	// Load back to normal: three good seconds recover it.
	for i := range 3 {
		arrive(th, 10)
		now = now.Add(time.Second)
		th.step(now, true)
		if i < 2 && !th.shedding(now) {
			t.Fatalf("recovered after %d good seconds", i+1)
		}
	}
	if th.shedding(now) {
		t.Fatalf("still shedding after the surge: %+v", th.qps.Status(now))
	}
	if st := th.qps.Status(now); st.Transitions != 2 {
		t.Fatalf("one episode made %d transitions", st.Transitions)
	}
}

// A second at more than twice the threshold is no noise: it trips at once.
func TestQPSFarAboveTripsAtOnce(t *testing.T) {
	th := testThrottle(t, Config{QPS: qps.Config{Warmup: 10}})
	now := time.Unix(1000, 0)
	th.step(now, true)
	steady(th, &now, 20, 10)
	arrive(th, 31) // threshold 15: above 2 × 15
	now = now.Add(time.Second)
	th.step(now, true)
	if !th.shedding(now) {
		t.Fatalf("3× the baseline for a second did not trip: %+v", th.qps.Status(now))
	}
}

// The medium lane's pacing is the rate its share of the limit turns
// over: slots ÷ the time a request holds one (in flight ÷ completions per
// second), never the arrival rate.
func TestMediumPacingFollowsTheLimit(t *testing.T) {
	// high's max_wait spans 2 completions: the reserve is held
	th := testThrottle(t, Config{Concurrency: admission.Config{Limit: 10,
		MaxWait: admission.MaxWait{High: config.Duration(100 * time.Millisecond)}}})
	now := time.Unix(1000, 0)
	th.step(now, true)
	for range 8 {
		th.gate.Force() // 8 in flight
	}
	steady(th, &now, 3, 20) // 20 completions a second
	if r, res := float64(th.pacer.Limit()), th.gate.Reserve(); res != 2 || r != 20 {
		t.Fatalf("medium rate %v, reserve %d; want (10 − 2) × 20/s ÷ 8 = 20, 2", r, res)
	}
	// Arrivals do not move it: five times as many, the same completions.
	for range 3 {
		for range 100 {
			th.verdicts[priority.Medium][priority.ShedPaced].Add(0)
		}
		steady(th, &now, 1, 20)
	}
	if r := float64(th.pacer.Limit()); r != 20 {
		t.Fatalf("medium rate %v moved with the arrivals", r)
	}
}

// The reserve is held only while high's max_wait may pass with no slot
// freed (admission.Turnover): with answers of 0.4 s it is not held; with
// answers of 4 s it is, until answers of 0.4 s are the norm again for some
// seconds. While shedding it is one slot for the next high request, and
// as many as short requests want, up to high_reserve.
func TestReserveHeldOnlyWhileSlotsTurnOverSlowly(t *testing.T) {
	th := testThrottle(t, Config{Concurrency: admission.Config{Limit: 10}})
	now := time.Unix(1000, 0)
	th.step(now, true)
	w := time.Duration(th.maxWait[priority.High].Load())
	for range 8 {
		th.gate.Force()
	}
	held := func(seconds, n int, hold time.Duration) {
		for range seconds {
			for i := range n {
				th.turnover.Done(uint32(i), hold, w)
			}
			steady(th, &now, 1, n)
		}
	}
	held(3, 20, 400*time.Millisecond)
	if res := th.gate.Reserve(); res != 0 {
		t.Fatalf("answers of 0.4 s within high's wait of %v: reserve %d, want 0", w, res)
	}
	held(10, 2, 4*time.Second)
	if res := th.gate.Reserve(); res == 0 {
		t.Fatal("answers of 4 s: reserve 0, want it held")
	}
	if err := th.SetOverride("shed", now, time.Time{}); err != nil {
		t.Fatal(err)
	}
	held(1, 2, 4*time.Second)
	if res := th.gate.Reserve(); res != 1 {
		t.Fatalf("shedding, answers of 4 s, nothing short: reserve %d, want 1", res)
	}
	if err := th.SetOverride("auto", now, time.Time{}); err != nil {
		t.Fatal(err)
	}
	held(20, 20, 400*time.Millisecond)
	if res := th.gate.Reserve(); res != 0 {
		t.Fatalf("20 s of answers of 0.4 s: reserve %d, want 0 again", res)
	}
}

func TestApplyKeepsWhatWasLearned(t *testing.T) {
	th := testThrottle(t, Config{QPS: qps.Config{Warmup: 3}})
	now := time.Unix(1000, 0)
	th.step(now, true)
	steady(th, &now, 5, 10)
	if err := th.Apply(Config{QPS: qps.Config{Warmup: 3, TripFactor: 3}, GPU: th.Config().GPU}); err != nil {
		t.Fatal(err)
	}
	if st := th.qps.Status(now); st.LearnedS != 5 {
		t.Fatalf("learned %d after a threshold change", st.LearnedS)
	}
	arrive(th, 10)
	now = now.Add(time.Second)
	th.step(now, true)
	if q := th.qps.Status(now); q.Threshold != levels.Round(3*q.Baseline) {
		t.Fatalf("new trip factor not applied: %+v", q)
	}
	// A config that fails validation changes nothing.
	before := th.Config()
	if err := th.Apply(Config{QPS: qps.Config{TripFactor: 0.5}}); err == nil || !strings.Contains(err.Error(), "qps: trip_factor must be above 1") {
		t.Fatalf("a bad trip factor: %v", err)
	}
	if !reflect.DeepEqual(th.Config(), before) {
		t.Fatalf("a rejected config was applied: %+v", th.Config())
	}
}

// Latency trips after `consecutive` bad windows, or at once on a window
// more than twice over its threshold.
func TestLatencyConsecutiveAndFarAbove(t *testing.T) {
	th := testThrottle(t, Config{Latency: latency.Config{Window: config.Duration(time.Second), Consecutive: 2, Factor: 2, MinThreshold: config.Duration(time.Millisecond)}})
	now := time.Unix(1000, 0)
	th.step(now, true)
	window := func(d time.Duration) { answered(th, &now, 30, d) }
	window(100 * time.Millisecond) // history: 100 ms, threshold 200 ms
	window(300 * time.Millisecond) // bad, 1 of 2
	if th.shedding(now) {
		t.Fatal("tripped after one bad window")
	}
	window(300 * time.Millisecond)
	if !th.shedding(now) {
		t.Fatal("not tripped after two bad windows")
	}

	th, now = testThrottle(t, Config{Latency: latency.Config{Window: config.Duration(time.Second), Consecutive: 3, Factor: 2, MinThreshold: config.Duration(time.Millisecond)}}), now.Add(time.Hour)
	th.step(now, true)
	window(100 * time.Millisecond)
	window(450 * time.Millisecond) // over 2 × 200 ms
	if st := th.latency.Status(now); !th.shedding(now) || !strings.Contains(st.LastReason, "twice") {
		t.Fatalf("a window far above its threshold did not trip at once: %+v", st)
	}
}

// Between whole seconds, a quarter-second burst at more than twice the QPS
// threshold, beyond the spread of random arrivals, trips at once; a milder
// one waits for the second.
func TestQPSBurstCheck(t *testing.T) {
	th := testThrottle(t, Config{QPS: qps.Config{Warmup: 10}})
	now := time.Unix(1000, 0)
	th.step(now, true)
	steady(th, &now, 20, 10)
	// threshold 15 req/s: 6 arrivals in 250 ms is 24 req/s, under 2 × 15.
	arrive(th, 6)
	now = now.Add(250 * time.Millisecond)
	th.step(now, false)
	if th.shedding(now) {
		t.Fatal("a mild burst tripped between seconds")
	}
	arrive(th, 15) // 60 req/s: twice 15 req/s, but within its spread over 250 ms (7.5 + 3√7.5 = 15.7)
	now = now.Add(250 * time.Millisecond)
	th.step(now, false)
	if th.shedding(now) {
		t.Fatal("a burst within the spread of random arrivals tripped")
	}
	arrive(th, 16) // 64 req/s
	now = now.Add(250 * time.Millisecond)
	th.step(now, false)
	if st := th.qps.Status(now); !th.shedding(now) || !strings.Contains(st.LastReason, "burst") {
		t.Fatalf("a burst at 64 req/s did not trip: %+v", st)
	}
}

// A gateway started in the middle of an overload has no history: the
// fast path judges against twice the fastest second it saw, and trips.
func TestColdStartOverloadTrips(t *testing.T) {
	th := testThrottle(t, Config{})
	now := time.Unix(1000, 0)
	th.step(now, true)
	second := func(d time.Duration) { answered(th, &now, 10, d) }
	second(65 * time.Millisecond) // the first second: no queue yet
	second(300 * time.Millisecond)
	second(900 * time.Millisecond) // over 2 × 1.8 × 130 ms
	if th.shedding(now) {
		t.Fatal("tripped after one slow second")
	}
	second(1800 * time.Millisecond)
	if !th.shedding(now) || th.shedCause() != levelLatency {
		t.Fatalf("an overload from the start did not trip: %+v", th.latency.Status(now))
	}
}

// While slots turn over slowly, the reserve is held when nothing is
// tripped too as long as high requests come (one in the last minute): one
// slot for the next of them, as many more as short requests want. Held
// only once short requests waited, it came when answers many seconds
// long already held every slot, and a high request then waited past its
// max_wait for the first of them to end.
func TestReserveGuardedWhileHighRequestsCome(t *testing.T) {
	th := testThrottle(t, Config{Concurrency: admission.Config{Limit: 10}})
	now := time.Unix(1000, 0)
	th.step(now, true)
	steady(th, &now, 20, 2) // nothing known of how long slots are held: slow
	if th.gate.Guarding() || th.gate.Reserve() == 0 {
		t.Fatalf("slow, no high request, nothing short: guarding %v, reserve %d; want a reserve, not held", th.gate.Guarding(), th.gate.Reserve())
	}
	d := th.Admit(context.Background(), priority.High, Now())
	steady(th, &now, 1, 2)
	if !th.gate.Guarding() || th.gate.Reserve() != 1 {
		t.Fatalf("a high request came: guarding %v, reserve %d; want held, 1", th.gate.Guarding(), th.gate.Reserve())
	}
	th.Finish(&d, Outcome{Status: 200})
	steady(th, &now, 50, 2)
	if !th.gate.Guarding() {
		t.Fatal("50 s after a high request: want the reserve still held")
	}
	steady(th, &now, 15, 2)
	if th.gate.Guarding() {
		t.Fatal("65 s after the last high request: want the reserve no longer held")
	}
}
