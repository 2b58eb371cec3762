package sensors

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func page(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// metricsServer serves body (swappable) as a Prometheus text page and
// records the Accept header it was asked with.
type metricsServer struct {
	*httptest.Server
	mu     sync.Mutex
	body   []byte
	status int
	accept atomic.Value
}

func serveMetrics(t *testing.T, body []byte) *metricsServer {
	m := &metricsServer{body: body, status: 200}
	m.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.accept.Store(r.Header.Get("Accept"))
		m.mu.Lock()
		body, status := m.body, m.status
		m.mu.Unlock()
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w.WriteHeader(status)
		w.Write(body)
	}))
	t.Cleanup(m.Close)
	return m
}

func (m *metricsServer) set(status int, body []byte) {
	m.mu.Lock()
	m.status, m.body = status, body
	m.mu.Unlock()
}

// promCfg scrapes urls for vLLM's KV-cache gauge, the gpu block's default.
func promCfg(urls ...string) PrometheusConfig {
	return PrometheusConfig{URLs: urls, Timeout: time.Second, Gauge: Gauge{Metric: "vllm:kv_cache_usage_perc"}}
}

func openProm(t *testing.T, cfg PrometheusConfig) Source {
	t.Helper()
	src := NewPrometheus(cfg)
	if src.Name() != "prometheus" {
		t.Fatalf("name %q", src.Name())
	}
	t.Cleanup(func() { src.Close() })
	return src
}

func TestPrometheusVLLMRatio(t *testing.T) {
	srv := serveMetrics(t, page(t, "vllm_metrics.txt"))
	src := openProm(t, promCfg(srv.URL+"/metrics")) // metric defaults to vllm:kv_cache_usage_perc
	devs, err := src.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 1 {
		t.Fatalf("%+v", devs)
	}
	d := devs[0]
	if d.Used != 0.42 || d.Total != 1 || d.Index != -1 || d.ID != `{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"}` || d.Origin != srv.URL+"/metrics" {
		t.Fatalf("%+v", d)
	}
	if got := srv.accept.Load(); got != "text/plain;version=0.0.4" {
		t.Fatalf("Accept %q", got)
	}
}

func TestPrometheusDCGMPairs(t *testing.T) {
	srv := serveMetrics(t, page(t, "dcgm_metrics.txt"))
	cfg := promCfg(srv.URL)
	cfg.Metric, cfg.PairKind, cfg.PairMetric = "DCGM_FI_DEV_FB_USED", "free", "DCGM_FI_DEV_FB_FREE"
	devs, err := openProm(t, cfg).Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 2 {
		t.Fatalf("%+v", devs)
	}
	d := devs[0]
	if d.ID != "0" || d.Index != 0 || d.UUID != "GPU-5f1c2a9e-8d4b-4a7c-9e3f-1b2c3d4e5f60" ||
		d.Used != 61234*MiB || d.Total != (61234+19816)*MiB || devs[1].ID != "1" || !near(devs[1].Ratio(), 12040.0/81050) {
		t.Fatalf("free pair: %+v", devs)
	}

	cfg.PairKind, cfg.PairMetric = "total", "DCGM_FI_DEV_FB_TOTAL"
	sc := cfgFor(time.Second)
	sc.Devices = []string{"GPU-5f1c2a9e-8d4b-4a7c-9e3f-1b2c3d4e5f60"}
	r := NewSensor(openProm(t, cfg), sc).SampleOnce(context.Background(), t0)
	if !r.Available || !near(r.Value, 61234.0/81559) || !over(r) {
		t.Fatalf("total pair, by UUID: %+v", r)
	}

	cfg.Labels = map[string]string{"gpu": "1", "modelName": "NVIDIA H100 80GB HBM3"}
	r = NewSensor(openProm(t, cfg), cfgFor(time.Second)).SampleOnce(context.Background(), t0)
	if !r.Available || len(r.Devices) != 1 || !near(r.Value, 12040.0/81559) || over(r) {
		t.Fatalf("label filter: %+v", r)
	}
}

