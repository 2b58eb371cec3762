package throttle

import (
	"net/http"

	"go.uber.org/zap"

	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/pool"
)

// Pool is the throttle's pool of upstreams: empty, and the limit the
// throttle's own, until a load balancer's selection policy holds members
// of it (pool.Pool.Hold). While it has members, the gate's limit is the
// sum of what they can take (pool.Pool.Step), and a request that
// Binding.Bind sent to one of them is judged by that member's circuit.
func (t *Throttle) Pool() *pool.Pool { return t.pool }

// Binding is a request Serve runs, as a load balancer's selection policy
// sees it: what ties the upstream it picks to the request, so that Finish
// records the upstream's first byte, status and in-flight count.
type Binding struct{ rec *recorder }

// maxUnwrap bounds the writers Find looks through.
const maxUnwrap = 8

// Find returns the Binding of the request whose response writer is w:
// Serve's recorder, or a writer that wraps it (Unwrap). ok is false when
// w is no request Serve runs (no adaptive_throttle handler before the
// load balancer). It allocates nothing.
func Find(w http.ResponseWriter) (b Binding, ok bool) {
	for range maxUnwrap {
		switch x := w.(type) {
		case *recorder:
			return Binding{x}, x.fb != nil
		case interface{ Unwrap() http.ResponseWriter }:
			w = x.Unwrap()
		default:
			return Binding{}, false
		}
	}
	return Binding{}, false
}

// Bind ties the request to member m, sent at now with m's circuit ticket
// tk (pool.Pick's). A request bound before (the load balancer tries
// another upstream after a failed attempt) first ends on its earlier
// member as a failure.
func (b Binding) Bind(m *pool.Member, tk breaker.Ticket, now breaker.Mono) {
	rec := b.rec
	rec.finishUp(pool.Failed, now)
	rec.up, rec.upTk, rec.sent, rec.upFB = m, tk, now, false
	m.Start(rec.shard)
}

// finishUp ends the request on the member it is bound to, if any, with
// result r at end (breaker.Mono), and unbinds it.
func (rec *recorder) finishUp(r pool.Result, end breaker.Mono) {
	if rec.up == nil {
		return
	}
	rec.up.Finish(rec.shard, rec.upTk, r, end, rec.upFB)
	rec.up, rec.upTk, rec.upFB = nil, breaker.Ticket{}, false
}

// memberChanged logs a pool member's circuit changing state (a member
// that opens has left the pool until its probe; one that closes is back),
// or its gauge tripping (its limit is cut) or recovering.
func (t *Throttle) memberChanged(c pool.Change) {
	l := t.logger.Load()
	if g := c.Gauge; g != nil {
		f := []zap.Field{zap.String("name", t.name), zap.String("upstream", c.Key), zap.String("reason", g.Reason),
			zap.Float64("value", g.Value), zap.Float64("threshold", g.Threshold)}
		if g.Tripped {
			l.Warn("upstream gauge tripped: its limit is cut until it recovers", f...)
		} else {
			l.Info("upstream gauge recovered", f...)
		}
		return
	}
	f := []zap.Field{zap.String("name", t.name), zap.String("upstream", c.Key),
		zap.String("from", c.From.String()), zap.String("to", c.To.String()), zap.String("reason", c.Reason)}
	if c.To == breaker.Open {
		l.Warn("upstream left the pool: its circuit opened", f...)
		return
	}
	l.Info("upstream circuit changed", f...)
}
