package main

import (
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/internal/llmsim"
	"github.com/ai-guardian/adaptivethrottle/internal/loadgen"
)

func close6(a, b float64) bool { return near(a, b, 1e-6*math.Max(1, math.Abs(b))) }

// TestPoolCapacityOverTime: the pool's capacity is the sum of its
// upstreams' at each moment — a drop to a fifth of one's slots, a death
// (nothing) and a restart — and what it can serve is the offered load or
// that, whichever is less.
func TestPoolCapacityOverTime(t *testing.T) {
	scs := scenarios(llmsim.Config{}, 0, false)
	one := llmsim.Config{Slots: poolSlots}.Capacity() // 5 / 0.76 s
	fifth := llmsim.Config{Slots: 1}.Capacity()

	drop := byName(t, scs, scPoolDrop)
	if got := drop.capacityAt(0); !close6(got, 2*one) {
		t.Errorf("pool-drop at 0: %g, want 2 × %g", got, one)
	}
	if got := drop.capacityAt(59 * time.Second); !close6(got, 2*one) {
		t.Errorf("pool-drop just before the drop: %g", got)
	}
	if got := drop.capacityAt(60 * time.Second); !close6(got, one+fifth) {
		t.Errorf("pool-drop after the drop: %g, want %g", got, one+fifth)
	}
	// 0.8× the pool offered throughout: after the drop more than the pool
	// can serve, so the window's servable is the capacity.
	if !close6(drop.Profile.Base, round1(0.8*2*one)) || !close6(drop.WindowServable, one+fifth) || !close6(drop.WindowCapacity, one+fifth) {
		t.Errorf("pool-drop: rate %g, window servable %g, capacity %g; want %g, %g", drop.Profile.Base, drop.WindowServable, drop.WindowCapacity, round1(0.8*2*one), one+fifth)
	}
	if drop.CalmTo != 60*time.Second {
		t.Errorf("pool-drop calm until %v, want the drop at 60 s", drop.CalmTo)
	}

	death := byName(t, scs, scPoolDeath)
	for _, c := range []struct {
		at   time.Duration
		want float64
	}{{0, 3 * one}, {29 * time.Second, 3 * one}, {30 * time.Second, 2 * one}, {59 * time.Second, 2 * one}, {60 * time.Second, 3 * one}} {
		if got := death.capacityAt(c.at); !close6(got, c.want) {
			t.Errorf("pool-death at %v: %g, want %g", c.at, got, c.want)
		}
	}
	// Below capacity all along: servable is what is offered, and nothing
	// need be refused in the whole run.
	if !close6(death.WindowServable, death.Profile.Base) || death.CalmTo != death.Profile.Duration {
		t.Errorf("pool-death: servable %g (offered %g), calm until %v of %v", death.WindowServable, death.Profile.Base, death.CalmTo, death.Profile.Duration)
	}
	if d := poolDeaths(death.Pool); len(d) != 1 || d[0].Upstream != 2 || d[0].At != 30*time.Second {
		t.Errorf("pool-death deaths: %+v", d)
	}

	// pool-shared: the second upstream's whole capacity goes to other
	// clients in the middle third; the first alone can serve the load.
	shared := byName(t, scs, scPoolShared)
	for _, c := range []struct {
		at   time.Duration
		want float64
	}{{0, 2 * one}, {29 * time.Second, 2 * one}, {30 * time.Second, one}, {59 * time.Second, one}, {60 * time.Second, 2 * one}} {
		if got := shared.capacityAt(c.at); !close6(got, c.want) {
			t.Errorf("pool-shared at %v: %g, want %g", c.at, got, c.want)
		}
	}
	if !close6(shared.WindowServable, shared.Profile.Base) || shared.CalmTo != shared.Profile.Duration || shared.PoolGauge == "" {
		t.Errorf("pool-shared: servable %g (offered %g), calm until %v of %v, gauge %q", shared.WindowServable, shared.Profile.Base,
			shared.CalmTo, shared.Profile.Duration, shared.PoolGauge)
	}
	if got := shared.setups(); !slices.Equal(got, append(slices.Clone(poolSetupNames), setupPolicyNoGauge)) {
		t.Errorf("pool-shared set-ups %v, want the pool's and the policy without its gauge", got)
	}

	slow := byName(t, scs, scPoolSlow)
	want := one * (1 + 1 + 0.5 + 0.25)
	if !close6(slow.Capacity, want) || !close6(slow.WindowServable, want) {
		t.Errorf("pool-slow: capacity %g, servable %g; want %g for both", slow.Capacity, slow.WindowServable, want)
	}
	if !close6(slow.Profile.Peak, round1(1.5*want)) || slow.CalmTo != slow.WindowFrom {
		t.Errorf("pool-slow: peak %g (want %g), calm until %v (want %v)", slow.Profile.Peak, round1(1.5*want), slow.CalmTo, slow.WindowFrom)
	}
	// A quarter-speed server: every step four times as long, so a quarter
	// of the capacity, with the flags that make llmsim so.
	q := slow.Pool[3]
	if !close6(q.capacity(5), one/4) || strings.Join(q.args(5), " ") != "-slots 5 -prefill 160ms -token-time 60ms" {
		t.Errorf("quarter speed: capacity %g, args %q", q.capacity(5), q.args(5))
	}
	if q.capacity(0) != 0 {
		t.Error("0 slots must serve nothing (llmsim's 0 means its default)")
	}
}

