package main

import (
	"context"
	"encoding/json"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/internal/llmsim"
	"github.com/ai-guardian/adaptivethrottle/internal/loadgen"
)

// inProcessEnvs starts set-ups (a) and (b) without Caddy: llmsim alone, and
// the static limiter in front of another llmsim. Building Caddy inside a
// test takes minutes, so the adaptive set-up is left to `go run ./cmd/lab
// -smoke`, which uses the real binary.
func inProcessEnvs(t *testing.T, capacity float64) ([]*env, []*llmsim.Server) {
	t.Helper()
	var envs []*env
	var sims []*llmsim.Server
	for _, s := range []string{setupNone, setupStatic} {
		sim := llmsim.New(llmsim.Config{})
		simTS := httptest.NewServer(sim)
		t.Cleanup(func() { sim.Close(); simTS.Close() })
		target := simTS.URL
		if s == setupStatic {
			u, _ := url.Parse(simTS.URL)
			lim, err := newStaticLimiter(u, capacity, staticBurst)
			if err != nil {
				t.Fatal(err)
			}
			limTS := httptest.NewServer(lim)
			t.Cleanup(limTS.Close)
			target = limTS.URL
		}
		envs = append(envs, &env{Setup: s, Target: target, Upstream: simTS.URL})
		sims = append(sims, sim)
	}
	return envs, sims
}

func runInProcess(ctx context.Context, e env, sc scenario) (*loadgen.Result, error) {
	return loadgen.Run(ctx, loadConfig(sc, e))
}

