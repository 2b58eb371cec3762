package adaptivethrottle

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/config"
	"github.com/ai-guardian/adaptivethrottle/levels"
	"github.com/ai-guardian/adaptivethrottle/levels/gpu"
)

// The /metrics text each server writes, at value v of the gauge a recipe
// reads: names, labels, HELP and TYPE lines as the server prints them
// (vLLM's v1 engine, SGLang with --enable-metrics, TGI's router, DCGM
// exporter's default counters), with neighbours the recipe must not read.
var recipePages = map[string]func(v float64) string{
	"vllm.Caddyfile":      func(v float64) string { return vllmPage(3, v) },
	"vllm-pool.Caddyfile": func(v float64) string { return vllmPage(v, 0.97) }, // each upstream's queue
	"sglang.Caddyfile": func(v float64) string {
		return fmt.Sprintf(`# HELP sglang:num_running_reqs The number of running requests.
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{engine_type="unified",model_name="meta-llama/Llama-3.1-8B-Instruct",pp_rank="0",tp_rank="0"} 31.0
# HELP sglang:token_usage The token usage.
# TYPE sglang:token_usage gauge
sglang:token_usage{engine_type="unified",model_name="meta-llama/Llama-3.1-8B-Instruct",pp_rank="0",tp_rank="0"} %v
# HELP sglang:num_queue_reqs The number of requests in the waiting queue.
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{engine_type="unified",model_name="meta-llama/Llama-3.1-8B-Instruct",pp_rank="0",tp_rank="0"} 2.0
`, v)
	},
	"tgi.Caddyfile": func(v float64) string {
		return fmt.Sprintf(`# HELP tgi_batch_current_size Current batch size
# TYPE tgi_batch_current_size gauge
tgi_batch_current_size 32
# HELP tgi_queue_size Current queue size
# TYPE tgi_queue_size gauge
tgi_queue_size %v
# HELP tgi_request_queue_duration Time spent in the queue per request
# TYPE tgi_request_queue_duration histogram
tgi_request_queue_duration_bucket{le="0.005"} 12
tgi_request_queue_duration_bucket{le="+Inf"} 40
tgi_request_queue_duration_sum 3.5
tgi_request_queue_duration_count 40
`, v)
	},
	"dcgm.Caddyfile": func(v float64) string {
		const labels = `gpu="%d",UUID="GPU-5f1c2a9e-8d4b-4a7c-9e3f-1b2c3d4e5f6%d",pci_bus_id="00000000:18:00.0",device="nvidia%d",modelName="NVIDIA H100 80GB HBM3",Hostname="gpu-node-17",DCGM_FI_DRIVER_VERSION="550.54.15"`
		const total = 81559 - 509
		used := int(v * total)
		page := "# HELP DCGM_FI_DEV_FB_FREE Framebuffer memory free (in MiB).\n# TYPE DCGM_FI_DEV_FB_FREE gauge\n"
		page += fmt.Sprintf("DCGM_FI_DEV_FB_FREE{"+labels+"} %d\n", 0, 0, 0, total-used)
		page += fmt.Sprintf("DCGM_FI_DEV_FB_FREE{"+labels+"} %d\n", 1, 1, 1, 81000)
		page += "# HELP DCGM_FI_DEV_FB_USED Framebuffer memory used (in MiB).\n# TYPE DCGM_FI_DEV_FB_USED gauge\n"
		page += fmt.Sprintf("DCGM_FI_DEV_FB_USED{"+labels+"} %d\n", 0, 0, 0, used)
		page += fmt.Sprintf("DCGM_FI_DEV_FB_USED{"+labels+"} %d\n", 1, 1, 1, 50)
		return page
	},
}

// vllmPage is vLLM's /metrics text with waiting requests waiting and
// KV-cache use kv.
func vllmPage(waiting, kv float64) string {
	return fmt.Sprintf(`# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 12.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} %v
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} %v
# HELP vllm:num_preemptions_total Cumulative number of preemption from the engine.
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.0
`, waiting, kv)
}

// recipe is what a test reads of a recipe's handler.
type recipe struct {
	GPU           gpu.Config    `json:"gpu"`
	UpstreamGauge *gpu.Upstream `json:"upstream_gauge"`
	Concurrency   struct {
		Max int `json:"max"`
	} `json:"concurrency"`
}

