package latency

import (
	"errors"
	"time"

	"github.com/ai-guardian/adaptivethrottle/config"
)

// Config is the `latency` block: a percentile of response times per window
// against its own history (never below min_threshold), or, with slo,
// against the operator's objective. Zero fields take the defaults
// (Defaults); a zero the user wrote (Zeros) is refused by Validate.
type Config struct {
	// The percentile watched, in (0,100]. Default 99.
	Percentile float64 `json:"percentile,omitempty"`
	// One judgement per window. Default 10s; 1s to 1h.
	Window config.Duration `json:"window,omitempty"`
	// Trip above the history mean × factor. Default 1.8; above 1, at most
	// MaxFactor.
	Factor float64 `json:"factor,omitempty"`
	// Bad windows in a row before tripping. Default 3; at most 1000.
	Consecutive int `json:"consecutive,omitempty"`
	// Any window above this trips at once. Default 8s; at most 1h.
	Ceiling config.Duration `json:"ceiling,omitempty"`
	// What is timed: ttfb (default, time to the first byte) or total.
	Measure string `json:"measure,omitempty"`
	// SLO is the operator's objective for the percentile. With it, the
	// level trips when the percentile of the last two seconds is above it
	// two seconds in a row, and recovers once it is back under it; the
	// history and factor then only show in status. Default: none.
	SLO config.Duration `json:"slo,omitempty"`
	// MinThreshold is the absolute allowance: without slo, no time below it
	// is slow, whatever the history (continuous batching makes a loaded
	// upstream answer several times slower than an idle one, and healthy).
	// Default 500ms, or the ceiling if that is lower.
	MinThreshold config.Duration `json:"min_threshold,omitempty"`

	config.Zeros // the keys written as 0

	// Tuning no block sets; tests do.
	minSamples int64   // responses a window needs to teach the history (20): a P99 of three is noise
	alpha      float64 // weight of a new healthy window in the history mean (0.2)
}

// Defaults of the latency block.
const (
	DefaultPercentile  = 99
	DefaultWindow      = 10 * time.Second
	DefaultFactor      = 1.8
	DefaultConsecutive = 3
	DefaultCeiling     = 8 * time.Second
	// DefaultMinThreshold is the TTFB an LLM server may take under load
	// before the level, without slo, can call it slow.
	DefaultMinThreshold = 500 * time.Millisecond
	minWindow           = time.Second
	minCeiling          = time.Millisecond
	// Bounds: no window, ceiling or objective beyond an hour means
	// anything for the first byte of an answer.
	MaxWindow      = time.Hour
	MaxCeiling     = time.Hour
	MaxConsecutive = 1000
	// MaxFactor bounds factor: beyond it nothing but the ceiling trips.
	MaxFactor = 100
)

// Defaults fills the zero fields. It never replaces a value the user gave,
// so Validate still sees a bad one.
func (c *Config) Defaults() {
	if c.Percentile == 0 {
		c.Percentile = DefaultPercentile
	}
	if c.Window == 0 {
		c.Window = config.Duration(DefaultWindow)
	}
	if c.Factor == 0 {
		c.Factor = DefaultFactor
	}
	if c.Consecutive == 0 {
		c.Consecutive = DefaultConsecutive
	}
	if c.Ceiling == 0 {
		// An objective above the default ceiling moves the ceiling with it,
		// so that the ceiling stays the "far too slow" it is meant to be.
		c.Ceiling = config.Duration(max(DefaultCeiling, 2*c.SLO.D()))
	}
	if c.MinThreshold == 0 {
		c.MinThreshold = config.Duration(min(DefaultMinThreshold, c.Ceiling.D()))
	}
	if c.Measure == "" {
		c.Measure = "ttfb"
	}
	if c.minSamples <= 0 {
		c.minSamples = 20
	}
	if c.alpha <= 0 || c.alpha > 1 {
		c.alpha = 0.2
	}
}

// Validate reports the first bad value, naming its key and, for a value
// too large, the bound. Keys left out are fine: they take the defaults; a
// zero written means nothing here and is refused.
func (c Config) Validate() error {
	const b = "latency"
	for _, f := range []struct {
		key string
		v   float64
	}{{"percentile", c.Percentile}, {"factor", c.Factor}} {
		if err := config.Finite(b, f.key, f.v); err != nil {
			return err
		}
	}
	given := func(key string, v int64) bool { return c.Given(key, float64(v)) }
	switch {
	case c.Given("percentile", c.Percentile) && !(c.Percentile > 0 && c.Percentile <= 100):
		return config.Errorf(b, "percentile", "must be in (0,100], got %v", c.Percentile)
	case c.Given("factor", c.Factor) && c.Factor <= 1:
		return config.Errorf(b, "factor", "must be above 1, got %v", c.Factor)
	case given("window", int64(c.Window)) && c.Window.D() < minWindow:
		return config.Errorf(b, "window", "must be at least %v, got %v", minWindow, c.Window.D())
	case given("ceiling", int64(c.Ceiling)) && c.Ceiling.D() < minCeiling:
		return config.Errorf(b, "ceiling", "must be at least %v, got %v", minCeiling, c.Ceiling.D())
	case given("consecutive", int64(c.Consecutive)) && c.Consecutive < 1:
		return config.Errorf(b, "consecutive", "must be a whole number ≥ 1, got %d", c.Consecutive)
	case c.Consecutive > MaxConsecutive:
		return config.Errorf(b, "consecutive", "must be at most %d, got %d", MaxConsecutive, c.Consecutive)
	case c.Measure != "" && c.Measure != "ttfb" && c.Measure != "total":
		return config.Errorf(b, "measure", "must be ttfb or total, got %q", c.Measure)
	case c.SLO < 0 || c.Has("slo"):
		return config.Errorf(b, "slo", "must be a positive duration, got %v", c.SLO.D())
	case c.SLO != 0 && c.SLO.D() < minCeiling:
		return config.Errorf(b, "slo", "must be at least %v, got %v", minCeiling, c.SLO.D())
	case c.SLO != 0 && c.Ceiling != 0 && c.SLO > c.Ceiling:
		return config.Errorf(b, "slo", "%v must not be above the ceiling %v", c.SLO.D(), c.Ceiling.D())
	case c.MinThreshold < 0 || c.Has("min_threshold"):
		return config.Errorf(b, "min_threshold", "must be a positive duration, got %v", c.MinThreshold.D())
	case c.MinThreshold != 0 && c.Ceiling != 0 && c.MinThreshold > c.Ceiling:
		return config.Errorf(b, "min_threshold", "%v must not be above the ceiling %v", c.MinThreshold.D(), c.Ceiling.D())
	}
	return errors.Join(
		config.AtMost(b, "factor", c.Factor, MaxFactor),
		config.DurationAtMost(b, "window", c.Window, MaxWindow),
		config.DurationAtMost(b, "ceiling", c.Ceiling, MaxCeiling),
		config.DurationAtMost(b, "slo", c.SLO, MaxCeiling),
		config.DurationAtMost(b, "min_threshold", c.MinThreshold, MaxCeiling),
	)
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
