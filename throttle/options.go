package throttle

import (
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/ai-guardian/adaptivethrottle/admission"
	"github.com/ai-guardian/adaptivethrottle/config"
)

// Option configures New. Options apply in order, so a later one overrides
// what WithConfig set.
type Option func(*options)

type options struct {
	name   string
	cfg    Config
	logger *zap.Logger
	emit   Emitter

	errStatus func(error) int
	refuser   func(http.ResponseWriter, *http.Request, Decision) error
}

// WithName names the throttle in status, metrics, logs and events.
// Default "default".
func WithName(name string) Option { return func(o *options) { o.name = name } }

// WithConfig sets the whole config (the Caddy module's way in).
func WithConfig(c Config) Option { return func(o *options) { o.cfg = c } }

// WithLogger sends the throttle's logs to l. Default: none.
func WithLogger(l *zap.Logger) Option { return func(o *options) { o.logger = l } }

// WithEmitter sends the throttle's events (trips, recoveries, circuit
// changes) to e.
func WithEmitter(e Emitter) Option { return func(o *options) { o.emit = e } }

// WithErrorStatus says what status an error returned by the next handler
// without a response stands for (the Caddy module reads
// caddyhttp.HandlerError's); 500 when f is nil or not given.
func WithErrorStatus(f func(error) int) Option { return func(o *options) { o.errStatus = f } }

// WithRefuser says how Serve answers a request whose upstream answered
// that it is full (503, 429, 529; the answer is held back): f gets the
// module's refusal, and what it returns Serve returns. The Caddy module
// sends it through its error routes. Default: LogRefusal and
// WriteRefusal.
func WithRefuser(f func(w http.ResponseWriter, r *http.Request, d Decision) error) Option {
	return func(o *options) { o.refuser = f }
}

// WithQPSWindow sets how much history the QPS baseline covers (qps window).
func WithQPSWindow(d time.Duration) Option {
	return func(o *options) { o.cfg.QPS.Window = config.Duration(d) }
}

// WithQPSWarmup sets how many seconds the QPS baseline learns before it may
// trip anything (qps warmup).
func WithQPSWarmup(seconds int) Option { return func(o *options) { o.cfg.QPS.Warmup = seconds } }

// WithQPSMaxRate sets a fixed ceiling in req/s besides the learned baseline
// (qps max_rate).
func WithQPSMaxRate(rps float64) Option { return func(o *options) { o.cfg.QPS.MaxRate = rps } }

// WithGPUSource sets where GPU pressure is read (gpu source): "auto",
// "nvml", "nvidia-smi", "prometheus" (give the /metrics URLs) or "off".
func WithGPUSource(source string, urls ...string) Option {
	return func(o *options) { o.cfg.GPU.Source, o.cfg.GPU.URLs = source, urls }
}

// WithGPUThreshold sets the fraction of GPU memory (or of the gauge) above
// which the GPU level trips (gpu threshold).
func WithGPUThreshold(f float64) Option { return func(o *options) { o.cfg.GPU.Threshold = f } }

// WithLatencyPercentile sets the percentile the latency level watches
// (latency percentile).
func WithLatencyPercentile(p float64) Option {
	return func(o *options) { o.cfg.Latency.Percentile = p }
}

// WithLatencyWindow sets the latency level's judgement window (latency
// window).
func WithLatencyWindow(d time.Duration) Option {
	return func(o *options) { o.cfg.Latency.Window = config.Duration(d) }
}

// WithHighReserve fixes how many slots of the concurrency limit only high
// priority may take while shedding (priority high_reserve); by default it
// is 20% of the limit.
func WithHighReserve(n int) Option { return func(o *options) { o.cfg.Priority.HighReserve = &n } }

// WithConcurrencyLimit fixes the limit on requests in flight (concurrency
// limit); by default it is learned.
func WithConcurrencyLimit(n int) Option { return func(o *options) { o.cfg.Concurrency.Limit = n } }

// WithMaxWait sets how long a request of each priority waits for a slot
// before it is refused (concurrency max_wait); 0 keeps the default (high
// 2s, medium and low 1s).
func WithMaxWait(high, medium, low time.Duration) Option {
	return func(o *options) {
		o.cfg.Concurrency.MaxWait = admission.MaxWait{High: config.Duration(high), Medium: config.Duration(medium), Low: config.Duration(low)}
	}
}

// WithRetryAfter sets the floor of Retry-After (retry_after).
func WithRetryAfter(d time.Duration) Option {
	return func(o *options) { o.cfg.RetryAfter = config.Duration(d) }
}

// WithRetryAfterMax sets the ceiling of Retry-After (retry_after_max).
func WithRetryAfterMax(d time.Duration) Option {
	return func(o *options) { o.cfg.RetryAfterMax = config.Duration(d) }
}
