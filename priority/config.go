package priority

import (
	"encoding/json"

	"github.com/ai-guardian/adaptivethrottle/config"
)

// Config is the engine's part of the `priority` block: what a request that
// claims nothing gets, and how high's reserve is
// sized. (Where the claim is read from, and whose claims are honoured, is
// the HTTP layer's: the Caddy module's `from` and `trusted`, the
// middleware's header.)
type Config struct {
	// Priority of requests that claim none: high, medium or low. Default medium.
	Default string `json:"default,omitempty"`
	// HighReserve fixes the slots of the concurrency limit that only high
	// priority may take while shedding. Unset: HighReserveShare of it.
	HighReserve *int `json:"high_reserve,omitempty"`
	// HighReserveShare is the share (0–1) of the concurrency limit that
	// only high priority may take while shedding, when HighReserve is
	// unset. Default 0.2; 0 written: no reserve. The Caddyfile writes it
	// `high_reserve 20%`.
	HighReserveShare float64 `json:"high_reserve_share,omitempty"`

	config.Zeros // the keys written as 0: honoured
}

// Defaults of the priority block.
const (
	DefaultHighReserveShare = 0.2
)

// Removed are the keys this block no longer has, each with why and what
// to do: a config that still writes one is refused, never silently
// read as something else.
var Removed = map[string]string{
	"medium_floor": "was removed: while shedding, medium takes a free slot outside high's reserve or waits " +
		"for one behind high, up to its max_wait; a rate never held it back, since a medium request " +
		"without a pacing token queued for the same free slot and got it at once. Delete the line",
}

// CheckRemoved refuses a block (its JSON, b) that writes a removed key.
func CheckRemoved(b []byte) error {
	var raw map[string]json.RawMessage
	if json.Unmarshal(b, &raw) != nil {
		return nil // not an object: the decoder says why
	}
	for key, why := range Removed {
		if _, ok := raw[key]; ok {
			return config.Errorf("priority", key, "%s", why)
		}
	}
	return nil
}

// Defaults fills the zero fields the user did not write as zero. It never
// replaces a value the user gave, so Validate still sees a bad one.
func (c *Config) Defaults() {
	if c.Default == "" {
		c.Default = Medium.String()
	}
	if c.HighReserve == nil && !c.Given("high_reserve_share", c.HighReserveShare) {
		c.HighReserveShare = DefaultHighReserveShare
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
	if c.HighReserve != nil && *c.HighReserve > config.MaxSlots {
		return config.Errorf(b, "high_reserve", "must be at most %d, got %d", config.MaxSlots, *c.HighReserve)
	}
	if err := config.Finite(b, "high_reserve_share", c.HighReserveShare); err != nil {
		return err
	}
	if c.HighReserveShare < 0 || c.HighReserveShare >= 1 {
		return config.Errorf(b, "high_reserve_share", "must be a share from 0 to under 1 (0%% to under 100%%), got %v", c.HighReserveShare)
	}
	if c.HighReserve != nil && c.Given("high_reserve_share", c.HighReserveShare) {
		return config.Errorf(b, "high_reserve", "is a count and high_reserve_share a share of the limit: give one of them")
	}
	return nil
}

// MarshalJSON writes the block with its written zeros.
func (c Config) MarshalJSON() ([]byte, error) {
	type plain Config
	return config.MarshalBlock(plain(c), c.Zeros)
}

// UnmarshalJSON reads the block, recording the keys written as zero.
func (c *Config) UnmarshalJSON(b []byte) (err error) {
	if err := CheckRemoved(b); err != nil {
		return err
	}
	type plain Config
	c.Zeros, err = config.UnmarshalBlock(b, (*plain)(c))
	return err
}

// DefaultPriority is the priority of a request that claims none.
func (c Config) DefaultPriority() Priority {
	if p, ok := Parse(c.Default); ok {
		return p
	}
	return Medium
}

// Reserve is the number of slots of a concurrency limit of limit slots
// that only high priority may take while shedding: the fixed count, or the
// share rounded, never the whole limit unless it is 1 and fixed.
func (c Config) Reserve(limit int) int {
	if c.HighReserve != nil {
		return min(*c.HighReserve, limit)
	}
	share := c.HighReserveShare
	if !c.Given("high_reserve_share", share) {
		share = DefaultHighReserveShare
	}
	return min(int(share*float64(limit)+0.5), max(0, limit-1))
}
