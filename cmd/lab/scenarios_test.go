package main

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/internal/llmsim"
	"github.com/ai-guardian/adaptivethrottle/internal/loadgen"
)

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

// TestScenarioDefinitions checks each scenario's durations, window and
// offered load against llmsim's capacity, full-length and smoke.
func TestScenarioDefinitions(t *testing.T) {
	sim := llmsim.Config{}
	c := sim.Capacity()
	full := scenarios(sim, 0, false)
	var names []string
	var total, poolTotal time.Duration
	for _, sc := range full {
		names = append(names, sc.Name)
		if len(sc.Pool) > 0 {
			poolTotal += sc.Profile.Duration + sc.Timeout
		} else {
			total += sc.Profile.Duration + sc.Timeout
		}
		if err := sc.Profile.Validate(); err != nil {
			t.Errorf("%s: %v", sc.Name, err)
		}
		if sc.Profile.Duration > 3*time.Minute {
			t.Errorf("%s lasts %v, over 3 min", sc.Name, sc.Profile.Duration)
		}
		if sc.WindowFrom < 0 || sc.WindowTo <= sc.WindowFrom || sc.WindowTo > sc.Profile.Duration {
			t.Errorf("%s: window %v–%v outside the %v run", sc.Name, sc.WindowFrom, sc.WindowTo, sc.Profile.Duration)
		}
		wantSlots := 8
		if sc.Name == "hetero32" {
			wantSlots = wideSlots
		}
		if len(sc.Pool) == 0 && sc.Slots != wantSlots || sc.InflightN != defaultInflight(wantSlots) {
			t.Errorf("%s: in-flight N %d for %d slots, want %d for %d", sc.Name, sc.InflightN, sc.Slots, defaultInflight(wantSlots), wantSlots)
		}
		// Offered load while calm is at most 0.9× capacity, and the calm
		// stretch ends where it first exceeds it.
		for at := time.Duration(0); at < sc.CalmTo; at += 100 * time.Millisecond {
			if r := sc.Profile.RateAt(at); r > 0.9*sc.capacityAt(at)*(1+1e-6) {
				t.Errorf("%s: %.2f req/s at %v, inside the calm stretch (to %v)", sc.Name, r, at, sc.CalmTo)
				break
			}
		}
		if sc.CalmTo < sc.Profile.Duration && sc.Profile.RateAt(sc.CalmTo+scanStep) <= 0.9*sc.capacityAt(sc.CalmTo+scanStep) {
			t.Errorf("%s: calm ends at %v but the load is still ≤ 0.9× just after", sc.Name, sc.CalmTo)
		}
	}
	if !slices.Equal(names, scenarioNames) {
		t.Errorf("scenarios %v, want %v", names, scenarioNames)
	}
	// All ten one after another, drains included: under 24 minutes.
	if total > 24*time.Minute {
		t.Errorf("the ten scenarios take up to %v", total)
	}
	// The four pool scenarios: under 9 minutes.
	if poolTotal > 9*time.Minute {
		t.Errorf("the pool scenarios take up to %v", poolTotal)
	}
	mid := func(sc scenario) time.Duration { return (sc.WindowFrom + sc.WindowTo) / 2 }
	load := func(sc scenario, at time.Duration) float64 { return sc.Profile.RateAt(at) / sc.capacityAt(at) }

	// storm, storm-q2: 2× for 40 s against an upstream that answers
	// Ollama's 503 once its slots (and a queue of 2) are full.
	for name, queue := range map[string]int{"storm": 0, "storm-q2": 2} {
		st := byName(t, full, name)
		if st.Storm == nil || st.Storm.Queue != queue || !near(load(st, mid(st)), 2, 0.02) ||
			st.WindowTo-st.WindowFrom != 40*time.Second || !st.OverloadEnds {
			t.Errorf("%s: %+v", name, st)
		}
		args := strings.Join(st.simArgs(), " ")
		want := "-full-answer ollama -no-queue"
		if queue > 0 {
			want = "-full-answer ollama -queue-limit 2"
		}
		if args != want {
			t.Errorf("%s: llmsim flags %q, want %q", name, args, want)
		}
	}
	if args := byName(t, full, "step").simArgs(); args != nil {
		t.Errorf("step: llmsim flags %q, want none", args)
	}

	step := byName(t, full, "step")
	if !near(load(step, mid(step)), 3, 0.01) || !near(load(step, time.Second), 0.5, 0.01) || !step.OverloadEnds ||
		step.CalmTo != step.WindowFrom || step.WindowTo-step.WindowFrom != time.Minute {
		t.Errorf("step: %+v", step)
	}

	drop := byName(t, full, "drop")
	if !near(load(drop, time.Second), 0.9, 1e-9) || !near(load(drop, mid(drop)), 1.8, 1e-9) || drop.OverloadEnds ||
		drop.WindowFrom != drop.Profile.DropAt || drop.CalmTo != drop.Profile.DropAt {
		t.Errorf("drop: %+v", drop)
	}

	// hetero: 2× capacity in tokens in the window: requests × mean tokens
	// against llmsim's token rate for the mix.
	h := byName(t, full, "hetero")
	if !h.tokens() || h.Sizes.Mean() != 140 {
		t.Fatalf("hetero sizes %v", h.Sizes)
	}
	tokenCap := sim.CapacityFor(140) * 140
	if !near(h.TokenCapacity, tokenCap, 1e-9) {
		t.Errorf("hetero token capacity %g, want %g", h.TokenCapacity, tokenCap)
	}
	if got := h.Profile.RateAt(mid(h)) * h.Sizes.Mean() / tokenCap; !near(got, 2, 0.01) {
		t.Errorf("hetero offers %.3f× capacity in tokens in the window", got)
	}
	if got := h.Profile.RateAt(time.Second) * h.Sizes.Mean() / tokenCap; !near(got, 0.5, 0.01) || !h.OverloadEnds {
		t.Errorf("hetero offers %.3f× before the window", got)
	}

	// hetero32: the same mix and load on 32 slots: 4× the request rate.
	h32 := byName(t, full, "hetero32")
	wideCap := llmsim.Config{Slots: wideSlots}.CapacityFor(140) * 140
	if !near(h32.TokenCapacity, wideCap, 1e-9) || !near(h32.TokenCapacity, 4*tokenCap, 1e-6) {
		t.Errorf("hetero32 token capacity %g, want %g", h32.TokenCapacity, wideCap)
	}
	if got := h32.Profile.RateAt(mid(h32)) * h32.Sizes.Mean() / wideCap; !near(got, 2, 0.01) || h32.WindowFrom != h.WindowFrom || h32.WindowTo != h.WindowTo {
		t.Errorf("hetero32 offers %.3f× capacity in tokens in the window %v–%v", got, h32.WindowFrom, h32.WindowTo)
	}
	if n := scenarios(sim, 20, false); byName(t, n, "hetero32").InflightN != 20 {
		t.Errorf("-inflight 20 is not kept for hetero32")
	}

	// ramp: 0.3× → 3× → 0.3×; the window is where it is over 1×, and the
	// calm stretch ends where it crosses 0.9×.
	r := byName(t, full, "ramp")
	if !near(load(r, 0), 0.3, 0.01) || !near(load(r, 100*time.Second), 3, 0.01) || !near(load(r, r.Profile.Duration-time.Second), 0.3, 0.01) {
		t.Errorf("ramp rates: %v", r.Profile.Points)
	}
	if !near(load(r, r.WindowFrom), 1, 0.01) || !near(load(r, r.WindowTo-scanStep), 1, 0.01) || !near(load(r, r.CalmTo), 0.9, 0.01) {
		t.Errorf("ramp window %v–%v, calm to %v", r.WindowFrom, r.WindowTo, r.CalmTo)
	}
	if r.WindowTo-r.WindowFrom < time.Minute || !r.OverloadEnds || r.CalmTo >= r.WindowFrom {
		t.Errorf("ramp: %+v", r)
	}

	cold := byName(t, full, "cold2x")
	if !near(load(cold, 0), 2, 0.01) || !near(load(cold, 70*time.Second), 0.5, 0.01) || cold.WindowFrom != 0 ||
		cold.WindowTo != time.Minute || cold.CalmTo != 0 || !cold.OverloadEnds || cold.Profile.Duration != 90*time.Second {
		t.Errorf("cold2x: %+v", cold)
	}

	st := byName(t, full, "steady09")
	if !near(load(st, 0), 0.9, 1e-9) || !near(load(st, 89*time.Second), 0.9, 1e-9) || st.CalmTo != st.Profile.Duration ||
		st.WindowFrom != 0 || st.WindowTo != st.Profile.Duration || st.OverloadEnds || !near(st.GoodputRef, 0.9, 1e-9) {
		t.Errorf("steady09: %+v", st)
	}
	// tightslo: 64-token answers, 3× their capacity in the window, an
	// end-to-end objective that leaves about half a second to wait at a
	// full batch, stated to the module.
	ts := byName(t, full, "tightslo")
	tcap := sim.CapacityFor(tightTokens)
	served := llmsim.DefaultPrefillTime + tightTokens*sim.TokenDelay(8, 8)
	if !near(ts.Capacity, tcap, 1e-9) || ts.MaxTokens != tightTokens || !near(load(ts, mid(ts)), 3, 0.01) ||
		!near(load(ts, time.Second), 0.5, 0.01) || !ts.OverloadEnds || ts.SLO.TTFB != 0 || ts.SLO.Total != tightSLO {
		t.Errorf("tightslo: %+v", ts)
	}
	if left := tightSLO - served; left <= 0 || left >= time.Second {
		t.Errorf("tightslo leaves %v to wait after a %v answer: want (0, 1s), under max_wait", left, served)
	}
	if !strings.Contains(ts.Latency, "slo 2.5s") || !strings.Contains(ts.Latency, "measure total") {
		t.Errorf("tightslo's latency block %q does not state its SLO end to end", ts.Latency)
	}
	for _, sc := range full {
		if sc.Name != "steady09" && sc.GoodputRef != 1 {
			t.Errorf("%s: goodput reference %g, want 1 (an overload)", sc.Name, sc.GoodputRef)
		}
		if !sc.tokens() && sc.MaxTokens == 0 && len(sc.Pool) == 0 && sc.Capacity != c {
			t.Errorf("%s: capacity %g, want %g", sc.Name, sc.Capacity, c)
		}
	}

	// The smoke keeps every scenario and shape, for seconds.
	for _, sc := range scenarios(sim, 0, true) {
		if err := sc.Profile.Validate(); err != nil {
			t.Errorf("smoke %s: %v", sc.Name, err)
		}
		if sc.Profile.Duration > 12*time.Second || sc.Timeout > 5*time.Second {
			t.Errorf("smoke %s lasts %v (timeout %v)", sc.Name, sc.Profile.Duration, sc.Timeout)
		}
		if sc.WindowTo <= sc.WindowFrom || sc.WindowTo > sc.Profile.Duration {
			t.Errorf("smoke %s: window %v–%v", sc.Name, sc.WindowFrom, sc.WindowTo)
		}
		if sc.tokens() && sc.Sizes.Mean()*0.03 > 2 {
			t.Errorf("smoke %s: answers of %v tokens take too long", sc.Name, sc.Sizes)
		}
	}
	if n := scenarios(sim, 20, false)[0].InflightN; n != 20 {
		t.Errorf("-inflight 20 gave N %d", n)
	}
}

