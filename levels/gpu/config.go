// Package gpu is the GPU level: it judges GPU pressure (memory in use over
// total, or a model server's own saturation gauge) against a threshold,
// above the memory a server holds whatever its load (floor.go), through a
// hysteresis. See the README, "Which GPU source?".
//
// The readings come from package sensors: the `gpu` block (config.go)
// names the source, Open (source.go) opens it, and a sensors.Sensor
// samples it on its own timer, off the request path, and publishes
// Readings; the Level (level.go) observes each on the engine's sampler.
package gpu

import (
	"errors"
	"math"
	"net/url"
	"strings"
	"time"

	"github.com/ai-guardian/adaptivethrottle/config"
)

// Config is the `gpu` block: where GPU pressure is read, how often, and
// what it takes to trip. Its JSON keys are the Caddyfile's; zero fields take
// the defaults (Defaults), and Validate names the key of a bad value.
type Config struct {
	// auto (default), nvml, nvidia-smi, prometheus or off.
	Source string `json:"source,omitempty"`
	// nvidia-smi: the binary to run. Default: nvidia-smi on PATH.
	Path string `json:"path,omitempty"`
	// prometheus: the /metrics URLs to scrape.
	URLs []string `json:"urls,omitempty"`
	// prometheus: a 0–1 gauge, or used memory when pair_metric is set.
	// Default vllm:kv_cache_usage_perc.
	Metric string `json:"metric,omitempty"`
	// prometheus: "total" or "free": how pair_metric relates to metric.
	PairKind string `json:"pair_kind,omitempty"`
	// prometheus: the total or free metric's name.
	PairMetric string `json:"pair_metric,omitempty"`
	// prometheus: metric is a count (requests waiting), judged as a
	// fraction of this many. 0: metric is a 0–1 gauge (or a pair).
	MetricMax float64 `json:"metric_max,omitempty"`
	// prometheus: only series whose labels equal these.
	Labels map[string]string `json:"labels,omitempty"`
	// max (default: any device over threshold trips) or mean, across
	// devices and series.
	Aggregate string `json:"aggregate,omitempty"`
	// Trip above this fraction of memory (or of the gauge), in (0,1].
	// Default 0.75.
	Threshold float64 `json:"threshold,omitempty"`
	// How often to read the source. Default 2s; at least 100ms.
	Interval config.Duration `json:"interval,omitempty"`
	// Per read; default and maximum: 80% of interval.
	Timeout config.Duration `json:"timeout,omitempty"`
	// A last good sample older than this counts as an error. Default 10s.
	StaleAfter config.Duration `json:"stale_after,omitempty"`
	// Device indexes or UUIDs to watch. Default: all.
	Devices []string `json:"devices,omitempty"`
	// allow (default) or shed: what an unreadable or stale source means.
	OnError string `json:"on_error,omitempty"`

	config.Zeros // the keys written as 0: Validate refuses them

	// thresholdDefault: Defaults filled Threshold. Memory readings are then
	// judged above the learned floor; a threshold the user wrote is
	// judged as written (floor.go).
	thresholdDefault bool
	// member: the gauge of one upstream of a pool (Upstream.For).
	member bool
}

// Defaults for Config; DefaultMetric is the vLLM KV-cache saturation gauge,
// used when a prometheus source names no metric.
const (
	DefaultThreshold  = 0.75
	DefaultInterval   = 2 * time.Second
	DefaultStaleAfter = 10 * time.Second
	DefaultMetric     = "vllm:kv_cache_usage_perc"
)

// minInterval keeps a typo (1ms) from turning the sampler into a busy loop.
const minInterval = 100 * time.Millisecond

// Bounds: a reading an hour apart, or trusted for a day, is no reading.
const (
	MaxInterval   = time.Hour
	MaxStaleAfter = 24 * time.Hour
)

// maxTimeout is the longest read allowed: a read must end before the next tick.
func maxTimeout(interval time.Duration) time.Duration { return interval * 8 / 10 }

// Defaults fills zero fields the user did not write as zero. It never
// overrides a value the user gave, so Validate still sees (and rejects) a
// bad one.
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
	if !c.Given("threshold", c.Threshold) {
		c.Threshold, c.thresholdDefault = DefaultThreshold, true
	}
	if !c.Given("interval", float64(c.Interval)) {
		c.Interval = config.Duration(DefaultInterval)
	}
	if !c.Given("timeout", float64(c.Timeout)) {
		c.Timeout = config.Duration(maxTimeout(c.Interval.D()))
	}
	if !c.Given("stale_after", float64(c.StaleAfter)) {
		c.StaleAfter = config.Duration(DefaultStaleAfter)
	}
	if c.OnError == "" {
		c.OnError = "allow"
	}
}

// Validate checks a defaulted Config; every message names the key, and
// the bound of a value too large.
func (c Config) Validate() error { return c.validate("gpu") }

