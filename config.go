package adaptivethrottle

import (
	"github.com/caddyserver/caddy/v2"

	"github.com/ai-guardian/adaptivethrottle/priority"
	"github.com/ai-guardian/adaptivethrottle/throttle"
)

// PriorityConfig is the `priority` block: the engine's part (default,
// high_reserve, medium_floor: priority.Config) and the HTTP part, which
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
	c.RetryAfter = h.RetryAfter
	if err := h.Persist.Validate(); err != nil {
		return c, err
	}
	if err := c.Validate(); err != nil {
		return c, err
	}
	c.Defaults()
	return c, nil
}

// claimFrom is the placeholder the priority claim is read from.
func (h *Handler) claimFrom() string {
	if h.Priority != nil && h.Priority.From != "" {
		return h.Priority.From
	}
	return defaultFrom
}
