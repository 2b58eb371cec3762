package adaptivethrottle

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ai-guardian/adaptivethrottle/config"
	"github.com/ai-guardian/adaptivethrottle/levels/gpu"
	"github.com/ai-guardian/adaptivethrottle/priority"
	"github.com/ai-guardian/adaptivethrottle/throttle"
)

var fqName = regexp.MustCompile(`fqName: "([^"]*)"`)

// collected is what the collector writes for one throttle: each metric's
// name with the label sets of its samples.
func collected(t *testing.T, th *throttle.Throttle) map[string][]map[string]string {
	t.Helper()
	ch := make(chan prometheus.Metric, 256)
	collect(ch, th, time.Now())
	close(ch)
	out := map[string][]map[string]string{}
	for m := range ch {
		name := fqName.FindStringSubmatch(m.Desc().String())
		if name == nil {
			t.Fatalf("cannot read desc %s", m.Desc())
		}
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			t.Fatal(err)
		}
		labels := map[string]string{}
		for _, l := range pb.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		out[name[1]] = append(out[name[1]], labels)
	}
	return out
}

// Before anything is learned the collector writes no threshold, baseline
// or history sample (a 0 would draw a line at 0 on every graph), and
// nothing of a GPU level that is off; the values and the rest are there, each
// labelled name, never instance (Prometheus's target label).
func TestCollectorOmitsWhatIsNotLearned(t *testing.T) {
	th, err := throttle.New(throttle.WithName("fresh"), throttle.WithConfig(throttle.Config{GPU: gpu.Config{Source: "off"}}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = th.Close() })
	got := collected(t, th)
	for _, name := range []string{"qps_threshold_requests_per_second", "qps_baseline_requests_per_second",
		"latency_threshold_seconds", "latency_history_seconds", "gpu_ratio", "gpu_threshold_ratio"} {
		if s, ok := got[metricsPrefix+name]; ok {
			t.Errorf("%s exported before anything is learned (or with the GPU level off): %v", name, s)
		}
	}
	for _, name := range []string{"qps_requests_per_second", "latency_seconds",
		"level_tripped", "level_transitions_total", "shedding", "override", "requests_total"} {
		if _, ok := got[metricsPrefix+name]; !ok {
			t.Errorf("%s missing", name)
		}
	}
	for name, samples := range got {
		if !slices.Contains(MetricNames, name) {
			t.Errorf("%s collected but not in MetricNames", name)
		}
		for _, l := range samples {
			if _, clash := l["instance"]; clash || l["name"] != "fresh" {
				t.Errorf("%s%v: want name=\"fresh\" and no instance label", name, l)
			}
		}
	}
	if n := len(got[metricsPrefix+"level_tripped"]); n != len(levelNames) {
		t.Errorf("level_tripped: %d series, want one per level", n)
	}
}

// A threshold that exists is exported: a QPS limit is one before the
// baseline has warmed up.
func TestCollectorExportsAThresholdOnceOneExists(t *testing.T) {
	th, err := throttle.New(throttle.WithName("limited"),
		throttle.WithConfig(throttle.Config{GPU: gpu.Config{Source: "off"}}), throttle.WithQPSMaxRate(40)) // WithConfig first: it replaces the whole config
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = th.Close() })
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := collected(t, th)
		if _, ok := got[metricsPrefix+"qps_baseline_requests_per_second"]; ok {
			t.Fatal("a baseline exported while warming up")
		}
		if _, ok := got[metricsPrefix+"qps_threshold_requests_per_second"]; ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the QPS limit never appeared as qps_threshold_requests_per_second")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The README's metrics section names exactly what the collector exports
// (the table's "_name" shorthand continues the prefix).
func TestReadmeMetricNames(t *testing.T) {
	raw, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	_, section, ok := strings.Cut(readme, "### Prometheus metrics\n")
	if !ok {
		t.Fatal("README: no metrics section")
	}
	if end := strings.Index(section, "\n#"); end >= 0 {
		section = section[:end]
	}
	full := regexp.MustCompile(`\b` + metricsPrefix + `[a-z_]+`)
	short := regexp.MustCompile("`(_[a-z_]+)`")
	seen := map[string]bool{}
	for _, m := range full.FindAllString(section, -1) {
		seen[m] = true
	}
	for _, m := range short.FindAllStringSubmatch(section, -1) {
		seen[metricsPrefix+m[1][1:]] = true
	}
	for name := range seen {
		if !slices.Contains(MetricNames, name) {
			t.Errorf("README's metrics section names %s, which is not exported", name)
		}
	}
	for _, name := range MetricNames {
		if !seen[name] {
			t.Errorf("README's metrics section does not list %s", name)
		}
	}
}

