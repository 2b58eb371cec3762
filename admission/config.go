package admission

import (
	"time"

	"github.com/ai-guardian/adaptivethrottle/config"
	"github.com/ai-guardian/adaptivethrottle/priority"
)

// Config is the `concurrency` block: how many requests the upstream is
// given at once, and how long and how many may wait for a slot.
type Config struct {
	// Limit fixes the number of requests in flight; 0 (the default) learns
	// it from time to first byte.
	Limit int `json:"limit,omitempty"`
	// Min and Max bound the learned limit. Defaults 1 and 1000.
	Min int `json:"min,omitempty"`
	Max int `json:"max,omitempty"`
	// Initial is the learned limit before anything is learned. Default 4:
	// the first seconds grow it by half a step while requests wait and
	// time to first byte holds, so a small start costs a second, and a
	// large one floods a small server.
	Initial int `json:"initial,omitempty"`
	// Queue bounds the requests waiting for a slot, per priority. Default
	// 1000.
	Queue int `json:"queue,omitempty"`
	// MaxWait is how long a request of each priority waits for a slot
	// before it is refused. Defaults: high 2s, medium and low 1s. While
	// shedding, low never waits.
	MaxWait MaxWait `json:"max_wait,omitzero"`
	// WeighBody is how many bytes of a request body may be read to learn
	// the answer length it asks for (max_tokens), so that short requests
	// may borrow high's reserve. A body is read only when the request
	// would wait for a slot while slots turn over slowly, and only when
	// its Content-Length is known and at most this. Default 64 KiB; -1
	// never reads one (every request counts as long).
	WeighBody int64 `json:"weigh_body,omitempty"`
}

// MaxWait is the longest wait for a slot, per priority.
type MaxWait struct {
	High   config.Duration `json:"high,omitempty"`
	Medium config.Duration `json:"medium,omitempty"`
	Low    config.Duration `json:"low,omitempty"`
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
)

// Defaults fills the zero fields. It never replaces a value the user gave.
func (c *Config) Defaults() {
	if c.Min == 0 {
		c.Min = DefaultMin
	}
	if c.Max == 0 {
		c.Max = max(DefaultMax, c.Min)
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

// Validate reports the first bad value, naming its key.
func (c Config) Validate() error {
	const b = "concurrency"
	for _, kv := range []struct {
		key string
		v   int
	}{{"limit", c.Limit}, {"min", c.Min}, {"max", c.Max}, {"initial", c.Initial}, {"queue", c.Queue}} {
		if kv.v < 0 {
			return config.Errorf(b, kv.key, "must not be negative, got %d", kv.v)
		}
	}
	if c.WeighBody < -1 {
		return config.Errorf(b, "weigh_body", "must be a size in bytes, or -1 (off), got %d", c.WeighBody)
	}
	if c.Max > 0 && c.Min > c.Max {
		return config.Errorf(b, "min", "%d must not exceed max %d", c.Min, c.Max)
	}
	if c.Initial > 0 && ((c.Min > 0 && c.Initial < c.Min) || (c.Max > 0 && c.Initial > c.Max)) {
		return config.Errorf(b, "initial", "%d must lie within min and max", c.Initial)
	}
	for _, kv := range []struct {
		key string
		d   config.Duration
	}{{"max_wait high", c.MaxWait.High}, {"max_wait medium", c.MaxWait.Medium}, {"max_wait low", c.MaxWait.Low}} {
		if kv.d < 0 {
			return config.Errorf(b, kv.key, "must not be negative, got %v", kv.d.D())
		}
	}
	return nil
}
