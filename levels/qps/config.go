package qps

import (
	"errors"
	"time"

	"github.com/ai-guardian/adaptivethrottle/config"
)

// Config is the `qps` block: arrivals against a learned baseline, and an
// optional fixed ceiling. Zero fields take the defaults (Defaults), but for
// a zero the user wrote (Zeros): sigma, min_baseline and warmup honour it,
// the others refuse it.
type Config struct {
	// How much history the baseline covers. Default 5m; 10s to 24h.
	Window config.Duration `json:"window,omitempty"`
	// Baseline = mean + sigma·σ of the per-second rates. Default 2; 0: the
	// mean; at most MaxFactor.
	Sigma float64 `json:"sigma,omitempty"`
	// Trip when the rate exceeds baseline × trip_factor. Default 1.5; above
	// 1, at most MaxFactor.
	TripFactor float64 `json:"trip_factor,omitempty"`
	// Never take the baseline below this rate (req/s). Default 5; 0: no floor.
	MinBaseline float64 `json:"min_baseline,omitempty"`
	// Optional fixed ceiling in req/s, besides the learned one; positive.
	// (Not "limit": concurrency's limit counts slots.)
	MaxRate float64 `json:"max_rate,omitempty"`
	// Seconds learned before the baseline may trip anything. Default 30,
	// at most the window: a baseline from three seconds of traffic is noise.
	Warmup int `json:"warmup,omitempty"`

	config.Zeros // the keys written as 0
}

// Defaults and bounds of the qps block. The window's bound keeps its ring
// of per-second rates under a megabyte.
const (
	DefaultWindow      = 5 * time.Minute
	DefaultSigma       = 2
	DefaultTripFactor  = 1.5
	DefaultMinBaseline = 5
	DefaultWarmup      = 30
	minWindow          = 10 * time.Second
	MaxWindow          = 24 * time.Hour
	// MaxFactor bounds sigma and trip_factor: beyond it no surge trips
	// anything, and a threshold near infinity has no JSON for status.
	MaxFactor = 100
)

// Defaults fills the zero fields the user did not write as zero; the
// default warm-up never exceeds the window. It never replaces a value the
// user gave, so Validate still sees a bad one.
func (c *Config) Defaults() {
	if !c.Given("window", float64(c.Window)) {
		c.Window = config.Duration(DefaultWindow)
	}
	if !c.Given("sigma", c.Sigma) {
		c.Sigma = DefaultSigma
	}
	if !c.Given("trip_factor", c.TripFactor) {
		c.TripFactor = DefaultTripFactor
	}
	if !c.Given("min_baseline", c.MinBaseline) {
		c.MinBaseline = DefaultMinBaseline
	}
	if !c.Given("warmup", float64(c.Warmup)) {
		c.Warmup = DefaultWarmup
	}
	if c.Window > 0 {
		c.Warmup = min(c.Warmup, c.slots())
	}
}

// Validate reports the first bad value, naming its key and, for a value
// too large, the bound. Keys left out are fine: they take the defaults.
func (c Config) Validate() error {
	const b = "qps"
	for _, f := range []struct {
		key string
		v   float64
	}{{"sigma", c.Sigma}, {"trip_factor", c.TripFactor}, {"min_baseline", c.MinBaseline}, {"max_rate", c.MaxRate}} {
		if err := config.Finite(b, f.key, f.v); err != nil {
			return err
		}
		if f.v < 0 {
			return config.Errorf(b, f.key, "must not be negative, got %v", f.v)
		}
	}
	window := c.Window.D()
	if !c.Given("window", float64(c.Window)) {
		window = DefaultWindow
	}
	switch {
	case c.Given("trip_factor", c.TripFactor) && c.TripFactor <= 1:
		return config.Errorf(b, "trip_factor", "must be above 1, got %v", c.TripFactor)
	case c.Given("max_rate", c.MaxRate) && c.MaxRate == 0:
		return config.Errorf(b, "max_rate", "must be positive (leave it out for no fixed ceiling), got 0")
	case window < minWindow:
		return config.Errorf(b, "window", "must be at least %v, got %v", minWindow, window)
	case c.Warmup < 0:
		return config.Errorf(b, "warmup", "must not be negative, got %d", c.Warmup)
	case c.Warmup > int(window/time.Second):
		return config.Errorf(b, "warmup", "must not exceed the window (%v), got %d seconds", window, c.Warmup)
	}
	return errors.Join(
		config.AtMost(b, "sigma", c.Sigma, MaxFactor),
		config.AtMost(b, "trip_factor", c.TripFactor, MaxFactor),
		config.DurationAtMost(b, "window", c.Window, MaxWindow),
		config.AtMost(b, "min_baseline", c.MinBaseline, config.MaxRate),
		config.AtMost(b, "max_rate", c.MaxRate, config.MaxRate),
	)
}

// MarshalJSON writes the block with its written zeros.
func (c Config) MarshalJSON() ([]byte, error) {
	type plain Config
	return config.MarshalBlock(plain(c), c.Zeros)
}

// UnmarshalJSON reads the block, recording the keys written as zero. The
// former name of max_rate is refused, naming it.
func (c *Config) UnmarshalJSON(b []byte) (err error) {
	if err := config.Renamed(b, "qps", "limit", "max_rate"); err != nil {
		return err
	}
	type plain Config
	c.Zeros, err = config.UnmarshalBlock(b, (*plain)(c))
	return err
}

// slots is the number of one-second samples the window holds.
func (c Config) slots() int { return max(1, int(c.Window.D()/time.Second)) }
