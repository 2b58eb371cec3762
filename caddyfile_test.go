package adaptivethrottle

import (
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func parse(t *testing.T, input string) (*Handler, error) {
	t.Helper()
	h := new(Handler)
	err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
	return h, err
}

func TestCaddyfileBare(t *testing.T) {
	h, err := parse(t, `adaptive_throttle`)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(h, new(Handler)) {
		t.Fatalf("bare directive set fields: %+v", h)
	}
	s, err := h.settings()
	if err != nil {
		t.Fatal(err)
	}
	// DESIGN.md's defaults, every one.
	checks := []struct {
		name      string
		got, want any
	}{
		{"qps window", s.qps.Window, 5 * time.Minute},
		{"qps sigma", s.qps.Sigma, 2.0},
		{"qps trip_factor", s.qps.TripFactor, 1.5},
		{"qps min_baseline", s.qps.MinBaseline, 5.0},
		{"qps limit", s.qps.Limit, 0.0},
		{"gpu source", s.gpu.Source, "auto"},
		{"gpu threshold", s.gpu.Threshold, 0.75},
		{"gpu interval", s.gpu.Interval, 2 * time.Second},
		{"gpu stale_after", s.gpu.StaleAfter, 10 * time.Second},
		{"gpu on_error", s.gpu.OnError, "allow"},
		{"latency percentile", s.latency.Percentile, 99.0},
		{"latency window", s.latency.Window, 10 * time.Second},
		{"latency factor", s.latency.Factor, 1.8},
		{"latency consecutive", s.latency.Consecutive, 3},
		{"latency ceiling", s.latency.Ceiling, 8 * time.Second},
		{"latency measure", s.latency.Measure, "ttfb"},
		{"circuit error_ratio", s.circuit.ErrorRatio, 0.5},
		{"circuit min_requests", s.circuit.MinRequests, 20},
		{"circuit window", s.circuit.Window, 30 * time.Second},
		{"circuit open_for", s.circuit.OpenFor, 60 * time.Second},
		{"circuit probes", s.circuit.Probes, 1},
		{"priority from", s.from, "{http.request.header.X-Priority}"},
		{"priority default", s.def.String(), "medium"},
		{"priority high_reserve", s.reserve, 8},
		{"priority medium_floor", s.bucket.Floor, 1.0},
		{"retry_after", s.retryFloor, 5 * time.Second},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestCaddyfileEverySubdirective(t *testing.T) {
	h, err := parse(t, `adaptive_throttle {
		name llm-main
		qps {
			window 2m
			sigma 3
			trip_factor 2
			min_baseline 10
			limit 200
			warmup 20
		}
		gpu {
			source prometheus http://10.0.0.5:8000/metrics http://10.0.0.6:8000/metrics
			metric DCGM_FI_DEV_FB_USED free DCGM_FI_DEV_FB_FREE
			labels gpu=0 model_name="llama"
			aggregate mean
			threshold 80%
			interval 3s
			timeout 1s
			stale_after 15s
			devices 0 GPU-1234
			on_error shed
		}
		latency {
			percentile 95
			window 20s
			factor 2.5
			consecutive 2
			ceiling 30s
			measure total
		}
		circuit {
			error_ratio 0.3
			min_requests 50
			window 1m
			open_for 10s
			max_open_for 5m
			probes 3
			probe_timeout 45s
		}
		priority {
			from {http.request.header.X-Tier}
			default low
			high_reserve 0
			medium_floor 2.5
		}
		retry_after 2s
	}`)
	if err != nil {
		t.Fatal(err)
	}
	zero := 0
	want := &Handler{
		Name: "llm-main",
		QPS: &QPSConfig{Window: caddy.Duration(2 * time.Minute), Sigma: 3, TripFactor: 2, MinBaseline: 10,
			Limit: 200, Warmup: 20},
		GPU: &GPUConfig{Source: "prometheus", URLs: []string{"http://10.0.0.5:8000/metrics", "http://10.0.0.6:8000/metrics"},
			Metric: "DCGM_FI_DEV_FB_USED", PairKind: "free", PairMetric: "DCGM_FI_DEV_FB_FREE",
			Labels: map[string]string{"gpu": "0", "model_name": "llama"}, Aggregate: "mean", Threshold: 0.8,
			Interval: caddy.Duration(3 * time.Second), Timeout: caddy.Duration(time.Second),
			StaleAfter: caddy.Duration(15 * time.Second), Devices: []string{"0", "GPU-1234"}, OnError: "shed"},
		Latency: &LatencyConfig{Percentile: 95, Window: caddy.Duration(20 * time.Second), Factor: 2.5, Consecutive: 2,
			Ceiling: caddy.Duration(30 * time.Second), Measure: "total"},
		Circuit: &CircuitConfig{ErrorRatio: 0.3, MinRequests: 50, Window: caddy.Duration(time.Minute),
			OpenFor: caddy.Duration(10 * time.Second), MaxOpenFor: caddy.Duration(5 * time.Minute), Probes: 3,
			ProbeTimeout: caddy.Duration(45 * time.Second)},
		Priority:   &PriorityConfig{From: "{http.request.header.X-Tier}", Default: "low", HighReserve: &zero, MediumFloor: 2.5},
		RetryAfter: caddy.Duration(2 * time.Second),
	}
	if !reflect.DeepEqual(h, want) {
		t.Fatalf("got  %+v\nwant %+v", h, want)
	}
	if _, err := h.settings(); err != nil {
		t.Fatalf("a full valid config fails validation: %v", err)
	}
}

func TestCaddyfileGPUSources(t *testing.T) {
	cases := map[string]GPUConfig{
		`gpu off`:                                   {Source: "off"},
		"gpu {\nsource off\n}":                      {Source: "off"},
		"gpu {\nsource nvml\n}":                     {Source: "nvml"},
		"gpu {\nsource nvidia-smi\n}":               {Source: "nvidia-smi"},
		"gpu {\nsource nvidia-smi /opt/bin/smi\n}":  {Source: "nvidia-smi", Path: "/opt/bin/smi"},
		"gpu {\nmetric vllm:kv_cache_usage_perc\n}": {Metric: "vllm:kv_cache_usage_perc"},
		"gpu {\nmetric used_bytes total total_b\n}": {Metric: "used_bytes", PairKind: "total", PairMetric: "total_b"},
		"gpu {\nthreshold 0.9\n}":                   {Threshold: 0.9},
		"gpu {\nthreshold 100%\n}":                  {Threshold: 1},
	}
	for in, want := range cases {
		h, err := parse(t, "adaptive_throttle {\n"+in+"\n}")
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if !reflect.DeepEqual(*h.GPU, want) {
			t.Errorf("%s: got %+v want %+v", in, *h.GPU, want)
		}
	}
}

// Bad input must fail naming the line it is on.
func TestCaddyfileErrorsNameTheLine(t *testing.T) {
	cases := []struct {
		input, msg string
		line       int
	}{
		{"adaptive_throttle extra", "wrong argument count", 1},
		{"adaptive_throttle {\n\tbogus 1\n}", `unrecognized subdirective "bogus"`, 2},
		{"adaptive_throttle {\n\tqps {\n\t\twindow 5m\n\t\tsigmaa 2\n\t}\n}", `unrecognized qps subdirective "sigmaa"`, 4},
		{"adaptive_throttle {\n\tqps {\n\t\twindow soon\n\t}\n}", "window must be a positive duration", 3},
		{"adaptive_throttle {\n\tqps {\n\t\ttrip_factor 0.5\n\t}\n}", "trip_factor must be above 1", 3},
		{"adaptive_throttle {\n\tqps 5m\n}", "qps takes a block", 2},
		{"adaptive_throttle {\n\tgpu {\n\t\tsource cuda\n\t}\n}", `unknown gpu source "cuda"`, 3},
		{"adaptive_throttle {\n\tgpu {\n\t\tsource prometheus\n\t}\n}", "needs at least one /metrics URL", 3},
		{"adaptive_throttle {\n\tgpu {\n\t\tthreshold 75\n\t}\n}", "want a percentage", 3},
		{"adaptive_throttle {\n\tgpu {\n\t\tthreshold 150%\n\t}\n}", "want a percentage", 3},
		{"adaptive_throttle {\n\tgpu {\n\t\tmetric a sum b\n\t}\n}", "must be total or free", 3},
		{"adaptive_throttle {\n\tgpu {\n\t\tlabels gpu\n\t}\n}", "must be name=value", 3},
		{"adaptive_throttle {\n\tgpu {\n\t\ton_error panic\n\t}\n}", "on_error must be allow or shed", 3},
		{"adaptive_throttle {\n\tgpu on\n}", "gpu takes a block, or the single argument off", 2},
		{"adaptive_throttle {\n\tlatency {\n\t\tpercentile 101\n\t}\n}", "percentile must be", 3},
		{"adaptive_throttle {\n\tlatency {\n\t\tmeasure ttlb\n\t}\n}", "measure must be ttfb or total", 3},
		{"adaptive_throttle {\n\tlatency {\n\t\tconsecutive 0\n\t}\n}", "consecutive must be a whole number", 3},
		{"adaptive_throttle {\n\tcircuit {\n\t\terror_ratio 2\n\t}\n}", "want a percentage", 3},
		{"adaptive_throttle {\n\tcircuit {\n\t\tprobes many\n\t}\n}", "probes must be a whole number", 3},
		{"adaptive_throttle {\n\tpriority {\n\t\tdefault urgent\n\t}\n}", "default must be high, medium or low", 3},
		{"adaptive_throttle {\n\tpriority {\n\t\thigh_reserve -1\n\t}\n}", "high_reserve must be", 3},
		{"adaptive_throttle {\n\tretry_after\n}", "retry_after needs a value", 2},
		{"adaptive_throttle {\n\tname a b\n}", "name takes one value", 2},
		{"adaptive_throttle {\n\tpriority {\n\t\ttrusted\n\t}\n}", "trusted needs a matcher", 3},
		{"adaptive_throttle {\n\tpriority {\n\t\ttrusted remote_id 10.0.0.0/8\n\t}\n}", "remote_id", 3},
	}
	for _, c := range cases {
		_, err := parse(t, c.input)
		if err == nil {
			t.Errorf("%q: no error", c.input)
			continue
		}
		if !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%q: error %q does not say %q", c.input, err, c.msg)
		}
		if want := "Testfile:" + itoa(c.line); !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %q does not name %s", c.input, err, want)
		}
	}
}

// Values the parser accepts but that make no sense together fail in
// Validate, which Caddy runs on load (and `caddy adapt --validate`).
func TestValidateRejectsInconsistentConfig(t *testing.T) {
	cases := map[string]string{
		"adaptive_throttle {\n\tqps {\n\t\twindow 5s\n\t}\n}":                             "window must be at least 10s",
		"adaptive_throttle {\n\tgpu {\n\t\tinterval 1s\n\t\ttimeout 2s\n\t}\n}":           "timeout",
		"adaptive_throttle {\n\tgpu {\n\t\tinterval 5s\n\t\tstale_after 2s\n\t}\n}":       "stale_after",
		"adaptive_throttle {\n\tcircuit {\n\t\topen_for 1m\n\t\tmax_open_for 10s\n\t}\n}": "max_open_for",
	}
	for in, msg := range cases {
		h, err := parse(t, in)
		if err != nil {
			t.Fatalf("%q: parse: %v", in, err)
		}
		if err := h.Validate(); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("%q: Validate() = %v, want it to mention %q", in, err, msg)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
