package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/internal/loadgen"
)

func defaultOllamaOptions(t *testing.T, args ...string) ollamaOptions {
	t.Helper()
	var o ollamaOptions
	fs := flag.NewFlagSet("lab", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o.register(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return o
}

func TestOllamaAdaptiveSetups(t *testing.T) {
	o := defaultOllamaOptions(t)
	got, err := o.adaptiveSetups()
	if err != nil {
		t.Fatal(err)
	}
	want := []adaptiveSetup{
		{Name: "adaptive"},
		{Name: "adaptive_throttle (latency { slo 1s })", Lines: "latency { slo 1s }"},
		{Name: "adaptive_throttle (concurrency { max_wait 300ms })", Lines: "concurrency { max_wait 300ms }"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("default set-ups %+v, want %+v", got, want)
	}
	if err := o.check(); err != nil {
		t.Errorf("defaults refused: %v", err)
	}
	for _, bad := range []string{"", " ; ", "latency { slo 1s", "defaults;defaults"} {
		o.adaptive = bad
		if _, err := o.adaptiveSetups(); err == nil {
			t.Errorf("-ollama-adaptive %q accepted", bad)
		}
	}
	for _, args := range [][]string{
		{"-ollama-parallel", "0"}, {"-ollama-tokens", "0"}, {"-ollama-slo", "0s"},
		{"-ollama-capacity", "-1"}, {"-ollama-model-name", "two words"}, {"-ollama-cpu", "4096"},
	} {
		if err := defaultOllamaOptions(t, args...).check(); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

// An Ollama run plays the peers -setups names, then the module's set-ups,
// then one per -rules-off item: the first module set-up with its rules off.
func TestOllamaPlan(t *testing.T) {
	o := options{setups: setupInflight + "," + setupAdaptive, rulesOff: "standingqueue turnover,guard",
		ollama: defaultOllamaOptions(t, "-ollama-adaptive", "latency { slo 1s };defaults")}
	plan, setups, err := ollamaPlan(o)
	if err != nil {
		t.Fatal(err)
	}
	want := []planned{{setupInflight, ""}, {"adaptive_throttle (latency { slo 1s })", "latency { slo 1s }"}, {setupAdaptive, ""},
		{"adaptive-no-standingqueue", "latency { slo 1s }"}, {"adaptive-no-turnover,guard", "latency { slo 1s }"}}
	if !slices.Equal(plan, want) {
		t.Errorf("plan %+v, want %+v", plan, want)
	}
	if len(setups) != 4 || rulesOffOf(setups[3].Name) != "turnover,guard" {
		t.Errorf("the module's set-ups %+v", setups)
	}
	for _, bad := range []options{{setups: "nosuch", ollama: o.ollama}, {setups: setupNone, rulesOff: "nosuch", ollama: o.ollama}} {
		if _, _, err := ollamaPlan(bad); err == nil {
			t.Errorf("-setups %q -rules-off %q accepted", bad.setups, bad.rulesOff)
		}
	}
}

func TestOllamaPinningAndEnvironment(t *testing.T) {
	if got := otherCPUs(2, 1); got != "0" {
		t.Errorf("otherCPUs(2, 1) = %q", got)
	}
	if got := otherCPUs(4, 1); got != "0,2,3" {
		t.Errorf("otherCPUs(4, 1) = %q", got)
	}
	if got := otherCPUs(2, -1); got != "" {
		t.Errorf("otherCPUs(2, -1) = %q, want unpinned", got)
	}
	bin, args := pinned("1", "/x/ollama", "serve")
	if bin != "taskset" || !slices.Equal(args, []string{"-c", "1", "/x/ollama", "serve"}) {
		t.Errorf("pinned: %s %q", bin, args)
	}
	bin, args = pinned("", "/x/ollama", "serve")
	if bin != "/x/ollama" || !slices.Equal(args, []string{"serve"}) {
		t.Errorf("unpinned: %s %q", bin, args)
	}

	o := defaultOllamaOptions(t, "-ollama-parallel", "4", "-ollama-max-queue", "64")
	env := ollamaServeEnv(o, "127.0.0.1:11500", "/tmp/h")
	for _, kv := range []string{"OLLAMA_HOST=127.0.0.1:11500", "OLLAMA_NUM_PARALLEL=4", "OLLAMA_MAX_QUEUE=64",
		"OLLAMA_KEEP_ALIVE=-1", "OLLAMA_MODELS=/tmp/h/models", "HOME=/tmp/h"} {
		if !slices.Contains(env, kv) {
			t.Errorf("environment lacks %s: %q", kv, env)
		}
	}

	mf := modelfile("/m/tiny.gguf", 32)
	for _, line := range []string{"FROM /m/tiny.gguf", "PARAMETER num_thread 1", "PARAMETER num_predict 32", "PARAMETER num_ctx 256"} {
		if !slices.Contains(strings.Split(mf, "\n"), line) {
			t.Errorf("Modelfile lacks %q:\n%s", line, mf)
		}
	}
}

func TestOllamaScenarioAndLoadArgs(t *testing.T) {
	sc := ollamaScenario(7.07, 4, time.Second, false)
	p := sc.Profile
	if p.Kind != loadgen.Step || p.Base != 3.5 || p.Peak != 21.2 || p.StepAt != 40*time.Second || p.StepFor != 40*time.Second || p.Duration != 110*time.Second {
		t.Errorf("profile %+v", p)
	}
	if sc.SLO != (loadgen.SLO{Total: time.Second}) {
		t.Errorf("SLO %+v, want 1 s end to end and no TTFB bound", sc.SLO)
	}
	if sc.WindowFrom != 40*time.Second || sc.WindowTo != 80*time.Second || !sc.OverloadEnds || sc.CalmTo != 40*time.Second {
		t.Errorf("window %v–%v (ends %t), calm to %v", sc.WindowFrom, sc.WindowTo, sc.OverloadEnds, sc.CalmTo)
	}
	if sc.Capacity != 7.07 || sc.InflightN != 6 || sc.Mix != loadgen.DefaultMix {
		t.Errorf("capacity %v, static limit %d, mix %v", sc.Capacity, sc.InflightN, sc.Mix)
	}

	o := defaultOllamaOptions(t)
	args := ollamaLoadArgs(sc, env{Target: "http://127.0.0.1:9", Upstream: "http://127.0.0.1:11434", ThrottleStatus: "http://127.0.0.1:2019/throttle/status"}, o, "/tmp/l.json")
	flagValue := func(name string) (string, bool) {
		i := slices.Index(args, name)
		if i < 0 || i+1 >= len(args) {
			return "", false
		}
		return args[i+1], true
	}
	for name, want := range map[string]string{
		"-model": "tiny", "-max-tokens": "32", "-slo-total": "1s", "-slo-ttfb": "0s", "-stream=true": "",
		"-profile": "step", "-base": "3.5", "-peak": "21.2", "-timeout": "15s", "-throttle-status": "http://127.0.0.1:2019/throttle/status",
	} {
		if want == "" {
			if !slices.Contains(args, name) {
				t.Errorf("args lack %s: %q", name, args)
			}
			continue
		}
		if got, ok := flagValue(name); !ok || got != want {
			t.Errorf("%s = %q, want %q (args %q)", name, got, want, args)
		}
	}
	// Ollama is not llmsim: nothing polls its /admin/state.
	if slices.Contains(args, "-upstream") {
		t.Errorf("args name an upstream to poll: %q", args)
	}
}

// fakeOllamaChat answers /v1/chat/completions as Ollama streams it, with
// tokens chunks after delay, at most slots at once (503 beyond): a
// stand-in for the server's answer format, to test the measuring.
func fakeOllamaChat(t *testing.T, slots int, tokens int, delay time.Duration, bodies chan<- map[string]any) *httptest.Server {
	var busy atomic.Int32
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req map[string]any
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || r.URL.Path != loadgen.DefaultChatPath {
			http.Error(w, `{"error":"bad request"}`, http.StatusBadRequest)
			return
		}
		select {
		case bodies <- req:
		default:
		}
		if int(busy.Add(1)) > slots {
			busy.Add(-1)
			http.Error(w, `{"error":"server busy, please try again.  maximum pending requests exceeded"}`, http.StatusServiceUnavailable)
			return
		}
		defer busy.Add(-1)
		w.Header().Set("Content-Type", "text/event-stream")
		time.Sleep(delay)
		for i := range tokens {
			fmt.Fprintf(w, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\" w%d\"},\"finish_reason\":null}]}\n\n", i)
		}
		fmt.Fprint(w, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":\"length\"}]}\n\n")
		fmt.Fprint(w, "data: [DONE]\n\n")
	}))
}

func TestMeasureCapacity(t *testing.T) {
	bodies := make(chan map[string]any, 1)
	srv := fakeOllamaChat(t, 2, 5, 20*time.Millisecond, bodies)
	defer srv.Close()
	body := ollamaChatBody("tiny", 32)
	r, err := measureCapacity(context.Background(), srv.URL+loadgen.DefaultChatPath, body, 2, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if r.Answers < 2 || r.Clients != 2 || r.TokensPerAns != 5 {
		t.Errorf("measured %+v: want ≥ 2 answers of 5 tokens from 2 clients", r)
	}
	if got := float64(r.Answers) / r.Seconds; got != r.RPS {
		t.Errorf("rps %v, answers ÷ seconds %v", r.RPS, got)
	}
	if r.MeanAnswerS < 0.02 {
		t.Errorf("mean answer %.3f s, under the server's 20 ms delay", r.MeanAnswerS)
	}
	// The request is the load generator's: the model by name, max_tokens,
	// streaming, one user message of the default prompt.
	req := <-bodies
	msgs, _ := req["messages"].([]any)
	if req["model"] != "tiny" || req["max_tokens"] != float64(32) || req["stream"] != true || len(msgs) != 1 {
		t.Errorf("request %v", req)
	}

	// More clients than the server's slots: its 503 ends the measure.
	_, err = measureCapacity(context.Background(), srv.URL+loadgen.DefaultChatPath, body, 4, 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("503s while measuring: %v", err)
	}
}

func TestAsAdaptiveRenamesOneModuleSetUp(t *testing.T) {
	outs := []outcome{{Setup: setupNone}, {Setup: setupInflight}, {Setup: setupAdaptive, GoodputRatio: 0.4},
		{Setup: "adaptive_throttle (latency { slo 1s })", GoodputRatio: 0.5}}
	got := asAdaptive(outs, "adaptive_throttle (latency { slo 1s })")
	if len(got) != 3 || find(got, setupAdaptive) == nil || find(got, setupAdaptive).GoodputRatio != 0.5 {
		t.Errorf("asAdaptive: %+v", got)
	}
	if got := asAdaptive(outs, setupAdaptive); len(got) != 3 || find(got, setupAdaptive).GoodputRatio != 0.4 {
		t.Errorf("asAdaptive(defaults): %+v", got)
	}
}

func TestCaddyBlock(t *testing.T) {
	for in, want := range map[string]string{
		"latency { slo 1s }": "\t\tlatency {\n\t\t\tslo 1s\n\t\t}",
		"concurrency { max_wait 300ms } latency { slo 1s }":       "\t\tconcurrency {\n\t\t\tmax_wait 300ms\n\t\t}\n\t\tlatency {\n\t\t\tslo 1s\n\t\t}",
		"gpu { source prometheus http://x/metrics { metric m } }": "\t\tgpu {\n\t\t\tsource prometheus http://x/metrics {\n\t\t\t\tmetric m\n\t\t\t}\n\t\t}",
		"persist off": "\t\tpersist off",
	} {
		if got := caddyBlock(in, "\t\t"); got != want {
			t.Errorf("caddyBlock(%q) =\n%s\nwant\n%s", in, got, want)
		}
	}
}

// TestOllamaCaddyfileTemplate renders the module's template for Ollama at
// its defaults and with lines and, when ./caddy has been built, has Caddy
// adapt both.
func TestOllamaCaddyfileTemplate(t *testing.T) {
	dir := t.TempDir()
	caddy, _ := filepath.Abs("../../caddy")
	_, statErr := os.Stat(caddy)
	for i, lines := range []string{"", "latency { slo 1s }", "concurrency { max_wait 300ms }"} {
		out := filepath.Join(dir, fmt.Sprintf("%d.Caddyfile", i))
		v := ollamaCaddyVars{Admin: "127.0.0.1:2999", Port: 18080, Upstream: "127.0.0.1:11434", Lines: caddyBlock(lines, "\t\t")}
		if err := renderCaddyfile("../../lab/ollama-adaptive.Caddyfile.tmpl", out, v); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(out)
		s := string(b)
		if strings.Contains(s, "{{") || !strings.Contains(s, "reverse_proxy 127.0.0.1:11434") || !strings.Contains(s, "adaptive_throttle {") ||
			strings.Contains(s, "gpu") || (lines != "" && !strings.Contains(s, v.Lines+"\n")) {
			t.Errorf("rendered as:\n%s", s)
		}
		if statErr != nil {
			continue
		}
		cmd := exec.Command(caddy, "adapt", "--config", out, "--adapter", "caddyfile")
		cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
		if msg, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("caddy adapt %q: %v\n%s", lines, err, msg)
		}
	}
}

// TestUpstreamFlag: the simulated lab stays the default; ollama without
// its binary says how to build it, before anything starts.
func TestUpstreamFlag(t *testing.T) {
	root, _ := filepath.Abs("../..")
	t.Chdir(root)
	err := run(context.Background(), []string{"-upstream", "vllm"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "want llmsim or ollama") {
		t.Errorf("-upstream vllm: %v", err)
	}
	err = run(context.Background(), []string{"-upstream", "ollama", "-ollama-bin", filepath.Join(t.TempDir(), "none")}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "lab/ollama-build.sh") {
		t.Errorf("-upstream ollama without a binary: %v", err)
	}
}
