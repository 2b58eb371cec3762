package main

import (
	"context"
	"encoding/json"
	"image/png"
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

// inProcessEnvs starts the set-ups that need no Caddy: llmsim alone, and
// each peer in front of its own llmsim. Building Caddy inside a test takes
// minutes, so the adaptive set-up is left to `go run ./cmd/lab -smoke`,
// which uses the real binary.
func inProcessEnvs(t *testing.T, sc scenario) ([]*env, []*llmsim.Server) {
	t.Helper()
	var envs []*env
	var sims []*llmsim.Server
	for _, s := range peers {
		sim := llmsim.New(llmsim.Config{})
		simTS := httptest.NewServer(sim)
		t.Cleanup(func() { sim.Close(); simTS.Close() })
		e := &env{Setup: s, Target: simTS.URL, Upstream: simTS.URL}
		if s != setupNone {
			u, _ := url.Parse(simTS.URL)
			lim, err := newPeer(s, u, sc)
			if err != nil {
				t.Fatal(err)
			}
			limTS := httptest.NewServer(lim)
			t.Cleanup(limTS.Close)
			e.Target, e.peer = limTS.URL, lim
		}
		envs = append(envs, e)
		sims = append(sims, sim)
	}
	return envs, sims
}

func byName(t *testing.T, scs []scenario, name string) scenario {
	t.Helper()
	for _, sc := range scs {
		if sc.Name == name {
			return sc
		}
	}
	t.Fatalf("no scenario %q", name)
	return scenario{}
}

// TestSmokeInProcess is the lab's pipeline end to end, minus Caddy: three
// scenarios shrunk to seconds (the step, the capacity drop, and the
// heterogeneous lengths, counted in tokens), against the real simulator,
// with the tables, plot and JSON written and read back.
func TestSmokeInProcess(t *testing.T) {
	scs := scenarios(llmsim.Config{}, 0, true)
	step, drop, hetero := byName(t, scs, "step"), byName(t, scs, "drop"), byName(t, scs, "hetero")
	if want := (llmsim.Config{Slots: llmsim.DefaultSlots / 2}).Capacity(); drop.WindowCapacity != want {
		t.Errorf("capacity after the drop %g, want llmsim's %g", drop.WindowCapacity, want)
	}
	step.Profile.StepAt, step.Profile.StepFor, step.Profile.Duration = time.Second, 2*time.Second, 4*time.Second
	step.WindowFrom, step.WindowTo = time.Second, 3*time.Second
	drop.Profile.Duration, drop.Profile.DropAt = 3*time.Second, 1500*time.Millisecond
	drop.WindowFrom, drop.WindowTo, drop.CalmTo = 1500*time.Millisecond, 3*time.Second, 1500*time.Millisecond
	hetero.Profile.StepAt, hetero.Profile.StepFor, hetero.Profile.Duration = time.Second, 2*time.Second, 3500*time.Millisecond
	hetero.WindowFrom, hetero.WindowTo, hetero.CalmTo = time.Second, 3*time.Second, time.Second
	for _, sc := range []*scenario{&step, &drop, &hetero} {
		sc.Timeout = 3 * time.Second
	}
	dir := t.TempDir()

	var wg sync.WaitGroup
	results := map[string][]outcome{}
	var mu sync.Mutex
	sims := map[string][]*llmsim.Server{}
	for _, sc := range []scenario{step, drop, hetero} {
		envs, ss := inProcessEnvs(t, sc)
		sims[sc.Name] = ss
		wg.Go(func() {
			outs, err := playAll(context.Background(), sc, envs, func(ctx context.Context, e env) (*loadgen.Result, error) {
				return loadgen.Run(ctx, loadConfig(sc, e))
			})
			if err != nil {
				t.Error(err)
				return
			}
			if err := writeResults(dir, sc, outs, ceilingOf(sc, outs), machineInfo()); err != nil {
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

	none, inflight, grad := results["step"][0], results["step"][1], results["step"][2]
	if none.Res.Overall.Shed() != 0 || none.Res.Overall.OK == 0 || none.FirstShedS != nil {
		t.Errorf("no protection must shed nothing and serve: %+v", none.Res.Overall)
	}
	// 3× capacity against 12 in flight over 8 slots: refusals, each a 429
	// with Retry-After, from within a second of the onset.
	if s := inflight.Res.Overall; s.Shed429RA == 0 || s.Shed() != s.Shed429RA {
		t.Errorf("in-flight limit: want refusals, every one a 429 with Retry-After: %+v", s)
	}
	if inflight.FirstShedS == nil || *inflight.FirstShedS > 1 {
		t.Errorf("in-flight limit's first refusal after onset: %v", inflight.FirstShedS)
	}
	if s := grad.Res.Overall; s.OK == 0 || s.Shed() != s.Shed429RA {
		t.Errorf("Gradient2: want answers, and any refusal a 429 with Retry-After: %+v", s)
	}
	for _, o := range []outcome{inflight, grad} {
		if len(o.Peer) == 0 || o.Peer[0].Limit < 1 {
			t.Errorf("%s: peer never sampled: %+v", o.Setup, o.Peer)
		}
	}
	if inflight.Peer[0].Limit != defaultInflight(llmsim.DefaultSlots) {
		t.Errorf("in-flight limit %d, want 1.5 × %d slots", inflight.Peer[0].Limit, llmsim.DefaultSlots)
	}
	if inflight.RecoverS == nil || none.RecoverS == nil || *none.RecoverS != 0 {
		t.Errorf("recover times: in-flight %v, none %v", inflight.RecoverS, none.RecoverS)
	}
	if none.UpstreamOOMs < 0 || none.Res.Series[0].GPUMemory == nil {
		t.Errorf("the upstream was not polled: %+v", none.Res.Series[0])
	}
	// Every answer reported its tokens: 24 each (llmsim's default) in the
	// step, the asked max_tokens in the hetero scenario.
	if s := none.Res.Overall; s.Tokens != 24*s.OK {
		t.Errorf("step: %d tokens for %d answers, want 24 each", s.Tokens, s.OK)
	}
	for _, o := range results["hetero"] {
		asked := 0
		for _, r := range o.Res.Records {
			if r.Class == loadgen.ClassOK {
				if r.Tokens != r.MaxTokens {
					t.Fatalf("hetero/%s: answer of %d tokens for max_tokens %d", o.Setup, r.Tokens, r.MaxTokens)
				}
				asked += r.MaxTokens
			}
		}
		if asked == 0 || o.Res.Overall.Tokens != asked || o.GoodTokensWindow <= 0 {
			t.Errorf("hetero/%s: tokens %d (asked %d), good tokens/s %g", o.Setup, o.Res.Overall.Tokens, asked, o.GoodTokensWindow)
		}
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

	for _, name := range []string{"step", "drop", "hetero"} {
		md, err := os.ReadFile(filepath.Join(dir, name+".md"))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"| no protection |", "| static in-flight limit 12 |",
			"| Gradient2 (published algorithm, lab implementation) |", "| none | high |", "](" + name + ".png)"} {
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
		if b := img.Bounds(); b.Dx() != 1920 || b.Dy() != 1536 {
			t.Errorf("%s.png is %v", name, b)
		}
		raw, err := os.ReadFile(filepath.Join(dir, name+".json"))
		if err != nil {
			t.Fatal(err)
		}
		var back struct {
			Outcomes []outcome `json:"outcomes"`
		}
		if err := json.Unmarshal(raw, &back); err != nil || len(back.Outcomes) != 3 || len(back.Outcomes[0].Res.Series) == 0 {
			t.Errorf("%s.json: %v, %d outcomes", name, err, len(back.Outcomes))
		}
	}
	md, _ := os.ReadFile(filepath.Join(dir, "hetero.md"))
	if !strings.Contains(string(md), "goodput ÷ capacity (tokens)") {
		t.Errorf("hetero.md does not count goodput in tokens:\n%s", md)
	}
	// The ideal gateway on the run's arrivals: for the scenarios whose
	// slots stay, not for drop.
	for name, want := range map[string]bool{"step": true, "hetero": true, "drop": false} {
		md, _ := os.ReadFile(filepath.Join(dir, name+".md"))
		if got := strings.Contains(string(md), "an ideal gateway reaches"); got != want {
			t.Errorf("%s.md: ceiling shown %v, want %v", name, got, want)
		}
		raw, _ := os.ReadFile(filepath.Join(dir, name+".json"))
		var back struct {
			Ceiling []ceiling `json:"ceiling"`
		}
		keeps := map[bool]int{true: 3}[name == "hetero"] + map[bool]int{true: 1}[name == "step"]
		if err := json.Unmarshal(raw, &back); err != nil || len(back.Ceiling) != keeps {
			t.Errorf("%s.json: ceiling %+v (%v), want %d", name, back.Ceiling, err, keeps)
		} else if want && (back.Ceiling[0].Goodput <= 0 || back.Ceiling[0].High == 0) {
			t.Errorf("%s.json: ceiling %+v", name, back.Ceiling)
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
	tight := v
	tight.Latency = byName(t, scenarios(llmsim.Config{}, 0, false), "tightslo").Latency
	for _, name := range []string{"plain", "adaptive", "adaptive-tight"} {
		v := v
		tmpl := name
		if name == "adaptive-tight" {
			v, tmpl = tight, "adaptive"
		}
		out := filepath.Join(dir, name+".Caddyfile")
		if err := renderCaddyfile(filepath.Join("../../lab", tmpl+".Caddyfile.tmpl"), out, v); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(out)
		if strings.Contains(string(b), "{{") || !strings.Contains(string(b), "reverse_proxy 127.0.0.1:18000") ||
			!strings.Contains(string(b), "admin 127.0.0.1:2999") {
			t.Errorf("%s rendered as:\n%s", name, b)
		}
		if name == "adaptive-tight" && (!strings.Contains(string(b), "latency {") || !strings.Contains(string(b), "measure total")) {
			t.Errorf("the tight scenario's latency block is missing:\n%s", b)
		}
		if tmpl == "adaptive" && !strings.Contains(string(b), "source prometheus http://127.0.0.1:18000/metrics") {
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
