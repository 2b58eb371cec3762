package admission

import (
	"cmp"
	"time"

	"github.com/ai-guardian/adaptivethrottle/config"
	"github.com/ai-guardian/adaptivethrottle/priority"
)

// Config is the `concurrency` block: how many requests the upstream is
// given at once, and how long and how many may wait for a slot. Every
// count is at most config.MaxSlots; a zero the user wrote (Zeros) is
// refused, but for limit's, which is auto.
type Config struct {
	// Limit fixes the number of requests in flight; 0 (the default) learns
	// it from time to first byte. At most max, when max is given.
	Limit int `json:"limit,omitempty"`
	// Min and Max bound the learned limit. Defaults 1 and 1000 (or the
	// fixed limit, if more).
	Min int `json:"min,omitempty"`
	Max int `json:"max,omitempty"`
	// Initial is the learned limit before anything is learned. Default 4:
	// the first seconds grow it by half a step while requests wait and
	// time to first byte holds, so a small start costs a second, and a
	// large one floods a small server.
	Initial int `json:"initial,omitempty"`
	// Queue bounds the requests waiting for a slot, per priority. Default
	// 1000; at most config.MaxSlots.
	Queue int `json:"queue,omitempty"`
	// MaxWait is how long a request of each priority waits for a slot
	// before it is refused. Defaults: high 2s, medium and low 1s. While
	// shedding, low never waits. At most MaxMaxWait.
	MaxWait MaxWait `json:"max_wait,omitzero"`
	// WeighBody is how many bytes of a request body may be read to learn
	// the answer length it asks for (max_tokens), so that short requests
	// may borrow high's reserve. A body is read only when the request
	// would wait for a slot while slots turn over slowly, and only when
	// its Content-Length is known and at most this. Default 64 KiB, at
	// most MaxWeighBody; -1 never reads one (every request counts as long).
	WeighBody int64 `json:"weigh_body,omitempty"`

	config.Zeros // the keys written as 0
}

// MaxWait is the longest wait for a slot, per priority.
type MaxWait struct {
	High   config.Duration `json:"high,omitempty"`
	Medium config.Duration `json:"medium,omitempty"`
	Low    config.Duration `json:"low,omitempty"`

	config.Zeros // the priorities written as 0: refused
}

// Of returns the wait of priority p.
func (m MaxWait) Of(p priority.Priority) time.Duration {
	switch p {
	case priority.High:
		return m.High.D()
	case priority.Medium:
		return m.Medium.D()
	}
	return m.Low.D()
}

// Defaults of the concurrency block.
const (
	DefaultMin     = 1
	DefaultMax     = 1000
	DefaultInitial = 4
	DefaultQueue   = 1000
	DefaultMaxWait = time.Second
	// DefaultHighMaxWait is high's: a high request refused is the
	// costliest refusal, and with answers many seconds long holding the
	// slots, the first to end may take more than a second; served in its
	// second second, it still answers within an objective of a few.
	DefaultHighMaxWait = 2 * time.Second
	// DefaultWeighBody is the default of WeighBody: a chat request with a
	// few pages of context.
	DefaultWeighBody = 64 << 10
	// MaxWeighBody bounds WeighBody: each request weighed holds a buffer
	// of its body's size. A million tokens of context is about 4 MiB.
	MaxWeighBody = 16 << 20
	// MaxMaxWait bounds each max_wait: a client held longer has gone.
	MaxMaxWait = time.Hour
)

// Defaults fills the zero fields. It never replaces a value the user gave.
func (c *Config) Defaults() {
	if c.Min == 0 {
		c.Min = DefaultMin
	}
	if c.Max == 0 {
		c.Max = max(DefaultMax, c.Min, c.Limit)
	}
	if c.Initial == 0 {
		c.Initial = min(max(DefaultInitial, c.Min), c.Max)
	}
	if c.Queue == 0 {
		c.Queue = DefaultQueue
	}
	if c.WeighBody == 0 {
		c.WeighBody = DefaultWeighBody
	}
	if c.MaxWait.High == 0 {
		c.MaxWait.High = config.Duration(DefaultHighMaxWait)
	}
	for _, d := range []*config.Duration{&c.MaxWait.Medium, &c.MaxWait.Low} {
		if *d == 0 {
			*d = config.Duration(DefaultMaxWait)
		}
	}
}

// Validate reports the first bad value, naming its key and, for a value
// too large, the bound.
func (c Config) Validate() error {
	const b = "concurrency"
	for _, kv := range []struct {
		key string
		v   int
	}{{"limit", c.Limit}, {"min", c.Min}, {"max", c.Max}, {"initial", c.Initial}, {"queue", c.Queue}} {
		switch {
		case kv.v < 0:
			return config.Errorf(b, kv.key, "must not be negative, got %d", kv.v)
		case kv.key != "limit" && c.Has(kv.key):
			return config.Errorf(b, kv.key, "must be a whole number ≥ 1, got 0")
		case kv.v > config.MaxSlots:
			return config.Errorf(b, kv.key, "must be at most %d, got %d", config.MaxSlots, kv.v)
		}
	}
	if c.WeighBody < -1 || c.Has("weigh_body") {
		return config.Errorf(b, "weigh_body", "must be a size in bytes, or -1 (off), got %d", c.WeighBody)
	}
	if c.WeighBody > MaxWeighBody {
		return config.Errorf(b, "weigh_body", "must be at most %d bytes (16 MiB), got %d", MaxWeighBody, c.WeighBody)
	}
	if c.Max > 0 && c.Min > c.Max {
		return config.Errorf(b, "min", "%d must not exceed max %d", c.Min, c.Max)
	}
	if c.Max > 0 && c.Limit > c.Max {
		return config.Errorf(b, "limit", "%d must not exceed max %d", c.Limit, c.Max)
	}
	if hi := cmp.Or(c.Max, max(DefaultMax, c.Min, c.Limit)); c.Initial > 0 && (c.Initial < c.Min || c.Initial > hi) {
		return config.Errorf(b, "initial", "%d must lie within min and max (%d)", c.Initial, hi)
	}
	for _, kv := range []struct {
		p string
		d config.Duration
	}{{"high", c.MaxWait.High}, {"medium", c.MaxWait.Medium}, {"low", c.MaxWait.Low}} {
		if kv.d < 0 || c.MaxWait.Has(kv.p) {
			return config.Errorf(b, "max_wait "+kv.p, "must be positive, got %v", kv.d.D())
		}
		if err := config.DurationAtMost(b, "max_wait "+kv.p, kv.d, MaxMaxWait); err != nil {
			return err
		}
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
	type plain Config
	c.Zeros, err = config.UnmarshalBlock(b, (*plain)(c))
	return err
}

// MarshalJSON writes the waits with those written as zero.
func (m MaxWait) MarshalJSON() ([]byte, error) {
	type plain MaxWait
	return config.MarshalBlock(plain(m), m.Zeros)
}

// UnmarshalJSON reads the waits, recording those written as zero.
func (m *MaxWait) UnmarshalJSON(b []byte) (err error) {
	type plain MaxWait
	m.Zeros, err = config.UnmarshalBlock(b, (*plain)(m))
	return err
}
