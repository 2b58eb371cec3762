package breaker

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

// lt0 is a synthetic wall time with no monotonic reading, far from epoch:
// levels must work on it exactly.
var lt0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func sec(n float64) time.Time { return lt0.Add(time.Duration(n * float64(time.Second))) }

func obs(v float64) Observation { return Observation{Value: v, Threshold: 100} }

// feed observes values one per second starting at start (seconds after lt0)
// and returns the transitions.
func feed(l *Hysteresis, start float64, values ...float64) []Transition {
	var trs []Transition
	for i, v := range values {
		if tr, ok := l.Observe(sec(start+float64(i)), obs(v)); ok {
			trs = append(trs, tr)
		}
	}
	return trs
}

func TestLevelTripsAfterTripAfter(t *testing.T) {
	l := NewHysteresis("latency", HysteresisConfig{TripAfter: 3, Period: time.Second})
	// Two bad, then a neutral/good one resets the streak.
	if trs := feed(l, 0, 150, 150, 50, 150, 150); len(trs) != 0 || l.Tripped() {
		t.Fatalf("tripped early: %v", trs)
	}
	// The third consecutive bad trips.
	tr, ok := l.Observe(sec(5), Observation{Value: 160, Threshold: 100, Reason: "p99 too high"})
	if !ok || !l.Tripped() {
		t.Fatal("did not trip after 3 consecutive bad observations")
	}
	want := Transition{Name: "latency", Tripped: true, Reason: "p99 too high", Value: 160, Threshold: 100, At: sec(5)}
	if tr != want {
		t.Fatalf("transition = %+v, want %+v", tr, want)
	}
	// Equal to the threshold is not bad.
	l2 := NewHysteresis("qps", HysteresisConfig{})
	if _, ok := l2.Observe(sec(0), obs(100)); ok || l2.Tripped() {
		t.Fatal("value == threshold tripped")
	}
	if _, ok := l2.Observe(sec(1), obs(100.001)); !ok {
		t.Fatal("default TripAfter 1: one bad sample must trip")
	}
}

func TestLevelHardTripsAtOnce(t *testing.T) {
	l := NewHysteresis("gpu", HysteresisConfig{TripAfter: 5})
	tr, ok := l.Observe(sec(0), Observation{Value: 0, Threshold: 0, Hard: true, Reason: "sensor failed"})
	if !ok || !tr.Tripped || !l.Tripped() || tr.Reason != "sensor failed" {
		t.Fatalf("hard sample: %+v %v", tr, ok)
	}
	// Hard samples are never good, even far below the threshold.
	l = NewHysteresis("gpu", HysteresisConfig{MinTripped: -1, RecoverAfter: 1})
	l.Observe(sec(0), Observation{Value: 1, Threshold: 100, Hard: true})
	for i := 1; i < 5; i++ {
		if _, ok := l.Observe(sec(float64(i)), Observation{Value: 1, Threshold: 100, Hard: true}); ok {
			t.Fatal("recovered on a hard sample")
		}
	}
	if _, ok := l.Observe(sec(5), obs(1)); !ok {
		t.Fatal("did not recover on a good sample")
	}
}

func TestLevelNoThresholdNeverBad(t *testing.T) {
	l := NewHysteresis("qps", HysteresisConfig{})
	for i, th := range []float64{0, -1, math.NaN()} {
		if _, ok := l.Observe(sec(float64(i)), Observation{Value: 1e9, Threshold: th}); ok {
			t.Fatalf("threshold %v tripped", th)
		}
	}
	// NaN value is neither bad nor good.
	if _, ok := l.Observe(sec(5), Observation{Value: math.NaN(), Threshold: 100}); ok {
		t.Fatal("NaN value tripped")
	}
	// Tripped (hard), a sample without a threshold counts as good.
	l = NewHysteresis("qps", HysteresisConfig{RecoverAfter: 1, MinTripped: -1})
	l.Observe(sec(0), Observation{Hard: true})
	if _, ok := l.Observe(sec(1), Observation{Value: 500, Threshold: 0}); !ok {
		t.Fatal("no threshold while tripped must count as good")
	}
}

