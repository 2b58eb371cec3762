package throttle

import (
	"context"
	"net/http"
	"time"

	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/priority"
)

// retryJitter spreads Retry-After by up to 20% so refused clients do not
// return in the same second.
const retryJitter = 0.2

// Decision is Admit's answer for one request. An admitted one must be
// finished: by Serve, or by Finish (a second Finish of the same Decision
// does nothing).
//
// It is at most four words so that the compiler keeps it in registers: a
// larger struct lives in memory and is copied whole right after its fields
// were stored one by one, which stalls the CPU's store-to-load forwarding
// and cost the request path more than the rest of its work.
type Decision struct {
	info   uint64 // priority | verdict<<8 | cause<<16 | Retry-After seconds<<32
	ticket breaker.Ticket
	rec    *recorder // admitted: its shard, Admit's instant, and Serve's response recorder
}

func decision(p priority.Priority, v priority.Verdict, cause int, retry int) uint64 {
	return uint64(p) | uint64(v)<<8 | uint64(cause)<<16 | uint64(uint32(retry))<<32
}

// Priority is the request's priority.
func (d Decision) Priority() priority.Priority { return priority.Priority(d.info) }

// Verdict is what the lanes (or the circuit) said.
func (d Decision) Verdict() priority.Verdict { return priority.Verdict(d.info >> 8) }

// Admitted reports whether the request goes on to the upstream.
func (d Decision) Admitted() bool { return d.Verdict().Admitted() }

// Status is the HTTP status of a refusal: 503 (circuit open, reserve full)
// or 429; 0 when admitted.
func (d Decision) Status() int { return d.Verdict().Status() }

// RetryAfter is a refusal's Retry-After in whole seconds: when capacity is
// expected back, at least the configured floor, with up to 20% jitter.
func (d Decision) RetryAfter() int { return int(uint32(d.info >> 32)) }

// Cause names what a refusal is attributed to: gpu, latency, qps, circuit
// or override; "" when admitted.
func (d Decision) Cause() string {
	if d.Admitted() {
		return ""
	}
	return causeNames[d.CauseIndex()]
}

// CauseIndex is Cause as an index below Causes (for tables built once).
func (d Decision) CauseIndex() int { return int(uint8(d.info >> 16)) }

// Admit decides for one request of priority p at now (Now(), on the
// request path). It reads atomics only and allocates nothing.
//
// Nothing tripped: every request passes. Something tripped (or an override
// says shed): high takes a reserve slot, medium a token of the medium
// lane, low is refused. An open circuit refuses everything but its
// Half-Open probes, which skip the lanes: they are how recovery is seen. An
// override "pass" admits everything; the circuit still counts outcomes.
func (t *Throttle) Admit(p priority.Priority, now Instant) Decision {
	// The verdict is kept in a local until the end: writing a byte of d and
	// then reading d whole stalls the store-to-load forwarding.
	rec := getRecorder()
	v := priority.Pass
	var tk breaker.Ticket
	mode := t.overrideAt(now.Time)
	ticket, ok, retryIn := t.circuit.Allow(now.Time)
	switch {
	case mode == "pass":
		if ok {
			tk = ticket
		}
	case !ok:
		v = priority.ShedCircuit
	default:
		tk = ticket
		if !tk.Probe() {
			v = t.lanes.Admit(p, mode == "shed" || t.tripped.Load() != 0, now.Time)
		}
	}
	t.verdicts[p][v].Add(rec.shard)
	if v.Admitted() {
		rec.start = now.Mono
		return Decision{info: decision(p, v, 0, 0), ticket: tk, rec: rec}
	}
	putRecorder(rec)
	return t.refusal(p, v, retryIn, now.Time)
}

// refusal is a refused Decision: its cause, and Retry-After from when
// capacity is expected back. Apart from Admit, which stays small.
func (t *Throttle) refusal(p priority.Priority, v priority.Verdict, retryIn time.Duration, now time.Time) Decision {
	cause, until := causeCircuit, retryIn
	if v != priority.ShedCircuit {
		cause, until = t.shedCause(), time.Duration(t.shedUntil.Load()-now.UnixNano())
	}
	t.shedBy[cause].Add(1)
	retry := priority.RetryAfter(until, time.Duration(t.retry.Load()), retryJitter)
	return Decision{info: decision(p, v, cause, retry)}
}

// shedCause names the level a refusal is attributed to.
func (t *Throttle) shedCause() int {
	mask := t.tripped.Load()
	for i := range numLevels {
		if mask&(1<<i) != 0 {
			return i
		}
	}
	return causeOverride
}

