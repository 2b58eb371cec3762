// Package adaptivethrottle is a Caddy HTTP handler that protects LLM
// inference servers from overload. It sits before reverse_proxy and, per
// request and reading only atomics, passes, rations or sheds the request
// from three signals (arrival rate against a learned baseline, GPU memory or
// a model server's saturation gauge, latency against its own history) and a
// circuit breaker on upstream failures. See DESIGN.md for the contract.
package adaptivethrottle

import (
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/priority"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// instances holds every named throttle's state across config reloads: a
// reload provisions the new handler (reference +1) before cleaning up the
// old one (-1), so learned state carries over. It is also the registry the
// admin API reads.
var instances = caddy.NewUsagePool()

// Handler is the adaptive_throttle HTTP handler.
type Handler struct {
	// Name of the instance in status and metrics. Handlers with the same
	// name share one learned state. Default "default".
	Name string `json:"name,omitempty"`

	QPS      *QPSConfig      `json:"qps,omitempty"`
	GPU      *GPUConfig      `json:"gpu,omitempty"`
	Latency  *LatencyConfig  `json:"latency,omitempty"`
	Circuit  *CircuitConfig  `json:"circuit,omitempty"`
	Priority *PriorityConfig `json:"priority,omitempty"`

	// Floor for Retry-After. Default 5s.
	RetryAfter caddy.Duration `json:"retry_after,omitempty"`

	inst       *instance
	cfg        settings
	fromHeader string               // canonical header name when `from` is a plain request header
	trusted    caddyhttp.MatcherSet // nil: every claim is honoured
	logger     *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.adaptive_throttle",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision finds or creates this handler's instance and applies the config
// to it.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if h.Name == "" {
		h.Name = defaultName
	}
	s, err := h.settings()
	if err != nil {
		return err
	}
	h.cfg = s
	h.fromHeader = headerOf(s.from)
	if h.Priority != nil && h.Priority.TrustedRaw != nil {
		mods, err := ctx.LoadModule(h.Priority, "TrustedRaw")
		if err != nil {
			return fmt.Errorf("priority: trusted: %w", err)
		}
		for _, m := range mods.(map[string]any) {
			h.trusted = append(h.trusted, m)
		}
	}

	val, loaded, err := instances.LoadOrNew(h.Name, func() (caddy.Destructor, error) {
		return newInstance(h.Name, s, h.logger)
	})
	if err != nil {
		return err
	}
	h.inst = val.(*instance)
	if err := h.inst.setEmitter(ctx); err != nil {
		_, _ = instances.Delete(h.Name)
		return err
	}
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		_, _ = instances.Delete(h.Name)
		return err
	}
	if loaded {
		if err := h.inst.apply(s, h.logger); err != nil {
			_, _ = instances.Delete(h.Name)
			return err
		}
	}
	return nil
}

// Validate checks the config without side effects.
func (h *Handler) Validate() error {
	_, err := h.settings()
	return err
}

// Cleanup releases this handler's reference to its instance; the last
// reference stops the samplers.
func (h *Handler) Cleanup() error {
	if h.inst == nil {
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

// ServeHTTP classifies, decides from atomics, passes on and records. It
// reads the clock once on entry and once at the first byte (or the end,
// for measure total), and allocates nothing unless it refuses.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	at := tick() // the one clock read on entry
	in := h.inst
	rec := getRecorder(w, h.cfg.measureTTFB)
	hint := rec.shard // every counter this request bumps: this core's shard
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	p := h.classify(r, repl)

	var ticket breaker.Ticket
	verdict := priority.Pass
	if mode := in.overrideAt(at.t); mode != "pass" { // pass: the operator knows better; sensors keep measuring
		t, ok, retryIn := in.circuit.Allow(at.t)
		if !ok {
			putRecorder(rec)
			in.verdicts[p][verdictCircuit].IncAt(hint)
			return h.refuse(w, r, repl, p, http.StatusServiceUnavailable, causeCircuit, retryIn)
		}
		ticket = t
		if !t.Probe() { // a Half-Open probe skips the lanes: it is how recovery is seen
			verdict = in.lanes.Admit(p, mode == "shed" || in.tripped.Load() != 0, at.t)
		}
	}
	in.verdicts[p][verdict].IncAt(hint)
	if !verdict.Admitted() {
		putRecorder(rec)
		return h.refuse(w, r, repl, p, verdict.Status(), in.shedCause(), time.Duration(in.shedAt.Load()-at.t.UnixNano()))
	}
	publish(repl, decisionPass, noCause, p)

	returned := false
	defer func() {
		if !returned {
			// The next handler panicked: reverse_proxy aborts with
			// http.ErrAbortHandler when the client goes away mid-stream.
			// Release what the request holds; the panic goes on up.
			in.circuit.Cancel(ticket)
			if verdict == priority.PassReserved {
				in.lanes.Reserve.Release()
			}
			in.finished.IncAt(hint)
		}
	}()
	err := next.ServeHTTP(rec, r)
	returned = true

	status, end, wrote := rec.status, rec.at, rec.wrote
	putRecorder(rec)
	if !wrote || !h.cfg.measureTTFB {
		end = tick().m // the one on exit
	}
	if !wrote {
		status = statusOf(err)
	}
	switch {
	case !wrote && r.Context().Err() != nil:
		// The client went away before an answer: that says nothing
		// about the upstream.
		in.circuit.Cancel(ticket)
	case status >= 500:
		if tr := in.circuit.DoneMono(end, ticket, true, hint); tr != nil {
			in.transition(*tr, traceID(r))
		}
	default:
		d := time.Duration(end - at.m)
		in.latency.RecordAt(d, hint)
		in.slow.note(d, r)
		if tr := in.circuit.DoneMono(end, ticket, false, hint); tr != nil {
			in.transition(*tr, traceID(r))
		}
	}
	if verdict == priority.PassReserved {
		in.lanes.Reserve.Release()
	}
	in.finished.IncAt(hint)
	return err
}

// classify reads the request's priority claim.
func (h *Handler) classify(r *http.Request, repl *caddy.Replacer) priority.Priority {
	var claim string
	if h.fromHeader != "" {
		if v := r.Header[h.fromHeader]; len(v) > 0 {
			claim = v[0]
		}
	} else if repl != nil {
		claim = repl.ReplaceAll(h.cfg.from, "")
	}
	p, ok := priority.Parse(claim)
	if !ok {
		return h.cfg.def
	}
	if h.trusted != nil {
		// A claim is worth what its sender is: untrusted requests get the
		// default, whatever they asked for.
		if trusted, err := h.trusted.MatchWithError(r); err != nil || !trusted {
			return h.cfg.def
		}
	}
	return p
}

// statusOf is the status a handler error will be answered with.
func statusOf(err error) int {
	if err == nil {
		return http.StatusOK
	}
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
)