func TestLevelMinTripped(t *testing.T) {
	l := NewHysteresis("gpu", HysteresisConfig{RecoverAfter: 2, MinTripped: 5 * time.Second, Period: time.Second})
	feed(l, 0, 200)
	if !l.Tripped() {
		t.Fatal("not tripped")
	}
	// Good from t=1s to t=4s: enough good samples, too early.
	if trs := feed(l, 1, 10, 10, 10, 10); len(trs) != 0 {
		t.Fatalf("recovered before MinTripped: %v", trs)
	}
	tr, ok := l.Observe(sec(5), obs(10))
	if !ok || tr.Tripped || l.Tripped() || !tr.At.Equal(sec(5)) {
		t.Fatalf("did not recover at exactly MinTripped: %+v %v", tr, ok)
	}
	if tr.Reason == "" {
		t.Fatal("recovery transition without reason")
	}
}

func TestLevelRecoverAfter(t *testing.T) {
	l := NewHysteresis("latency", HysteresisConfig{RecoverAfter: 3, MinTripped: -1})
	feed(l, 0, 200)
	// good, good, bad resets; good, good, neutral resets.
	if trs := feed(l, 1, 10, 10, 200, 10, 10, 95); len(trs) != 0 {
		t.Fatalf("recovered without 3 consecutive good: %v", trs)
	}
	if trs := feed(l, 7, 10, 10); len(trs) != 0 {
		t.Fatal("recovered after 2 of 3")
	}
	trs := feed(l, 9, 10)
	if len(trs) != 1 || trs[0].Tripped || l.Tripped() {
		t.Fatalf("did not recover after 3 consecutive good: %v", trs)
	}
	// After recovery the bad streak starts afresh.
	l2 := NewHysteresis("x", HysteresisConfig{TripAfter: 2, RecoverAfter: 1, MinTripped: -1})
	feed(l2, 0, 200, 200, 10)
	if l2.Tripped() {
		t.Fatal("setup")
	}
	if trs := feed(l2, 3, 200); len(trs) != 0 {
		t.Fatal("bad streak survived recovery")
	}
}

func TestLevelNeutralBandKeepsTripped(t *testing.T) {
	l := NewHysteresis("gpu", HysteresisConfig{MinTripped: -1}) // RecoverBelow 0.9, RecoverAfter 2
	feed(l, 0, 120)
	vals := make([]float64, 100)
	for i := range vals {
		vals[i] = 90 + float64(i%11) // 90..100: neither bad nor good
	}
	if trs := feed(l, 1, vals...); len(trs) != 0 || !l.Tripped() {
		t.Fatalf("neutral band changed state: %v", trs)
	}
	if trs := feed(l, 101, 89.9, 89.9); len(trs) != 1 {
		t.Fatal("did not recover below threshold*RecoverBelow")
	}
}

func TestLevelRecoverIn(t *testing.T) {
	l := NewHysteresis("gpu", HysteresisConfig{RecoverAfter: 2, MinTripped: 5 * time.Second, Period: time.Second})
	if d := l.RecoverIn(sec(0)); d != 0 {
		t.Fatalf("not tripped: RecoverIn = %v", d)
	}
	feed(l, 0, 200)
	cases := []struct {
		at   float64
		want time.Duration
	}{
		{0, 5 * time.Second},           // MinTripped left dominates
		{1.5, 3500 * time.Millisecond}, // still
		{4, 2 * time.Second},           // 2 good samples × 1s dominate
		{100, 2 * time.Second},
	}
	for _, c := range cases {
		if d := l.RecoverIn(sec(c.at)); d != c.want {
			t.Errorf("RecoverIn(+%vs) = %v, want %v", c.at, d, c.want)
		}
	}
	feed(l, 6, 10) // one good sample at 6s
	if d := l.RecoverIn(sec(6)); d != time.Second {
		t.Errorf("after one good: RecoverIn = %v, want 1s", d)
	}
	feed(l, 7, 95) // neutral resets the good streak
	if d := l.RecoverIn(sec(7)); d != 2*time.Second {
		t.Errorf("after neutral: RecoverIn = %v, want 2s", d)
	}
	// Without a Period only MinTripped counts, never negative.
	l = NewHysteresis("q", HysteresisConfig{MinTripped: 3 * time.Second})
	feed(l, 0, 200)
	if d := l.RecoverIn(sec(1)); d != 2*time.Second {
		t.Errorf("no period: RecoverIn = %v, want 2s", d)
	}
	if d := l.RecoverIn(sec(10)); d != 0 {
		t.Errorf("no period, past MinTripped: RecoverIn = %v, want 0", d)
	}
}

