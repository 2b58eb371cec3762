package gpu

import (
	"errors"
	"strings"

	"github.com/ai-guardian/adaptivethrottle/config"
)

// Upstream is the `upstream_gauge` block: with a pool of upstreams
// (`lb_policy adaptive_throttle`), each upstream's own saturation gauge,
// read from its own /metrics page at http://<its dial address><Path>. A
// Level per upstream judges it (For), as the gpu level judges a
// prometheus source, but recovers after two readings below 90% of the
// threshold whatever the time tripped; a reading over the threshold is
// that upstream's pressure, and an unreadable or stale page is no
// evidence either way (on_error allow). Its keys are the gpu block's for
// a prometheus source, with Path in place of the URLs; zero fields take
// the gpu block's defaults.
type Upstream struct {
	// Path is the metrics page's path on every upstream. Default /metrics.
	Path       string            `json:"path,omitempty"`
	Metric     string            `json:"metric,omitempty"`
	PairKind   string            `json:"pair_kind,omitempty"`
	PairMetric string            `json:"pair_metric,omitempty"`
	MetricMax  float64           `json:"metric_max,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
	Threshold  float64           `json:"threshold,omitempty"`
	Interval   config.Duration   `json:"interval,omitempty"`
	Timeout    config.Duration   `json:"timeout,omitempty"`
	StaleAfter config.Duration   `json:"stale_after,omitempty"`

	config.Zeros // the keys written as 0: Validate refuses them
}

// UpstreamBlock is the block's name in the config and its errors.
const UpstreamBlock = "upstream_gauge"

// DefaultUpstreamPath is where a model server serves its metrics.
const DefaultUpstreamPath = "/metrics"

// UpstreamOf is the block of the gpu block's gauge keys in c, read at
// path on every upstream.
func UpstreamOf(path string, c Config) Upstream {
	return Upstream{Path: path, Metric: c.Metric, PairKind: c.PairKind, PairMetric: c.PairMetric, MetricMax: c.MetricMax,
		Labels: c.Labels, Threshold: c.Threshold, Interval: c.Interval, Timeout: c.Timeout, StaleAfter: c.StaleAfter, Zeros: c.Zeros}
}

// For is the gpu level's config that reads the gauge of the upstream
// dialled at addr (host:port), undefaulted.
func (u Upstream) For(addr string) Config {
	path := u.Path
	if path == "" {
		path = DefaultUpstreamPath
	}
	return Config{Source: "prometheus", URLs: []string{"http://" + addr + path}, Metric: u.Metric, PairKind: u.PairKind,
		PairMetric: u.PairMetric, MetricMax: u.MetricMax, Labels: u.Labels, Threshold: u.Threshold, Interval: u.Interval,
		Timeout: u.Timeout, StaleAfter: u.StaleAfter, OnError: "allow", Zeros: u.Zeros, member: true}
}

// Validate checks the block as written; every message names the block
// and the key.
func (u Upstream) Validate() error {
	var errs []error
	if u.Path != "" && (!strings.HasPrefix(u.Path, "/") || strings.ContainsAny(u.Path, " \t\n#?")) {
		errs = append(errs, config.Errorf(UpstreamBlock, "path", "must be a URL path such as /metrics, got %q", u.Path))
	}
	c := u.For("upstream:1")
	c.Defaults()
	return errors.Join(append(errs, c.validate(UpstreamBlock))...)
}

// MarshalJSON writes the block with its written zeros.
func (u Upstream) MarshalJSON() ([]byte, error) {
	type plain Upstream
	return config.MarshalBlock(plain(u), u.Zeros)
}

// UnmarshalJSON reads the block, recording the keys written as zero.
func (u *Upstream) UnmarshalJSON(b []byte) (err error) {
	type plain Upstream
	u.Zeros, err = config.UnmarshalBlock(b, (*plain)(u))
	return err
}
