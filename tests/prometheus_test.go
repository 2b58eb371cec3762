package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/internal/llmsim"
)

// requirePrometheus makes a missing prometheus binary a failure instead of
// a skip (.ci/run sets it, so CI can never pass without running this).
const requirePrometheus = "ADAPTIVE_THROTTLE_REQUIRE_PROMETHEUS"

// promTool finds a Prometheus binary (prometheus, promtool) on PATH: a
// skip when absent, unless requirePrometheus is set.
func promTool(t *testing.T, name string) string {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err == nil {
		return bin
	}
	if os.Getenv(requirePrometheus) != "" {
		t.Fatalf("%s not found on PATH and %s is set: install it (Debian: apt-get install prometheus)", name, requirePrometheus)
	}
	t.Skipf("%s not found on PATH: skipped (Debian: apt-get install prometheus; set %s=1 to make this a failure)", name, requirePrometheus)
	return ""
}

// promServer is a real Prometheus scraping the test binary's Caddy.
type promServer struct {
	t   *testing.T
	api string // http://127.0.0.1:port
}

// startPrometheus runs Prometheus on a free 127.0.0.1 port with its own
// data directory, scraping target's /metrics every second.
func startPrometheus(t *testing.T, target string) *promServer {
	t.Helper()
	bin := promTool(t, "prometheus")
	if out, err := exec.Command(bin, "--version").CombinedOutput(); err == nil {
		t.Logf("%s", strings.SplitN(string(out), "\n", 2)[0])
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	os.WriteFile(cfg, []byte(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: caddy
    honor_labels: false
    metrics_path: /metrics
    static_configs:
      - targets: ["`+target+`"]
`), 0o644)
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("prometheus log:\n%s", logs.String())
		}
	})
	p := &promServer{t: t, api: "http://" + addr}
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("prometheus exited at start:\n%s", logs.String())
		default:
		}
		// Ready, and the scrape loop running: Prometheus applies its
		// targets up to 5 s after it starts, and a test that loads its
		// config before that misses its first seconds.
		if resp, err := http.Get(p.api + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				if up, err := p.query(`up{job="caddy"}`, time.Now()); err == nil && len(up) > 0 {
					return p
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready and scraping within 20 s:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type promSample struct {
	Metric map[string]string
	Value  float64
}

// get calls the HTTP API and returns its data, failing on an error answer
// (a query that does not parse).
func (p *promServer) get(path string, params url.Values, data any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", p.api+path+"?"+params.Encode(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var out struct {
		Status    string          `json:"status"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
		Data      json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return fmt.Errorf("%s: %d, undecodable answer: %v", path, resp.StatusCode, err)
	}
	if out.Status != "success" {
		return fmt.Errorf("%s: %s: %s", path, out.ErrorType, out.Error)
	}
	return json.Unmarshal(out.Data, data)
}

func parseValue(v []any) float64 {
	if len(v) != 2 {
		return math.NaN()
	}
	s, _ := v[1].(string)
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return math.NaN()
	}
	return f
}

// promTime is t as the HTTP API takes it: Unix seconds, to the millisecond.
func promTime(t time.Time) string { return strconv.FormatFloat(float64(t.UnixMilli())/1e3, 'f', 3, 64) }

// query evaluates expr at an instant (/api/v1/query).
func (p *promServer) query(expr string, at time.Time) ([]promSample, error) {
	var d struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  []any             `json:"value"`
		} `json:"result"`
	}
	params := url.Values{"query": {expr}, "time": {promTime(at)}}
	if err := p.get("/api/v1/query", params, &d); err != nil {
		return nil, err
	}
	if d.ResultType == "scalar" {
		return nil, fmt.Errorf("%q is a scalar, not a vector", expr)
	}
	var out []promSample
	for _, r := range d.Result {
		out = append(out, promSample{r.Metric, parseValue(r.Value)})
	}
	return out, nil
}

type promSeries struct {
	Metric map[string]string
	Values []float64
}

