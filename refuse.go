package adaptivethrottle

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/ai-guardian/adaptivethrottle/priority"
)

// retryJitter spreads Retry-After by up to 20% so refused clients do not
// return in the same second.
const retryJitter = 0.2

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
var publishers [2][numShedCauses + 1][priority.Count]caddy.ReplacerFunc

const (
	decisionPass = 0
	decisionShed = 1
	noCause      = numShedCauses // level placeholder empty: nothing refused
)

func init() {
	for d, decision := range []string{"pass", "shed"} {
		for c := range numShedCauses + 1 {
			level := ""
			if c < numShedCauses {
				level = causeName(c)
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

// ShedError is the error a refusal carries through Caddy's error routes,
// so that handle_errors can tell a shed request from other failures.
type ShedError struct {
	Level      string
	Priority   string
	RetryAfter int
}

func (e *ShedError) Error() string {
	return fmt.Sprintf("overloaded: level=%s priority=%s retry_after=%ds", e.Level, e.Priority, e.RetryAfter)
}

// refuse answers a shed request: Retry-After derived from when capacity is
// expected back (never below the configured floor, with jitter), and either
// the JSON body or, when the server has error routes, a caddyhttp.Error so
// that handle_errors can answer instead (a cheaper fallback model, say).
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, repl *caddy.Replacer, p priority.Priority, status, cause int, until time.Duration) error {
	in := h.inst
	in.shedBy[cause].Add(1)
	level := causeName(cause)
	secs := priority.RetryAfter(until, h.cfg.retryFloor, retryJitter)
	publish(repl, decisionShed, cause, p)
	if repl != nil {
		repl.Set(phRetryAfter, secs)
	}
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	in.logShed(h.logger, r, level, p, status, secs)

	if srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok && srv.Errors != nil && len(srv.Errors.Routes) > 0 {
		return caddyhttp.Error(status, &ShedError{Level: level, Priority: p.String(), RetryAfter: secs})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	// A client gone before reading its refusal is nothing to report.
	_, _ = fmt.Fprintf(w, `{"error":"overloaded","level":%q,"priority":%q,"retry_after":%d}`+"\n", level, p.String(), secs)
	return nil
}