func TestLevelReset(t *testing.T) {
	l := NewHysteresis("qps", HysteresisConfig{TripAfter: 2, MinTripped: time.Hour})
	feed(l, 0, 200, 200)
	if !l.Tripped() {
		t.Fatal("setup")
	}
	l.Reset()
	if l.Tripped() || l.RecoverIn(sec(2)) != 0 {
		t.Fatal("Reset left it tripped")
	}
	st := l.Status(sec(2))
	if st.Transitions != 1 || st.LastReason == "" {
		t.Fatalf("Reset dropped history: %+v", st)
	}
	// The bad streak was forgotten too: one bad sample does not trip.
	feed(l, 3, 200)
	l.Reset()
	if trs := feed(l, 4, 200); len(trs) != 0 {
		t.Fatal("bad streak survived Reset")
	}
}

// A noisy signal oscillating around the threshold must not flap.
func TestLevelNoiseDoesNotFlap(t *testing.T) {
	noisy := func(cfg HysteresisConfig) (transitions int) {
		l := NewHysteresis("gpu", cfg)
		r := rand.New(rand.NewPCG(1, 2))
		for i := range 3600 { // an hour of 1 s samples
			v := 95 + 10*r.Float64() // 95..105 around threshold 100
			if _, ok := l.Observe(sec(float64(i)), obs(v)); ok {
				transitions++
			}
		}
		return transitions
	}
	if n := noisy(HysteresisConfig{Period: time.Second}); n > 1 {
		t.Errorf("defaults: %d transitions on noise around the threshold, want <= 1", n)
	}
	// Wider noise 80..120 reaches the recovery line; MinTripped and the
	// streaks still bound the flapping to far fewer than the samples.
	wide := 0
	l := NewHysteresis("gpu", HysteresisConfig{TripAfter: 2, RecoverAfter: 3, MinTripped: 30 * time.Second})
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 3600 {
		if _, ok := l.Observe(sec(float64(i)), obs(80+40*r.Float64())); ok {
			wide++
		}
	}
	if wide > 3600/30 {
		t.Errorf("wide noise: %d transitions, want <= %d", wide, 3600/30)
	}
	// The same noise without hysteresis flaps: the test can tell.
	if n := noisy(HysteresisConfig{RecoverBelow: 1, RecoverAfter: 1, MinTripped: -1}); n < 100 {
		t.Errorf("no hysteresis: only %d transitions; noise test has no teeth", n)
	}
}

// A clean overload episode is exactly one trip and one recovery.
func TestLevelCleanEpisode(t *testing.T) {
	l := NewHysteresis("qps", HysteresisConfig{TripAfter: 3, Period: time.Second})
	var vals []float64
	for range 60 {
		vals = append(vals, 50)
	}
	for range 30 {
		vals = append(vals, 180)
	}
	for range 60 {
		vals = append(vals, 50)
	}
	trs := feed(l, 0, vals...)
	if len(trs) != 2 {
		t.Fatalf("%d transitions, want 2: %+v", len(trs), trs)
	}
	if !trs[0].Tripped || !trs[0].At.Equal(sec(62)) {
		t.Errorf("trip = %+v, want tripped at 62s", trs[0])
	}
	// MinTripped 5s passed long ago; recovery on the 2nd good sample.
	if trs[1].Tripped || !trs[1].At.Equal(sec(91)) {
		t.Errorf("recover = %+v, want recovered at 91s", trs[1])
	}
	if st := l.Status(sec(150)); st.Transitions != 2 || st.Tripped {
		t.Errorf("status %+v", st)
	}
}