// queryRange evaluates expr at every step of [start, end]
// (/api/v1/query_range), as a Grafana panel does.
func (p *promServer) queryRange(expr string, start, end time.Time, step time.Duration) ([]promSeries, error) {
	var d struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
			Values [][]any           `json:"values"`
		} `json:"result"`
	}
	params := url.Values{"query": {expr}, "start": {promTime(start)}, "end": {promTime(end)},
		"step": {strconv.Itoa(int(step.Seconds()))}}
	if err := p.get("/api/v1/query_range", params, &d); err != nil {
		return nil, err
	}
	var out []promSeries
	for _, r := range d.Result {
		s := promSeries{Metric: r.Metric}
		for _, v := range r.Values {
			s.Values = append(s.Values, parseValue(v))
		}
		out = append(out, s)
	}
	return out, nil
}

// until polls expr until some sample satisfies ok.
func (p *promServer) until(within time.Duration, what, expr string, ok func(float64) bool) {
	p.t.Helper()
	eventually(p.t, within, what+" in Prometheus ("+expr+")", func() bool {
		s, err := p.query(expr, time.Now())
		if err != nil {
			p.t.Fatalf("%s: %v", expr, err)
		}
		for _, x := range s {
			if ok(x.Value) {
				return true
			}
		}
		return false
	})
}

// dashTarget is one query of the dashboard.
type dashTarget struct {
	Panel, Type, Expr string
}

