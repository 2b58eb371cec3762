package llmsim

import (
	"bytes"
	"math"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape fetches /metrics and parses it with Prometheus' own text parser,
// strict about metric names.
func scrape(t *testing.T, e *testEnv) map[string]*dto.MetricFamily {
	t.Helper()
	code, hdr, b := e.call(t, "GET", "/metrics", "")
	if code != 200 || hdr.Get("Content-Type") != "text/plain; version=0.0.4; charset=utf-8" {
		t.Fatalf("/metrics: %d %q", code, hdr.Get("Content-Type"))
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("parsing /metrics: %v\n%s", err, b)
	}
	return fams
}

// value returns the single sample of name, checking its type and labels.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, typ dto.MetricType, labels map[string]string) float64 {
	t.Helper()
	f := fams[name]
	if f == nil || len(f.Metric) != 1 || f.GetType() != typ || f.GetHelp() == "" {
		t.Fatalf("%s: family %v", name, f)
	}
	m := f.Metric[0]
	got := map[string]string{}
	for _, l := range m.Label {
		got[l.GetName()] = l.GetValue()
	}
	if len(got) != len(labels) {
		t.Fatalf("%s: labels %v, want %v", name, got, labels)
	}
	for k, v := range labels {
		if got[k] != v {
			t.Fatalf("%s: labels %v, want %v", name, got, labels)
		}
	}
	if typ == dto.MetricType_COUNTER {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

func TestMetricsParseAndValues(t *testing.T) {
	cfg := slowTokens(2)
	cfg.ModelName = `odd "name"\ü`
	e := newEnv(t, cfg)
	for range 3 { // two run (4 prompt tokens each), one waits
		e.background(t, chatBody)
	}
	waitState(t, e.sim, "2 running, 1 waiting", func(s State) bool { return s.Running == 2 && s.Waiting == 1 })

	fams := scrape(t, e)
	vl := map[string]string{"model_name": cfg.ModelName, "engine": "0"}
	dl := map[string]string{"gpu": "0", "UUID": GPUUUID, "device": "nvidia0", "modelName": GPUModel}
	G, C := dto.MetricType_GAUGE, dto.MetricType_COUNTER

	used := DefaultBaseMemory + 2*4*DefaultKVPerToken + DefaultQueuedMemory
	wantKV := float64(used-DefaultBaseMemory) / float64(DefaultTotalMemory-DefaultBaseMemory)
	for name, want := range map[string]float64{
		"vllm:num_requests_running": 2,
		"vllm:num_requests_waiting": 1,
		"vllm:kv_cache_usage_perc":  wantKV,
		"vllm:gpu_cache_usage_perc": wantKV,
	} {
		if got := value(t, fams, name, G, vl); math.Abs(got-want) > 1e-12 {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if got := value(t, fams, "vllm:request_success_total", C, vl); got != 0 {
		t.Errorf("success = %v, want 0", got)
	}
	if got, want := value(t, fams, "DCGM_FI_DEV_FB_USED", G, dl), float64(used/MiB); got != want {
		t.Errorf("FB_USED = %v, want %v", got, want)
	}
	if got, want := value(t, fams, "DCGM_FI_DEV_FB_FREE", G, dl), float64(DefaultTotalMemory/MiB-used/MiB); got != want {
		t.Errorf("FB_FREE = %v, want %v", got, want)
	}
	if got := value(t, fams, "llmsim_slots", G, nil); got != 2 {
		t.Errorf("llmsim_slots = %v", got)
	}
	if got := value(t, fams, "llmsim_oom_total", C, nil); got != 0 {
		t.Errorf("llmsim_oom_total = %v", got)
	}
}

func TestMetricsCountSuccessAndOOM(t *testing.T) {
	cfg := fastConfig()
	cfg.TotalMemory, cfg.BaseMemory, cfg.QueuedMemory = 10*MiB, 4*MiB, 3*MiB
	e := newEnv(t, cfg)
	for range 3 {
		if code, _, _ := e.call(t, "POST", "/v1/chat/completions", chatBody); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	e.sim.SetSlots(0)
	e.background(t, chatBody)
	e.background(t, chatBody)
	waitState(t, e.sim, "2 queued", func(s State) bool { return s.Waiting == 2 })
	if code, _, _ := e.call(t, "POST", "/v1/chat/completions", chatBody); code != 503 {
		t.Fatalf("third queued request: %d, want OOM", code)
	}
	fams := scrape(t, e)
	vl := map[string]string{"model_name": "demo-llm", "engine": "0"}
	if got := value(t, fams, "vllm:request_success_total", dto.MetricType_COUNTER, vl); got != 3 {
		t.Errorf("success = %v, want 3", got)
	}
	if got := value(t, fams, "llmsim_oom_total", dto.MetricType_COUNTER, nil); got != 1 {
		t.Errorf("oom = %v, want 1", got)
	}
	if got := value(t, fams, "vllm:kv_cache_usage_perc", dto.MetricType_GAUGE, vl); got != 1 {
		t.Errorf("kv usage = %v, want 1 (card full of queued buffers)", got)
	}
	if got := value(t, fams, "llmsim_slots", dto.MetricType_GAUGE, nil); got != 0 {
		t.Errorf("slots = %v", got)
	}
}

func TestKVCacheUsageClamped(t *testing.T) {
	c := Config{TotalMemory: 10 * GiB, BaseMemory: 2 * GiB}
	for _, tc := range []struct {
		used int64
		want float64
	}{{0, 0}, {2 * GiB, 0}, {6 * GiB, 0.5}, {10 * GiB, 1}, {12 * GiB, 1}} {
		if got := c.KVCacheUsage(tc.used); got != tc.want {
			t.Errorf("KVCacheUsage(%d) = %v, want %v", tc.used, got, tc.want)
		}
	}
}
