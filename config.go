package adaptivethrottle

import (
	"github.com/caddyserver/caddy/v2"

	"github.com/ai-guardian/adaptivethrottle/config"
	"github.com/ai-guardian/adaptivethrottle/priority"
	"github.com/ai-guardian/adaptivethrottle/throttle"
)

// PriorityConfig is the `priority` block: the engine's part (default,
// high_reserve: priority.Config) and the HTTP part, which
// only the Caddy module has: where the claim is read, and whose claims are
// honoured.
type PriorityConfig struct {
	priority.Config
	// Placeholder that yields high, medium or low. Default {http.request.header.X-Priority}.
	From string `json:"from,omitempty"`
	// Request matchers (remote_ip, header set by an auth step, …): when set,
	// a priority claim is honoured only from requests they all accept;
	// other requests get the default priority whatever they claim.
	TrustedRaw caddy.ModuleMap `json:"trusted,omitempty" caddy:"namespace=http.matchers"`
}

const (
	defaultName = "default"
	defaultFrom = "{http.request.header.X-Priority}"
)

// config is the engine's config from h's blocks, each taken whole, and
// checked: every message names the block and the key the user wrote. It is
// pure, so Validate and Provision agree.
func (h *Handler) config() (throttle.Config, error) {
	var c throttle.Config
	if h.QPS != nil {
		c.QPS = *h.QPS
	}
	if h.GPU != nil {
		c.GPU = *h.GPU
	}
	c.UpstreamGauge = h.UpstreamGauge
	if h.Latency != nil {
		c.Latency = *h.Latency
	}
	if h.Circuit != nil {
		c.Circuit = *h.Circuit
	}
	if h.Priority != nil {
		c.Priority = h.Priority.Config
	}
	if h.Concurrency != nil {
		c.Concurrency = *h.Concurrency
	}
	c.RetryAfter, c.RetryAfterMax, c.Zeros = h.RetryAfter, h.RetryAfterMax, h.zeros
	if err := h.Persist.Validate(); err != nil {
		return c, err
	}
	if err := c.Validate(); err != nil {
		return c, err
	}
	c.Defaults()
	return c, nil
}

// MarshalJSON writes the handler with the top-level keys written as 0 (each
// block writes its own): a zero the Caddyfile gave survives into JSON, to be
// refused there with its reason rather than read as the default.
func (h Handler) MarshalJSON() ([]byte, error) {
	type plain Handler
	return config.MarshalBlock(plain(h), h.zeros)
}

// UnmarshalJSON reads the handler, refusing unknown keys as Caddy does and
// recording the top-level keys written as 0.
func (h *Handler) UnmarshalJSON(b []byte) (err error) {
	type plain Handler
	h.zeros, err = config.UnmarshalBlock(b, (*plain)(h))
	return err
}

// priorityJSON is PriorityConfig's JSON: the engine's keys and the HTTP
// ones side by side. (priority.Config's own JSON methods would otherwise be
// promoted and write the engine's keys alone.)
type priorityJSON struct {
	priorityEngine
	From       string          `json:"from,omitempty"`
	TrustedRaw caddy.ModuleMap `json:"trusted,omitempty"`
}

// priorityEngine is priority.Config without its JSON methods.
type priorityEngine priority.Config

// MarshalJSON writes the block with its written zeros.
func (c PriorityConfig) MarshalJSON() ([]byte, error) {
	return config.MarshalBlock(priorityJSON{priorityEngine(c.Config), c.From, c.TrustedRaw}, c.Zeros)
}

// UnmarshalJSON reads the block, recording the keys written as zero.
func (c *PriorityConfig) UnmarshalJSON(b []byte) error {
	if err := priority.CheckRemoved(b); err != nil {
		return err
	}
	var v priorityJSON
	zeros, err := config.UnmarshalBlock(b, &v)
	if err != nil {
		return err
	}
	*c = PriorityConfig{Config: priority.Config(v.priorityEngine), From: v.From, TrustedRaw: v.TrustedRaw}
	c.Zeros = zeros
	return nil
}

// claimFrom is the placeholder the priority claim is read from.
func (h *Handler) claimFrom() string {
	if h.Priority != nil && h.Priority.From != "" {
		return h.Priority.From
	}
	return defaultFrom
}