// TestSmokeInProcess is the lab's pipeline end to end, minus Caddy: both
// scenarios, shrunk to seconds, against the real simulator, with the
// tables, plot and JSON written and read back.
func TestSmokeInProcess(t *testing.T) {
	capacity := llmsim.Config{}.Capacity()
	scs := scenarios(capacity, llmsim.DefaultSlots, true)
	step, drop := scs[0], scs[1]
	if want := (llmsim.Config{Slots: llmsim.DefaultSlots / 2}).Capacity(); drop.WindowCapacity != want {
		t.Errorf("capacity after the drop %g, want llmsim's %g", drop.WindowCapacity, want)
	}
	step.Profile.StepAt, step.Profile.StepFor, step.Profile.Duration = time.Second, 2*time.Second, 4*time.Second
	step.WindowFrom, step.WindowTo = time.Second, 3*time.Second
	drop.Profile.Duration, drop.Profile.DropAt = 3*time.Second, 1500*time.Millisecond
	drop.WindowFrom, drop.WindowTo = 1500*time.Millisecond, 3*time.Second
	for _, sc := range []*scenario{&step, &drop} {
		sc.Timeout = 3 * time.Second
	}
	dir := t.TempDir()

	var wg sync.WaitGroup
	results := map[string][]outcome{}
	var mu sync.Mutex
	sims := map[string][]*llmsim.Server{}
	for _, sc := range []scenario{step, drop} {
		envs, ss := inProcessEnvs(t, capacity)
		sims[sc.Name] = ss
		wg.Go(func() {
			outs, err := playAll(context.Background(), sc, envs, func(ctx context.Context, e env) (*loadgen.Result, error) {
				return runInProcess(ctx, e, sc)
			})
			if err != nil {
				t.Error(err)
				return
			}
			if err := writeResults(dir, sc, outs, machineInfo()); err != nil {
				t.Error(err)
			}
			mu.Lock()
			results[sc.Name] = outs
			mu.Unlock()
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	none, static := results["step"][0], results["step"][1]
	if none.Res.Overall.Shed() != 0 || none.Res.Overall.OK == 0 || none.FirstShedS != nil {
		t.Errorf("no protection must shed nothing and serve: %+v", none.Res.Overall)
	}
	if s := static.Res.Overall; s.Shed429RA == 0 || s.Shed() != s.Shed429RA {
		t.Errorf("static limiter: want every refusal a 429 with Retry-After: %+v", s)
	}
	// 3× capacity through a bucket at capacity with burst 3: the first
	// refusal comes within a fraction of a second of the onset.
	if static.FirstShedS == nil || *static.FirstShedS > 0.5 {
		t.Errorf("static limiter's first shed after onset: %v", static.FirstShedS)
	}
	if static.RecoverS == nil || none.RecoverS == nil || *none.RecoverS != 0 {
		t.Errorf("recover times: static %v, none %v", static.RecoverS, none.RecoverS)
	}
	if none.UpstreamOOMs < 0 || none.Res.Series[0].GPUMemory == nil {
		t.Errorf("the upstream was not polled: %+v", none.Res.Series[0])
	}

	for _, sim := range sims["drop"] {
		if st := sim.State(); st.Slots != llmsim.DefaultSlots/2 {
			t.Errorf("after the drop scenario the simulator runs %d slots, want %d", st.Slots, llmsim.DefaultSlots/2)
		}
	}
	for _, o := range results["drop"] {
		if len(o.Res.Events) != 1 || !strings.Contains(o.Res.Events[0].What, "slots set to 4") {
			t.Errorf("%s: events %+v", o.Setup, o.Res.Events)
		}
	}

	for _, name := range []string{"step", "drop"} {
		md, err := os.ReadFile(filepath.Join(dir, name+".md"))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"| no protection |", "| static limiter 10.5 req/s |", "| none | high |", "](" + name + ".png)"} {
			if !strings.Contains(string(md), want) {
				t.Errorf("%s.md lacks %q:\n%s", name, want, md)
			}
		}
		f, err := os.Open(filepath.Join(dir, name+".png"))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s.png: %v", name, err)
		}
		if b := img.Bounds(); b.Dx() != 1536 || b.Dy() != 1248 {
			t.Errorf("%s.png is %v", name, b)
		}
		raw, err := os.ReadFile(filepath.Join(dir, name+".json"))
		if err != nil {
			t.Fatal(err)
		}
		var back struct {
			Outcomes []outcome `json:"outcomes"`
		}
		if err := json.Unmarshal(raw, &back); err != nil || len(back.Outcomes) != 2 || len(back.Outcomes[0].Res.Series) == 0 {
			t.Errorf("%s.json: %v, %d outcomes", name, err, len(back.Outcomes))
		}
	}
}

func TestStaticLimiter(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: [DONE]\n\n")
	}))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	lim, err := newStaticLimiter(u, 1, 3) // one token a second: none comes back during the test
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(lim)
	defer ts.Close()
	var codes []int
	for range 5 {
		resp, err := http.Post(ts.URL+"/v1/chat/completions", "application/json", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
		switch resp.StatusCode {
		case 200:
			if string(body) != "data: [DONE]\n\n" {
				t.Errorf("proxied body %q", body)
			}
		case 429:
			if resp.Header.Get("Retry-After") != "1" {
				t.Errorf("429 without Retry-After: 1")
			}
		}
	}
	if want := []int{200, 200, 200, 429, 429}; !equalInts(codes, want) {
		t.Errorf("codes %v, want %v (burst 3 then refusals)", codes, want)
	}
	for _, bad := range []float64{0, -1} {
		if _, err := newStaticLimiter(u, bad, 1); err == nil {
			t.Errorf("rate %g accepted", bad)
		}
	}
	if _, err := newStaticLimiter(u, 1, 0); err == nil {
		t.Error("burst 0 accepted")
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestAnalyzeAndTargets checks the target arithmetic on a made-up run:
// a 10 s overload window from 10 s to 20 s.
func TestAnalyzeAndTargets(t *testing.T) {
	sc := scenario{Capacity: 10, WindowCapacity: 10, Profile: loadgen.Profile{Kind: loadgen.Step, Duration: 30 * time.Second},
		WindowFrom: 10 * time.Second, WindowTo: 20 * time.Second}
	var recs []loadgen.Record
	// 95 good answers completing inside the window, all high.
	for i := range 95 {
		at := 10000 + float64(i)*100
		recs = append(recs, loadgen.Record{AtMS: at, SentMS: at, Priority: loadgen.High, Class: loadgen.ClassOK, TTFBMS: 50, TotalMS: 60, WithinSLO: true})
	}
	recs = append(recs,
		loadgen.Record{AtMS: 11500, Priority: loadgen.Low, Class: loadgen.ClassShed429, RetryAfter: true}, // first shed 1.5 s after onset
		loadgen.Record{AtMS: 5000, Priority: loadgen.Low, Class: loadgen.ClassShed429},                    // before the onset: ignored
		loadgen.Record{AtMS: 24000, Priority: loadgen.Low, Class: loadgen.ClassShed503, RetryAfter: true}, // last shed 4 s after the drop
		loadgen.Record{AtMS: 12000, Priority: loadgen.Medium, Class: loadgen.ClassOOM},
	)
	th := func(shed bool, qps, lat uint64) *loadgen.ThrottleState {
		s := &loadgen.ThrottleState{Shedding: shed}
		s.Levels.QPS.Transitions, s.Levels.Latency.Transitions = qps, lat
		return s
	}
	res := &loadgen.Result{DurationS: 30, Records: recs, Polls: []loadgen.Poll{
		{T: 0, Throttle: th(false, 4, 0), Upstream: &loadgen.UpstreamState{}},
		{T: 11, Throttle: th(true, 5, 0)},
		{T: 12, Throttle: th(false, 5, 1)},
		{T: 13, Throttle: th(true, 5, 2)},
		{T: 25, Throttle: th(false, 6, 2), Upstream: &loadgen.UpstreamState{OOMs: 1}},
	}}
	res.High = loadgen.Summarize(recs[:95], 30)
	o := analyze(sc, setupAdaptive, res)
	if o.GoodputWindow != 9.5 {
		t.Errorf("goodput in window %g, want 9.5", o.GoodputWindow)
	}
	if o.FirstShedS == nil || *o.FirstShedS != 1.5 || o.RecoverS == nil || *o.RecoverS != 4 {
		t.Errorf("first shed %v, recover %v; want 1.5 and 4", o.FirstShedS, o.RecoverS)
	}
	if o.UpstreamOOMs != 1 || o.SheddingFlips != 4 || o.Transitions["qps"] != 2 || o.Transitions["latency"] != 2 || o.maxLevelTransitions() != 2 {
		t.Errorf("OOMs %d, flips %d, transitions %v", o.UpstreamOOMs, o.SheddingFlips, o.Transitions)
	}
	if w := o.Window; w.High.Sent != 95 || w.Medium.OOM != 1 || w.Low.Sent != 1 {
		t.Errorf("window stats: %+v", w)
	}
	met := map[string]bool{}
	for _, tg := range stepTargets(sc, o) {
		met[tg.What] = tg.Met
	}
	want := map[string]bool{
		"high-priority SLO attainment (whole run)": true,  // 95/95
		"upstream OOMs (llmsim's counter)":         false, // 1
		"goodput during the overload ÷ capacity":   true,  // 0.95
		"first shed after the onset":               true,  // 1.5 s
		"all passes again after the load drops":    true,  // 4 s
		"trip/recover transitions in the episode":  false, // 4 shedding flips
	}
	for k, v := range want {
		if got, ok := met[k]; !ok || got != v {
			t.Errorf("target %q: met=%v (present %v), want %v", k, got, ok, v)
		}
	}
}

// TestCaddyfileTemplates renders both templates and, when ./caddy has been
// built, has Caddy adapt them (a syntax check of the lab's set-ups).
func TestCaddyfileTemplates(t *testing.T) {
	dir := t.TempDir()
	v := caddyVars{Admin: "127.0.0.1:2999", Port: 18080, Upstream: "127.0.0.1:18000", Metrics: "http://127.0.0.1:18000/metrics"}
	caddy, _ := filepath.Abs("../../caddy")
	_, statErr := os.Stat(caddy)
	for _, name := range []string{"plain", "adaptive"} {
		out := filepath.Join(dir, name+".Caddyfile")
		if err := renderCaddyfile(filepath.Join("../../lab", name+".Caddyfile.tmpl"), out, v); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(out)
		if strings.Contains(string(b), "{{") || !strings.Contains(string(b), "reverse_proxy 127.0.0.1:18000") ||
			!strings.Contains(string(b), "admin 127.0.0.1:2999") {
			t.Errorf("%s rendered as:\n%s", name, b)
		}
		if name == "adaptive" && !strings.Contains(string(b), "source prometheus http://127.0.0.1:18000/metrics") {
			t.Errorf("adaptive template lacks the prometheus source:\n%s", b)
		}
		if statErr != nil {
			continue
		}
		cmd := exec.Command(caddy, "adapt", "--config", out, "--adapter", "caddyfile")
		cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
		if msg, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("caddy adapt %s: %v\n%s", name, err, msg)
		}
	}
	if err := renderCaddyfile(filepath.Join("../../lab", "nope.tmpl"), filepath.Join(dir, "x"), v); err == nil {
		t.Error("a missing template was accepted")
	}
}