func TestLevelStatus(t *testing.T) {
	l := NewHysteresis("latency", HysteresisConfig{MinTripped: 10 * time.Second, Period: time.Second})
	st := l.Status(sec(0))
	if st.Name != "latency" || st.Tripped || !st.Since.IsZero() || st.Transitions != 0 || st.RecoverIn != 0 {
		t.Fatalf("fresh status %+v", st)
	}
	l.Observe(sec(1), Observation{Value: 2.4, Threshold: 1.98, Reason: "p99 2.4s > 1.8 × 1.1s for 3 periods"})
	l.Observe(sec(2), Observation{Value: 2.5, Threshold: 1.9, Reason: "later"})
	st = l.Status(sec(3))
	want := HysteresisSnapshot{
		Name: "latency", Value: 2.5, Threshold: 1.9, Tripped: true, Since: sec(1),
		LastReason: "p99 2.4s > 1.8 × 1.1s for 3 periods", RecoverIn: 8 * time.Second, Transitions: 1, MinTripped: 10 * time.Second,
	}
	if st != want {
		t.Fatalf("status = %+v\nwant     %+v", st, want)
	}
	// Non-finite samples stay JSON-encodable.
	l.Observe(sec(4), Observation{Value: math.Inf(1), Threshold: math.NaN(), Hard: true})
	b, err := json.Marshal(l.Status(sec(4)))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{`"name":"latency"`, `"tripped":true`, `"since":"2025-06-01T12:00:01Z"`, `"recover_in":`, `"last_reason":"p99`} {
		if !strings.Contains(string(b), k) {
			t.Errorf("JSON %s lacks %s", b, k)
		}
	}
	if st := NewHysteresis("x", HysteresisConfig{}).Status(sec(0)); st.Since.IsZero() {
		if b, _ := json.Marshal(st); strings.Contains(string(b), "since") {
			t.Errorf("zero since encoded: %s", b)
		}
	}
}

func TestLevelConfig(t *testing.T) {
	got := NewHysteresis("x", HysteresisConfig{}).Config()
	want := HysteresisConfig{TripAfter: 1, RecoverBelow: 0.9, RecoverAfter: 2, MinTripped: 5 * time.Second}
	if got != want {
		t.Fatalf("defaults %+v, want %+v", got, want)
	}
	if err := (HysteresisConfig{}).Validate(); err != nil {
		t.Fatalf("zero config: %v", err)
	}
	bad := HysteresisConfig{TripAfter: -1, RecoverBelow: 1.5, RecoverAfter: -2, Period: -time.Second}
	err := bad.Validate()
	if err == nil {
		t.Fatal("bad config validated")
	}
	for _, s := range []string{"trip_after", "recover_below", "recover_after", "period"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not name %s", err, s)
		}
	}
	// NewHysteresis still works on bad input, with defaults.
	if got := NewHysteresis("x", bad).Config(); got.TripAfter != 1 || got.RecoverBelow != 0.9 || got.RecoverAfter != 2 || got.Period != 0 {
		t.Fatalf("bad config normalised to %+v", got)
	}
	if err := (HysteresisConfig{RecoverBelow: math.NaN()}).Validate(); err == nil {
		t.Fatal("NaN RecoverBelow validated")
	}
}

// Tripped and RecoverIn are read by requests while the sampler observes.
func TestLevelConcurrentReaders(t *testing.T) {
	l := NewHysteresis("qps", HysteresisConfig{MinTripped: time.Second, RecoverAfter: 1, Period: time.Second})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if d := l.RecoverIn(sec(0)); d < 0 {
					t.Error("negative RecoverIn")
				}
				_ = l.Tripped()
				_ = l.Status(sec(0))
			}
		})
	}
	for i := range 2000 {
		v := 50.0
		if i%4 < 2 {
			v = 200
		}
		l.Observe(sec(float64(i)), obs(v))
	}
	close(stop)
	wg.Wait()
	if n := l.Status(sec(0)).Transitions; n < 100 {
		t.Fatalf("only %d transitions: readers raced nothing", n)
	}
}