// TestServableMean: moment by moment the lesser of offered and capacity.
func TestServableMean(t *testing.T) {
	sc := scenario{Profile: loadgen.Profile{Kind: loadgen.Constant, Base: 10, Duration: 20 * time.Second},
		Pool: []poolUpstream{{Slots: 5, Speed: 1}, {Slots: 5, Speed: 1, Changes: []poolChange{{At: 10 * time.Second, Dead: true}}}}}
	one := poolUpstream{Slots: 5}.capacity(5)
	// 0–10 s: 10 offered under 13.2; 10–20 s: 6.6 capacity under 10.
	if got, want := servableMean(sc, 0, 20*time.Second), (10+one)/2; !close6(got, want) {
		t.Errorf("servable %g, want %g", got, want)
	}
	if got := capacityMean(sc, 0, 20*time.Second); !close6(got, 1.5*one) {
		t.Errorf("capacity mean %g, want %g", got, 1.5*one)
	}
}

func TestTimelineInOrder(t *testing.T) {
	tl := timeline([]poolUpstream{
		{Changes: []poolChange{{At: 3 * time.Second, Dead: true}, {At: 5 * time.Second, Slots: 2}}},
		{Changes: []poolChange{{At: time.Second, Slots: 1}}},
	})
	if len(tl) != 3 || tl[0].upstream != 1 || tl[1].change.At != 3*time.Second || tl[2].change.Slots != 2 {
		t.Errorf("timeline %+v", tl)
	}
}

// poolOut is a made-up outcome of one pool set-up.
func poolOut(setup string, good float64, high, hm float64, calm, failed, inflight int) outcome {
	o := outcome{Setup: setup, GoodputRatio: good, CalmRefusals: calm, Failed: failed, Pool: &poolRun{DeadInFlight: inflight}}
	o.Window.High = loadgen.Stats{Sent: 200, OKWithinSLO: int(high * 200), SLOAttainment: high}
	o.Window.HighMedium = loadgen.Stats{Sent: 800, SLOAttainment: hm}
	return o
}

