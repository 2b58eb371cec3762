package tests

import (
	"net/http"
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