// Allow is Admit for callers that are no HTTP handler: it refuses at once
// when ctx is already done, and otherwise admits or refuses p now. An
// admitted Decision must be given to Finish.
func (t *Throttle) Allow(ctx context.Context, p priority.Priority) (Decision, error) {
	if err := ctx.Err(); err != nil {
		return Decision{info: decision(p, priority.ShedLow, causeOverride, 0)}, err
	}
	d := t.Admit(p, Now())
	if !d.Admitted() {
		return d, &Refusal{Cause: d.Cause(), Priority: p.String(), RetryAfter: d.RetryAfter(), Status: d.Status()}
	}
	return d, nil
}

// Outcome is how an admitted request ended, for Finish.
type Outcome struct {
	// Status is the response's status; 5xx counts against the upstream.
	Status int
	// End is when the request was timed (its first byte, or its end), as
	// breaker.Mono; 0 means now.
	End int64
	// ClientGone: the client went away before an answer. That says
	// nothing about the upstream: neither latency nor the circuit count it.
	ClientGone bool
	// Abandoned: the handler panicked. Nothing is recorded; the slot is
	// given back.
	Abandoned bool
	// Request, if known, names the trace id of a slow answer or of a
	// failure that opened the circuit.
	Request *http.Request
}

// Finish records an admitted request's outcome and gives back what it held:
// a reserve slot, a Half-Open probe, its place in flight. It is the one
// release path, for normal returns and panics alike; once it has run, d is
// spent and a second Finish does nothing.
func (t *Throttle) Finish(d *Decision, o Outcome) {
	rec := d.rec
	if rec == nil { // not admitted, or finished already
		return
	}
	d.rec = nil
	t.finish(rec, d.Verdict(), d.ticket, o.Status, o.End, o.ClientGone || o.Abandoned, o.Request)
}

// finish is Finish with the Decision's and the outcome's fields as
// arguments: Serve passes them so, because copying a Decision whole right
// after its fields were stored one by one stalls the CPU's store-to-load
// forwarding, which costs more than the rest of the request path.
func (t *Throttle) finish(rec *recorder, v priority.Verdict, tk breaker.Ticket, status int, end int64, gone bool, r *http.Request) {
	sh := rec.shard
	if end == 0 {
		end = Now().Mono
	}
	switch {
	case gone:
		t.circuit.Cancel(tk)
	case status >= 500:
		t.circuitChanged(t.circuit.Done(end, tk, true, sh), r)
	default:
		dur := time.Duration(end - rec.start)
		t.latency.Record(dur, sh)
		if t.latency.Slower(dur) {
			t.latency.NoteSlow(dur, traceID(r))
		}
		if tr := t.circuit.Done(end, tk, false, sh); tr != nil {
			t.circuitChanged(tr, r)
		}
	}
	if v == priority.PassReserved {
		t.lanes.Reserve.Release()
	}
	t.finished.Add(sh)
	putRecorder(rec)
}

// abandoned finishes a request whose handler panicked (*returned is
// false): nothing is recorded, what it holds is given back.
func (t *Throttle) abandoned(returned *bool, rec *recorder, v priority.Verdict, tk breaker.Ticket) {
	if !*returned {
		t.finish(rec, v, tk, 0, 0, true, nil)
	}
}

// circuitChanged reports a transition an outcome caused, if any, with the
// trace id of the request that caused it.
func (t *Throttle) circuitChanged(tr *breaker.Transition, r *http.Request) {
	if tr != nil {
		tr.TraceID = traceID(r)
		t.transition(*tr)
	}
}

// Next is the handler Serve runs: caddyhttp.Handler's shape, and what
// Middleware adapts an http.Handler to.
type Next interface {
	ServeHTTP(http.ResponseWriter, *http.Request) error
}

// Serve runs next for an admitted request and finishes it: it times the
// first byte (or the end, for latency measure total) and passes the
// status, and it gives back what the request holds when next panics (as
// reverse_proxy does with http.ErrAbortHandler when the client goes away
// mid-stream) before the panic goes on up. An error next returns without
// writing a response counts with the status WithErrorStatus gives it (500
// by default).
func (t *Throttle) Serve(w http.ResponseWriter, r *http.Request, d Decision, next Next) error {
	// Field by field, never d whole (see finish).
	rec, v, tk := d.rec, d.Verdict(), d.ticket
	stamp := t.latency.TTFB()
	rec.ResponseWriter, rec.stamp = w, stamp
	returned := false
	defer t.abandoned(&returned, rec, v, tk)
	err := next.ServeHTTP(rec, r)
	returned = true

	status, end, gone := rec.status, rec.at, false
	if !rec.wrote || !stamp {
		end = Now().Mono // the one clock read on exit
	}
	if !rec.wrote {
		gone = r.Context().Err() != nil
		switch {
		case err == nil:
			status = http.StatusOK
		case t.errStatus != nil:
			status = t.errStatus(err)
		default:
			status = http.StatusInternalServerError
		}
	}
	t.finish(rec, v, tk, status, end, gone, r)
	return err
}