func TestPoolTargets(t *testing.T) {
	sc := byName(t, scenarios(llmsim.Config{}, 0, false), scPoolDeath)
	others := []outcome{
		poolOut(setupPoolPlain, 0.9, 0.9, 0.9, 0, 40, 8),
		poolOut(setupPoolModule, 0.97, 1, 0.98, 3, 12, 7),
		poolOut(setupLLMD, 0.96, 1, 0.99, 0, 9, 9),
	}
	met := func(ts []target) map[string]bool {
		m := map[string]bool{}
		for _, x := range ts {
			if !x.Measured {
				t.Errorf("%q not measured", x.What)
			}
			m[strings.SplitN(x.What, " ", 2)[0]] = x.Met
		}
		return m
	}
	// Meets all: goodput, high, high+medium ≥ llm-d's 0.99, no refusal,
	// 6 failed with 6 in flight at the death.
	ts := poolTargets(sc, append(others, poolOut(setupPolicy, 0.96, 0.995, 0.99, 0, 6, 6)))
	if len(ts) != 5 {
		t.Fatalf("%d targets, want 5 (goodput, high, high+medium, calm, death): %+v", len(ts), ts)
	}
	for k, v := range met(ts) {
		if !v {
			t.Errorf("%s: missed, want met: %+v", k, ts)
		}
	}
	// Misses each by a hair.
	m := met(poolTargets(sc, append(others, poolOut(setupPolicy, 0.949, 0.99, 0.989, 1, 7, 6))))
	for _, k := range []string{"goodput", "high", "high+medium", "no", "failed"} {
		if m[k] {
			t.Errorf("%s met, want missed", k)
		}
	}
	if !strings.Contains(poolTargets(sc, append(others, poolOut(setupPolicy, 1, 1, 0.5, 0, 0, 0)))[2].Got, "llm-d-style scorer") {
		t.Error("high+medium is not compared with the best other set-up (the scorer)")
	}
	// No policy set-up: nothing to judge. No death: no death target.
	if ts := poolTargets(sc, others); ts != nil {
		t.Errorf("targets without the policy: %+v", ts)
	}
	drop := byName(t, scenarios(llmsim.Config{}, 0, false), scPoolDrop)
	if ts := poolTargets(drop, append(others, poolOut(setupPolicy, 1, 1, 1, 0, 0, 0))); len(ts) != 4 {
		t.Errorf("pool-drop: %d targets, want 4", len(ts))
	}
}

// TestAnalyzePoolGoodput: goodput in a pool scenario is over what the
// pool can serve, and failures are counted apart from refusals.
func TestAnalyzePoolGoodput(t *testing.T) {
	sc := scenario{Pool: []poolUpstream{{Slots: 5}}, WindowServable: 5, WindowCapacity: 6,
		Profile: loadgen.Profile{Kind: loadgen.Constant, Duration: 20 * time.Second}, WindowFrom: 10 * time.Second, WindowTo: 20 * time.Second}
	var recs []loadgen.Record
	for i := range 45 {
		recs = append(recs, okRec(10000+float64(i)*200, loadgen.Low, 24))
	}
	recs = append(recs, shedRec(12000, loadgen.Low),
		loadgen.Record{AtMS: 13000, Class: loadgen.ClassBroken}, loadgen.Record{AtMS: 13000, Class: loadgen.ClassUpstream5xx, Status: 502},
		loadgen.Record{AtMS: 14000, Class: loadgen.ClassTimeout})
	o := analyze(sc, setupPolicy, &loadgen.Result{DurationS: 20, Records: recs})
	if !close6(o.GoodputRatio, 0.9) || o.Failed != 3 {
		t.Errorf("goodput ratio %g (want 4.5 / 5 = 0.9), failed %d (want 3)", o.GoodputRatio, o.Failed)
	}
}

func setEP(s *llmdScorer, i, waiting int, kv float64, updated time.Time, ready bool) {
	s.eps[i].waiting, s.eps[i].kv, s.eps[i].updated, s.eps[i].ready = waiting, kv, updated, ready
}

