package adaptivethrottle

import (
	"fmt"
	"math"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/priority"
	"github.com/ai-guardian/adaptivethrottle/sensors"
	"github.com/ai-guardian/adaptivethrottle/sensors/gpu"
)

// QPSConfig is the `qps` block: arrivals against a learned baseline.
type QPSConfig struct {
	// How much history the baseline covers. Default 5m.
	Window caddy.Duration `json:"window,omitempty"`
	// Baseline = mean + sigma·σ of the per-second rates. Default 2.
	Sigma float64 `json:"sigma,omitempty"`
	// Trip when the rate exceeds baseline × trip_factor. Default 1.5.
	TripFactor float64 `json:"trip_factor,omitempty"`
	// Never take the baseline below this rate (req/s). Default 5.
	MinBaseline float64 `json:"min_baseline,omitempty"`
	// Optional fixed ceiling in req/s, besides the learned one.
	Limit float64 `json:"limit,omitempty"`
	// Seconds learned before the baseline may trip anything. Default 30.
	Warmup int `json:"warmup,omitempty"`
}

// GPUConfig is the `gpu` block: GPU memory or a model server's saturation gauge.
type GPUConfig struct {
	// auto (default), nvml, nvidia-smi, prometheus or off.
	Source string `json:"source,omitempty"`
	// nvidia-smi: the binary to run. Default: nvidia-smi on PATH.
	Path string `json:"path,omitempty"`
	// prometheus: the /metrics URLs to scrape.
	URLs []string `json:"urls,omitempty"`
	// prometheus: a 0–1 gauge, or used memory when pair_metric is set.
	Metric string `json:"metric,omitempty"`
	// prometheus: "total" or "free": how pair_metric relates to metric.
	PairKind string `json:"pair_kind,omitempty"`
	// prometheus: the total or free metric's name.
	PairMetric string `json:"pair_metric,omitempty"`
	// prometheus: only series whose labels equal these.
	Labels map[string]string `json:"labels,omitempty"`
	// max (default) or mean across devices and series.
	Aggregate string `json:"aggregate,omitempty"`
	// Trip above this fraction of memory (0–1). Default 0.75.
	Threshold float64 `json:"threshold,omitempty"`
	// How often to read the source. Default 2s.
	Interval caddy.Duration `json:"interval,omitempty"`
	// Per read; at most 80% of interval (the default).
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// A last good sample older than this counts as an error. Default 10s.
	StaleAfter caddy.Duration `json:"stale_after,omitempty"`
	// Device indexes or UUIDs to watch. Default: all.
	Devices []string `json:"devices,omitempty"`
	// allow (default) or shed: what an unreadable or stale source means.
	OnError string `json:"on_error,omitempty"`
}

// LatencyConfig is the `latency` block: a percentile against its history.
type LatencyConfig struct {
	// Default 99.
	Percentile float64 `json:"percentile,omitempty"`
	// One judgement per window. Default 10s.
	Window caddy.Duration `json:"window,omitempty"`
	// Trip above the history mean × factor. Default 1.8.
	Factor float64 `json:"factor,omitempty"`
	// Bad windows in a row before tripping. Default 3.
	Consecutive int `json:"consecutive,omitempty"`
	// Any window above this trips at once. Default 8s.
	Ceiling caddy.Duration `json:"ceiling,omitempty"`
	// ttfb (default) or total.
	Measure string `json:"measure,omitempty"`
}

// CircuitConfig is the `circuit` block: Closed/Open/Half-Open on upstream failures.
type CircuitConfig struct {
	// Open at this failure ratio. Default 0.5.
	ErrorRatio float64 `json:"error_ratio,omitempty"`
	// ...once this many requests were seen in the window. Default 20.
	MinRequests int `json:"min_requests,omitempty"`
	// Default 30s.
	Window caddy.Duration `json:"window,omitempty"`
	// Time Open before Half-Open; doubles on each re-open. Default 60s.
	OpenFor caddy.Duration `json:"open_for,omitempty"`
	// Cap of the doubling. Default 16 × open_for.
	MaxOpenFor caddy.Duration `json:"max_open_for,omitempty"`
	// Requests let through while Half-Open. Default 1.
	Probes int `json:"probes,omitempty"`
	// A probe holding its slot longer than this frees it. Default 30s.
	ProbeTimeout caddy.Duration `json:"probe_timeout,omitempty"`
}

// PriorityConfig is the `priority` block.
type PriorityConfig struct {
	// Placeholder that yields high, medium or low. Default {http.request.header.X-Priority}.
	From string `json:"from,omitempty"`
	// Priority of requests that claim none. Default medium.
	Default string `json:"default,omitempty"`
	// Concurrent slots kept for high priority while shedding. Default 8.
	HighReserve *int `json:"high_reserve,omitempty"`
	// Lowest rate (req/s) of the medium lane. Default 1.
	MediumFloor float64 `json:"medium_floor,omitempty"`
	// Request matchers (remote_ip, header set by an auth step, …): when set,
	// a priority claim is honoured only from requests they all accept;
	// other requests get the default priority whatever they claim.
	TrustedRaw caddy.ModuleMap `json:"trusted,omitempty" caddy:"namespace=http.matchers"`
}

const (
	defaultName        = "default"
	defaultFrom        = "{http.request.header.X-Priority}"
	defaultHighReserve = 8
	defaultRetryAfter  = 5 * time.Second
)

