package tests

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/internal/llmsim"
)

// The Prometheus source reading the upstream's own KV-cache gauge trips the
// GPU level when the upstream fills up, and clears it when it drains.
func TestPrometheusGaugeTripsAndClears(t *testing.T) {
	// One slot, one-second requests, and 1 GiB held by each queued request
	// out of 8 GiB for the cache: seven queued requests put the gauge at
	// 7/8 = 87.5%.
	sim, addr := upstream(t, llmsim.Config{Slots: 1, TokenTime: 100 * time.Millisecond, DefaultMaxTokens: 10,
		TotalMemory: 10 * llmsim.GiB, BaseMemory: 2 * llmsim.GiB, QueuedMemory: llmsim.GiB, KVPerToken: 1024})
	tc := start(t, `http://localhost:9080 {
	adaptive_throttle {
		name prom
		gpu {
			source prometheus http://`+addr+`/metrics
			metric vllm:kv_cache_usage_perc
			labels model_name=demo-llm
			interval 250ms
		}
		priority {
			high_reserve 16
		}
		latency {
			ceiling 1m
		}
		concurrency {
			limit 16
		}
	}
	reverse_proxy `+addr+`
}`)
	// The limit is fixed above what the test sends, so that the queue
	// builds inside the upstream, where the gauge sees it.
	eventually(t, 5*time.Second, "a first scrape", func() bool { return status(t, "prom").Levels.GPU.Available })
	if g := status(t, "prom").Levels.GPU; g.Source != "prometheus" || g.Tripped || g.Value > 0.1 || len(g.Devices) != 1 {
		t.Fatalf("idle upstream: %+v", g)
	}

	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { drain(t, chat(t, tc, "high", false)) })
	}
	eventually(t, 5*time.Second, "the upstream's queue to build", func() bool { return sim.State().Waiting >= 7 })
	eventually(t, 5*time.Second, "the GPU level to trip", func() bool { return status(t, "prom").Levels.GPU.Tripped })
	g := status(t, "prom").Levels.GPU
	if g.Value < 0.75 || !strings.Contains(g.LastReason, "prometheus") {
		t.Fatalf("tripped GPU level: %+v", g)
	}
	assertShed(t, chat(t, tc, "low", false), http.StatusTooManyRequests, "gpu", "low", 5)

	wg.Wait() // the queue drains
	eventually(t, 15*time.Second, "the GPU level to clear", func() bool { return !status(t, "prom").Levels.GPU.Tripped })
	resp := chat(t, tc, "low", false)
	if body := drain(t, resp); resp.StatusCode != 200 {
		t.Fatalf("after draining: %d %s", resp.StatusCode, body)
	}
}

// A metric the server no longer exports is loud: unavailable with a reason
// that names it, and under on_error shed, shedding.
func TestPrometheusMissingMetricIsLoud(t *testing.T) {
	_, addr := upstream(t, llmsim.Config{})
	tc := start(t, `http://localhost:9080 {
	adaptive_throttle {
		name renamed
		gpu {
			source prometheus http://`+addr+`/metrics
			metric vllm:gpu_cache_usage_ratio
			interval 250ms
			on_error shed
		}
	}
	reverse_proxy `+addr+`
}`)
	eventually(t, 5*time.Second, "the GPU level to trip on the missing metric", func() bool { return status(t, "renamed").Levels.GPU.Tripped })
	g := status(t, "renamed").Levels.GPU
	if g.Available || !strings.Contains(g.Reason, "vllm:gpu_cache_usage_ratio") || g.Errors == 0 {
		t.Fatalf("missing metric: %+v", g)
	}
	assertShed(t, chat(t, tc, "low", false), http.StatusTooManyRequests, "gpu", "low", 5)
}

// A server that reserves 90% of GPU memory at start (vLLM, TGI), read
// through the demo's nvidia-smi stand-in on PATH, with the one-line
// defaults: a light load is never refused, and status says the memory
// ratio cannot judge this server's load. Then, on a slower server with
// requests piling up in it (1 GiB each), memory grows above the
// reservation and the level trips on the growth.
func TestReservedGPUMemoryFlatUnderLightLoad(t *testing.T) {
	demo, err := filepath.Abs("../demo")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", demo+string(os.PathListSeparator)+os.Getenv("PATH"))
	// 72 of 80 GiB held from the start; running requests add a few bytes,
	// queued ones 1 GiB.
	reserved := func(c llmsim.Config) (*llmsim.Server, string) {
		c.SMIFile = filepath.Join(t.TempDir(), "smi.csv")
		c.TotalMemory, c.BaseMemory, c.KVPerToken, c.QueuedMemory = 80*llmsim.GiB, 72*llmsim.GiB, 1, llmsim.GiB
		t.Setenv("LLMSIM_SMI_FILE", c.SMIFile)
		sim, addr := upstream(t, c)
		eventually(t, 5*time.Second, "the nvidia-smi file", func() bool { _, err := os.Stat(c.SMIFile); return err == nil })
		return sim, addr
	}
	_, addr := reserved(llmsim.Config{})
	tc := start(t, `http://localhost:9080 {
	adaptive_throttle {
		name prealloc
	}
	reverse_proxy `+addr+`
}`)
	eventually(t, 5*time.Second, "a first reading", func() bool { return status(t, "prealloc").Levels.GPU.Available })
	// Light load: one request at a time, for three readings (6 s).
	sent, refused := 0, 0
	for start := time.Now(); time.Since(start) < 6*time.Second; {
		for _, prio := range []string{"low", "low", "medium", "low", "high"} {
			resp := chat(t, tc, prio, false)
			sent++
			if body := drain(t, resp); resp.StatusCode != http.StatusOK {
				refused++
				t.Logf("%s: %d %s", prio, resp.StatusCode, body)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	g := status(t, "prealloc").Levels.GPU
	if refused != 0 || g.Tripped || g.Transitions != 0 || g.Source != "nvidia-smi" || g.Value != 0.9 || g.Floor != 0.9 || g.Threshold != 0.94 {
		t.Fatalf("light load on a reserved 90%%: %d of %d refused, gpu %+v", refused, sent, g)
	}
	if !strings.Contains(g.Note, "memory flat at 90.0% since start") || !strings.Contains(g.Note, "vllm:kv_cache_usage_perc") {
		t.Fatalf("note %q", g.Note)
	}

	// Six requests queued in the upstream take memory to 78 GiB (97.5%).
	sim, addr := reserved(llmsim.Config{Slots: 1, TokenTime: 100 * time.Millisecond})
	tc = start(t, `http://localhost:9080 {
	adaptive_throttle {
		name prealloc-grows
		gpu {
			interval 250ms
		}
		concurrency {
			limit 16
		}
		latency {
			ceiling 1m
		}
	}
	reverse_proxy `+addr+`
}`)
	eventually(t, 5*time.Second, "a first reading", func() bool { return status(t, "prealloc-grows").Levels.GPU.Available })
	var wg sync.WaitGroup
	for range 7 {
		wg.Go(func() { drain(t, chat(t, tc, "high", false)) })
	}
	eventually(t, 5*time.Second, "the upstream's queue", func() bool { return sim.State().Waiting >= 5 })
	eventually(t, 5*time.Second, "the GPU level to trip on the growth", func() bool { return status(t, "prealloc-grows").Levels.GPU.Tripped })
	if g := status(t, "prealloc-grows").Levels.GPU; !strings.Contains(g.LastReason, "memory grew above the 90.0% held since start") {
		t.Fatalf("tripped on growth: %+v", g)
	}
	wg.Wait()
}