// validate is Validate naming block b in its messages.
func (c Config) validate(b string) error {
	var errs []error
	bad := func(key, format string, a ...any) { errs = append(errs, config.Errorf(b, key, format, a...)) }

	switch c.Source {
	case "auto", "nvml", "nvidia-smi", "prometheus", "off":
	default:
		bad("source", "must be auto, nvml, nvidia-smi, prometheus or off, got %q", c.Source)
	}
	if !(c.Threshold > 0 && c.Threshold <= 1) { // also rejects NaN
		bad("threshold", "must be in (0,1], got %v", c.Threshold)
	}
	interval, timeout, stale := c.Interval.D(), c.Timeout.D(), c.StaleAfter.D()
	if interval < minInterval {
		bad("interval", "must be at least %v, got %v", minInterval, interval)
	}
	if timeout <= 0 {
		bad("timeout", "must be positive, got %v", timeout)
	} else if interval > 0 && timeout > maxTimeout(interval) {
		bad("timeout", "%v must not exceed 80%% of interval %v (at most %v)", timeout, interval, maxTimeout(interval))
	}
	if stale <= 0 {
		bad("stale_after", "must be positive, got %v", stale)
	} else if stale < interval {
		bad("stale_after", "%v must not be shorter than interval %v: every reading would go stale between samples", stale, interval)
	}
	errs = append(errs, config.DurationAtMost(b, "interval", c.Interval, MaxInterval),
		config.DurationAtMost(b, "stale_after", c.StaleAfter, MaxStaleAfter))
	switch c.Aggregate {
	case "max", "mean":
	default:
		bad("aggregate", "must be max or mean, got %q", c.Aggregate)
	}
	switch c.OnError {
	case "allow", "shed":
	default:
		bad("on_error", "must be allow or shed, got %q", c.OnError)
	}
	seen := map[string]bool{}
	for _, d := range c.Devices {
		switch {
		case strings.TrimSpace(d) == "":
			bad("devices", "has an empty device name")
		case seen[d]:
			bad("devices", "lists %q twice", d)
		}
		seen[d] = true
	}
	if (c.Source == "nvidia-smi" || c.Source == "auto") && c.Path == "" {
		bad("path", "of nvidia-smi must not be empty")
	}
	if c.Source == "prometheus" {
		errs = append(errs, c.validatePrometheus(b)...)
	} else if key := c.prometheusKey(); key != "" {
		bad(key, "given, but urls, metric and labels need source prometheus (source is %q)", c.Source)
	}
	return errors.Join(errs...)
}

// MarshalJSON writes the block with its written zeros.
func (c Config) MarshalJSON() ([]byte, error) {
	type plain Config
	return config.MarshalBlock(plain(c), c.Zeros)
}

// UnmarshalJSON reads the block, recording the keys written as zero.
func (c *Config) UnmarshalJSON(b []byte) (err error) {
	type plain Config
	c.Zeros, err = config.UnmarshalBlock(b, (*plain)(c))
	return err
}

// prometheusKey names a key given that only a Prometheus source reads,
// or is "" when none is.
func (c Config) prometheusKey() string {
	switch {
	case c.Metric != "" || c.PairKind != "" || c.PairMetric != "" || c.MetricMax != 0:
		return "metric"
	case len(c.Labels) > 0:
		return "labels"
	case len(c.URLs) > 0:
		return "urls"
	}
	return ""
}

func (c Config) validatePrometheus(b string) []error {
	var errs []error
	bad := func(key, format string, a ...any) { errs = append(errs, config.Errorf(b, key, format, a...)) }
	if len(c.URLs) == 0 {
		bad("source", "prometheus needs at least one URL")
	}
	for _, raw := range c.URLs {
		u, err := url.Parse(raw)
		switch {
		case err != nil:
			bad("source", "prometheus URL %q: %v", raw, err)
		case u.Scheme != "http" && u.Scheme != "https":
			bad("source", "prometheus URL %q: scheme must be http or https", raw)
		case u.Host == "":
			bad("source", "prometheus URL %q: no host", raw)
		}
	}
	if c.Metric == "" || strings.ContainsAny(c.Metric, " \t\n{}\"") {
		bad("metric", "%q is not a metric name", c.Metric)
	}
	switch c.PairKind {
	case "":
		if c.PairMetric != "" {
			bad("metric", "pair %q needs a kind (total or free)", c.PairMetric)
		}
	case "total", "free":
		if c.PairMetric == "" || strings.ContainsAny(c.PairMetric, " \t\n{}\"") {
			bad("metric", "%s pair %q is not a metric name", c.PairKind, c.PairMetric)
		}
	default:
		bad("metric", "pair kind must be total or free, got %q", c.PairKind)
	}
	switch {
	case c.MetricMax == 0:
	case !(c.MetricMax > 0) || math.IsInf(c.MetricMax, 0): // also NaN
		bad("metric", "%s max %v: must be a positive number", c.Metric, c.MetricMax)
	case c.PairKind != "":
		bad("metric", "%s: a max and a %s pair cannot both be set", c.Metric, c.PairKind)
	}
	for k := range c.Labels {
		if k == "" || strings.ContainsAny(k, " \t\n{}\"=") {
			bad("labels", "%q is not a label name", k)
		}
	}
	return errs
}
