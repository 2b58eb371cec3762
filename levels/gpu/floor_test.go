package gpu

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/levels"
	"github.com/ai-guardian/adaptivethrottle/sensors"
)

// smiText is nvidia-smi as the level runs it: its CSV output, parsed by
// ParseNvidiaSMI at each read.
type smiText struct {
	mu  sync.Mutex
	out string
}

func (s *smiText) Name() string { return "nvidia-smi" }
func (s *smiText) Close() error { return nil }
func (s *smiText) Read(context.Context) ([]sensors.Device, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return sensors.ParseNvidiaSMI([]byte(s.out))
}

// h100MiB is an H100's memory.total as nvidia-smi prints it.
const h100MiB = 81559

// host is a GPU host under an injected clock: the test sets the memory
// held and the requests in flight; interval reads the source once and
// runs the sampler's steps until the next read.
type host struct {
	t        *testing.T
	l        *Level
	s        *sensors.Sensor
	src      sensors.Source
	now      time.Time
	inflight int64
	trs      []breaker.Transition
	set      func(ratio float64)
}

func newHost(t *testing.T, cfg Config, src sensors.Source, set func(float64)) *host {
	t.Helper()
	cfg.Source = "off"
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg = *l.cfg.Load()
	s := sensors.NewSensor(src, cfg.sensor())
	l.sensor.Store(s)
	return &host{t: t, l: l, s: s, src: src, now: t0, set: set}
}

// smiHost is a host read through nvidia-smi's CSV.
func smiHost(t *testing.T, cfg Config) *host {
	src := &smiText{}
	return newHost(t, cfg, src, func(ratio float64) {
		src.mu.Lock()
		src.out = fmt.Sprintf("0, GPU-5f1c2a9e-8d4b-4a7c-9e3f-1b2c3d4e5f60, %d, %d\n", smiUsed(ratio), h100MiB)
		src.mu.Unlock()
	})
}

// smiUsed is memory.used in MiB at ratio of an H100, and smiRatio the
// ratio that reads as.
func smiUsed(ratio float64) int      { return int(ratio*h100MiB + 0.5) }
func smiRatio(ratio float64) float64 { return float64(smiUsed(ratio)) / h100MiB }

// interval holds memory at ratio for one interval (2 s: one read, then
// eight sampler steps) and reports whether the level is tripped after it.
func (h *host) interval(ratio float64) bool {
	h.t.Helper()
	h.set(ratio)
	if r := h.s.SampleOnce(context.Background(), h.now); !r.Available {
		h.t.Fatalf("reading unavailable: %s", r.Reason)
	}
	for range 8 {
		h.l.Sample(h.now, levels.Inputs{Second: true, Learn: true, InFlight: h.inflight}, func(tr breaker.Transition) { h.trs = append(h.trs, tr) })
		h.now = h.now.Add(levels.Step)
	}
	return h.l.h.Tripped()
}

// hold holds memory at ratio for d while the requests in flight cycle
// through load, and reports whether the level tripped at any interval.
func (h *host) hold(ratio float64, d time.Duration, load ...int64) (tripped bool) {
	h.t.Helper()
	for i := 0; time.Duration(i)*DefaultInterval < d; i++ {
		h.inflight = load[i%len(load)]
		if h.interval(ratio) {
			tripped = true
		}
	}
	return tripped
}

// A server that reserves 90% of memory at start (vLLM, TGI) and holds it
// flat, within a few MiB, at a light and at a heavy load: the level never
// trips, and status says why and which gauge to read instead.
func TestFlatReservedMemoryNeverTrips(t *testing.T) {
	h := smiHost(t, Config{})
	light := []int64{0, 1, 0, 2, 1, 0, 3, 1} // 0.3× of a 256-sequence server is more, but the ratio is all the level sees
	heavy := []int64{180, 230, 200, 240, 210, 190}
	for i := range 150 { // 5 minutes, with the MiB-level jitter a real server shows
		h.inflight = light[i%len(light)]
		if h.interval(0.9 + 0.001*float64(i%3-1)) {
			t.Fatalf("light load: a flat 90%% tripped at %v: %+v", h.now.Sub(t0), h.trs)
		}
	}
	if h.hold(0.9, 5*time.Minute, heavy...) {
		t.Fatalf("heavy load: a flat 90%% tripped: %+v", h.trs)
	}
	st := h.l.Status(h.now)
	if st.Tripped || st.Transitions != 0 || !near(st.Value, 0.9) || st.Floor < 0.898 || st.Floor > 0.9 || st.Threshold < 0.938 || st.Threshold > 0.941 {
		t.Fatalf("status: %+v", st)
	}
	mustContain(t, st.Note, "nvidia-smi: memory flat at 89.9% since start: a server that reserves memory at start; the memory ratio cannot judge its load, only growth above it (trips above 93.9%)")
	mustContain(t, st.Note, "vllm:kv_cache_usage_perc (vLLM), sglang:token_usage (SGLang), tgi_queue_size (TGI)")
	if seq, note := h.l.Note(); seq == 0 || note != st.Note {
		t.Fatalf("Note() = %d %q, want the status note", seq, note)
	}
}

