package throttle

import (
	"context"
	"io"
	"math"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/ai-guardian/adaptivethrottle/admission"
	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/pool"
	"github.com/ai-guardian/adaptivethrottle/priority"
)

// retryJitter spreads Retry-After by up to 20% so refused clients do not
// return in the same second.
const retryJitter = 0.2

// Decision is Admit's answer for one request. An admitted one must be
// finished: by Serve, or by Finish (a second Finish of the same Decision
// does nothing).
//
// It is at most four words so that the compiler keeps it in registers, and
// the request path writes and reads it field by field, never whole: a
// struct copied whole right after its fields were stored one by one stalls
// the CPU's store-to-load forwarding, which costs more than the rest of the
// request path. admit, Serve and finish follow this rule.
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

// Status is the HTTP status of a refusal: 503 (circuit open, high
// priority's wait ran out) or 429; 0 when admitted.
func (d Decision) Status() int { return d.Verdict().Status(d.Priority()) }

// RetryAfter is a refusal's Retry-After in whole seconds: when capacity is
// expected back, at least the configured floor, with up to 20% jitter.
func (d Decision) RetryAfter() int { return int(uint32(d.info >> 32)) }

// Cause names what a refusal is attributed to: gpu, latency, qps,
// circuit, override, or concurrency (no slot came within the wait, nothing
// being tripped); "" when admitted.
func (d Decision) Cause() string {
	if d.Admitted() {
		return ""
	}
	return causeNames[d.CauseIndex()]
}

// CauseIndex is Cause as an index below Causes (for tables built once).
func (d Decision) CauseIndex() int { return int(uint8(d.info >> 16)) }

// Admit decides for one request of priority p that arrived at now (Now(),
// on the request path). When a slot is free it costs a few atomic
// operations and allocates nothing; when none is, the request waits for one in its
// priority's queue, up to its max_wait, or until ctx ends (the client went
// away). A nil ctx never ends.
//
// Nothing tripped: a free slot admits any request; without one, it waits.
// Something tripped (or an override says shed): high may also take the
// reserve and waits for a slot; medium takes a free slot outside the
// reserve, and otherwise waits for one behind high; low is
// refused at once, unless the QPS level alone is tripped (arrivals surge,
// the upstream is not hurting): then low takes a slot that is free while
// nobody waits, and is refused at once otherwise. An open
// circuit refuses everything but its Half-Open probes, which take a slot
// whatever the limit: they are how recovery is seen. An override "pass"
// admits everything (each still counts in flight); the circuit still
// counts outcomes. An override "drain" refuses everything with 503, before
// the circuit and the queues: what is in flight finishes.
//
// Admit knows nothing of the request's size, so it never counts as short
// (see AdmitRequest).
func (t *Throttle) Admit(ctx context.Context, p priority.Priority, now breaker.Mono) Decision {
	return t.admit(ctx, nil, p, now)
}

// AdmitRequest is Admit for an HTTP request, its context r's: when r would
// wait for a slot while slots turn over slowly, its body may be read
// (weigh_body) to learn whether it is short and may borrow high's reserve;
// the body is put back whole for the next handler.
func (t *Throttle) AdmitRequest(r *http.Request, p priority.Priority, now breaker.Mono) Decision {
	return t.admit(r.Context(), r, p, now)
}

func (t *Throttle) admit(ctx context.Context, r *http.Request, p priority.Priority, now breaker.Mono) Decision {
	// The verdict is kept in a local until the end (see Decision).
	rec := getRecorder()
	v := priority.Pass
	start := now
	var tk breaker.Ticket
	short, class := false, uint8(classUnknown)
	mode := t.overrideOn(now)
	if mode == "drain" { // before the circuit: a drain takes no probe
		t.verdicts[p][priority.ShedDrain].Add(rec.shard)
		putRecorder(rec)
		return t.refusal(p, priority.ShedDrain, 0, now)
	}
	ticket, ok, retryIn := t.circuit.Allow(now)
	switch {
	case mode == "pass":
		if ok {
			tk = ticket
		}
		t.gate.Force()
	case !ok:
		v = priority.ShedCircuit
	case ticket.Probe():
		tk = ticket
		t.gate.Force()
	default:
		tk = ticket
		if mask := t.tripped.Load(); mode == "shed" || mask != 0 {
			v, start, short, class = t.graded(ctx, r, p, mode == "shed" || mask&upstreamLevels != 0, now)
		} else if !t.gate.TryAcquire(p, false) {
			v, start, short, class = t.wait(ctx, r, p, false, now)
		}
	}
	t.verdicts[p][v].Add(rec.shard)
	if v.Admitted() {
		rec.start, rec.high, rec.short, rec.class = start, p == priority.High, short, class
		if rec.high {
			t.highIn.Add(1)
		}
		return Decision{info: decision(p, v, 0, 0), ticket: tk, rec: rec}
	}
	putRecorder(rec)
	return t.refusal(p, v, retryIn, now)
}

