// Package gpu reads GPU pressure (memory in use over total, or a model
// server's own saturation gauge) from NVML, nvidia-smi or a Prometheus
// endpoint, on a timer off the request path.
package gpu

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// MiB is the unit nvidia-smi and DCGM report memory in.
const MiB = 1 << 20

// Device is one GPU (or one model-server gauge) as a source saw it.
type Device struct {
	ID    string  // what `devices` selects on: the index as a string ("0"), also matched against UUID
	Index int     // -1 when unknown
	UUID  string  // "" when unknown
	Used  float64 // bytes (nvml, nvidia-smi in MiB*1MiB, DCGM MiB*1MiB), or the gauge value for ratio metrics
	Total float64 // bytes, or 1 for a ratio gauge

	// Err says why this one device could not be read ("memory.used is [N/A]").
	// A broken device fails a sample only when it is selected, so one lost
	// GPU does not blind a gateway that watches another.
	Err string
	// Origin is the endpoint the device came from (prometheus); "" otherwise.
	Origin string
	// Timestamp is the sample time the source itself reported (a Prometheus
	// sample timestamp); zero when the source gave none.
	Timestamp time.Time
}

// Ratio is Used/Total, 0 if Total<=0.
func (d Device) Ratio() float64 {
	if d.Total <= 0 {
		return 0
	}
	return d.Used / d.Total
}

// Config is the gpu block of the Caddyfile.
type Config struct {
	Source     string            // "auto" (default), "nvml", "nvidia-smi", "prometheus", "off"
	Path       string            // nvidia-smi binary; default "nvidia-smi" looked up on PATH
	URLs       []string          // prometheus endpoints
	Metric     string            // prometheus: a 0–1 gauge, or "used" when PairMetric set
	PairKind   string            // "", "total" or "free"
	PairMetric string            // the total or free metric name
	Labels     map[string]string // prometheus series filter (exact match on every listed label)
	Aggregate  string            // "max" (default: any device over threshold trips) or "mean"
	Threshold  float64           // (0,1], default 0.75
	Interval   time.Duration     // default 2s
	Timeout    time.Duration     // per read; default and maximum: 80% of Interval
	StaleAfter time.Duration     // default 10s
	Devices    []string          // indexes or UUIDs; empty = all
	OnError    string            // "allow" (default) or "shed"; applied by the caller
	MaxBody    int64             // prometheus body bound, default 4 MiB
}

// Defaults for Config; DefaultMetric is the vLLM KV-cache saturation gauge,
// used when a prometheus source names no metric.
const (
	DefaultThreshold  = 0.75
	DefaultInterval   = 2 * time.Second
	DefaultStaleAfter = 10 * time.Second
	DefaultMaxBody    = 4 << 20
	DefaultMetric     = "vllm:kv_cache_usage_perc"
)

// minInterval keeps a typo (1ms) from turning the sampler into a busy loop.
const minInterval = 100 * time.Millisecond

// maxTimeout is the longest read allowed: a read must end before the next tick.
func maxTimeout(interval time.Duration) time.Duration { return interval * 8 / 10 }