func dashboardTargets(t *testing.T) (targets []dashTarget, variables []string) {
	t.Helper()
	raw, err := os.ReadFile("../dashboards/adaptive-throttle.json")
	if err != nil {
		t.Fatal(err)
	}
	type panel struct {
		Title   string                     `json:"title"`
		Type    string                     `json:"type"`
		Targets []struct{ Expr string }    `json:"targets"`
		Panels  []json.RawMessage          `json:"panels"`
		Extra   map[string]json.RawMessage `json:"-"`
	}
	var d struct {
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Type       string `json:"type"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	var walk func([]json.RawMessage)
	walk = func(ps []json.RawMessage) {
		for _, r := range ps {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatal(err)
			}
			for _, tg := range p.Targets {
				targets = append(targets, dashTarget{p.Title, p.Type, tg.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			variables = append(variables, v.Name+"="+v.Definition)
		}
	}
	return targets, variables
}

// substitute fills in the dashboard's variables as Grafana would for a
// 1 s scrape interval.
func substitute(t *testing.T, expr, name string) string {
	t.Helper()
	e := strings.NewReplacer("$__rate_interval", "15s", "$__interval", "5s", "$__range", "60s",
		"${name}", name, "$name", name).Replace(expr)
	if strings.Contains(e, "$") {
		t.Fatalf("%q: a variable left after substitution", e)
	}
	return e
}

// A real Prometheus (Debian's package) scrapes a real Caddy through an
// overload against the simulator (a pool of one upstream whose own gauge
// is read, so that the pool's panels have data too), and every query of the dashboard, with
// its variables filled in, parses and returns data; the shed and tripped
// panels are non-zero during the overload; the name label survives
// Prometheus's own instance label; before anything is learned the
// threshold stats read "learning" (-1); the trips panel's bars are whole
// counts that add up to the level's transitions; and the module's metrics
// pass promtool's lint.
func TestDashboardAgainstRealPrometheus(t *testing.T) {
	begin := time.Now()
	const name = "promdash"
	prom := startPrometheus(t, strings.TrimPrefix(adminURL, "http://"))
	// Answers take about 100 ms and the limit is fixed at 2, so that the
	// overload's five senders find the slots taken and low is shed: the
	// QPS level alone refuses low only when no slot is free.
	_, addr := upstream(t, llmsim.Config{TokenTime: 25 * time.Millisecond})
	tc := start(t, `http://localhost:9080 {
	adaptive_throttle {
		name `+name+`
		concurrency {
			limit 2
		}
		qps {
			warmup 6
			window 30s
		}
		gpu {
			source prometheus http://`+addr+`/metrics
			metric vllm:kv_cache_usage_perc
			labels model_name=demo-llm
			interval 500ms
		}
		upstream_gauge {
			metric vllm:kv_cache_usage_perc
			labels model_name=demo-llm
			interval 500ms
		}
		latency {
			window 3s
		}
	}
	reverse_proxy `+addr+` {
		lb_policy adaptive_throttle `+name+`
	}
}`)
	loadedAt := time.Now()
	sel := `{name="` + name + `"}`
	stopCalm := lightTraffic(t, tc.Client, 15)
	defer stopCalm()

	// The first scrape, before anything is learned: no threshold, and the
	// stats say "learning".
	var first time.Time
	eventually(t, 10*time.Second, "a first scrape of "+name, func() bool {
		s, err := prom.query(`timestamp(caddy_adaptive_throttle_qps_requests_per_second`+sel+`)`, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if len(s) == 0 {
			return false
		}
		first = time.UnixMilli(int64(s[0].Value * 1e3))
		return true
	})
	if since := first.Sub(loadedAt); since > 4*time.Second {
		t.Fatalf("first scrape %v after the load: too late to see the thresholds unlearned (warmup 6 s)", since)
	}
	targets, variables := dashboardTargets(t)
	learning := 0
	for _, tg := range targets {
		if tg.Type != "stat" || !strings.Contains(tg.Expr, "threshold") {
			continue
		}
		learning++
		s, err := prom.query(substitute(t, tg.Expr, name), first)
		if err != nil || len(s) != 1 || s[0].Value != -1 {
			t.Errorf("%s before anything is learned: %+v %v, want one sample of -1 (\"learning\")", tg.Panel, s, err)
		}
	}
	if learning != 2 {
		t.Errorf("%d threshold stat panels, want 2 (qps, latency)", learning)
	}

	// Calm traffic teaches a baseline and a latency history.
	for _, m := range []string{"qps_threshold_requests_per_second", "qps_baseline_requests_per_second",
		"latency_threshold_seconds", "latency_history_seconds"} {
		prom.until(20*time.Second, "a learned "+m, "caddy_adaptive_throttle_"+m+sel, func(v float64) bool { return v > 0 })
	}

	// The overload: 80 req/s more, five times the learned rate.
	for range 4 {
		stop := lightTraffic(t, tc.Client, 20)
		defer stop()
	}
	prom.until(15*time.Second, "the QPS level tripped", `caddy_adaptive_throttle_level_tripped{level="qps",name="`+name+`"}`,
		func(v float64) bool { return v == 1 })
	prom.until(10*time.Second, "sheds", `rate(caddy_adaptive_throttle_shed_total{cause="qps",name="`+name+`"}[15s])`,
		func(v float64) bool { return v > 0 })
	during := time.Now()

	// The throttle's label is name; Prometheus's instance and job are
	// the target's, and nothing was renamed exported_instance.
	s, err := prom.query("caddy_adaptive_throttle_shedding"+sel, during)
	if err != nil || len(s) != 1 {
		t.Fatalf("shedding: %+v %v", s, err)
	}
	if m := s[0].Metric; m["instance"] != strings.TrimPrefix(adminURL, "http://") || m["job"] != "caddy" || m["exported_instance"] != "" {
		t.Errorf("shedding's labels %v: want name, the target's instance and job, no exported_instance", m)
	}

	for _, tg := range targets {
		e := substitute(t, tg.Expr, name)
		s, err := prom.query(e, during)
		if err != nil {
			t.Errorf("%s: %q: %v", tg.Panel, e, err)
			continue
		}
		if len(s) == 0 {
			t.Errorf("%s: %q returned no data during the overload", tg.Panel, e)
			continue
		}
		maxV := math.Inf(-1)
		for _, x := range s {
			maxV = math.Max(maxV, x.Value)
		}
		shedPanel := strings.Contains(e, `decision=~"shed.*"`) || strings.Contains(e, "shed_total")
		trippedPanel := strings.Contains(e, "shedding{") || (strings.Contains(e, "level_tripped{") && strings.Contains(e, `level="qps"`) && tg.Type != "stat")
		if (shedPanel || trippedPanel) && !(maxV > 0) {
			t.Errorf("%s: %q is %v during the overload, want > 0", tg.Panel, e, maxV)
		}
		if tg.Type == "stat" && strings.Contains(e, "threshold") && !(maxV > 0) {
			t.Errorf("%s: %q is %v once learned, want the threshold", tg.Panel, e, maxV)
		}
	}
	for _, v := range variables {
		label, def, _ := strings.Cut(v, "=")
		metric := strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(def, "label_values("), ", "+label+")"))
		var values []string
		if err := prom.get("/api/v1/label/"+label+"/values", url.Values{"match[]": {metric}}, &values); err != nil {
			t.Errorf("variable %s (%s): %v", label, def, err)
		} else if !slices.Contains(values, name) {
			t.Errorf("variable %s (%s): values %v lack %s", label, def, values, name)
		}
	}

	lintMetrics(t)

	// The trips panel over the whole run at a 5 s step, ending now (the
	// trip is scraped: the until above saw it): whole counts that add up
	// to the QPS level's transitions (at least its trip).
	var trips string
	for _, tg := range targets {
		if strings.Contains(tg.Expr, "level_transitions_total") {
			trips = substitute(t, tg.Expr, name)
		}
	}
	step := 5 * time.Second
	end := time.Now()
	startAt := end.Add(-step * (end.Sub(loadedAt)/step + 2))
	last := end
	series, err := prom.queryRange(trips, startAt, end, step)
	if err != nil {
		t.Fatalf("%q: %v", trips, err)
	}
	total, err := prom.query(`caddy_adaptive_throttle_level_transitions_total{level="qps",name="`+name+`"}`, last)
	if err != nil || len(total) != 1 {
		t.Fatalf("transitions at %v: %+v %v", last, total, err)
	}
	var sum float64
	found := false
	for _, sr := range series {
		for _, v := range sr.Values {
			if v != math.Trunc(v) || v < 0 {
				t.Errorf("trips panel %v: a bar of %v, want whole counts", sr.Metric, v)
			}
		}
		if sr.Metric["level"] == "qps" {
			found = true
			for _, v := range sr.Values {
				sum += v
			}
		}
	}
	if !found || sum != total[0].Value || sum < 1 {
		t.Errorf("trips panel: QPS bars add up to %v (series found %v), the counter reads %v: want equal and ≥ 1", sum, found, total[0].Value)
		for _, e := range []string{`caddy_adaptive_throttle_level_transitions_total{level="qps",name="` + name + `"}`,
			`caddy_adaptive_throttle_level_tripped{level="qps",name="` + name + `"}`} {
			raw, err := prom.queryRange(e, startAt, end, time.Second)
			t.Logf("%s from %v to %v: %+v %v", e, startAt, end, raw, err)
		}
		t.Logf("QPS status: %+v", status(t, name).Levels.QPS)
	}

	// A drain refuses everything: the shedding panel reads 2 ("refusing
	// all"), the override panel 3 ("drain"); auto brings both back.
	var shedState, overridePanel string
	for _, tg := range targets {
		switch tg.Panel {
		case "Shedding state":
			shedState = substitute(t, tg.Expr, name)
		case "Operator override":
			overridePanel = substitute(t, tg.Expr, name)
		}
	}
	if shedState == "" || overridePanel == "" {
		t.Fatal(`no "Shedding state" or "Operator override" panel`)
	}
	if code, body := adminDo(t, "POST", "/throttle/override", `{"name":"`+name+`","state":"drain","for":"1m"}`); code != 200 {
		t.Fatalf("override drain: %d %s", code, body)
	}
	prom.until(10*time.Second, "the shedding panel to read refusing all", shedState, func(v float64) bool { return v == 2 })
	prom.until(5*time.Second, "the override panel to read drain", overridePanel, func(v float64) bool { return v == 3 })
	adminDo(t, "POST", "/throttle/override", `{"name":"`+name+`","state":"auto"}`)
	t.Logf("real-Prometheus test: %.1f s", time.Since(begin).Seconds())
}

// lintMetrics runs promtool check metrics over the module's families as
// Caddy's admin endpoint serves them.
func lintMetrics(t *testing.T) {
	t.Helper()
	bin := promTool(t, "promtool")
	resp, err := http.Get(adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body := drain(t, resp)
	var ours strings.Builder
	n := 0
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "caddy_adaptive_throttle_") || strings.HasPrefix(line, "# HELP caddy_adaptive_throttle_") ||
			strings.HasPrefix(line, "# TYPE caddy_adaptive_throttle_") {
			ours.WriteString(line + "\n")
			if strings.HasPrefix(line, "# TYPE") {
				n++
			}
		}
	}
	if n < 20 {
		t.Errorf("only %d of the module's families on /metrics", n)
	}
	cmd := exec.Command(bin, "check", "metrics")
	cmd.Stdin = strings.NewReader(ours.String())
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}