// Growth above the flat 90% trips within two intervals (the second model
// or a per-request allocation that takes memory to 95%), and memory back
// at the floor recovers the level.
func TestGrowthAboveReservedMemoryTrips(t *testing.T) {
	h := smiHost(t, Config{})
	if h.hold(0.9, 2*time.Minute, 10, 40, 25) {
		t.Fatal("tripped at 90% flat")
	}
	n := 0
	for _, r := range []float64{0.925, 0.95} {
		n++
		if h.interval(r) {
			break
		}
	}
	if !h.l.h.Tripped() {
		t.Fatalf("90%% → 95%% did not trip within 2 intervals: %+v", h.l.Status(h.now))
	}
	if len(h.trs) != 1 || h.trs[0].Reason != "gpu nvidia-smi 95.0% > 94.0%: memory grew above the 90.0% held since start" ||
		!near(h.trs[0].Value, smiRatio(0.95)) || h.trs[0].Threshold < 0.9399 || h.trs[0].Threshold > 0.9401 {
		t.Fatalf("trip after %d intervals: %+v", n, h.trs)
	}
	if st := h.l.Status(h.now); !st.Tripped || st.Value < 0.949 || st.Threshold < 0.9399 {
		t.Fatalf("status while tripped: %+v", st)
	}
	// Back at the floor: recovers after its minimum time and two readings.
	h.trs = nil
	for range 4 {
		h.interval(0.9)
	}
	if h.l.h.Tripped() || len(h.trs) != 1 {
		t.Fatalf("memory back at 90%% did not recover: %+v", h.trs)
	}
	mustContain(t, h.trs[0].Reason, "gpu: nvidia-smi 90.0% < 93.6% (the 90.0% held since start + 0.9 × its allowance) for 2 readings")

	// A climb of 1% an interval trips at the first reading above 94%.
	h.trs = nil
	for _, r := range []float64{0.91, 0.92, 0.93, 0.94} {
		if h.interval(r) {
			t.Fatalf("tripped at %.0f%%: %+v", 100*r, h.trs)
		}
	}
	if !h.interval(0.95) {
		t.Fatal("the climb to 95% did not trip")
	}
}

// On a gateway host whose server allocates per request, memory starts low
// and grows with the load: it trips at the threshold, 75%, as it always did,
// and memory held by the load is never learned as a floor, however long.
func TestGrowthFromLowTripsAtThreshold(t *testing.T) {
	h := smiHost(t, Config{})
	h.inflight = 0
	h.hold(0.1, time.Minute, 0, 1, 0)
	var at float64
	for r := 0.1; r <= 0.8001; r += 0.05 {
		h.inflight = int64(100 * r) // memory grows with the requests in flight
		if h.interval(r) {
			at = r
			break
		}
	}
	if at < 0.7501 || at > 0.8001 {
		t.Fatalf("tripped at %.2f, want the first reading above 75%%: %+v", at, h.trs)
	}
	if h.trs[0].Reason != "gpu nvidia-smi 80.0% > 75.0%" {
		t.Fatalf("reason %q", h.trs[0].Reason)
	}
	// Overload held for five minutes at the same requests in flight: still
	// tripped, the floor where memory was before the load.
	if h.hold(0.8, 5*time.Minute, 80, 78, 80, 79); !h.l.h.Tripped() {
		t.Fatalf("memory held by the load recovered the level: %+v", h.trs)
	}
	if st := h.l.Status(h.now); st.Floor > 0.1001 || st.Threshold != 0.75 || st.Note != "" {
		t.Fatalf("status: %+v", st)
	}
}

// A second model loading: a step up that stays. It trips while it
// climbs past the limit; once memory has held still for settleFor while
// the load came and went, the step is learned as the new floor and the
// level recovers. A smaller step under the limit never trips and is
// learned the same way.
func TestSecondModelStepIsLearned(t *testing.T) {
	h := smiHost(t, Config{})
	load := []int64{30, 12, 45, 20}
	h.hold(0.6, time.Minute, load...)
	// A smaller step: 60% → 70%, under the 75% threshold.
	if h.hold(0.7, time.Minute, load...) {
		t.Fatalf("a step to 70%% tripped: %+v", h.trs)
	}
	if st := h.l.Status(h.now); st.Floor < 0.6999 || st.Floor > 0.7001 {
		t.Fatalf("the step to 70%% was not learned: floor %v", st.Floor)
	}
	// The big one: 70% → 97%, above the 82% the 70% floor allows.
	if !h.interval(0.97) {
		t.Fatalf("a second model taking memory to 97%% did not trip: %+v", h.l.Status(h.now))
	}
	start := h.now
	for h.l.h.Tripped() && h.now.Sub(start) < 2*time.Minute {
		h.inflight = load[int(h.now.Sub(start)/DefaultInterval)%len(load)]
		h.interval(0.97)
	}
	if took := h.now.Sub(start); h.l.h.Tripped() || took < settleFor || took > settleFor+6*time.Second {
		t.Fatalf("after the step, tripped %v for %v; want a recovery once it held for %v", h.l.h.Tripped(), took, settleFor)
	}
	st := h.l.Status(h.now)
	if st.Floor < 0.969 || st.Threshold < 0.98 {
		t.Fatalf("status after the step: %+v", st)
	}
	mustContain(t, st.Note, "memory flat at 97.0% since 12:02:00 UTC: a server that reserves memory at start")
}