// adaptRecipe adapts examples/recipes/name as `caddy adapt` does and
// returns its adaptive_throttle handler.
func adaptRecipe(t *testing.T, name string) recipe {
	t.Helper()
	path := filepath.Join("examples", "recipes", name)
	in, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(in, map[string]any{"filename": path})
	if err != nil || len(warnings) > 0 {
		t.Fatalf("%s: %v %v", name, err, warnings)
	}
	var cfg struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []struct {
						Handle []json.RawMessage `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	for _, srv := range cfg.Apps.HTTP.Servers {
		for _, r := range srv.Routes {
			for _, h := range r.Handle {
				var kind struct{ Handler string }
				if json.Unmarshal(h, &kind) == nil && kind.Handler == "adaptive_throttle" {
					var rc recipe
					if err := json.Unmarshal(h, &rc); err != nil {
						t.Fatal(err)
					}
					return rc
				}
			}
		}
	}
	t.Fatalf("%s: no adaptive_throttle handler", name)
	return recipe{}
}

// Every recipe adapts, and its concurrency ceiling is the server's own
// (vLLM's --max-num-seqs, SGLang's --max-running-requests, TGI's
// --max-concurrent-requests, OLLAMA_NUM_PARALLEL, at their defaults).
func TestRecipesAdapt(t *testing.T) {
	files, _ := filepath.Glob("examples/recipes/*.Caddyfile")
	want := map[string]int{"vllm.Caddyfile": 256, "sglang.Caddyfile": 256, "tgi.Caddyfile": 128, "ollama.Caddyfile": 4, "dcgm.Caddyfile": 0, "vllm-pool.Caddyfile": 0}
	if len(files) != len(want) {
		t.Fatalf("recipes %v, want %d", files, len(want))
	}
	for _, f := range files {
		name := filepath.Base(f)
		rc := adaptRecipe(t, name)
		if rc.Concurrency.Max != want[name] {
			t.Errorf("%s: concurrency max %d, want %d", name, rc.Concurrency.Max, want[name])
		}
		if _, metrics := recipePages[name]; metrics != (rc.GPU.Source == "prometheus" || rc.UpstreamGauge != nil) {
			t.Errorf("%s: gpu source %q", name, rc.GPU.Source)
		}
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"vllm.Caddyfile", "ollama.Caddyfile", "vllm-pool.Caddyfile"} { // shown whole in the README
		b, err := os.ReadFile(filepath.Join("examples", "recipes", name))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(readme), "```caddyfile\n"+string(b)+"```\n") {
			t.Errorf("README's Recipes does not show %s as it is", name)
		}
	}
	if rc := adaptRecipe(t, "ollama.Caddyfile"); rc.GPU.Source != "auto" {
		t.Errorf("ollama: gpu source %q, want auto (no /metrics: memory on the host)", rc.GPU.Source)
	}
}

// Each recipe's GPU block reads its server's metric text from a stand-in
// on 127.0.0.1 and judges it: below the recipe's threshold it passes,
// above it trips.
func TestRecipesReadAndJudge(t *testing.T) {
	cases := []struct {
		file         string
		below, above float64 // the gauge's value in the server's unit
		ratio        float64 // what below reads as
	}{
		{"vllm.Caddyfile", 0.85, 0.95, 0.85},
		{"sglang.Caddyfile", 0.8, 0.97, 0.8},
		{"tgi.Caddyfile", 20, 30, 20.0 / 32},
		{"dcgm.Caddyfile", 0.5, 0.8, 0.5},
		{"vllm-pool.Caddyfile", 12, 20, 12.0 / 32}, // each upstream's own gauge
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			var value atomic.Value
			value.Store(c.below)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/metrics" {
					http.NotFound(w, r)
					return
				}
				w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
				fmt.Fprint(w, recipePages[c.file](value.Load().(float64)))
			}))
			defer srv.Close()
			rc := adaptRecipe(t, c.file)
			cfg := rc.GPU
			if rc.UpstreamGauge != nil { // read on the upstream's own address
				cfg = rc.UpstreamGauge.For(strings.TrimPrefix(srv.URL, "http://"))
			}
			cfg.URLs = []string{srv.URL + "/metrics"}
			cfg.Interval = config.Duration(100 * time.Millisecond)
			l, err := gpu.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			// judged samples the level until cond holds of its status.
			judged := func(what string, cond func(gpu.Status) bool) gpu.Status {
				t.Helper()
				deadline := time.Now().Add(5 * time.Second)
				for {
					now := time.Now()
					l.Sample(now, levels.Inputs{}, func(breaker.Transition) {})
					st := l.Status(now)
					if cond(st) {
						return st
					}
					if now.After(deadline) {
						t.Fatalf("%s: %+v", what, st)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
			st := judged("the gauge below the threshold", func(st gpu.Status) bool {
				return st.Available && len(st.Devices) == 1 && st.Devices[0].Ratio > c.ratio-0.001 && st.Devices[0].Ratio < c.ratio+0.001
			})
			if st.Tripped || st.Transitions != 0 {
				t.Fatalf("below the threshold: %+v", st)
			}
			value.Store(c.above)
			st = judged("the gauge above the threshold to trip", func(st gpu.Status) bool { return st.Tripped })
			threshold := cfg.Threshold
			if threshold == 0 {
				threshold = gpu.DefaultThreshold
			}
			if st.Value <= st.Threshold || st.Threshold != threshold {
				t.Fatalf("tripped: %+v", st)
			}
		})
	}
}