// A level that trips again soon after recovering was recovered too early:
// each such episode holds twice as long, up to 16 × MinTripped; after a calm
// spell the hold starts over.
func TestLevelQuickRetripsHoldLonger(t *testing.T) {
	l := NewHysteresis("latency", HysteresisConfig{TripAfter: 1, RecoverAfter: 1, MinTripped: 10 * time.Second, Period: time.Second})
	now := 0.0
	episode := func() time.Duration {
		l.Observe(sec(now), obs(200)) // trip
		hold := l.Status(sec(now)).MinTripped
		start := now
		for l.Tripped() {
			now++
			l.Observe(sec(now), obs(10))
			if now-start > 1000 {
				t.Fatal("never recovered")
			}
		}
		if got := time.Duration((now - start) * float64(time.Second)); got != hold {
			t.Fatalf("tripped %v, hold %v", got, hold)
		}
		now += 5 // trips again 5 s after recovering
		return hold
	}
	var holds []time.Duration
	for range 7 {
		holds = append(holds, episode())
	}
	want := []time.Duration{10, 20, 40, 80, 160, 160, 160}
	for i, h := range holds {
		if h != want[i]*time.Second {
			t.Fatalf("holds %v, want %v s", holds, want)
		}
	}
	now += 1000 // a calm spell
	if h := episode(); h != 10*time.Second {
		t.Fatalf("after a calm spell the hold is %v, want 10s again", h)
	}
}

// A recovery is worded by the level when it gives Observation.Recovery:
// called once, on the recovering sample only, with the Hysteresis's own
// RecoverBelow and RecoverAfter, and prefixed with the name. Without it, or
// without a threshold, the Hysteresis words it in plain numbers.
func TestLevelRecoveryWordedByTheLevel(t *testing.T) {
	calls := 0
	words := func(o Observation, below float64, after int) string {
		calls++
		return fmt.Sprintf("%.1f units < %g × %.1f units for %d samples", o.Value, below, o.Threshold, after)
	}
	l := NewHysteresis("qps", HysteresisConfig{RecoverAfter: 3, RecoverBelow: 0.8, MinTripped: -1})
	var trs []Transition
	for i, v := range []float64{150, 10, 10, 10} {
		if tr, ok := l.Observe(sec(float64(i)), Observation{Value: v, Threshold: 100, Recovery: words}); ok {
			trs = append(trs, tr)
		}
	}
	if len(trs) != 2 || trs[1].Tripped {
		t.Fatalf("transitions %+v, want a trip and a recovery", trs)
	}
	if want := "qps: 10.0 units < 0.8 × 100.0 units for 3 samples"; trs[1].Reason != want || calls != 1 {
		t.Fatalf("recovery %q after %d calls, want %q after 1", trs[1].Reason, calls, want)
	}
	if trs[0].Reason == trs[1].Reason || !strings.HasPrefix(trs[0].Reason, "qps: 150 > 100") {
		t.Fatalf("trip reason %q", trs[0].Reason)
	}

	// No wording given, or no threshold to word it against: plain numbers.
	for _, o := range []Observation{{Value: 10, Threshold: 100}, {Value: 10, Threshold: 0, Recovery: words}} {
		l := NewHysteresis("gpu", HysteresisConfig{RecoverAfter: 1, MinTripped: -1})
		l.Observe(sec(0), Observation{Hard: true, Reason: "sensor failed"})
		tr, ok := l.Observe(sec(1), o)
		if !ok || tr.Tripped || !strings.HasPrefix(tr.Reason, "gpu: 10 < 0.9 × ") || !strings.HasSuffix(tr.Reason, " for 1 observations") {
			t.Fatalf("%+v: recovery %+v %v", o, tr, ok)
		}
	}
	if calls != 1 {
		t.Fatalf("Recovery called %d times without a threshold", calls)
	}
}
