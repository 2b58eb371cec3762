package pool

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/admission"
	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/config"
	"github.com/ai-guardian/adaptivethrottle/levels/gpu"
)

// vllmServer is an upstream's /metrics page as vLLM writes it, with a
// waiting queue the test sets.
type vllmServer struct {
	*httptest.Server
	waiting atomic.Int64
}

func newVLLM(t *testing.T) *vllmServer {
	v := &vllmServer{}
	v.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		fmt.Fprintf(w, `# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m",engine="0"} 3
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m",engine="0"} %d
`, v.waiting.Load())
	}))
	t.Cleanup(v.Close)
	return v
}

func (v *vllmServer) addr() string { return strings.TrimPrefix(v.URL, "http://") }

// waitingGauge reads vLLM's waiting queue as a share of 10, tripping
// above 5, every 100ms, stale after 3s.
var waitingGauge = gpu.Upstream{Metric: "vllm:num_requests_waiting", MetricMax: 10, Threshold: 0.5,
	Interval: config.Duration(100 * time.Millisecond), StaleAfter: config.Duration(3 * time.Second)}

// sampled waits (on the wall clock: the gauges read real servers) until
// every member's gauge has a reading newer than since.
func sampled(t *testing.T, ms []*Member, since time.Time) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, m := range ms {
		for {
			g := m.gauge.Load()
			if g == nil {
				t.Fatalf("%s has no gauge", m.key)
			}
			if st := g.Status(time.Now()); st.Available && st.SampleAgeS != nil && time.Since(since).Seconds() > *st.SampleAgeS {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no reading of its gauge within 10s: %+v", m.key, g.Status(time.Now()))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func byKey(st []MemberStatus) map[string]MemberStatus {
	out := map[string]MemberStatus{}
	for _, m := range st {
		out[m.Upstream] = m
	}
	return out
}

// One upstream's gauge over its threshold is that upstream's pressure:
// its limit is cut (to half within two seconds, as the GPU level cuts the
// single limit), while the other keeps its limit and gets the picks. Its
// trip is reported. Two readings below take it back within seconds, and
// its limit grows again. A gauge gone stale is no evidence: the upstream
// is judged by its first bytes alone, and its limit is not cut.
func TestGaugeTripsOnlyItsUpstream(t *testing.T) {
	a, b := newVLLM(t), newVLLM(t)
	g := waitingGauge
	p := New(admission.Config{Initial: 8}, breaker.CircuitConfig{}, &g)
	defer p.Shut()
	ms := p.Hold([]string{a.addr(), b.addr()})
	cs := cands(2)
	a.waiting.Store(8) // 80% of 10: over 50%
	sampled(t, ms, time.Now())

	var changes []Change
	now := time.Now()
	report := func(c Change) { changes = append(changes, c) }
	for i := range 8 { // two seconds of steps
		p.Step(Signal{Now: now.Add(time.Duration(i) * time.Second / 4)}, report)
	}
	if len(changes) != 1 || changes[0].Key != a.addr() || changes[0].Gauge == nil || !changes[0].Gauge.Tripped {
		t.Fatalf("changes %+v, want a's gauge tripped alone", changes)
	}
	if got := ms[0].lim.Load(); got != 4 {
		t.Fatalf("a's limit %d after two seconds of its gauge tripped, want 4: half its 8", got)
	}
	if got := ms[1].lim.Load(); got != 8 {
		t.Fatalf("b's limit %d, want 8: its gauge is clear", got)
	}
	for range 20 {
		if i, _ := Pick(cs, ms, breaker.MonoOf(now), false); i != 1 {
			t.Fatalf("picked %d while a's gauge is tripped and b has more room, want b", i)
		}
	}
	st := byKey(p.Status(now))
	if ga, gb := st[a.addr()].Gauge, st[b.addr()].Gauge; ga == nil || !ga.Tripped || gb == nil || gb.Tripped {
		t.Fatalf("status gauges %+v and %+v, want a tripped, b not", ga, gb)
	}

	// Two readings below 90% of the threshold take it back at once: no
	// least time tripped for an upstream's gauge.
	a.waiting.Store(1)
	changes = nil
	for range 2 {
		sampled(t, ms[:1], time.Now())
		p.Step(Signal{Now: time.Now()}, report)
	}
	if len(changes) != 1 || changes[0].Gauge == nil || changes[0].Gauge.Tripped {
		t.Fatalf("changes %+v, want a's gauge recovered", changes)
	}
	if since := time.Since(now); since >= 5*time.Second {
		t.Fatalf("recovered %v after the trip: too slow to tell", since)
	}

	// Stale: readings older than stale_after say nothing. Tripped again,
	// then on stale readings it recovers, and a's limit is no longer cut.
	a.waiting.Store(8)
	sampled(t, ms[:1], time.Now())
	now = time.Now()
	changes = nil
	p.Step(Signal{Now: now}, report)
	for _, d := range []time.Duration{4 * time.Second, 5 * time.Second} {
		p.Step(Signal{Now: now.Add(d)}, report)
	}
	if len(changes) != 2 || !changes[0].Gauge.Tripped || changes[1].Gauge.Tripped {
		t.Fatalf("changes %+v, want a's gauge tripped, then recovered on stale readings", changes)
	}
	if g := byKey(p.Status(now.Add(5 * time.Second)))[a.addr()].Gauge; g.Available || !strings.Contains(g.Reason, "stale") {
		t.Fatalf("a's gauge %+v, want unavailable: stale", g)
	}
	cut := ms[0].lim.Load()
	for i := range 4 {
		p.Step(Signal{Now: now.Add(5*time.Second + time.Duration(i+1)*time.Second/4)}, report)
	}
	if got := ms[0].lim.Load(); got < cut {
		t.Fatalf("a's limit %d a second after its gauge went stale, want no further cut from %d", got, cut)
	}
	if got := ms[1].lim.Load(); got != 8 {
		t.Fatalf("b's limit %d with a stale gauge, want 8 as before: a stale gauge stops nothing", got)
	}
}

// A reload that drops the block closes every member's gauge; one that
// brings it back opens them again; Shut closes them for good.
func TestGaugeFollowsTheConfig(t *testing.T) {
	a := newVLLM(t)
	g := waitingGauge
	p := New(admission.Config{}, breaker.CircuitConfig{}, &g)
	ms := p.Hold([]string{a.addr()})
	if ms[0].gauge.Load() == nil {
		t.Fatal("no gauge with the block set")
	}
	if err := p.SetConfig(admission.Config{}, breaker.CircuitConfig{}, nil); err != nil {
		t.Fatal(err)
	}
	if ms[0].gauge.Load() != nil {
		t.Fatal("a gauge left after the block was dropped")
	}
	if p.Status(t0)[0].Gauge != nil {
		t.Fatal("status shows a gauge with none")
	}
	g2 := waitingGauge
	g2.Threshold = 0.9
	if err := p.SetConfig(admission.Config{}, breaker.CircuitConfig{}, &g2); err != nil {
		t.Fatal(err)
	}
	if l := ms[0].gauge.Load(); l == nil || l.Status(t0).Threshold != 0.9 {
		t.Fatal("the block back: no gauge, or not at its threshold")
	}
	p.Shut()
	if ms[0].gauge.Load() != nil {
		t.Fatal("a gauge left after Shut")
	}
	if more := p.Hold([]string{"c:1"}); more[0].gauge.Load() != nil {
		t.Fatal("a member made after Shut has a gauge")
	}
}

// An upstream whose address makes no URL (a placeholder Caddy fills per
// request) gets no gauge: its status says why, and it is judged by its
// first bytes alone. Dropping the block clears the reason.
func TestGaugeThatCannotOpenIsShown(t *testing.T) {
	g := waitingGauge
	p := New(admission.Config{Initial: 4}, breaker.CircuitConfig{}, &g)
	defer p.Shut()
	ms := p.Hold([]string{"{http.request.host}:8000"})
	if ms[0].gauge.Load() != nil {
		t.Fatal("a gauge opened on an address that makes no URL")
	}
	st := p.Status(t0)[0].Gauge
	if st == nil || st.Available || !strings.Contains(st.Reason, "{http.request.host}:8000") || !strings.Contains(st.Reason, "URL") {
		t.Fatalf("status gauge %+v, want unavailable, naming the upstream and its URL", st)
	}
	p.Step(Signal{Now: t0}, nil)
	if got := ms[0].lim.Load(); got != 4 {
		t.Fatalf("limit %d, want 4: no gauge, no pressure", got)
	}
	if err := p.SetConfig(admission.Config{Initial: 4}, breaker.CircuitConfig{}, nil); err != nil {
		t.Fatal(err)
	}
	if st := p.Status(t0)[0].Gauge; st != nil {
		t.Fatalf("status gauge %+v after the block was dropped, want none", st)
	}
}
