package qps

import (
	"time"

	"github.com/ai-guardian/adaptivethrottle/config"
)

// Config is the `qps` block: arrivals against a learned baseline, and an
// optional fixed ceiling. Zero fields take the defaults (Defaults).
type Config struct {
	// How much history the baseline covers. Default 5m; at least 10s.
	Window config.Duration `json:"window,omitempty"`
	// Baseline = mean + sigma·σ of the per-second rates. Default 2.
	Sigma float64 `json:"sigma,omitempty"`
	// Trip when the rate exceeds baseline × trip_factor. Default 1.5; above 1.
	TripFactor float64 `json:"trip_factor,omitempty"`
	// Never take the baseline below this rate (req/s). Default 5.
	MinBaseline float64 `json:"min_baseline,omitempty"`
	// Optional fixed ceiling in req/s, besides the learned one.
	Limit float64 `json:"limit,omitempty"`
	// Seconds learned before the baseline may trip anything. Default 30,
	// at most the window: a baseline from three seconds of traffic is noise.
	Warmup int `json:"warmup,omitempty"`
}

// Defaults of the qps block.
const (
	DefaultWindow      = 5 * time.Minute
	DefaultSigma       = 2
	DefaultTripFactor  = 1.5
	DefaultMinBaseline = 5
	DefaultWarmup      = 30
	minWindow          = 10 * time.Second
)

// Defaults fills the zero fields; the warm-up never exceeds the window. It
// never replaces a value the user gave, so Validate still sees a bad one.
func (c *Config) Defaults() {
	if c.Window == 0 {
		c.Window = config.Duration(DefaultWindow)
	}
	if c.Sigma == 0 {
		c.Sigma = DefaultSigma
	}
	if c.TripFactor == 0 {
		c.TripFactor = DefaultTripFactor
	}
	if c.MinBaseline == 0 {
		c.MinBaseline = DefaultMinBaseline
	}
	if c.Warmup == 0 {
		c.Warmup = DefaultWarmup
	}
	if c.Window > 0 {
		c.Warmup = min(c.Warmup, c.slots())
	}
}

// Validate reports the first bad value, naming its key. Zero values are
// fine: they take the defaults.
func (c Config) Validate() error {
	const b = "qps"
	for _, f := range []struct {
		key string
		v   float64
	}{{"sigma", c.Sigma}, {"trip_factor", c.TripFactor}, {"min_baseline", c.MinBaseline}, {"limit", c.Limit}} {
		if err := config.Finite(b, f.key, f.v); err != nil {
			return err
		}
		if f.v < 0 {
			return config.Errorf(b, f.key, "must not be negative, got %v", f.v)
		}
	}
	switch {
	case c.TripFactor != 0 && c.TripFactor <= 1:
		return config.Errorf(b, "trip_factor", "must be above 1, got %v", c.TripFactor)
	case c.Window < 0 || (c.Window != 0 && c.Window.D() < minWindow):
		return config.Errorf(b, "window", "must be at least %v, got %v", minWindow, c.Window.D())
	case c.Warmup < 0:
		return config.Errorf(b, "warmup", "must not be negative, got %d", c.Warmup)
	}
	return nil
}

// slots is the number of one-second samples the window holds.
func (c Config) slots() int { return max(1, int(c.Window.D()/time.Second)) }