// overrideOn is overrideAt on the request path's clock.
func (t *Throttle) overrideOn(now breaker.Mono) string {
	if o := t.override.Load(); o != nil { // apart, so that the common case inlines
		return o.at(now.Time())
	}
	return ""
}

// upstreamLevels are the levels that say the upstream itself is hurting
// (its GPU, its latency), as the QPS level (arrivals surging) does not.
const upstreamLevels = 1<<levelGPU | 1<<levelLatency

// graded is admission while shedding: high may take the reserve, medium
// takes a free slot outside it or waits, low never waits. hurting (a level that says the
// upstream is hurting is tripped, or an override sheds): low is refused at
// once; otherwise only arrivals surge, the limit guards the upstream, and
// low may take a slot that is free while nobody waits.
func (t *Throttle) graded(ctx context.Context, r *http.Request, p priority.Priority, hurting bool, now breaker.Mono) (priority.Verdict, breaker.Mono, bool, uint8) {
	switch p {
	case priority.High:
		if t.gate.TryAcquire(p, true) {
			return priority.PassReserved, now, false, classUnknown
		}
	case priority.Medium:
		if t.gate.TryAcquire(p, true) {
			return priority.PassGraded, now, false, classUnknown
		}
	default:
		if !hurting && t.gate.TryAcquire(p, true) {
			return priority.Pass, now, false, classUnknown
		}
	}
	return t.wait(ctx, r, p, true, now)
}

// standingCut: while a priority's queue is standing (admission.Gate.Watch),
// a new request of it waits at most its max_wait ÷ standingCut; a wait
// up to that is prompt, and a queue that serves waiters promptly is not
// standing. CoDel
// keeps a standing delay to a twentieth of its interval; answers that
// take seconds and slots that turn over a few times a second want a
// longer buffer, enough that a slot that frees finds a waiter.
const standingCut = 4

// waitFor is how long a request of priority p and class c may wait for a
// slot, and how many waiters may be ahead of it (admission.NoBound: any):
// with an slo and its class's budget known (the slo less the class's
// expected service time), the budget if shorter than max_wait, and no
// more waiters ahead than aheadSlack × the slots expected to free within
// it; otherwise max_wait, cut while its queue is standing. ok is false
// when the budget is spent before the wait begins: the answer cannot be
// on time.
func (t *Throttle) waitFor(p priority.Priority, c uint8) (wait time.Duration, ahead int, ok bool) {
	wait, ahead = time.Duration(t.maxWait[p].Load()), admission.NoBound
	b, known := t.service.waitBudget(c, p == priority.High)
	if t.slo.Load() <= 0 || !known || t.off.Off(admission.RuleWaitBudget) {
		if t.gate.Standing(p) {
			wait /= standingCut
		}
		return wait, ahead, true
	}
	if b <= 0 {
		return 0, 0, false
	}
	if rate := math.Float64frombits(t.drain.Load()); rate > 0 {
		// budget × rate slots free within the budget on average, but
		// they free in bunches when a batch's answers began together:
		// twice that may be ahead, and the wait's end refuses the rest.
		ahead = int(math.Ceil(aheadSlack * b.Seconds() * rate))
	}
	return min(wait, b), ahead, true
}

// aheadSlack: how many times the slots expected to free within a budget
// may wait ahead of a request before it is refused at once.
const aheadSlack = 2

