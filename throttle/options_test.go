package throttle

import (
	"strings"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/config"
	"github.com/ai-guardian/adaptivethrottle/levels/qps"
)

// Each option sets its key of the config, later options override earlier
// ones, and a bad value is refused by New with the key's name.
func TestOptionsSetTheirKeys(t *testing.T) {
	th, err := New(WithName("opts"), WithConfig(Config{QPS: qpsWarmup(5)}), WithGPUSource("off"), WithGPUThreshold(0.9),
		WithQPSWindow(time.Minute), WithQPSWarmup(12), WithQPSMaxRate(40), WithLatencyPercentile(95),
		WithLatencyWindow(5*time.Second), WithHighReserve(3), WithRetryAfter(2*time.Second),
		WithConcurrencyLimit(12), WithMaxWait(3*time.Second, 2*time.Second, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer th.Close()
	c := th.Config()
	checks := []struct {
		key       string
		got, want any
	}{
		{"name", th.Name(), "opts"},
		{"gpu source", c.GPU.Source, "off"},
		{"gpu threshold", c.GPU.Threshold, 0.9},
		{"qps window", c.QPS.Window, config.Duration(time.Minute)},
		{"qps warmup", c.QPS.Warmup, 12},
		{"qps max_rate", c.QPS.MaxRate, 40.0},
		{"latency percentile", c.Latency.Percentile, 95.0},
		{"latency window", c.Latency.Window, config.Duration(5 * time.Second)},
		{"priority high_reserve", c.Priority.Reserve(10), 3},
		{"concurrency limit", c.Concurrency.Limit, 12},
		{"concurrency max_wait high", c.Concurrency.MaxWait.High, config.Duration(3 * time.Second)},
		{"concurrency max_wait medium", c.Concurrency.MaxWait.Medium, config.Duration(2 * time.Second)},
		{"concurrency max_wait low (0: the default)", c.Concurrency.MaxWait.Low, config.Duration(time.Second)},
		{"retry_after", c.RetryAfter, config.Duration(2 * time.Second)},
		{"a default", c.Circuit.MinRequests, 20},
	}
	for _, k := range checks {
		if k.got != k.want {
			t.Errorf("%s: %v, want %v", k.key, k.got, k.want)
		}
	}
	if st := th.Status(time.Now()); st.Priorities.High.Reserve != 3 || st.Admission.Limit != 12 || !st.Admission.Fixed || st.Levels.GPU.Source != "off" {
		t.Fatalf("status %+v", st)
	}
	if _, err := New(WithGPUSource("off"), WithLatencyPercentile(120)); err == nil || !strings.Contains(err.Error(), "latency: percentile") {
		t.Fatalf("percentile 120: %v", err)
	}
}

func qpsWarmup(n int) (c qps.Config) { c.Warmup = n; return c }