// TestLLMDPick: the scorer's pick, weights and saturation as published.
func TestLLMDPick(t *testing.T) {
	s, err := newLLMDScorer([]string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}, defaultLLMD)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	fresh := now.Add(-50 * time.Millisecond)
	pick := func(sheddable bool) (int, int) { return s.pick(sheddable, now) }

	// The shortest queue wins at equal KV use.
	setEP(s, 0, 3, 0.2, fresh, true)
	setEP(s, 1, 1, 0.2, fresh, true)
	setEP(s, 2, 2, 0.2, fresh, true)
	if i, st := pick(true); i != 1 || st != 0 {
		t.Errorf("shortest queue: picked %d (%d), want 1", i, st)
	}
	// Equal queues: the least KV use wins.
	setEP(s, 0, 2, 0.5, fresh, true)
	setEP(s, 1, 2, 0.3, fresh, true)
	setEP(s, 2, 2, 0.4, fresh, true)
	if i, _ := pick(true); i != 1 {
		t.Errorf("least KV: picked %d, want 1", i)
	}
	// Weighed together, queue min-max normalized: #0 2×1 + 2×0.5 = 3,
	// #1 2×0 + 2×1 = 2, #2 2×0.5 + 2×0.9 = 2.8.
	setEP(s, 0, 0, 0.5, fresh, true)
	setEP(s, 1, 4, 0.0, fresh, true)
	setEP(s, 2, 2, 0.1, fresh, true)
	if i, _ := pick(true); i != 0 {
		t.Errorf("weighted: picked %d, want 0", i)
	}
	// An endpoint whose last scrape failed is no candidate.
	setEP(s, 0, 0, 0.5, fresh, false)
	if i, _ := pick(true); i != 2 {
		t.Errorf("not ready #0: picked %d, want 2", i)
	}

	// Saturated: none has ≤ 5 waiting and KV ≤ 0.8. Sheddable (low) is
	// refused with 429; the others are still sent, to the best.
	setEP(s, 0, 6, 0.1, fresh, true)
	setEP(s, 1, 9, 0.1, fresh, true)
	setEP(s, 2, 7, 0.1, fresh, true)
	if i, st := pick(true); i != -1 || st != http.StatusTooManyRequests {
		t.Errorf("saturated, sheddable: %d, %d; want refused 429", i, st)
	}
	if i, st := pick(false); i != 0 || st != 0 {
		t.Errorf("saturated, critical: %d, %d; want #0", i, st)
	}
	// Exactly at the thresholds is room (≤ 5 waiting, ≤ 0.8 KV): the
	// pool is not saturated, and the scores still pick #0 (2×0.75 + 2×0.9
	// against #2's 2×1 + 2×0.2).
	setEP(s, 2, 5, 0.8, fresh, true)
	if i, st := pick(true); st != 0 || i != 0 {
		t.Errorf("at the thresholds: %d, %d; want #0 admitted", i, st)
	}
	setEP(s, 2, 5, 0.81, fresh, true)
	if _, st := pick(true); st != http.StatusTooManyRequests {
		t.Errorf("KV 0.81: want saturated, got %d", st)
	}

	// Stale metrics (older than 200 ms) are no room: idle but stale
	// endpoints saturate the pool, as published.
	stale := now.Add(-201 * time.Millisecond)
	setEP(s, 0, 0, 0, stale, true)
	setEP(s, 1, 0, 0, stale, true)
	setEP(s, 2, 0, 0, stale, true)
	if _, st := pick(true); st != http.StatusTooManyRequests {
		t.Errorf("stale metrics: want saturated (429), got %d", st)
	}
	if _, st := pick(false); st != 0 {
		t.Errorf("stale metrics, critical: want sent, got %d", st)
	}
	// Nothing ready: 503.
	for i := range 3 {
		setEP(s, i, 0, 0, fresh, false)
	}
	if i, st := pick(false); i != -1 || st != http.StatusServiceUnavailable {
		t.Errorf("none ready: %d, %d", i, st)
	}
	// Ties are broken at random: each of two equal endpoints is picked.
	setEP(s, 0, 1, 0.1, fresh, true)
	setEP(s, 1, 1, 0.1, fresh, true)
	seen := map[int]int{}
	for range 200 {
		i, _ := pick(false)
		seen[i]++
	}
	if seen[0] < 50 || seen[1] < 50 || len(seen) != 2 {
		t.Errorf("ties: %v, want both about half", seen)
	}
}