// wait is the slow path: no slot was free. The request queues for a slot; low does not while
// shedding. While the reserve is held (slots turn over slowly), a medium
// or low request r is weighed first: a short one may borrow the reserve.
// A granted request's time starts when it got its slot, so its time to
// first byte is the upstream's, not the queue's. It returns the verdict,
// that start, and whether the slot was taken as short.
func (t *Throttle) wait(ctx context.Context, r *http.Request, p priority.Priority, shedding bool, now breaker.Mono) (priority.Verdict, breaker.Mono, bool, uint8) {
	if shedding && p == priority.Low {
		return priority.ShedLow, 0, false, classUnknown
	}
	if ctx == nil {
		ctx = context.Background()
	}
	// Weighed when a short request may borrow the reserve, and under an
	// slo for its class: what its answer takes.
	lend, slo := p != priority.High && t.gate.Reserve() > 0 && t.off.On(admission.RuleWeigher), t.slo.Load() > 0
	var tokens int64
	if lend || slo {
		tokens = t.weigher.weigh(r)
	}
	short, class := lend && t.weigher.isShort(tokens), uint8(classUnknown)
	if slo {
		class = classOf(tokens)
	}
	defer t.unhold(t.holdBody(r)) // so that a client that leaves is seen
	res := admission.Late
	if wait, ahead, ok := t.waitFor(p, class); ok {
		res = t.gate.WaitAhead(ctx, p, short, wait, ahead, int64(now))
	}
	switch res {
	case admission.Granted:
		start := Now()
		if int64(start-now) <= t.maxWait[p].Load()/standingCut {
			t.gate.ServedPromptly(p, int64(start))
		}
		switch {
		case !shedding:
			return priority.PassQueued, start, short, class
		case p == priority.High:
			return priority.PassReserved, start, false, class
		}
		return priority.PassGraded, start, short, class
	case admission.Gone:
		return priority.ShedGone, 0, false, classUnknown
	}
	switch {
	case !shedding:
		return priority.ShedQueue, 0, false, classUnknown
	case p == priority.High:
		return priority.ShedReserveFull, 0, false, classUnknown
	}
	return priority.ShedGraded, 0, false, classUnknown
}

// refusal is a refused Decision: its cause, and Retry-After from when
// capacity is expected back. Apart from Admit, which stays small.
func (t *Throttle) refusal(p priority.Priority, v priority.Verdict, retryIn time.Duration, now breaker.Mono) Decision {
	cause, until := causeCircuit, retryIn
	switch v {
	case priority.ShedCircuit:
	case priority.ShedDrain:
		cause, until = causeOverride, t.overrideLeft(now.Time())
	case priority.ShedQueue, priority.ShedGone:
		cause, until = causeLimit, t.drainIn()
	default:
		cause, until = t.shedCause(), time.Duration(t.shedUntil.Load()-now.Time().UnixNano())
		if v != priority.ShedLow {
			until = max(until, t.drainIn())
		}
	}
	if v != priority.ShedGone {
		t.shedBy[cause].Add(1)
	}
	retry := priority.RetryAfter(until, time.Duration(t.retry.Load()), time.Duration(t.retryMax.Load()), retryJitter)
	return Decision{info: decision(p, v, cause, retry)}
}

