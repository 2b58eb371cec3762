package throttle

import (
	"fmt"
	"net/http"
	"strconv"
)

// Refusal is a refused request as an error: what Allow returns, and what
// the Caddy module hands its error routes, so that handle_errors can tell a
// shed request from other failures.
type Refusal struct {
	Cause      string // gpu, latency, qps, circuit or override
	Priority   string // high, medium or low
	RetryAfter int    // seconds
	Status     int    // 429 or 503
}

func (e *Refusal) Error() string {
	return fmt.Sprintf("overloaded: level=%s priority=%s retry_after=%ds", e.Cause, e.Priority, e.RetryAfter)
}

// WriteRefusal answers a refused request: its status, Retry-After, and a
// small JSON body naming the cause (see the README, "What a shed client
// receives"). The caller has set Retry-After already if it wished; this
// sets it again to the same value.
func WriteRefusal(w http.ResponseWriter, d Decision) {
	h := w.Header()
	h.Set("Retry-After", strconv.Itoa(d.RetryAfter()))
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(d.Status())
	// A client gone before reading its refusal is nothing to report.
	_, _ = fmt.Fprintf(w, `{"error":"overloaded","level":%q,"priority":%q,"retry_after":%d}`+"\n", d.Cause(), d.Priority().String(), d.RetryAfter())
}
