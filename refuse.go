package adaptivethrottle

import (
	"net/http"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/ai-guardian/adaptivethrottle/priority"
	"github.com/ai-guardian/adaptivethrottle/throttle"
)

// Placeholder names, set on every request the handler sees.
const (
	phDecision   = "http.adaptive_throttle.decision"
	phLevel      = "http.adaptive_throttle.level"
	phPriority   = "http.adaptive_throttle.priority"
	phRetryAfter = "http.adaptive_throttle.retry_after"
)

// publishers holds one replacer provider per (decision, cause, priority):
// fixed functions built once, so that publishing a request's placeholders is
// one append to the replacer's provider list (within the capacity Caddy's
// own provider left) instead of three map writes under a mutex, and
// allocates nothing.
var publishers [2][throttle.Causes + 1][priority.Count]caddy.ReplacerFunc

const (
	decisionPass = 0
	decisionShed = 1
	noCause      = throttle.Causes // level placeholder empty: nothing refused
)

func init() {
	for d, decision := range []string{"pass", "shed"} {
		for c := range throttle.Causes + 1 {
			level := ""
			if c < throttle.Causes {
				level = throttle.CauseName(c)
			}
			for p := range priority.Count {
				vals := map[string]any{phDecision: decision, phLevel: level, phPriority: priority.Priority(p).String()}
				publishers[d][c][p] = func(key string) (any, bool) {
					v, ok := vals[key]
					return v, ok
				}
			}
		}
	}
}

// publish makes the decision visible to the rest of the route (header,
// log_append, matchers, handle_errors, access logs).
func publish(repl *caddy.Replacer, decision, cause int, p priority.Priority) {
	if repl != nil {
		repl.Map(publishers[decision][cause][p])
	}
}

// refuse answers a refused request: Retry-After, and either the JSON body
// or, when the server has error routes, a caddyhttp.Error carrying a
// *throttle.Refusal so that handle_errors can answer instead (a cheaper
// fallback model, say).
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, repl *caddy.Replacer, d throttle.Decision) error {
	publish(repl, decisionShed, d.CauseIndex(), d.Priority())
	if repl != nil {
		repl.Set(phRetryAfter, d.RetryAfter())
	}
	w.Header().Set("Retry-After", strconv.Itoa(d.RetryAfter()))
	h.t.LogRefusal(r, d)
	if srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok && srv.Errors != nil && len(srv.Errors.Routes) > 0 {
		return caddyhttp.Error(d.Status(), &throttle.Refusal{Cause: d.Cause(), Priority: d.Priority().String(),
			RetryAfter: d.RetryAfter(), Status: d.Status()})
	}
	throttle.WriteRefusal(w, d)
	return nil
}