func TestPrometheusLabelFilterMisses(t *testing.T) {
	srv := serveMetrics(t, page(t, "vllm_metrics.txt"))
	cfg := promCfg(srv.URL)
	cfg.Labels = map[string]string{"model_name": "mistral"}
	_, err := openProm(t, cfg).Read(context.Background())
	if err == nil {
		t.Fatal("no series must be an error")
	}
	mustContain(t, err.Error(), `metric vllm:kv_cache_usage_perc has no series with labels {model_name="mistral"} (one it has: {engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"})`)
	mustContain(t, err.Error(), srv.URL)
}

func TestPrometheusMetricDisappears(t *testing.T) {
	full := page(t, "vllm_metrics.txt")
	srv := serveMetrics(t, full)
	cfg := promCfg(srv.URL)
	s := NewSensor(openProm(t, cfg), cfgFor(time.Second))
	if r := s.SampleOnce(context.Background(), t0); !r.Available || !near(r.Value, 0.42) {
		t.Fatalf("first scrape: %+v", r)
	}

	// The server is upgraded/downgraded to a release that names it otherwise.
	srv.set(200, dropLines(full, "vllm:kv_cache_usage_perc"))
	r := s.SampleOnce(context.Background(), t0.Add(2*time.Second))
	if r.Available {
		t.Fatalf("metric gone must be unavailable: %+v", r)
	}
	mustContain(t, r.Reason, "prometheus: "+srv.URL+": metric vllm:kv_cache_usage_perc not found, but vllm:gpu_cache_usage_perc is")

	srv.set(200, dropLines(full, "cache_usage_perc"))
	r = s.SampleOnce(context.Background(), t0.Add(4*time.Second))
	mustContain(t, r.Reason, "metric vllm:kv_cache_usage_perc not found (did the server rename it?")
}

func dropLines(b []byte, substr string) []byte {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return []byte(strings.Join(out, "\n"))
}

func TestPrometheusTwoEndpointsMax(t *testing.T) {
	full := page(t, "vllm_metrics.txt")
	a := serveMetrics(t, full)
	b := serveMetrics(t, []byte(strings.ReplaceAll(string(full), "_perc{engine=\"0\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\"} 0.42", "_perc{engine=\"0\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\"} 0.81")))
	cfg := promCfg(a.URL, b.URL)
	r := NewSensor(openProm(t, cfg), cfgFor(time.Second)).SampleOnce(context.Background(), t0)
	if !r.Available || len(r.Devices) != 2 || !near(r.Value, 0.81) || !over(r) || r.Devices[1].Origin != b.URL {
		t.Fatalf("%+v", r)
	}

	// Either endpoint failing fails the read, naming it.
	b.set(500, []byte("engine dead\n"))
	r = NewSensor(openProm(t, cfg), cfgFor(time.Second)).SampleOnce(context.Background(), t0)
	if r.Available {
		t.Fatalf("%+v", r)
	}
	mustContain(t, r.Reason, b.URL+": HTTP 500 Internal Server Error: engine dead")
}

func TestPrometheusHangingScrape(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs first: unblock, then close

	cfg := promCfg(srv.URL)
	cfg.Timeout = 200 * time.Millisecond
	s := NewSensor(openProm(t, cfg), cfgFor(cfg.Timeout))
	start := time.Now()
	r := s.SampleOnce(context.Background(), t0)
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Fatalf("sample stalled %v", took)
	}
	if r.Available || r.Errors != 1 || r.Hung != 0 {
		t.Fatalf("the client honours its deadline: a timeout, not a hung read: %+v", r)
	}
	mustContain(t, r.Reason, "prometheus: read timed out after 200ms: "+srv.URL+": context deadline exceeded")
}