// Memory that steps up while the load stays pinned (a server filling
// with requests at the concurrency limit) is not learned: the level stays
// tripped. A reset (Forget) takes the next reading as the floor: an
// operator's way to say "that was a model loading".
func TestStepUnderPinnedLoadNeedsReset(t *testing.T) {
	h := smiHost(t, Config{})
	h.hold(0.9, time.Minute, 8, 3, 6)
	h.inflight = 64
	if !h.interval(0.97) {
		t.Fatal("the step to 97% did not trip")
	}
	if h.hold(0.97, 3*time.Minute, 64, 63, 64); !h.l.h.Tripped() {
		t.Fatalf("a step under pinned load was learned: %+v", h.l.Status(h.now))
	}
	h.l.Forget()
	h.hold(0.97, 12*time.Second, 64)
	if st := h.l.Status(h.now); st.Tripped || st.Floor < 0.969 {
		t.Fatalf("after a reset: %+v", st)
	}
}

// A threshold the config writes is judged as written: at 75% a flat 90%
// trips, and the note says why and what to do; at 95% a flat 90% does not,
// and 96% does.
func TestExplicitThresholdIsJudgedAsWritten(t *testing.T) {
	h := smiHost(t, Config{Threshold: 0.75})
	if !h.interval(0.9) {
		t.Fatal("threshold 75% written: a flat 90% did not trip")
	}
	if h.trs[0].Reason != "gpu nvidia-smi 90.0% > 75.0%" {
		t.Fatalf("reason %q", h.trs[0].Reason)
	}
	st := h.l.Status(h.now)
	if st.Threshold != 0.75 {
		t.Fatalf("threshold %v, want the written 0.75", st.Threshold)
	}
	mustContain(t, st.Note, "memory held at 90.0% since start, above the threshold 75.0% that the config sets")
	mustContain(t, st.Note, "leave threshold unset")

	h = smiHost(t, Config{Threshold: 0.95})
	if h.hold(0.9, time.Minute, 0, 5) {
		t.Fatal("threshold 95% written: a flat 90% tripped")
	}
	if st := h.l.Status(h.now); st.Note != "" || st.Threshold != 0.95 {
		t.Fatalf("status: %+v", st)
	}
	if !h.interval(0.96) {
		t.Fatal("threshold 95% written: 96% did not trip")
	}
}

// A server's own gauge is judged against the threshold: 90% of the KV
// cache is load, not a reservation, whatever the first reading says.
func TestGaugeHasNoFloor(t *testing.T) {
	f := published(t, Config{}, "prometheus")
	l := f.l
	f.ok(t0, 0.9)
	if trs := sample(l, t0); len(trs) != 1 || !trs[0].Tripped {
		t.Fatalf("kv_cache_usage_perc at 90%% did not trip: %+v", trs)
	}
	if st := l.Status(t0); st.Floor != 0 || st.Note != "" {
		t.Fatalf("status: %+v", st)
	}
}

// The floor's rules, one by one.
func TestFloorRules(t *testing.T) {
	var f floor
	if f.limit(0.75) != 0.75 || f.note("nvml", 0.75, false) != "" {
		t.Fatal("an unset floor has a limit or a note")
	}
	f.observe(0.9, t0)
	if !near(f.limit(0.75), 0.94) || !near(f.limit(0.97), 0.97) {
		t.Fatalf("limit at 90%%: %v", f.limit(0.75))
	}
	f.observe(0.5, t0.Add(time.Second)) // freed
	if f.value != 0.5 || f.atStart || !strings.Contains(f.held(), "12:00:01 UTC") {
		t.Fatalf("a lower reading: %+v", f)
	}
	// Flat for settleFor, but the load did not vary: not learned.
	f.load(10)
	for i := 0; i <= 20; i++ {
		f.load(10)
		f.observe(0.8, t0.Add(time.Duration(10+2*i)*time.Second))
	}
	if f.value != 0.5 {
		t.Fatalf("memory held under a steady load was learned: %v", f.value)
	}
	f.load(4) // the load halves while memory holds: learned
	f.observe(0.8, t0.Add(time.Minute))
	if f.value != 0.8 || !f.since.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("memory held while the load halved: %+v", f)
	}
}