// TestLoadArgs checks that the points profile and the size mix reach
// cmd/loadgen's flags.
func TestLoadArgs(t *testing.T) {
	sc := byName(t, scenarios(llmsim.Config{}, 0, false), "ramp")
	sc.Sizes = heteroSizes
	args := loadArgs(loadConfig(sc, env{Target: "http://127.0.0.1:1"}), "/tmp/x.json")
	flag := func(name string) string {
		i := slices.Index(args, name)
		if i < 0 || i+1 >= len(args) {
			return ""
		}
		return args[i+1]
	}
	pts, err := loadgen.ParsePoints(flag("-points"))
	if err != nil || !slices.Equal(pts, sc.Profile.Points) {
		t.Errorf("-points %q: %v, %v", flag("-points"), pts, err)
	}
	if z, err := loadgen.ParseSizes(flag("-sizes")); err != nil || !slices.Equal(z, heteroSizes) {
		t.Errorf("-sizes %q: %v, %v", flag("-sizes"), z, err)
	}
	if flag("-profile") != "points" {
		t.Errorf("-profile %q", flag("-profile"))
	}
}

func TestChooseSetups(t *testing.T) {
	got, err := chooseSetups("adaptive", "turnover slowstart,stuck")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"adaptive", "adaptive-no-turnover", "adaptive-no-slowstart,stuck"}
	if !slices.Equal(got, want) {
		t.Fatalf("chooseSetups = %q, want %q", got, want)
	}
	for _, s := range got {
		if !isAdaptive(s) {
			t.Errorf("isAdaptive(%q) = false", s)
		}
	}
	if rulesOffOf("adaptive") != "" || rulesOffOf("adaptive-no-slowstart,stuck") != "slowstart,stuck" || isAdaptive("inflight") {
		t.Error("rulesOffOf/isAdaptive")
	}
	for _, bad := range [][2]string{{"nosuch", ""}, {"adaptive", "nosuch"}} {
		if _, err := chooseSetups(bad[0], bad[1]); err == nil {
			t.Errorf("chooseSetups(%q, %q): no error", bad[0], bad[1])
		}
	}
}

