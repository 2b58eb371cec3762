package priority

import "github.com/ai-guardian/adaptivethrottle/config"

// Config is the engine's part of the `priority` block: what a request that
// claims nothing gets, and how the lanes are sized. (Where the claim is
// read from, and whose claims are honoured, is the HTTP layer's: the Caddy
// module's `from` and `trusted`, the middleware's header.)
type Config struct {
	// Priority of requests that claim none: high, medium or low. Default medium.
	Default string `json:"default,omitempty"`
	// Concurrent slots kept for high priority while shedding. Default 8.
	HighReserve *int `json:"high_reserve,omitempty"`
	// Lowest rate (req/s) of the medium lane. Default 1.
	MediumFloor float64 `json:"medium_floor,omitempty"`
}

// Defaults of the priority block.
const (
	DefaultHighReserve = 8
	DefaultMediumFloor = 1
)

// Defaults fills the zero fields. It never replaces a value the user gave,
// so Validate still sees a bad one.
func (c *Config) Defaults() {
	if c.Default == "" {
		c.Default = Medium.String()
	}
	if c.HighReserve == nil {
		n := DefaultHighReserve
		c.HighReserve = &n
	}
	if c.MediumFloor == 0 {
		c.MediumFloor = DefaultMediumFloor
	}
}

// Validate reports the first bad value, naming its key.
func (c Config) Validate() error {
	const b = "priority"
	if _, ok := Parse(c.Default); c.Default != "" && !ok {
		return config.Errorf(b, "default", "must be high, medium or low, got %q", c.Default)
	}
	if c.HighReserve != nil && *c.HighReserve < 0 {
		return config.Errorf(b, "high_reserve", "must not be negative, got %d", *c.HighReserve)
	}
	if err := config.Finite(b, "medium_floor", c.MediumFloor); err != nil {
		return err
	}
	if c.MediumFloor < 0 {
		return config.Errorf(b, "medium_floor", "must not be negative, got %v", c.MediumFloor)
	}
	return nil
}

// DefaultPriority is the priority of a request that claims none.
func (c Config) DefaultPriority() Priority {
	if p, ok := Parse(c.Default); ok {
		return p
	}
	return Medium
}

// Reserve is the number of reserve slots.
func (c Config) Reserve() int {
	if c.HighReserve == nil {
		return DefaultHighReserve
	}
	return *c.HighReserve
}
