package adaptivethrottle

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/ai-guardian/adaptivethrottle/admission"
	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/config"
	"github.com/ai-guardian/adaptivethrottle/levels/gpu"
	"github.com/ai-guardian/adaptivethrottle/levels/latency"
	"github.com/ai-guardian/adaptivethrottle/levels/qps"
	"github.com/ai-guardian/adaptivethrottle/priority"
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
	s, err := h.config()
	if err != nil {
		t.Fatal(err)
	}
	// The README's defaults, every one.
	checks := []struct {
		name      string
		got, want any
	}{
		{"qps window", s.QPS.Window.D(), 5 * time.Minute},
		{"qps sigma", s.QPS.Sigma, 2.0},
		{"qps trip_factor", s.QPS.TripFactor, 1.5},
		{"qps min_baseline", s.QPS.MinBaseline, 5.0},
		{"qps max_rate", s.QPS.MaxRate, 0.0},
		{"gpu source", s.GPU.Source, "auto"},
		{"gpu threshold", s.GPU.Threshold, 0.75},
		{"gpu interval", s.GPU.Interval.D(), 2 * time.Second},
		{"gpu stale_after", s.GPU.StaleAfter.D(), 10 * time.Second},
		{"gpu on_error", s.GPU.OnError, "allow"},
		{"latency percentile", s.Latency.Percentile, 99.0},
		{"latency window", s.Latency.Window.D(), 10 * time.Second},
		{"latency factor", s.Latency.Factor, 1.8},
		{"latency consecutive", s.Latency.Consecutive, 3},
		{"latency ceiling", s.Latency.Ceiling.D(), 8 * time.Second},
		{"latency measure", s.Latency.Measure, "ttfb"},
		{"circuit error_ratio", s.Circuit.ErrorRatio, 0.5},
		{"circuit min_requests", s.Circuit.MinRequests, 20},
		{"circuit window", s.Circuit.Window.D(), 30 * time.Second},
		{"circuit open_for", s.Circuit.OpenFor.D(), 60 * time.Second},
		{"circuit probes", s.Circuit.Probes, 1},
		{"priority from", h.claimFrom(), "{http.request.header.X-Priority}"},
		{"priority default", s.Priority.DefaultPriority().String(), "medium"},
		{"priority high_reserve (of a limit of 10)", s.Priority.Reserve(10), 2},
		{"concurrency limit (learned)", s.Concurrency.Limit, 0},
		{"concurrency min", s.Concurrency.Min, 1},
		{"concurrency max", s.Concurrency.Max, 1000},
		{"concurrency initial", s.Concurrency.Initial, 4},
		{"concurrency queue", s.Concurrency.Queue, 1000},
		{"concurrency max_wait", s.Concurrency.MaxWait, admission.MaxWait{High: config.Duration(2 * time.Second), Medium: config.Duration(time.Second), Low: config.Duration(time.Second)}},
		{"concurrency weigh_body", s.Concurrency.WeighBody, int64(64 << 10)},
		{"retry_after", s.RetryAfter.D(), 5 * time.Second},
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
			max_rate 200
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
			min_threshold 250ms
			slo 3s
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
		}
		concurrency {
			limit 12
			min 2
			max 64
			initial 6
			queue 50
			max_wait high 5s low 200ms
		}
		retry_after 2s
	}`)
	if err != nil {
		t.Fatal(err)
	}
	zero := 0
	want := &Handler{
		Name: "llm-main",
		QPS: &qps.Config{Window: config.Duration(2 * time.Minute), Sigma: 3, TripFactor: 2, MinBaseline: 10,
			MaxRate: 200, Warmup: 20},
		GPU: &gpu.Config{Source: "prometheus", URLs: []string{"http://10.0.0.5:8000/metrics", "http://10.0.0.6:8000/metrics"},
			Metric: "DCGM_FI_DEV_FB_USED", PairKind: "free", PairMetric: "DCGM_FI_DEV_FB_FREE",
			Labels: map[string]string{"gpu": "0", "model_name": "llama"}, Aggregate: "mean", Threshold: 0.8,
			Interval: config.Duration(3 * time.Second), Timeout: config.Duration(time.Second),
			StaleAfter: config.Duration(15 * time.Second), Devices: []string{"0", "GPU-1234"}, OnError: "shed"},
		Latency: &latency.Config{Percentile: 95, Window: config.Duration(20 * time.Second), Factor: 2.5, Consecutive: 2,
			Ceiling: config.Duration(30 * time.Second), Measure: "total", MinThreshold: config.Duration(250 * time.Millisecond),
			SLO: config.Duration(3 * time.Second)},
		Circuit: &breaker.CircuitConfig{ErrorRatio: 0.3, MinRequests: 50, Window: config.Duration(time.Minute),
			OpenFor: config.Duration(10 * time.Second), MaxOpenFor: config.Duration(5 * time.Minute), Probes: 3,
			ProbeTimeout: config.Duration(45 * time.Second)},
		Priority: &PriorityConfig{From: "{http.request.header.X-Tier}",
			Config: priority.Config{Default: "low", HighReserve: &zero}},
		Concurrency: &admission.Config{Limit: 12, Min: 2, Max: 64, Initial: 6, Queue: 50,
			MaxWait: admission.MaxWait{High: config.Duration(5 * time.Second), Low: config.Duration(200 * time.Millisecond)}},
		RetryAfter: config.Duration(2 * time.Second),
	}
	if !reflect.DeepEqual(h, want) {
		t.Fatalf("got  %+v\nwant %+v", h, want)
	}
	if _, err := h.config(); err != nil {
		t.Fatalf("a full valid config fails validation: %v", err)
	}
}

func TestCaddyfileGPUSources(t *testing.T) {
	cases := map[string]gpu.Config{
		`gpu off`:                                  {Source: "off"},
		"gpu {\nsource off\n}":                     {Source: "off"},
		"gpu {\nsource nvml\n}":                    {Source: "nvml"},
		"gpu {\nsource nvidia-smi\n}":              {Source: "nvidia-smi"},
		"gpu {\nsource nvidia-smi /opt/bin/smi\n}": {Source: "nvidia-smi", Path: "/opt/bin/smi"},
		"gpu {\nsource prometheus http://a/metrics\nmetric vllm:kv_cache_usage_perc\n}": {Source: "prometheus",
			URLs: []string{"http://a/metrics"}, Metric: "vllm:kv_cache_usage_perc"},
		"gpu {\nsource prometheus http://a/metrics\nmetric used_bytes total total_b\n}": {Source: "prometheus",
			URLs: []string{"http://a/metrics"}, Metric: "used_bytes", PairKind: "total", PairMetric: "total_b"},
		"gpu {\nsource prometheus http://a/metrics\nmetric vllm:num_requests_waiting max 32\n}": {Source: "prometheus",
			URLs: []string{"http://a/metrics"}, Metric: "vllm:num_requests_waiting", MetricMax: 32},
		"gpu {\nthreshold 0.9\n}":  {Threshold: 0.9},
		"gpu {\nthreshold 100%\n}": {Threshold: 1},
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
		{"adaptive_throttle {\n\tbogus 1\n}", `bogus is unknown (adaptive_throttle takes name, qps, gpu, upstream_gauge, latency, circuit, priority, concurrency, retry_after, retry_after_max, persist)`, 2},
		{"adaptive_throttle {\n\tqps {\n\t\twindow 5m\n\t\tsigmaa 2\n\t}\n}", `qps: sigmaa is unknown (qps takes window, sigma, trip_factor, min_baseline, max_rate, warmup)`, 4},
		{"adaptive_throttle {\n\tqps {\n\t\twindow soon\n\t}\n}", "window must be a positive duration", 3},
		{"adaptive_throttle {\n\tqps {\n\t\tlimit 50\n\t}\n}", "qps: limit is now max_rate (req/s; concurrency's limit counts slots)", 3},
		{"adaptive_throttle {\n\tqps {\n\t\ttrip_factor 0.5\n\t}\n}", "trip_factor must be above 1", 3},
		{"adaptive_throttle {\n\tqps 5m\n}", "qps takes a block", 2},
		{"adaptive_throttle {\n\tgpu {\n\t\tsource cuda\n\t}\n}", `gpu: source must be auto, nvml, nvidia-smi, prometheus or off, got "cuda"`, 3},
		{"adaptive_throttle {\n\tgpu {\n\t\tsource prometheus\n\t}\n}", "needs at least one /metrics URL", 3},
		{"adaptive_throttle {\n\tgpu {\n\t\tthreshold 75\n\t}\n}", "gpu: threshold must be a percentage", 3},
		{"adaptive_throttle {\n\tgpu {\n\t\tthreshold 150%\n\t}\n}", "gpu: threshold must be a percentage", 3},
		{"adaptive_throttle {\n\tgpu {\n\t\tmetric a sum b\n\t}\n}", "must be total, free or max", 3},
		{"adaptive_throttle {\n\tgpu {\n\t\tmetric a max 0\n\t}\n}", `gpu: metric a max "0": must be a positive number`, 3},
		{"adaptive_throttle {\n\tgpu {\n\t\tmetric a max 50%\n\t}\n}", `gpu: metric a max "50%": must be a positive number`, 3},
		{"adaptive_throttle {\n\tgpu {\n\t\tmetric a max many\n\t}\n}", `gpu: metric a max "many": must be a positive number`, 3},
		{"adaptive_throttle {\n\tgpu {\n\t\tlabels gpu\n\t}\n}", "must be name=value", 3},
		{"adaptive_throttle {\n\tgpu {\n\t\ton_error panic\n\t}\n}", "on_error must be allow or shed", 3},
		{"adaptive_throttle {\n\tgpu on\n}", "gpu takes a block, or the single argument off", 2},
		{"adaptive_throttle {\n\tlatency {\n\t\tpercentile 101\n\t}\n}", "percentile must be", 3},
		{"adaptive_throttle {\n\tlatency {\n\t\tmeasure ttlb\n\t}\n}", "measure must be ttfb or total", 3},
		{"adaptive_throttle {\n\tlatency {\n\t\tconsecutive 0\n\t}\n}", "consecutive must be a whole number", 3},
		{"adaptive_throttle {\n\tlatency {\n\t\tslo 0s\n\t}\n}", "slo must be a positive duration", 3},
		{"adaptive_throttle {\n\tlatency {\n\t\tslo soon\n\t}\n}", "slo must be a positive duration", 3},
		{"adaptive_throttle {\n\tlatency {\n\t\tmin_threshold -1s\n\t}\n}", "min_threshold must be a positive duration", 3},
		{"adaptive_throttle {\n\tcircuit {\n\t\terror_ratio 2\n\t}\n}", "error_ratio must be within (0, 1]", 3},
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

// Values that make no sense together fail adapt at their block's line,
// and the same values given as JSON fail Validate (Caddy runs it on load),
// naming the JSON key.
func TestInconsistentBlocksFailAtTheirLine(t *testing.T) {
	cases := []struct {
		caddyfile, json, msg string
		line                 int // of the key the message is about
	}{
		{"adaptive_throttle {\n\tqps {\n\t\twindow 5s\n\t}\n}", `{"qps":{"window":"5s"}}`, "window must be at least 10s", 3},
		{"adaptive_throttle {\n\tgpu {\n\t\tinterval 1s\n\t\ttimeout 2s\n\t}\n}", `{"gpu":{"interval":"1s","timeout":"2s"}}`, "timeout", 4},
		{"adaptive_throttle {\n\tgpu {\n\t\tinterval 5s\n\t\tstale_after 2s\n\t}\n}", `{"gpu":{"interval":"5s","stale_after":"2s"}}`, "stale_after", 4},
		{"adaptive_throttle {\n\tgpu {\n\t\tinterval 1ms\n\t}\n}", `{"gpu":{"interval":"1ms"}}`, "interval must be at least 100ms, got 1ms", 3},
		{"adaptive_throttle {\n\tgpu {\n\t\tsource prometheus not-a-url\n\t}\n}", `{"gpu":{"source":"prometheus","urls":["not-a-url"]}}`, "not-a-url", 3},
		{"adaptive_throttle {\n\tgpu {\n\t\tsource nvidia-smi\n\t\tlabels gpu=0\n\t}\n}", `{"gpu":{"source":"nvidia-smi","labels":{"gpu":"0"}}}`, "need source prometheus", 4},
		{"adaptive_throttle {\n\tcircuit {\n\t\topen_for 1m\n\t\tmax_open_for 10s\n\t}\n}", `{"circuit":{"open_for":"1m","max_open_for":"10s"}}`, "max_open_for", 4},
		{"adaptive_throttle {\n\tlatency {\n\t\tceiling 1ns\n\t}\n}", `{"latency":{"ceiling":1}}`, "ceiling must be at least 1ms", 3},
		{"adaptive_throttle {\n\tlatency {\n\t\tceiling 5s\n\t\tslo 10s\n\t}\n}", `{"latency":{"ceiling":"5s","slo":"10s"}}`, "slo 10s must not be above the ceiling 5s", 4},
		{"adaptive_throttle {\n\tlatency {\n\t\tslo 1ns\n\t}\n}", `{"latency":{"slo":1}}`, "slo must be at least 1ms", 3},
		{"adaptive_throttle {\n\tlatency {\n\t\tmin_threshold 1s\n\t\tceiling 500ms\n\t}\n}", `{"latency":{"ceiling":"500ms","min_threshold":"1s"}}`, "min_threshold 1s must not be above the ceiling", 3},
	}
	for _, c := range cases {
		_, err := parse(t, c.caddyfile)
		if at := "Testfile:" + itoa(c.line); err == nil || !strings.Contains(err.Error(), c.msg) || !strings.Contains(err.Error(), at) {
			t.Errorf("%q: parse error %v, want it to say %q at %s", c.caddyfile, err, c.msg, at)
		}
		var h Handler
		if err := json.Unmarshal([]byte(c.json), &h); err != nil {
			t.Fatalf("%s: %v", c.json, err)
		}
		if err := h.Validate(); err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: Validate() = %v, want it to mention %q", c.json, err, c.msg)
		}
	}
	// A JSON value the user wrote is named by its JSON key.
	var h Handler
	if err := json.Unmarshal([]byte(`{"circuit":{"probe_timeout":"-1s"}}`), &h); err != nil {
		t.Fatal(err)
	}
	if err := h.Validate(); err == nil || !strings.Contains(err.Error(), "circuit: probe_timeout must be positive") {
		t.Errorf("negative probe_timeout: %v", err)
	}
}

// A JSON config with qps's former "limit" fails naming max_rate; max_rate
// is read.
func TestJSONQPSLimitIsNowMaxRate(t *testing.T) {
	var h Handler
	if err := json.Unmarshal([]byte(`{"qps":{"limit":50}}`), &h); err == nil || !strings.Contains(err.Error(), "qps: limit is now max_rate") {
		t.Errorf(`{"qps":{"limit":50}}: %v`, err)
	}
	if err := json.Unmarshal([]byte(`{"qps":{"max_rate":50}}`), &h); err != nil || h.QPS.MaxRate != 50 {
		t.Errorf(`{"qps":{"max_rate":50}}: %v, %+v`, err, h.QPS)
	}
}

// Mistakes a lax parser would take silently fail at their line.
func TestCaddyfileRefusesSilentMistakes(t *testing.T) {
	cases := []struct {
		input, msg string
		line       int
	}{
		{"adaptive_throttle {\n\tqps {\n\t}\n\tqps {\n\t}\n}", "qps given twice", 4},
		{"adaptive_throttle {\n\tgpu off\n\tgpu {\n\t}\n}", "gpu given twice", 3},
		{"adaptive_throttle {\n\tgpu off {\n\t\tsource nvml\n\t}\n}", "gpu off takes no block", 2},
		{"adaptive_throttle {\n\tqps {\n\t\tsigma 1\n\t\tsigma 2\n\t}\n}", "qps: sigma given twice", 4},
		{"adaptive_throttle {\n\tpriority {\n\t\tfrom X-Priority\n\t}\n}", "from must be a placeholder", 3},
		{"adaptive_throttle {\n\tqps {\n\t\tmax_rate inf\n\t}\n}", "max_rate must be a finite number", 3},
		{"adaptive_throttle {\n\tqps {\n\t\tsigma NaN\n\t}\n}", "sigma must be a finite number", 3},
		{"adaptive_throttle {\n\tlatency {\n\t\tfactor +Inf\n\t}\n}", "factor must be a finite number", 3},
		{"adaptive_throttle {\n\tpriority {\n\t\tmedium_floor 1\n\t}\n}", "priority: medium_floor was removed: while shedding, medium takes a free slot", 3},
	}
	for _, c := range cases {
		_, err := parse(t, c.input)
		if err == nil || !strings.Contains(err.Error(), c.msg) || !strings.Contains(err.Error(), "Testfile:"+itoa(c.line)) {
			t.Errorf("%q: error %v, want %q at Testfile:%d", c.input, err, c.msg, c.line)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// Every scalar JSON key of every block's config type is a Caddyfile key of
// its block, or one the Caddyfile writes as an argument of another key: a
// level's new key fails here until the parser takes it.
func TestEveryScalarJSONKeyIsACaddyfileKey(t *testing.T) {
	blocks := map[string]any{"qps": qps.Config{}, "latency": latency.Config{}, "circuit": breaker.CircuitConfig{},
		"priority": priority.Config{}, "gpu": gpu.Config{}, "concurrency": admission.Config{}, "persist": PersistConfig{}}
	// JSON keys the Caddyfile writes as arguments of another key.
	argument := map[string]bool{"gpu path": true, "gpu pair_kind": true, "gpu pair_metric": true,
		"gpu metric_max": true, "gpu urls": true, "priority high_reserve_share": true, "persist off": true}
	n := 0
	for name, block := range blocks {
		for _, f := range reflect.VisibleFields(reflect.TypeOf(block)) {
			key, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if !f.IsExported() || key == "" || argument[name+" "+key] {
				continue
			}
			if !slices.Contains(keys[name], key) {
				t.Errorf("%s %s: not a Caddyfile key", name, key)
			}
			n++
		}
	}
	if n < 40 {
		t.Fatalf("only %d keys tried", n)
	}
}

// The JSON keys that the Caddyfile writes as arguments of another key are
// no Caddyfile keys of their own: each is refused at its line, naming the
// block and the keys it takes.
func TestCaddyfileRefusesJSONOnlyKeys(t *testing.T) {
	for _, c := range []struct{ block, key, value string }{
		{"gpu", "path", "/usr/bin/nvidia-smi"},
		{"gpu", "pair_kind", "total"},
		{"gpu", "pair_metric", "DCGM_FI_DEV_FB_FREE"},
		{"gpu", "metric_max", "32"},
		{"gpu", "urls", "http://127.0.0.1:8000/metrics"},
		{"priority", "high_reserve_share", "0.2"},
	} {
		in := "adaptive_throttle {\n\t" + c.block + " {\n\t\tinterval 5s\n\t\t" + c.key + " " + c.value + "\n\t}\n}"
		if c.block == "priority" {
			in = "adaptive_throttle {\n\t" + c.block + " {\n\t\tdefault low\n\t\t" + c.key + " " + c.value + "\n\t}\n}"
		}
		_, err := parse(t, in)
		want := c.block + ": " + c.key + " is unknown (" + c.block + " takes " + strings.Join(keys[c.block], ", ") + "), at Testfile:4"
		if err == nil || err.Error() != want {
			t.Errorf("%s %s:\n got  %v\n want %s", c.block, c.key, err, want)
		}
	}
}

// An unknown key in any block is refused at its line, naming the block,
// the key and the keys the block takes; every key listed is taken.
func TestCaddyfileUnknownKeyNamesBlockAndLine(t *testing.T) {
	for block, ks := range keys {
		in := "adaptive_throttle {\n\tbogus_key 1\n}"
		want := "bogus_key is unknown (adaptive_throttle takes " + strings.Join(ks, ", ") + "), at Testfile:2"
		if block != "" {
			in = "adaptive_throttle {\n\tname x\n\t" + block + " {\n\t\tbogus_key 1\n\t}\n}"
			want = block + ": bogus_key is unknown (" + block + " takes " + strings.Join(ks, ", ") + "), at Testfile:4"
		}
		if _, err := parse(t, in); err == nil || err.Error() != want {
			t.Errorf("%q:\n got  %v\n want %s", in, err, want)
		}
		for _, key := range ks {
			in := "adaptive_throttle {\n" + key + " x\n}"
			if block != "" {
				in = "adaptive_throttle {\n" + block + " {\n" + key + " x\n}\n}"
			}
			if _, err := parse(t, in); err != nil && strings.Contains(err.Error(), "is unknown") {
				t.Errorf("%s %s is listed but not taken: %v", block, key, err)
			}
		}
	}
}

// The concurrency block and the reserve's two spellings: each mistake
// fails adapt at its line, naming the key.
func TestCaddyfileConcurrency(t *testing.T) {
	h, err := parse(t, "adaptive_throttle {\nconcurrency {\nlimit auto\nmax_wait 3s\nweigh_body 16KiB\n}\npriority {\nhigh_reserve 25%\n}\n}")
	if err != nil {
		t.Fatal(err)
	}
	w := config.Duration(3 * time.Second)
	if c := *h.Concurrency; c.Limit != 0 || c.MaxWait != (admission.MaxWait{High: w, Medium: w, Low: w}) || c.WeighBody != 16<<10 {
		t.Fatalf("concurrency %+v", c)
	}
	if h, err := parse(t, "adaptive_throttle {\nconcurrency {\nweigh_body off\n}\n}"); err != nil || h.Concurrency.WeighBody != -1 {
		t.Fatalf("weigh_body off: %v, %+v", err, h)
	}
	if h.Priority.HighReserveShare != 0.25 || h.Priority.HighReserve != nil {
		t.Fatalf("high_reserve 25%%: %+v", h.Priority.Config)
	}
	bad := map[string]string{
		"concurrency {\nlimit 0\n}":                   `concurrency: limit must be auto or a whole number ≥ 1, got "0", at Testfile:3`,
		"concurrency {\nmax_wait soon 1s\n}":          `concurrency: max_wait "soon" is no priority (high, medium or low), at Testfile:3`,
		"concurrency {\nmax_wait high\n}":             `concurrency: max_wait must be a positive duration such as 1s, got "high", at Testfile:3`,
		"concurrency {\nmax_wait high 1s low\n}":      `concurrency: max_wait takes one duration, or pairs such as: max_wait high 5s medium 1s low 500ms, at Testfile:3`,
		"concurrency {\nmax_wait high 1s high 2s\n}":  `concurrency: max_wait high given twice, at Testfile:3`,
		"concurrency {\nmax_wait -1s\n}":              `concurrency: max_wait must be a positive duration such as 1s, got "-1s", at Testfile:3`,
		"concurrency {\nmin 5\nmax 3\n}":              `concurrency: min 5 must not exceed max 3, at Testfile:3`,
		"concurrency {\nqueue none\n}":                `concurrency: queue must be a whole number, got "none", at Testfile:3`,
		"concurrency {\nslots 4\n}":                   `concurrency: slots is unknown (concurrency takes limit, min, max, initial, queue, max_wait, weigh_body), at Testfile:3`,
		"concurrency {\nweigh_body lots\n}":           `concurrency: weigh_body must be a size such as 64KiB (at most 16MiB), or off, got "lots", at Testfile:3`,
		"concurrency {\nweigh_body 0\n}":              `concurrency: weigh_body must be a size such as 64KiB (at most 16MiB), or off, got "0", at Testfile:3`,
		"priority {\nhigh_reserve 100%\n}":            `priority: high_reserve must be a share from 0% to under 100% of the limit, or a whole number of slots, got "100%", at Testfile:3`,
		"priority {\nhigh_reserve -2\n}":              `priority: high_reserve must be a whole number of slots ≥ 0, or a share such as 20%, got "-2", at Testfile:3`,
		"concurrency {\nlimit 3\n}\nconcurrency {\n}": `concurrency given twice in one adaptive_throttle; merge the two, at Testfile:5`,
	}
	for in, want := range bad {
		_, err := parse(t, "adaptive_throttle {\n"+in+"\n}")
		if err == nil || err.Error() != want {
			t.Errorf("%q:\n got  %v\n want %s", in, err, want)
		}
	}
}

// persist: on by default, off alone, or a block with max_age; mistakes
// fail at their line, and a bad JSON max_age fails Validate naming the key.
func TestCaddyfilePersist(t *testing.T) {
	for in, want := range map[string]*PersistConfig{
		"":                                 nil,
		"persist off":                      {Off: true},
		"persist {\n\tmax_age 30m\n}":      {MaxAge: config.Duration(30 * time.Minute)},
		"persist {\n}":                     {},
		"persist {\n\tmax_age 2d\n}":       {MaxAge: config.Duration(48 * time.Hour)},
		"name x\npersist {\nmax_age 1h\n}": {MaxAge: config.Duration(time.Hour)},
	} {
		h, err := parse(t, "adaptive_throttle {\n"+in+"\n}")
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		if !reflect.DeepEqual(h.Persist, want) {
			t.Errorf("%q: got %+v want %+v", in, h.Persist, want)
		}
	}
	if got := (*PersistConfig)(nil).maxAge(); got != DefaultPersistMaxAge || DefaultPersistMaxAge != time.Hour {
		t.Errorf("default max_age %v", got)
	}
	for _, c := range []struct {
		input, msg string
		line       int
	}{
		{"adaptive_throttle {\n\tpersist on\n}", "persist takes a block, or the single argument off", 2},
		{"adaptive_throttle {\n\tpersist off {\n\t\tmax_age 1h\n\t}\n}", "persist off takes no block", 2},
		{"adaptive_throttle {\n\tpersist {\n\t\tmax_age soon\n\t}\n}", "max_age must be a positive duration", 3},
		{"adaptive_throttle {\n\tpersist {\n\t\tmax_age 0s\n\t}\n}", "max_age must be a positive duration", 3},
		{"adaptive_throttle {\n\tpersist {\n\t\toff\n\t}\n}", "persist: off stands alone", 3},
		{"adaptive_throttle {\n\tpersist {\n\t\tmaxage 1h\n\t}\n}", `persist: maxage is unknown (persist takes max_age)`, 3},
		{"adaptive_throttle {\n\tpersist off\n\tpersist {\n\t}\n}", "persist given twice", 3},
		{"adaptive_throttle {\n\tupstream_gauge {\n\t\tpath metrics\n\t}\n}", `upstream_gauge: path must be a URL path such as /metrics, got "metrics"`, 3},
		{"adaptive_throttle {\n\tupstream_gauge {\n\t\tsource prometheus http://x/metrics\n\t}\n}", `upstream_gauge: source is unknown (upstream_gauge takes path, metric,`, 3},
		{"adaptive_throttle {\n\tupstream_gauge {\n\t\tinterval 1s\n\t\ttimeout 2s\n\t}\n}", `upstream_gauge: timeout 2s must not exceed 80% of interval 1s`, 4},
		{"adaptive_throttle {\n\tupstream_gauge {\n\t\tthreshold 150%\n\t}\n}", `upstream_gauge: threshold must be`, 3},
		{"adaptive_throttle {\n\tupstream_gauge {\n\t\tmetric a b c d\n\t}\n}", `upstream_gauge: metric takes`, 3},
	} {
		_, err := parse(t, c.input)
		if err == nil || !strings.Contains(err.Error(), c.msg) || !strings.Contains(err.Error(), "Testfile:"+itoa(c.line)) {
			t.Errorf("%q: error %v, want %q at Testfile:%d", c.input, err, c.msg, c.line)
		}
	}
	var h Handler
	if err := json.Unmarshal([]byte(`{"persist":{"max_age":"-1h"}}`), &h); err != nil {
		t.Fatal(err)
	}
	if err := h.Validate(); err == nil || !strings.Contains(err.Error(), "persist: max_age must be a positive duration") {
		t.Errorf("negative max_age: %v", err)
	}
}

// Every config error names its block and key the same way, "block: key
// …" ("key …" at the top level), whichever check finds it: the parser, a
// block's Validate at the block's end, or the whole's at the directive's.
func TestConfigErrorsNameBlockAndKey(t *testing.T) {
	keys := map[string][]string{
		"qps":            {"window", "sigma", "trip_factor", "min_baseline", "max_rate", "warmup"},
		"gpu":            {"source", "labels", "aggregate", "threshold", "interval", "timeout", "stale_after", "on_error"},
		"upstream_gauge": {"path", "metric", "labels", "threshold", "interval", "timeout", "stale_after"},
		"latency":        {"percentile", "window", "factor", "consecutive", "ceiling", "measure", "slo", "min_threshold"},
		"circuit":        {"error_ratio", "min_requests", "window", "open_for", "max_open_for", "probes", "probe_timeout"},
		"priority":       {"from", "default", "high_reserve"},
		"concurrency":    {"limit", "min", "max", "initial", "queue", "max_wait", "weigh_body"},
		"persist":        {"max_age"},
		"":               {"retry_after", "retry_after_max"},
	}
	n := 0
	for block, ks := range keys {
		for _, key := range ks {
			for _, v := range []string{"x-5", "-5", "1e300"} {
				in := "adaptive_throttle {\n" + key + " " + v + "\n}"
				want := key + " "
				if block != "" {
					in = "adaptive_throttle {\n" + block + " {\n" + key + " " + v + "\n}\n}"
					want = block + ": " + key + " "
				}
				_, err := parse(t, in)
				if err == nil {
					continue // a value the key takes
				}
				n++
				if !strings.HasPrefix(err.Error(), want) {
					t.Errorf("%s %s %s: error %q does not begin %q", block, key, v, err, want)
				}
			}
		}
	}
	if n < 80 {
		t.Fatalf("only %d errors seen", n)
	}
}

// The README's "Every key" table lists every key the Caddyfile parser
// takes, block by block, and no other. The parser's keys are its key
// switches' cases (read from caddyfile.go), less the former spellings it
// refuses; they must agree with the list unknownKey names.
func TestReadmeKeysTable(t *testing.T) {
	raw, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(raw), "\n## Every key\n")
	if !ok {
		t.Fatal(`README: no "Every key" section`)
	}
	if end := strings.Index(section, "\n#"); end >= 0 {
		section = section[:end]
	}
	table := map[string]bool{}
	for _, row := range strings.Split(section, "\n") {
		cells := strings.Split(row, "|")
		if len(cells) < 6 || !strings.HasPrefix(strings.TrimSpace(cells[2]), "`") {
			continue
		}
		block := strings.Trim(strings.TrimSpace(cells[1]), "`")
		if block == "—" {
			block = ""
		}
		key := block + " " + strings.Trim(strings.TrimSpace(cells[2]), "`")
		if table[key] {
			t.Errorf("README's keys table lists %q twice", key)
		}
		table[key] = true
	}
	if len(table) == 0 {
		t.Fatal("README's keys table has no rows")
	}

	parsed := caseKeys(t)
	taken := map[string]bool{}
	for block, cases := range parsed {
		for _, k := range cases {
			if slices.Contains(keys[block], k) {
				taken[block+" "+k] = true
				continue
			}
			// Not in the list: the parser must refuse it whatever follows.
			for _, arg := range []string{"", "1", "1s", "auto", "off", "50%"} {
				if _, err := parse(t, snippet(block, k+" "+arg)); err == nil {
					t.Errorf("%s %s %s is taken, but the keys unknownKey names leave it out", block, k, arg)
				}
			}
		}
	}
	for block, ks := range keys {
		for _, k := range ks {
			key := block + " " + k
			if !taken[key] {
				t.Errorf("%q is listed in keys but no case of the parser takes it", key)
			}
			if !table[key] {
				t.Errorf("README's keys table lacks %q", key)
			}
		}
	}
	for key := range table {
		if !taken[key] {
			t.Errorf("README's keys table lists %q, which the parser does not take", key)
		}
	}
}