// drainIn is how long the queues take to drain at the rate requests
// complete: when a slot is expected for one more request.
func (t *Throttle) drainIn() time.Duration {
	rate := math.Float64frombits(t.drain.Load())
	if rate <= 0 {
		return 0
	}
	return time.Duration(float64(t.gate.Waiting()+1) / rate * float64(time.Second))
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
// when ctx is already done, and otherwise admits p, waiting for a slot
// while ctx lasts, or refuses it. An admitted Decision must be given to
// Finish.
func (t *Throttle) Allow(ctx context.Context, p priority.Priority) (Decision, error) {
	if err := ctx.Err(); err != nil {
		return Decision{info: decision(p, priority.ShedGone, causeLimit, 0)}, err
	}
	d := t.Admit(ctx, p, Now())
	if !d.Admitted() {
		return d, &Refusal{Cause: d.Cause(), Priority: p.String(), RetryAfter: d.RetryAfter(), Status: d.Status()}
	}
	return d, nil
}

// Outcome is how an admitted request ended, for Finish.
type Outcome struct {
	// Status is the response's status; 5xx counts against the upstream,
	// except an answer that it is full (FullStatus: 503, 429, 529), which
	// lowers the limit instead and leaves the circuit alone.
	Status int
	// End is when the request was timed (its first byte, or its end); 0
	// means now.
	End breaker.Mono
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
// its slot (to the best waiter), a Half-Open probe. It is the one
// release path, for normal returns and panics alike; once it has run, d is
// spent and a second Finish does nothing.
func (t *Throttle) Finish(d *Decision, o Outcome) {
	rec := d.rec
	if rec == nil { // not admitted, or finished already
		return
	}
	d.rec = nil
	rec.full = FullStatus(o.Status) && !o.ClientGone && !o.Abandoned
	t.finish(rec, d.Verdict(), d.ticket, o.Status, o.End, o.ClientGone || o.Abandoned, o.Request)
}

// finish is Finish with the Decision's and the outcome's fields as
// arguments, as Serve passes them (see Decision).
func (t *Throttle) finish(rec *recorder, v priority.Verdict, tk breaker.Ticket, status int, end breaker.Mono, gone bool, r *http.Request) {
	sh := rec.shard
	released := Now() // the one clock read on exit
	if end == 0 {
		end = released
	}
	// Counted as a first byte by WriteHeader already (Serve's recorder)?
	counted := rec.fb != nil && rec.wrote && rec.status < 500 && !rec.full
	bound := rec.up != nil
	switch {
	case rec.full:
		// The upstream is full, not broken: the circuit does not count it
		// (a probe's slot goes to the next probe), nor does latency; the
		// limit learns how many it took (fullUpstream).
		t.circuit.Cancel(tk)
		t.full.note(t.gate.InFlight())
		rec.finishUp(pool.Full, end)
	case gone:
		t.circuit.Cancel(tk)
		rec.finishUp(pool.Gone, end)
	case status >= 500 && bound:
		// A failure of a pool member: its own circuit judges it, so that
		// it leaves the pool while the others serve.
		t.circuit.Cancel(tk)
		rec.finishUp(pool.Failed, end)
	case status >= 500:
		t.circuitChanged(t.circuit.Done(end, tk, true, sh), r)
	default:
		rec.finishUp(pool.Served, end)
		if rec.fb == nil { // finished by a caller of Finish: the end stands for the first byte
			t.firstBytes.add(sh, end.Sub(rec.start))
			counted = true
		}
		dur := end.Sub(rec.start)
		if t.slo.Load() > 0 { // the service time as taken, whatever its size
			t.service.record(sh, rec.class, dur)
		}
		if rec.whole { // its first byte is its end: judged by its size
			dur = t.latency.RecordWhole(dur, rec.size, sh)
		} else {
			t.latency.Record(dur, sh)
		}
		if t.latency.Slower(dur) {
			t.latency.NoteSlow(dur, traceID(r))
		}
		// A request a pool member answered counts on the member's circuit
		// (finishUp); the throttle's own counts it only as its probe, so
		// that the requests no member could take make its ratio.
		if !bound || tk.Probe() {
			if tr := t.circuit.Done(end, tk, false, sh); tr != nil {
				t.circuitChanged(tr, r)
			}
		}
	}
	if !counted {
		t.firstBytes.none.Add(sh)
	}
	if rec.high {
		t.highIn.Add(-1)
	}
	t.turnover.Done(sh, released.Sub(rec.start), time.Duration(t.highWait.Load()))
	t.gate.Release(rec.short)
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
// by default) — unless the request caused it: a large body (over 1 MiB, or
// of unknown length) that was not read to its end, because the client
// stopped sending or the upstream refused it, says nothing about the
// upstream's health, and the circuit does not count it.
//
// An answer of the upstream that it is full (FullStatus: 503, 429, 529)
// is held back: the client gets the module's own refusal instead (see
// refuseFull, WithRefuser), the limit comes down to what the upstream
// took, and the circuit does not count it. What next returned is then
// dropped.
func (t *Throttle) Serve(w http.ResponseWriter, r *http.Request, d Decision, next Next) error {
	// Field by field, never d whole (see Decision).
	rec, v, tk := d.rec, d.Verdict(), d.ticket
	stamp := t.latency.TTFB()
	rec.ResponseWriter, rec.stamp, rec.fb = w, stamp, &t.firstBytes
	var body *watchedBody
	if r.Body != nil && r.Body != http.NoBody && (r.ContentLength < 0 || r.ContentLength > watchBodyOver) {
		body = &watchedBody{ReadCloser: r.Body} // only for large bodies: the common request allocates nothing
		r.Body = body
	}
	returned := false
	defer t.abandoned(&returned, rec, v, tk)
	err := next.ServeHTTP(rec, r)
	returned = true

	status, end, gone := rec.status, rec.at, false
	if !rec.wrote || !stamp {
		end = 0 // the end: finish reads the clock
	}
	if !rec.wrote {
		switch {
		case err == nil:
			status = http.StatusOK
		case t.errStatus != nil:
			status = t.errStatus(err)
		default:
			status = http.StatusInternalServerError
		}
		gone = r.Context().Err() != nil || (status >= 500 && body != nil && !body.ended.Load())
	}
	full := rec.full
	var retry string
	if full {
		retry = w.Header().Get("Retry-After") // the upstream's, before finish gives rec back
	}
	t.finish(rec, v, tk, status, end, gone, r)
	if full {
		return t.refuseFull(w, r, d.Priority(), retry)
	}
	return err
}

// watchBodyOver is the body size above which Serve watches whether the
// body was read to its end.
const watchBodyOver = 1 << 20

// watchedBody notes whether a request body was read to its end. The
// transport may still read it from its own goroutine after the handler
// returned, hence the atomic.
type watchedBody struct {
	io.ReadCloser
	ended atomic.Bool
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.ended.Store(true)
	}
	return n, err
}