// settings are the package configs derived from a handler's JSON, with
// every default filled in and every value checked.
type settings struct {
	qps         sensors.QPSConfig
	latency     sensors.LatencyConfig
	gpu         gpu.Config
	circuit     breaker.CircuitConfig
	bucket      priority.BucketConfig
	reserve     int
	def         priority.Priority
	from        string
	retryFloor  time.Duration
	measureTTFB bool
}

// settings converts and validates h's config. It is pure, so Validate and
// Provision agree and tests can call it without a Caddy context.
func (h *Handler) settings() (settings, error) {
	var s settings
	if q := h.QPS; q != nil {
		if q.Sigma < 0 || q.TripFactor < 0 || q.MinBaseline < 0 || q.Limit < 0 || q.Warmup < 0 || q.Window < 0 {
			return s, fmt.Errorf("qps: values must not be negative")
		}
		if q.TripFactor != 0 && q.TripFactor <= 1 {
			return s, fmt.Errorf("qps: trip_factor must be above 1, got %v", q.TripFactor)
		}
		if q.Window != 0 && time.Duration(q.Window) < 10*time.Second {
			return s, fmt.Errorf("qps: window must be at least 10s, got %v", time.Duration(q.Window))
		}
		s.qps = sensors.QPSConfig{Window: time.Duration(q.Window), Sigma: q.Sigma, TripFactor: q.TripFactor,
			MinBaseline: q.MinBaseline, Limit: q.Limit, Warmup: q.Warmup}
	}
	s.qps.Defaults()

	if l := h.Latency; l != nil {
		if l.Percentile < 0 || l.Percentile > 100 {
			return s, fmt.Errorf("latency: percentile must be in (0,100], got %v", l.Percentile)
		}
		if l.Factor != 0 && l.Factor <= 1 {
			return s, fmt.Errorf("latency: factor must be above 1, got %v", l.Factor)
		}
		if l.Window < 0 || l.Ceiling < 0 || l.Consecutive < 0 {
			return s, fmt.Errorf("latency: values must not be negative")
		}
		if l.Window != 0 && time.Duration(l.Window) < time.Second {
			return s, fmt.Errorf("latency: window must be at least 1s, got %v", time.Duration(l.Window))
		}
		if l.Measure != "" && l.Measure != "ttfb" && l.Measure != "total" {
			return s, fmt.Errorf("latency: measure must be ttfb or total, got %q", l.Measure)
		}
		s.latency = sensors.LatencyConfig{Percentile: l.Percentile, Window: time.Duration(l.Window), Factor: l.Factor,
			Consecutive: l.Consecutive, Ceiling: time.Duration(l.Ceiling), Measure: l.Measure}
	}
	s.latency.Defaults()
	s.measureTTFB = s.latency.Measure == "ttfb"

	if g := h.GPU; g != nil {
		s.gpu = gpu.Config{Source: g.Source, Path: g.Path, URLs: g.URLs, Metric: g.Metric, PairKind: g.PairKind,
			PairMetric: g.PairMetric, Labels: g.Labels, Aggregate: g.Aggregate, Threshold: g.Threshold,
			Interval: time.Duration(g.Interval), Timeout: time.Duration(g.Timeout),
			StaleAfter: time.Duration(g.StaleAfter), Devices: g.Devices, OnError: g.OnError}
	}
	s.gpu.Defaults()
	if err := s.gpu.Validate(); err != nil {
		return s, err // its messages name the gpu setting
	}

	if c := h.Circuit; c != nil {
		s.circuit = breaker.CircuitConfig{ErrorRatio: c.ErrorRatio, MinRequests: c.MinRequests, Window: time.Duration(c.Window),
			OpenFor: time.Duration(c.OpenFor), MaxOpenFor: time.Duration(c.MaxOpenFor), Probes: c.Probes,
			ProbeLease: time.Duration(c.ProbeTimeout)}
	}
	if err := s.circuit.Validate(); err != nil {
		return s, fmt.Errorf("circuit: %w", err)
	}
	s.circuit = s.circuit.WithDefaults()

	s.from, s.def, s.reserve, s.bucket.Floor = defaultFrom, priority.Medium, defaultHighReserve, 1
	if p := h.Priority; p != nil {
		if p.From != "" {
			s.from = p.From
		}
		if p.Default != "" {
			d, ok := priority.Parse(p.Default)
			if !ok {
				return s, fmt.Errorf("priority: default must be high, medium or low, got %q", p.Default)
			}
			s.def = d
		}
		if p.HighReserve != nil {
			if *p.HighReserve < 0 {
				return s, fmt.Errorf("priority: high_reserve must not be negative, got %d", *p.HighReserve)
			}
			s.reserve = *p.HighReserve
		}
		if p.MediumFloor < 0 || math.IsNaN(p.MediumFloor) {
			return s, fmt.Errorf("priority: medium_floor must not be negative, got %v", p.MediumFloor)
		}
		if p.MediumFloor > 0 {
			s.bucket.Floor = p.MediumFloor
		}
	}

	s.retryFloor = defaultRetryAfter
	if h.RetryAfter < 0 {
		return s, fmt.Errorf("retry_after must not be negative")
	}
	if h.RetryAfter > 0 {
		s.retryFloor = time.Duration(h.RetryAfter)
	}
	return s, nil
}