// gaugeServer serves a model server's saturation gauge in the Prometheus
// text format; up false answers 503, as a server that is restarting.
type gaugeServer struct {
	up    atomic.Bool
	value atomic.Value // string
}

func (g *gaugeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !g.up.Load() {
		http.Error(w, "restarting", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintf(w, "# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{model_name=\"m\"} %s\n", g.value.Load())
}

// gpuRead is a running throttle whose GPU level reads g every 100 ms, and
// goes stale 300 ms after its last good read.
func gpuRead(t *testing.T, name string, g *gaugeServer) *throttle.Throttle {
	t.Helper()
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	th, err := throttle.New(throttle.WithName(name), throttle.WithConfig(throttle.Config{GPU: gpu.Config{Source: "prometheus",
		URLs: []string{srv.URL + "/metrics"}, Metric: "vllm:kv_cache_usage_perc", Interval: config.Duration(100 * time.Millisecond),
		StaleAfter: config.Duration(300 * time.Millisecond)}}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = th.Close() })
	return th
}

// sampleOf is the value of the one sample of metric the collector writes
// for th, and whether there is one.
func sampleOf(t *testing.T, th *throttle.Throttle, metric string) (float64, bool) {
	t.Helper()
	ch := make(chan prometheus.Metric, 256)
	collect(ch, th, time.Now())
	close(ch)
	for m := range ch {
		if name := fqName.FindStringSubmatch(m.Desc().String()); name != nil && name[1] == metricsPrefix+metric {
			var pb dto.Metric
			if err := m.Write(&pb); err != nil {
				t.Fatal(err)
			}
			return pb.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// The GPU reading is exported only while there is one: none with the
// level off (a 0 would draw an idle GPU), none before the first read and
// none once the source stops answering; the reading while it answers.
func TestCollectorExportsTheGPUReadingOnlyWhenRead(t *testing.T) {
	if _, ok := sampleOf(t, gpuOff(t, "gpu-off"), "gpu_ratio"); ok {
		t.Error("gpu_ratio exported with the GPU level off")
	}
	if _, ok := sampleOf(t, gpuOff(t, "gpu-off"), "gpu_threshold_ratio"); ok {
		t.Error("gpu_threshold_ratio exported with the GPU level off")
	}

	g := &gaugeServer{}
	g.value.Store("0.42")
	th := gpuRead(t, "gpu-read", g)
	if _, ok := sampleOf(t, th, "gpu_ratio"); ok {
		t.Error("gpu_ratio exported before a first good read")
	}
	g.up.Store(true)
	waitUntil(t, "a first good read", func() bool { return th.Status(time.Now()).Levels.GPU.Available })
	waitUntil(t, "the level's sample of it", func() bool { return th.Status(time.Now()).Levels.GPU.Value > 0 })
	if v, ok := sampleOf(t, th, "gpu_ratio"); !ok || v != 0.42 {
		t.Errorf("gpu_ratio %v (exported %v) while the source answers 0.42", v, ok)
	}
	if v, ok := sampleOf(t, th, "gpu_threshold_ratio"); !ok || v != gpu.DefaultThreshold {
		t.Errorf("gpu_threshold_ratio %v (exported %v), want the default %v", v, ok, gpu.DefaultThreshold)
	}

	g.up.Store(false)
	waitUntil(t, "the source to go stale", func() bool { return !th.Status(time.Now()).Levels.GPU.Available })
	if v, ok := sampleOf(t, th, "gpu_ratio"); ok {
		t.Errorf("gpu_ratio %v exported while the source cannot be read", v)
	}
	if v, ok := sampleOf(t, th, "sensor_available"); !ok || v != 0 {
		t.Errorf("sensor_available %v (exported %v), want 0", v, ok)
	}
}

// waitUntil polls cond for up to 5 s: a precondition, never the assertion.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// requests_total has a series for each priority × decision admission can
// give (priority.Verdict.Possible), and none for a pair it cannot (the
// reserve is high's, the pacing medium's, the refusal at once low's).
func TestRequestsTotalExportsOnlyPossiblePairs(t *testing.T) {
	got := map[[2]string]bool{}
	for _, l := range collected(t, gpuOff(t, "pairs"))[metricsPrefix+"requests_total"] {
		got[[2]string{l["priority"], l["decision"]}] = true
	}
	for p := range priority.Count {
		for v := range priority.Verdicts {
			pair := [2]string{priority.Priority(p).String(), priority.Verdict(v).String()}
			if possible := priority.Verdict(v).Possible(priority.Priority(p)); got[pair] != possible {
				t.Errorf("requests_total{priority=%q,decision=%q}: exported %v, possible %v", pair[0], pair[1], got[pair], possible)
			}
		}
	}
	for _, pair := range [][2]string{{"high", "shed_low"}, {"low", "pass_reserved"}, {"low", "shed_graded"}, {"high", "pass_graded"}} {
		if got[pair] {
			t.Errorf("requests_total%v exported: admission never gives it", pair)
		}
	}
}

var helpOf = regexp.MustCompile(`help: ("(?:[^"\\]|\\.)*")`)

// helps maps every described metric to its help text.
func helps(t *testing.T) map[string]string {
	t.Helper()
	ch := make(chan *prometheus.Desc)
	go func() {
		theCollector.Describe(ch)
		close(ch)
	}()
	out := map[string]string{}
	for d := range ch {
		name, help := fqName.FindStringSubmatch(d.String()), helpOf.FindStringSubmatch(d.String())
		if name == nil || help == nil {
			t.Fatalf("cannot read desc %s", d)
		}
		h, err := strconv.Unquote(help[1])
		if err != nil {
			t.Fatal(err)
		}
		out[name[1]] = h
	}
	return out
}

// Each help text names exactly the label values the collector writes: a
// decision, cause, level, state, priority or sensor the code emits and the
// help leaves out, or one the help names and the code never emits, fails
// here. requests_total's help marks a decision given to one priority only
// with that priority, as priority.Verdict.Possible has it.
func TestHelpTextsNameWhatTheCodeEmits(t *testing.T) {
	g := &gaugeServer{}
	g.value.Store("0.1")
	g.up.Store(true)
	th := gpuRead(t, "helps", g) // the GPU level on: its sensor's series too
	waitUntil(t, "a first good read", func() bool { return th.Status(time.Now()).Levels.GPU.Available })
	th.Pool().Hold([]string{"127.0.0.1:9001"})  // a pool's upstream: its series too
	emitted := map[string]map[string][]string{} // metric → label → values
	for name, samples := range collected(t, th) {
		for _, l := range samples {
			for k, v := range l {
				if k == nameLabel {
					continue
				}
				if emitted[name] == nil {
					emitted[name] = map[string][]string{}
				}
				if !slices.Contains(emitted[name][k], v) {
					emitted[name][k] = append(emitted[name][k], v)
				}
			}
		}
	}
	all := helps(t)
	labels := describedLabels(t)
	for name, help := range all {
		if bad := unknownDecisions(help); len(bad) > 0 {
			t.Errorf("%s: the help names %v, which are no decisions", name, bad)
		}
		for _, label := range labels[name] {
			if label == nameLabel || label == "upstream" { // values from the config
				continue
			}
			if len(emitted[name][label]) == 0 && name == metricsPrefix+"pool_upstream_first_byte_seconds" {
				continue // no sample until a first byte was judged
			}
			values := emitted[name][label]
			if len(values) == 0 {
				t.Errorf("%s: no sample with a %s label collected", name, label)
			}
			for _, v := range values {
				if len(namedIn(help, []string{v})) == 0 {
					t.Errorf("%s: the help does not name %s %q, which the code emits: %q", name, label, v, help)
				}
			}
			vocab := vocabulary(label)
			if label == "state" {
				vocab = append(knownValues(metricsPrefix+"circuit_state", "state"), overrideStates[:]...)
			}
			for _, v := range namedIn(help, vocab) {
				if !slices.Contains(values, v) {
					t.Errorf("%s: the help names %s %q, which the code never emits on it: %q", name, label, v, help)
				}
			}
		}
	}

	// Decisions marked with a priority, "shed_low (low)", are given to
	// that priority only; the others to every priority.
	marked := regexp.MustCompile(`\b((?:pass|shed)(?:_[a-z]+)*)\b(?: \((high|medium|low)\b)?`)
	for _, m := range marked.FindAllStringSubmatch(all[metricsPrefix+"requests_total"], -1) {
		v := slices.Index(vocabulary("decision"), m[1])
		if v < 0 {
			continue
		}
		for p := range priority.Count {
			want := m[2] == "" || m[2] == priority.Priority(p).String()
			if got := priority.Verdict(v).Possible(priority.Priority(p)); got != want {
				t.Errorf("requests_total's help says %s is given to %q, but Possible(%s) is %v", m[1], m[2], priority.Priority(p), got)
			}
		}
	}

	for name, help := range all {
		for w, why := range staleWords {
			if strings.Contains(strings.ToLower(help), w) {
				t.Errorf("%s's help says %q: %s", name, w, why)
			}
		}
	}
}