// TestLLMDScorerScrapesLLMSim: against two real simulators, the scorer
// reads their vLLM gauges, serves through the one it picks, and drops the
// one that stops answering.
func TestLLMDScorerScrapesLLMSim(t *testing.T) {
	var addrs []string
	var tss []*httptest.Server
	for range 2 {
		sim := llmsim.New(llmsim.Config{Slots: 1})
		ts := httptest.NewServer(sim)
		t.Cleanup(func() { sim.Close(); ts.Close() })
		addrs = append(addrs, strings.TrimPrefix(ts.URL, "http://"))
		tss = append(tss, ts)
	}
	cfg := defaultLLMD
	cfg.Refresh = 10 * time.Millisecond
	s, err := newLLMDScorer(addrs, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.start()
	t.Cleanup(s.close)
	ready := func(want [2]bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			s.mu.Lock()
			got := [2]bool{s.eps[0].ready, s.eps[1].ready}
			s.mu.Unlock()
			if got == want {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("endpoints ready: want %v", want)
	}
	ready([2]bool{true, true})
	front := httptest.NewServer(s)
	t.Cleanup(front.Close)
	resp, err := http.Post(front.URL+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"demo-llm","messages":[{"role":"user","content":"hi"}],"max_tokens":2}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("through the scorer: %s", resp.Status)
	}
	tss[1].Close()
	ready([2]bool{true, false})
	for range 20 {
		if i, st := s.pick(false, time.Now()); i != 0 || st != 0 {
			t.Fatalf("with #1 gone: picked %d (%d), want 0", i, st)
		}
	}
}

func TestParseVLLMGauges(t *testing.T) {
	text := "# HELP x\nvllm:num_requests_running{model_name=\"m\",engine=\"0\"} 5\n" +
		"vllm:num_requests_waiting{model_name=\"m\",engine=\"0\"} 7\nvllm:kv_cache_usage_perc{model_name=\"a b\"} 0.25\n"
	w, kv, err := parseVLLMGauges(strings.NewReader(text))
	if err != nil || w != 7 || kv != 0.25 {
		t.Errorf("got %d, %g, %v; want 7, 0.25", w, kv, err)
	}
	if _, _, err := parseVLLMGauges(strings.NewReader("vllm:num_requests_waiting 1\n")); err == nil {
		t.Error("a missing KV gauge was accepted")
	}
}

// TestPoolCaddyfile renders the pool template for every set-up and, when
// ./caddy has been built, has Caddy adapt it (the policy's only where the
// binary has the policy).
func TestPoolCaddyfile(t *testing.T) {
	dir := t.TempDir()
	caddy, _ := filepath.Abs("../../caddy")
	mods, _ := exec.Command(caddy, "list-modules").Output()
	for _, setup := range append(slices.Clone(poolSetupNames), setupPolicyNoGauge) {
		v := poolCaddyVarsFor(setup, "127.0.0.1:2999", 18080, []string{"127.0.0.1:9001", "127.0.0.1:9002"}, poolGauge)
		out := filepath.Join(dir, setup+".Caddyfile")
		if err := renderCaddyfile("../../lab/pool.Caddyfile.tmpl", out, v); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(out)
		body := string(b)
		if !strings.Contains(body, "reverse_proxy 127.0.0.1:9001 127.0.0.1:9002 {") {
			t.Errorf("%s: upstreams missing:\n%s", setup, body)
		}
		wantPolicy := map[string]string{setupPoolPlain: "least_conn", setupPoolModule: "least_conn", setupLLMD: "least_conn",
			setupPolicy: "adaptive_throttle pool", setupPolicyNoGauge: "adaptive_throttle pool"}[setup]
		if !strings.Contains(body, "lb_policy "+wantPolicy+"\n") {
			t.Errorf("%s: want lb_policy %s:\n%s", setup, wantPolicy, body)
		}
		if got := strings.Contains(body, "adaptive_throttle {"); got != moduleSetup(setup) {
			t.Errorf("%s: module in front %v, want %v", setup, got, moduleSetup(setup))
		}
		if (setup == setupPolicy || setup == setupPolicyNoGauge) && !strings.Contains(body, "name pool") {
			t.Errorf("the policy's handler is not named:\n%s", body)
		}
		if got := strings.Contains(body, "upstream_gauge {\n\t\t\tmetric vllm:num_requests_waiting max 4\n\t\t\tthreshold 50%\n\t\t}"); got != (setup == setupPolicy) {
			t.Errorf("%s: upstream_gauge block %v, want it in the policy's set-up alone:\n%s", setup, got, body)
		}
		if len(mods) == 0 || ((setup == setupPolicy || setup == setupPolicyNoGauge) && !strings.Contains(string(mods), policyModule)) {
			continue
		}
		cmd := exec.Command(caddy, "adapt", "--config", out, "--adapter", "caddyfile")
		cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
		if msg, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("caddy adapt %s: %v\n%s", setup, err, msg)
		}
	}
}