func TestPrometheusBodyTooLarge(t *testing.T) {
	big := append(page(t, "vllm_metrics.txt"), []byte(strings.Repeat("# padding comment line\n", 2000))...)
	srv := serveMetrics(t, big)
	cfg := promCfg(srv.URL)
	cfg.MaxBody = 16 << 10
	_, err := openProm(t, cfg).Read(context.Background())
	if err == nil {
		t.Fatal("oversized body accepted")
	}
	mustContain(t, err.Error(), "body larger than 16384 bytes")

	cfg.MaxBody = int64(len(big)) // exactly at the bound is fine
	if _, err := openProm(t, cfg).Read(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestParseMetricsEdgeCases(t *testing.T) {
	ratio := promCfg("http://x").Gauge
	for _, tc := range []struct {
		name, body string
		cfg        func(*Gauge)
		want       string // error substring; "" = ok
		check      func([]Device) string
	}{
		{name: "NaN gauge", body: "vllm:kv_cache_usage_perc{gpu=\"0\"} NaN\n", check: func(d []Device) string {
			if d[0].Err != "vllm:kv_cache_usage_perc is NaN" || d[0].ID != "0" || d[0].Index != 0 {
				return fmt.Sprintf("%+v", d[0])
			}
			return ""
		}},
		{name: "over one reported as is", body: "vllm:kv_cache_usage_perc 1.2\n", check: func(d []Device) string {
			if d[0].Ratio() != 1.2 || d[0].ID != "{}" || d[0].Err != "" {
				return fmt.Sprintf("%+v", d[0])
			}
			return ""
		}},
		{name: "timestamp kept", body: "vllm:kv_cache_usage_perc 0.5 1740830400000\n", check: func(d []Device) string {
			if !d[0].Timestamp.Equal(time.UnixMilli(1740830400000)) {
				return d[0].Timestamp.String()
			}
			return ""
		}},
		{name: "histogram", body: "# TYPE vllm:kv_cache_usage_perc histogram\nvllm:kv_cache_usage_perc_bucket{le=\"+Inf\"} 1\nvllm:kv_cache_usage_perc_count 1\nvllm:kv_cache_usage_perc_sum 1\n", want: "is a histogram; want a gauge"},
		{name: "garbage page", body: "this is not a metrics page {{{\n", want: "metric vllm:kv_cache_usage_perc not found"},
		{name: "malformed sample of ours", body: "vllm:kv_cache_usage_perc{gpu=\"0\" 0.5\n", want: "parsing metrics: text format parsing error in line 1"},
		{name: "malformed lines elsewhere ignored", body: "# HELP x a\n# HELP x b\nbroken{{{ line\nvllm:kv_cache_usage_perc_other 7\nvllm:kv_cache_usage_perc 0.5\n",
			check: func(d []Device) string {
				if len(d) != 1 || d[0].Used != 0.5 {
					return fmt.Sprintf("%+v", d)
				}
				return ""
			}},
		{name: "pair missing for one series", body: "u{gpu=\"0\"} 1\nu{gpu=\"1\"} 1\nt{gpu=\"0\"} 4\n",
			cfg: func(c *Gauge) { c.Metric, c.PairKind, c.PairMetric = "u", "total", "t" }, check: func(d []Device) string {
				if len(d) != 2 || d[0].Ratio() != 0.25 || d[1].Err != `no t series with labels {gpu="1"}` {
					return fmt.Sprintf("%+v", d)
				}
				return ""
			}},
		{name: "pair metric absent", body: "u 1\n", cfg: func(c *Gauge) { c.Metric, c.PairKind, c.PairMetric = "u", "free", "f" }, want: "metric f not found"},
		{name: "zero total", body: "u 0\nf 0\n", cfg: func(c *Gauge) { c.Metric, c.PairKind, c.PairMetric = "u", "free", "f" },
			check: func(d []Device) string {
				if d[0].Err != "total memory is 0" {
					return d[0].Err
				}
				return ""
			}},
		{name: "absent label equals empty", body: "g{a=\"1\"} 0.1\ng{b=\"2\"} 0.2\n", cfg: func(c *Gauge) { c.Metric, c.Labels = "g", map[string]string{"a": ""} },
			check: func(d []Device) string {
				if len(d) != 1 || d[0].Used != 0.2 {
					return fmt.Sprintf("%+v", d)
				}
				return ""
			}},
	} {
		cfg := ratio
		if tc.cfg != nil {
			tc.cfg(&cfg)
		}
		devs, err := ParseMetrics([]byte(tc.body), cfg)
		if tc.want != "" {
			if err == nil {
				t.Fatalf("%s: no error", tc.name)
			}
			mustContain(t, err.Error(), tc.want)
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if msg := tc.check(devs); msg != "" {
			t.Fatalf("%s: %s", tc.name, msg)
		}
	}
}

// keepLines is the lines of a testdata page that contain any of subs: small
// seeds, since the fuzzer spends a minute minimising each large input.
func keepLines(t testing.TB, name string, subs ...string) []byte {
	var out []string
	for _, l := range strings.Split(string(page(t, name)), "\n") {
		for _, s := range subs {
			if strings.Contains(l, s) {
				out = append(out, l)
				break
			}
		}
	}
	return []byte(strings.Join(out, "\n") + "\n")
}

func FuzzParseMetrics(f *testing.F) {
	f.Add(keepLines(f, "vllm_metrics.txt", "cache_usage_perc", "e2e_request_latency", "python_info"), uint8(0))
	f.Add(keepLines(f, "dcgm_metrics.txt", "FB_USED", "FB_FREE"), uint8(1))
	f.Add(keepLines(f, "dcgm_metrics.txt", "FB_USED", "FB_TOTAL"), uint8(2))
	f.Add([]byte("vllm:kv_cache_usage_perc{gpu=\"0\"} NaN\n"), uint8(0))
	f.Add([]byte("DCGM_FI_DEV_FB_USED 1e308\nDCGM_FI_DEV_FB_FREE 1e308\n"), uint8(1))
	kv := promCfg("http://x").Gauge
	cfgs := []Gauge{kv, kv, kv}
	cfgs[1].Metric, cfgs[1].PairKind, cfgs[1].PairMetric = "DCGM_FI_DEV_FB_USED", "free", "DCGM_FI_DEV_FB_FREE"
	cfgs[2].Metric, cfgs[2].PairKind, cfgs[2].PairMetric = "DCGM_FI_DEV_FB_USED", "total", "DCGM_FI_DEV_FB_TOTAL"
	f.Fuzz(func(t *testing.T, body []byte, mode uint8) {
		devs, err := ParseMetrics(body, cfgs[int(mode)%len(cfgs)])
		if err != nil {
			return
		}
		if len(devs) == 0 {
			t.Fatal("no error and no devices")
		}
		for _, d := range devs {
			if d.Err != "" {
				continue
			}
			if !(d.Total > 0) || !(d.Used >= 0) || math.IsInf(d.Used, 0) {
				t.Fatalf("bad device without error: %+v", d)
			}
		}
	})
}

func BenchmarkParseMetricsVLLM(b *testing.B) {
	body := page(b, "vllm_metrics.txt")
	g := promCfg("http://x").Gauge
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := ParseMetrics(body, g); err != nil {
			b.Fatal(err)
		}
	}
}

// A count (requests waiting) is read as a fraction of its max: TGI's
// unlabelled tgi_queue_size at 24 of max 32 is 75%.
func TestPrometheusCountWithMax(t *testing.T) {
	srv := serveMetrics(t, []byte("# HELP tgi_queue_size Current queue size\n# TYPE tgi_queue_size gauge\ntgi_queue_size 24\n"))
	cfg := promCfg(srv.URL + "/metrics")
	cfg.Metric, cfg.MetricMax = "tgi_queue_size", 32
	devs, err := openProm(t, cfg).Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 1 || devs[0].Used != 24 || devs[0].Total != 32 || devs[0].Ratio() != 0.75 || devs[0].ID != "{}" {
		t.Fatalf("%+v", devs)
	}
}
