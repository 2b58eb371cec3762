package gpu

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/config"
)

func TestDefaults(t *testing.T) {
	var c Config
	c.Defaults()
	want := Config{Source: "auto", Path: "nvidia-smi", Aggregate: "max", Threshold: 0.75, Interval: config.Duration(2 * time.Second),
		Timeout: config.Duration(1600 * time.Millisecond), StaleAfter: config.Duration(10 * time.Second), OnError: "allow"}
	if c.Source != want.Source || c.Path != want.Path || c.Aggregate != want.Aggregate || c.Threshold != want.Threshold ||
		c.Interval != want.Interval || c.Timeout != want.Timeout || c.StaleAfter != want.StaleAfter ||
		c.OnError != want.OnError || c.Metric != "" {
		t.Fatalf("got %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	p := Config{Source: "prometheus", URLs: []string{"http://127.0.0.1:8000/metrics"}, Interval: config.Duration(5 * time.Second)}
	p.Defaults()
	if p.Metric != "vllm:kv_cache_usage_perc" || p.Timeout.D() != 4*time.Second {
		t.Fatalf("prometheus defaults: %+v", p)
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		mut  func(*Config)
		want string
	}{
		{func(c *Config) { c.Source = "rocm" }, `gpu: source must be auto, nvml, nvidia-smi, prometheus or off, got "rocm"`},
		{func(c *Config) { c.Threshold = 1.5 }, "gpu: threshold must be in (0,1], got 1.5"},
		{func(c *Config) { c.Threshold = -0.1 }, "must be in (0,1]"},
		{func(c *Config) { c.Timeout = config.Duration(1900 * time.Millisecond) }, "gpu: timeout 1.9s must not exceed 80% of interval 2s (at most 1.6s)"},
		{func(c *Config) { c.Interval = config.Duration(-time.Second) }, "gpu: interval must be at least 100ms, got -1s"},
		{func(c *Config) { c.Interval = config.Duration(time.Millisecond) }, "gpu: interval must be at least 100ms, got 1ms"},
		{func(c *Config) { c.StaleAfter = config.Duration(time.Second) }, "gpu: stale_after 1s must not be shorter than interval 2s"},
		{func(c *Config) { c.Aggregate = "p99" }, `gpu: aggregate must be max or mean, got "p99"`},
		{func(c *Config) { c.OnError = "panic" }, `gpu: on_error must be allow or shed, got "panic"`},
		{func(c *Config) { c.Devices = []string{"0", "0"} }, `gpu: devices lists "0" twice`},
		{func(c *Config) { c.Devices = []string{" "} }, "empty device name"},
		{func(c *Config) { c.URLs = []string{"http://x"} }, "need source prometheus"},
		{func(c *Config) { c.Source = "prometheus" }, "needs at least one URL"},
		{func(c *Config) { c.Source, c.URLs = "prometheus", []string{"ftp://x/metrics"} }, "scheme must be http or https"},
		{func(c *Config) { c.Source, c.URLs = "prometheus", []string{"http:///metrics"} }, "no host"},
		{func(c *Config) { c.Source, c.URLs = "prometheus", []string{"http://a b"} }, `gpu: source prometheus URL "http://a b"`},
		{func(c *Config) { c.Source, c.URLs, c.Metric = "prometheus", []string{"http://x"}, "a b" }, `gpu: metric "a b" is not a metric name`},
		{func(c *Config) {
			c.Source, c.URLs, c.PairKind, c.PairMetric = "prometheus", []string{"http://x"}, "sum", "y"
		}, `pair kind must be total or free, got "sum"`},
		{func(c *Config) { c.Source, c.URLs, c.PairKind = "prometheus", []string{"http://x"}, "free" }, `pair "" is not a metric name`},
		{func(c *Config) { c.Source, c.URLs, c.PairMetric = "prometheus", []string{"http://x"}, "y" }, "needs a kind"},
		{func(c *Config) {
			c.Source, c.URLs, c.Labels = "prometheus", []string{"http://x"}, map[string]string{"": "1"}
		}, "is not a label name"},
	} {
		var c Config
		c.Defaults()
		tc.mut(&c)
		err := c.Validate()
		if err == nil {
			t.Fatalf("want error %q, got none (%+v)", tc.want, c)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("got %q, want %q", err, tc.want)
		}
	}
}

// A count's max must be a positive number, and excludes a pair.
func TestValidateMetricMax(t *testing.T) {
	cfg := Config{Source: "prometheus", URLs: []string{"http://127.0.0.1:8080/metrics"}, Metric: "tgi_queue_size", MetricMax: 32}
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		max  float64
		pair string
		want string
	}{
		{-1, "", "gpu: metric tgi_queue_size max -1: must be a positive number"},
		{math.Inf(1), "", "must be a positive number"},
		{math.NaN(), "", "must be a positive number"},
		{8, "total", "a max and a total pair cannot both be set"},
	} {
		bad := cfg
		bad.MetricMax = c.max
		if c.pair != "" {
			bad.PairKind, bad.PairMetric = c.pair, "x"
		}
		if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("max %v %s: %v, want %q", c.max, c.pair, err, c.want)
		}
	}
	nvml := Config{Source: "nvml", MetricMax: 8}
	nvml.Defaults()
	if err := nvml.Validate(); err == nil || !strings.Contains(err.Error(), "need source prometheus") {
		t.Errorf("max with nvml: %v", err)
	}
}