// snippet is a directive with line in block ("" the directive's own).
func snippet(block, line string) string {
	if block == "" {
		return "adaptive_throttle {\n" + line + "\n}"
	}
	return "adaptive_throttle {\n" + block + " {\n" + line + "\n}\n}"
}

// caseKeys reads caddyfile.go's key switches: for each block, the cases of
// the first switch of its parser (UnmarshalCaddyfile for the directive's
// own keys, <block>Key for a block's, the block's name in camel case),
// and those of gaugeKey when the parser hands keys on to it (the gpu and
// upstream_gauge blocks share their gauge's keys).
func caseKeys(t *testing.T) map[string][]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "caddyfile.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][]string{} // parser function → its switch's cases
	calls := map[string]bool{}     // parser functions that call gaugeKey
	for _, decl := range f.Decls {
		fn, ok := decl.(*ast.FuncDecl)
		if !ok || (!strings.HasSuffix(fn.Name.Name, "Key") && fn.Name.Name != "UnmarshalCaddyfile") {
			continue
		}
		var sw *ast.SwitchStmt
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			if s, ok := n.(*ast.SwitchStmt); ok && sw == nil {
				sw = s
			}
			if c, ok := n.(*ast.CallExpr); ok {
				if id, ok := c.Fun.(*ast.Ident); ok && id.Name == "gaugeKey" {
					calls[fn.Name.Name] = true
				}
			}
			return true
		})
		if sw == nil {
			continue
		}
		for _, stmt := range sw.Body.List {
			for _, e := range stmt.(*ast.CaseClause).List {
				if lit, ok := e.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					k, err := strconv.Unquote(lit.Value)
					if err != nil {
						t.Fatal(err)
					}
					cases[fn.Name.Name] = append(cases[fn.Name.Name], k)
				}
			}
		}
	}
	out := map[string][]string{}
	for block := range keys {
		name := "UnmarshalCaddyfile"
		if block != "" {
			parts := strings.Split(block, "_")
			for i := 1; i < len(parts); i++ {
				parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
			}
			name = strings.Join(parts, "") + "Key"
		}
		if _, ok := cases[name]; !ok {
			t.Fatalf("block %q: no key switch in %s", block, name)
		}
		out[block] = cases[name]
		if calls[name] {
			out[block] = append(out[block], cases["gaugeKey"]...)
		}
	}
	if len(out) != len(keys) {
		t.Fatalf("key switches found for %d blocks, keys lists %d", len(out), len(keys))
	}
	return out
}