// Defaults fills zero fields. It never overrides a value the user gave, so
// Validate still sees (and rejects) a bad one.
func (c *Config) Defaults() {
	if c.Source == "" {
		c.Source = "auto"
	}
	if c.Path == "" {
		c.Path = "nvidia-smi"
	}
	if c.Source == "prometheus" && c.Metric == "" {
		c.Metric = DefaultMetric
	}
	if c.Aggregate == "" {
		c.Aggregate = "max"
	}
	if c.Threshold == 0 {
		c.Threshold = DefaultThreshold
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Timeout == 0 {
		c.Timeout = maxTimeout(c.Interval)
	}
	if c.StaleAfter == 0 {
		c.StaleAfter = DefaultStaleAfter
	}
	if c.OnError == "" {
		c.OnError = "allow"
	}
	if c.MaxBody == 0 {
		c.MaxBody = DefaultMaxBody
	}
}

// Validate checks a defaulted Config; every message names the setting.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	switch c.Source {
	case "auto", "nvml", "nvidia-smi", "prometheus", "off":
	default:
		bad("gpu source %q unknown (want auto, nvml, nvidia-smi, prometheus or off)", c.Source)
	}
	if !(c.Threshold > 0 && c.Threshold <= 1) { // also rejects NaN
		bad("gpu threshold %v out of range (0,1]", c.Threshold)
	}
	if c.Interval < minInterval {
		bad("gpu interval %v too short (at least %v)", c.Interval, minInterval)
	}
	if c.Timeout <= 0 {
		bad("gpu timeout %v must be positive", c.Timeout)
	} else if c.Interval > 0 && c.Timeout > maxTimeout(c.Interval) {
		bad("gpu timeout %v exceeds 80%% of interval %v (at most %v)", c.Timeout, c.Interval, maxTimeout(c.Interval))
	}
	if c.StaleAfter <= 0 {
		bad("gpu stale_after %v must be positive", c.StaleAfter)
	} else if c.StaleAfter < c.Interval {
		bad("gpu stale_after %v is shorter than interval %v: every reading would go stale between samples", c.StaleAfter, c.Interval)
	}
	switch c.Aggregate {
	case "max", "mean":
	default:
		bad("gpu aggregate %q unknown (want max or mean)", c.Aggregate)
	}
	switch c.OnError {
	case "allow", "shed":
	default:
		bad("gpu on_error %q unknown (want allow or shed)", c.OnError)
	}
	if c.MaxBody <= 0 {
		bad("gpu max body %d must be positive", c.MaxBody)
	}
	seen := map[string]bool{}
	for _, d := range c.Devices {
		switch {
		case strings.TrimSpace(d) == "":
			bad("gpu devices: empty device name")
		case seen[d]:
			bad("gpu devices: %q listed twice", d)
		}
		seen[d] = true
	}
	if (c.Source == "nvidia-smi" || c.Source == "auto") && c.Path == "" {
		bad("gpu nvidia-smi path is empty")
	}
	if c.Source == "prometheus" {
		errs = append(errs, c.validatePrometheus()...)
	} else if len(c.URLs) > 0 || c.PairKind != "" || c.PairMetric != "" || len(c.Labels) > 0 {
		bad("gpu urls, metric pairs and labels need source prometheus (source is %q)", c.Source)
	}
	return errors.Join(errs...)
}

func (c Config) validatePrometheus() []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if len(c.URLs) == 0 {
		bad("gpu source prometheus needs at least one URL")
	}
	for _, raw := range c.URLs {
		u, err := url.Parse(raw)
		switch {
		case err != nil:
			bad("gpu prometheus URL %q: %v", raw, err)
		case u.Scheme != "http" && u.Scheme != "https":
			bad("gpu prometheus URL %q: scheme must be http or https", raw)
		case u.Host == "":
			bad("gpu prometheus URL %q: no host", raw)
		}
	}
	if c.Metric == "" || strings.ContainsAny(c.Metric, " \t\n{}\"") {
		bad("gpu metric %q is not a metric name", c.Metric)
	}
	switch c.PairKind {
	case "":
		if c.PairMetric != "" {
			bad("gpu metric pair %q needs a kind (total or free)", c.PairMetric)
		}
	case "total", "free":
		if c.PairMetric == "" || strings.ContainsAny(c.PairMetric, " \t\n{}\"") {
			bad("gpu metric %s pair %q is not a metric name", c.PairKind, c.PairMetric)
		}
	default:
		bad("gpu metric pair kind %q unknown (want total or free)", c.PairKind)
	}
	for k := range c.Labels {
		if k == "" || strings.ContainsAny(k, " \t\n{}\"=") {
			bad("gpu labels: %q is not a label name", k)
		}
	}
	return errs
}