// A pool scenario plays its own four set-ups: -setups or -rules-off with
// one is refused, not dropped; the lab's four are fine, and so is any
// choice without a pool scenario.
func TestPoolScenariosRefuseChosenSetups(t *testing.T) {
	all := scenarios(llmsim.Config{}, 0, true)
	var one, pool []scenario
	for _, sc := range all {
		if len(sc.Pool) > 0 {
			pool = append(pool, sc)
		} else {
			one = append(one, sc)
		}
	}
	if len(one) == 0 || len(pool) == 0 {
		t.Fatalf("%d one-upstream and %d pool scenarios, want some of each", len(one), len(pool))
	}
	chosen, err := chooseSetups("adaptive", "slowstart")
	if err != nil {
		t.Fatal(err)
	}
	if err := poolSetupsFixed(append(one[:1:1], pool[0]), chosen); err == nil || !strings.Contains(err.Error(), pool[0].Name) {
		t.Errorf("-setups adaptive -rules-off slowstart with %s: %v, want an error naming it", pool[0].Name, err)
	}
	if err := poolSetupsFixed(one, chosen); err != nil {
		t.Errorf("chosen set-ups without a pool scenario: %v", err)
	}
	if err := poolSetupsFixed(all, setupNames); err != nil {
		t.Errorf("the lab's four set-ups with every scenario: %v", err)
	}
}
