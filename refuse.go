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
// or, when one of the server's error routes takes the refusal's status, a
// caddyhttp.Error carrying a *throttle.Refusal so that handle_errors can
// answer instead (a cheaper fallback model, say).
//
// Why not always return the caddyhttp.Error and let Caddy route it: Caddy's
// server answers an error that no error route takes with its bare status
// and an empty body (caddyhttp's errorEmptyHandler, as of v2.11.9), and
// error routes are per server, not per site. So a site with only
// `handle_errors 404`, or with none beside a site that has one, would send
// its shed clients a 429 without the JSON the README promises
// (tests.TestHandleErrorsForAnotherStatusKeepsTheRefusal fails so). The
// module answers itself unless a route will take the error.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, repl *caddy.Replacer, d throttle.Decision) error {
	publish(repl, decisionShed, d.CauseIndex(), d.Priority())
	return answerRefusal(h.t, w, r, repl, d)
}

// refuseFull answers, as refuse does, a request whose upstream answered
// that it is full (the throttle held that answer back, see throttle.Serve).
// Its placeholders were published as passed: the refusal's are set over
// them (set values come before published ones).
func refuseFull(t *throttle.Throttle, w http.ResponseWriter, r *http.Request, d throttle.Decision) error {
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl != nil {
		repl.Set(phDecision, "shed")
		repl.Set(phLevel, d.Cause())
		repl.Set(phPriority, d.Priority().String())
	}
	return answerRefusal(t, w, r, repl, d)
}

// answerRefusal is refuse once the placeholders are published.
func answerRefusal(t *throttle.Throttle, w http.ResponseWriter, r *http.Request, repl *caddy.Replacer, d throttle.Decision) error {
	if repl != nil {
		repl.Set(phRetryAfter, d.RetryAfter())
	}
	w.Header().Set("Retry-After", strconv.Itoa(d.RetryAfter()))
	t.LogRefusal(r, d)
	if srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok && srv.Errors != nil && len(srv.Errors.Routes) > 0 {
		err := caddyhttp.Error(d.Status(), &throttle.Refusal{Cause: d.Cause(), Priority: d.Priority().String(),
			RetryAfter: d.RetryAfter(), Status: d.Status()})
		if errorRouteTakes(srv, r, repl, err) {
			return err
		}
	}
	throttle.WriteRefusal(w, d)
	return nil
}

// errorPlaceholders are what caddyhttp.HTTPErrorConfig.WithError sets on
// the replacer.
var errorPlaceholders = []string{"http.error", "http.error.status_code", "http.error.status_text", "http.error.id",
	"http.error.trace", "http.error.message"}

// errorRouteTakes reports whether srv's error routes will answer err on r,
// judged as Caddy's server will judge it: the error in the request's
// context and its placeholders set. The Caddyfile nests what handle_errors
// says: a route per site (matching its host) holding a subroute with a
// route per handle_errors block (matching {http.error.status_code} in
// [429], say), so a subroute takes the error only when one of its own
// routes does. A matcher that fails counts as taking it: Caddy's error
// chain then answers as it would have. The placeholders are taken back
// when no route takes it, so the rest of the request does not see an
// error that was not raised.
func errorRouteTakes(srv *caddyhttp.Server, r *http.Request, repl *caddy.Replacer, err error) bool {
	if repl == nil {
		return true // no replacer to judge by (never in Caddy): leave it to the error routes as before
	}
	if routesTake(srv.Errors.Routes, srv.Errors.WithError(r, err), 0) {
		return true
	}
	for _, k := range errorPlaceholders {
		repl.Delete(k)
	}
	return false
}

// routesTake reports whether one of routes matches r and has a handler
// that is not a subroute, or a subroute that takes it, as the route list
// runs: up to the first terminal route that matches.
func routesTake(routes caddyhttp.RouteList, r *http.Request, depth int) bool {
	if depth > 16 {
		return true // deeper than any config writes: let Caddy judge
	}
	for _, route := range routes {
		if ok, err := route.MatcherSets.AnyMatchWithError(r); err != nil {
			return true
		} else if !ok {
			continue
		}
		for _, h := range route.Handlers {
			sr, ok := h.(*caddyhttp.Subroute)
			if !ok || routesTake(sr.Routes, r, depth+1) {
				return true
			}
		}
		if route.Terminal {
			return false // Caddy stops here: the routes after it never see the error
		}
	}
	return false
}
