// Package adaptivethrottle is the Caddy module: an HTTP handler,
// adaptive_throttle, that protects LLM inference servers from overload. It
// sits before reverse_proxy and, per request (a free slot costs a few
// atomic operations), passes, rations or sheds the request from three signals (arrival rate
// against a learned baseline, GPU memory or a model server's saturation
// gauge, latency against its own history) and a circuit breaker on
// upstream failures. See the README for the contract.
//
// This package is the thin Caddy layer: it parses the Caddyfile
// (caddyfile.go), provisions a throttle.Throttle per name and keeps it
// across reloads (module.go) and its learned state in Caddy's storage
// across restarts (persist.go), serves the admin API (admin.go), exports
// metrics (metrics.go) and maps the engine's refusals and events onto
// Caddy's error routes, placeholders and events (refuse.go, events.go). The
// engine itself is package throttle.
package adaptivethrottle

import (
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/ai-guardian/adaptivethrottle/admission"
	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/config"
	"github.com/ai-guardian/adaptivethrottle/levels/gpu"
	"github.com/ai-guardian/adaptivethrottle/levels/latency"
	"github.com/ai-guardian/adaptivethrottle/levels/qps"
	"github.com/ai-guardian/adaptivethrottle/priority"
	"github.com/ai-guardian/adaptivethrottle/throttle"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// instances holds every named throttle across config reloads: a reload
// provisions the new handler (reference +1) before cleaning up the old one
// (-1), so learned state carries over. It is also the registry the admin
// API and the metrics read.
var instances = caddy.NewUsagePool()

// pooled is a throttle as the UsagePool holds it, with the persister that
// keeps its learned state in storage: the last reference's Destruct writes
// the state a last time and closes it.
type pooled struct {
	*throttle.Throttle
	persist *persister
}

func (p pooled) Destruct() error {
	if p.persist != nil { // nil: stored by a test
		p.persist.close()
	}
	return p.Close()
}

// Handler is the adaptive_throttle HTTP handler. Each block is the type the
// engine runs on; its JSON keys are the Caddyfile's.
type Handler struct {
	// Name of the instance in status and metrics. Handlers with the same
	// name share one learned state. Default "default".
	Name string `json:"name,omitempty"`

	QPS *qps.Config `json:"qps,omitempty"`
	GPU *gpu.Config `json:"gpu,omitempty"`
	// UpstreamGauge: with a pool (lb_policy adaptive_throttle), each
	// upstream's own saturation gauge, read from its own /metrics.
	UpstreamGauge *gpu.Upstream          `json:"upstream_gauge,omitempty"`
	Latency       *latency.Config        `json:"latency,omitempty"`
	Circuit       *breaker.CircuitConfig `json:"circuit,omitempty"`
	Priority      *PriorityConfig        `json:"priority,omitempty"`
	// The limit on requests in flight at the upstream, and its queues.
	Concurrency *admission.Config `json:"concurrency,omitempty"`

	// Floor for Retry-After. Default 5s.
	RetryAfter config.Duration `json:"retry_after,omitempty"`
	// Ceiling of Retry-After. Default 60s (or the floor, if more).
	RetryAfterMax config.Duration `json:"retry_after_max,omitempty"`

	// Whether what was learned is kept in Caddy's storage across restarts
	// (on by default), and for how long.
	Persist *PersistConfig `json:"persist,omitempty"`

	zeros      config.Zeros       // top-level keys written as 0 (see config.go)
	t          *throttle.Throttle // set once this handler holds a reference in instances
	from       string
	fromHeader string               // canonical header name when `from` is a plain request header
	trusted    caddyhttp.MatcherSet // nil: every claim is honoured
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.adaptive_throttle",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision finds or creates this handler's throttle and applies the config
// to it. A config that fails here leaves a running throttle as it was
// (throttle.Apply changes nothing it cannot finish); Caddy then calls
// Cleanup, which gives back the reference taken here.
func (h *Handler) Provision(ctx caddy.Context) error {
	logger := ctx.Logger()
	// First, so that a config this handler rejects still lists the
	// running throttles wherever its registry is served.
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return err
	}
	if h.Name == "" {
		h.Name = defaultName
	}
	cfg, err := h.config()
	if err != nil {
		return err
	}
	h.from = h.claimFrom()
	h.fromHeader = headerOf(h.from)
	if h.Priority != nil && h.Priority.TrustedRaw != nil {
		mods, err := ctx.LoadModule(h.Priority, "TrustedRaw")
		if err != nil {
			return fmt.Errorf("priority: trusted: %w", err)
		}
		for _, m := range mods.(map[string]any) {
			h.trusted = append(h.trusted, m)
		}
	}
	var storage store // nil: persist off
	if !h.Persist.off() {
		storage = storageOf(ctx)
	}
	val, loaded, err := instances.LoadOrNew(h.Name, func() (caddy.Destructor, error) {
		var t *throttle.Throttle
		refuser := func(w http.ResponseWriter, r *http.Request, d throttle.Decision) error { return refuseFull(t, w, r, d) }
		off, err := admission.RulesOffFromEnv()
		if err != nil {
			return nil, err
		}
		if off != 0 {
			logger.Warn("admission rules turned off: for measuring them only",
				zap.String("instance", h.Name), zap.String(admission.RulesOffEnv, off.String()))
		}
		t, err = throttle.New(throttle.WithName(h.Name), throttle.WithConfig(cfg), throttle.WithLogger(logger),
			throttle.WithErrorStatus(statusOf), throttle.WithRefuser(refuser), throttle.WithRulesOff(off))
		if err != nil {
			return nil, err
		}
		// A throttle that starts (not one a reload keeps) takes back
		// what it had learned before a restart.
		if storage != nil {
			restore(t, storage, h.Persist.maxAge(), logger)
		}
		return pooled{t, newPersister(t, storage, logger, storageTimeout)}, nil
	})
	if err != nil {
		return err // nothing was stored: no reference to give back
	}
	p := val.(pooled)
	h.t = p.Throttle
	if loaded {
		if err := h.t.Apply(cfg); err != nil {
			return err
		}
	}
	p.persist.set(storage, logger)
	h.t.SetLogger(logger)
	setEmitter(ctx, h.t, logger)
	// Last: the selection policies of this name pick from its pool.
	reg, err := registryOf(ctx)
	if err != nil || reg == nil {
		return err
	}
	return reg.handler(h.Name, h.t, h.UpstreamGauge != nil)
}

// Validate checks the config without side effects.
func (h *Handler) Validate() error {
	_, err := h.config()
	return err
}

// Cleanup gives back this handler's reference to its throttle; the last
// one stops it.
func (h *Handler) Cleanup() error {
	if h.t == nil {
		return nil
	}
	_, err := instances.Delete(h.Name)
	return err
}

// headerOf returns the canonical header name when from is exactly one
// request-header placeholder, so the request path can read the header
// without the replacer (which allocates).
func headerOf(from string) string {
	const p = "{http.request.header."
	if !strings.HasPrefix(from, p) || !strings.HasSuffix(from, "}") {
		return ""
	}
	name := from[len(p) : len(from)-1]
	if name == "" || strings.ContainsAny(name, "{}:") {
		return ""
	}
	return textproto.CanonicalMIMEHeaderKey(name)
}

// ServeHTTP classifies the request, asks the engine, and either refuses or
// serves it. It reads the clock once on entry and once at the first byte
// (or the end, for measure total), and allocates nothing unless it refuses.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	now := throttle.Now() // the one clock read on entry
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	d := h.t.AdmitRequest(r, h.classify(r, repl), now)
	if !d.Admitted() {
		return h.refuse(w, r, repl, d)
	}
	publish(repl, decisionPass, noCause, d.Priority())
	return h.t.Serve(w, r, d, next)
}

// classify reads the request's priority claim.
func (h *Handler) classify(r *http.Request, repl *caddy.Replacer) priority.Priority {
	var claim string
	if h.fromHeader != "" {
		if v := r.Header[h.fromHeader]; len(v) > 0 {
			claim = v[0]
		}
	} else if repl != nil {
		claim = repl.ReplaceAll(h.from, "")
	}
	def := h.t.DefaultPriority()
	p, ok := priority.Parse(claim)
	if !ok {
		return def
	}
	if h.trusted != nil {
		// A claim is worth what its sender is: untrusted requests get the
		// default, whatever they asked for.
		if trusted, err := h.trusted.MatchWithError(r); err != nil || !trusted {
			return def
		}
	}
	return p
}

// statusOf is the status Caddy will answer a handler error with.
func statusOf(err error) int {
	var he caddyhttp.HandlerError
	if errors.As(err, &he) && he.StatusCode != 0 {
		return he.StatusCode
	}
	return http.StatusInternalServerError
}

// Interface guards
var (
	_ caddy.Module                = (*Handler)(nil)
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ throttle.Next               = caddyhttp.Handler(nil)
)