// TestReadMembers: the module's view of each upstream is matched to the
// lab's upstream by address.
func TestReadMembers(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"instances":[{"name":"pool","upstreams":[` +
			`{"upstream":"127.0.0.1:9002","state":"open","limit":3},{"upstream":"127.0.0.1:9001","state":"closed","limit":7}]}]}`))
	}))
	defer ts.Close()
	pe := &poolEnv{client: ts.Client(), status: ts.URL, ups: []*poolProc{{port: 9001}, {port: 9002}, {port: 9003}}}
	looks := make([]upstreamLook, 3)
	pe.readMembers(t.Context(), looks)
	if looks[0].Limit == nil || *looks[0].Limit != 7 || looks[0].State != "closed" ||
		looks[1].Limit == nil || *looks[1].Limit != 3 || looks[1].State != "open" || looks[2].Limit != nil {
		t.Errorf("looks %+v", looks)
	}
}

// TestPlayAppliesChanges: a pool's change is applied at its offset, even
// while looks at the upstreams are slow, and noted as an event.
func TestPlayAppliesChanges(t *testing.T) {
	sim := llmsim.New(llmsim.Config{Slots: 5})
	ts := httptest.NewServer(sim)
	t.Cleanup(func() { sim.Close(); ts.Close() })
	port := ts.Listener.Addr().(*net.TCPAddr).Port
	pe := &poolEnv{client: ts.Client(), ups: []*poolProc{{port: port, proc: &proc{done: make(chan struct{})},
		u: poolUpstream{Slots: 5, Changes: []poolChange{{At: 100 * time.Millisecond, Slots: 1}}}}}}
	done := make(chan struct{})
	time.AfterFunc(400*time.Millisecond, func() { close(done) })
	pe.play(t.Context(), time.Now(), done)
	r := pe.result()
	if len(r.Events) != 1 || !strings.Contains(r.Events[0].What, "slots set to 1") || r.Events[0].T < 0.1 {
		t.Errorf("events %+v, want the slots set to 1 at 0.1 s or later", r.Events)
	}
	if st := sim.State(); st.Slots != 1 {
		t.Errorf("the upstream runs %d slots, want 1", st.Slots)
	}
	if len(r.Samples) < 2 || !r.Samples[0].Upstreams[0].Up {
		t.Errorf("samples %+v", r.Samples)
	}
}
