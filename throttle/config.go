package throttle

import (
	"cmp"
	"errors"
	"time"

	"github.com/ai-guardian/adaptivethrottle/admission"
	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/config"
	"github.com/ai-guardian/adaptivethrottle/levels/gpu"
	"github.com/ai-guardian/adaptivethrottle/levels/latency"
	"github.com/ai-guardian/adaptivethrottle/levels/qps"
	"github.com/ai-guardian/adaptivethrottle/priority"
)

// Config is a throttle's whole configuration: one field per block, each of
// the type the block's code runs on. The zero Config is the defaults.
type Config struct {
	QPS qps.Config `json:"qps,omitzero"`
	GPU gpu.Config `json:"gpu,omitzero"`
	// UpstreamGauge: with a pool, each upstream's own saturation gauge;
	// nil: none.
	UpstreamGauge *gpu.Upstream         `json:"upstream_gauge,omitempty"`
	Latency       latency.Config        `json:"latency,omitzero"`
	Circuit       breaker.CircuitConfig `json:"circuit,omitzero"`
	Priority      priority.Config       `json:"priority,omitzero"`
	// Concurrency is the limit on requests in flight and its wait queues.
	Concurrency admission.Config `json:"concurrency,omitzero"`
	// Floor for Retry-After. Default 5s; at most MaxRetryAfter.
	RetryAfter config.Duration `json:"retry_after,omitempty"`
	// Ceiling of Retry-After. Default 60s, or the floor if that is more;
	// never below the floor; at most MaxRetryAfter.
	RetryAfterMax config.Duration `json:"retry_after_max,omitempty"`

	config.Zeros // the top-level keys written as 0: refused
}

// Defaults and bound of Retry-After: a client told to come back in a
// minute has been told enough; past an hour it has gone elsewhere.
const (
	DefaultRetryAfter    = 5 * time.Second
	DefaultRetryAfterMax = time.Minute
	MaxRetryAfter        = time.Hour
)

// Defaults fills every block's zero fields.
func (c *Config) Defaults() {
	c.QPS.Defaults()
	c.GPU.Defaults()
	c.Latency.Defaults()
	c.Circuit.Defaults()
	c.Priority.Defaults()
	c.Concurrency.Defaults()
	if c.RetryAfter == 0 {
		c.RetryAfter = config.Duration(DefaultRetryAfter)
	}
	if c.RetryAfterMax == 0 {
		c.RetryAfterMax = max(config.Duration(DefaultRetryAfterMax), c.RetryAfter)
	}
}

// Validate checks every block; each message names the block and the key.
// Call it before Defaults, so that what it sees is what the user wrote.
func (c Config) Validate() error {
	errs := []error{c.QPS.Validate(), c.Latency.Validate(), c.Circuit.Validate(), c.Priority.Validate(), c.Concurrency.Validate()}
	for _, kv := range []struct {
		key string
		d   config.Duration
	}{{"retry_after", c.RetryAfter}, {"retry_after_max", c.RetryAfterMax}} {
		if kv.d < 0 || c.Has(kv.key) {
			errs = append(errs, config.Errorf("", kv.key, "must be a positive duration, got %v", kv.d.D()))
		}
		errs = append(errs, config.DurationAtMost("", kv.key, kv.d, MaxRetryAfter))
	}
	if floor := cmp.Or(c.RetryAfter.D(), DefaultRetryAfter); c.RetryAfterMax > 0 && c.RetryAfterMax.D() < floor {
		errs = append(errs, config.Errorf("", "retry_after_max", "%v must not be below retry_after %v", c.RetryAfterMax.D(), floor))
	}
	g := c.GPU
	g.Defaults() // the GPU block checks its settings against each other's defaults
	errs = append(errs, g.Validate())
	if c.UpstreamGauge != nil {
		errs = append(errs, c.UpstreamGauge.Validate())
	}
	return errors.Join(errs...)
}
