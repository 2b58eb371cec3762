package adaptivethrottle

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ai-guardian/adaptivethrottle/levels/gpu"
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
// or history sample (a 0 would draw a line at 0 on every graph); the
// values, the configured GPU threshold and the rest are there, each
// labelled throttle, never instance (Prometheus's target label).
func TestCollectorOmitsWhatIsNotLearned(t *testing.T) {
	th, err := throttle.New(throttle.WithName("fresh"), throttle.WithConfig(throttle.Config{GPU: gpu.Config{Source: "off"}}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = th.Close() })
	got := collected(t, th)
	for _, name := range []string{"qps_threshold_requests_per_second", "qps_baseline_requests_per_second",
		"latency_threshold_seconds", "latency_history_seconds"} {
		if s, ok := got[metricsPrefix+name]; ok {
			t.Errorf("%s exported before anything is learned: %v", name, s)
		}
	}
	for _, name := range []string{"qps_requests_per_second", "gpu_ratio", "gpu_threshold_ratio", "latency_seconds",
		"level_tripped", "level_transitions_total", "shedding", "medium_rate_requests_per_second", "requests_total"} {
		if _, ok := got[metricsPrefix+name]; !ok {
			t.Errorf("%s missing", name)
		}
	}
	for name, samples := range got {
		if !slices.Contains(MetricNames, name) {
			t.Errorf("%s collected but not in MetricNames", name)
		}
		for _, l := range samples {
			if _, clash := l["instance"]; clash || l["throttle"] != "fresh" {
				t.Errorf("%s%v: want throttle=\"fresh\" and no instance label", name, l)
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
		throttle.WithConfig(throttle.Config{GPU: gpu.Config{Source: "off"}}), throttle.WithQPSLimit(40)) // WithConfig first: it replaces the whole config
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
// (the table's "_name" shorthand continues the prefix); the upgrade notes
// map every old name to one that exists.
func TestReadmeMetricNames(t *testing.T) {
	raw, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	start := strings.Index(readme, "### Prometheus metrics")
	notes := strings.Index(readme, "#### Upgrade notes: metric names")
	end := strings.Index(readme, "### Placeholders and logs")
	if start < 0 || notes < start || end < notes {
		t.Fatal("README: no metrics section with its upgrade notes")
	}
	full := regexp.MustCompile(`\b` + metricsPrefix + `[a-z_]+`)
	short := regexp.MustCompile("`(_[a-z_]+)`")
	seen := map[string]bool{}
	section := readme[start:notes]
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
	for _, row := range strings.Split(readme[notes:end], "\n") {
		cells := strings.Split(row, "|")
		if len(cells) != 4 || !strings.Contains(cells[1], metricsPrefix) {
			continue
		}
		now := full.FindString(cells[2])
		if !slices.Contains(MetricNames, now) {
			t.Errorf("upgrade notes: %q maps to %q, which is not exported", strings.TrimSpace(cells[1]), now)
		}
		if old := full.FindString(cells[1]); slices.Contains(MetricNames, old) && !strings.Contains(cells[1], "{") {
			t.Errorf("upgrade notes: %s is still exported", old)
		}
	}
}
