package priority

import "net/http"

// Verdict is what admission said for one request.
type Verdict uint8

const (
	// Pass: a slot was free at once.
	Pass Verdict = iota
	// PassQueued: the request waited in its priority's queue and was
	// handed a slot, nothing being tripped.
	PassQueued
	// PassReserved: high priority admitted while shedding, inside the
	// share of the limit kept for it.
	PassReserved
	// PassGraded: medium priority admitted while shedding, into a free
	// slot outside the reserve or handed one by a completion.
	PassGraded
	// ShedReserveFull: high priority while shedding, and no slot came
	// within its wait.
	ShedReserveFull
	// ShedGraded: medium priority while shedding, and no slot came within
	// its wait.
	ShedGraded
	// ShedLow: low priority while shedding, and no slot free at once.
	ShedLow
	// ShedQueue: nothing tripped, but no slot came within the wait, or
	// the priority's queue was full.
	ShedQueue
	// ShedGone: the client went away while it waited for a slot.
	ShedGone
	// ShedCircuit: refused by an open circuit, before any queue.
	ShedCircuit
	// ShedDrain: refused by an operator's override "drain", before the
	// circuit and any queue.
	ShedDrain
)

// Verdicts is the number of verdicts, for arrays indexed by Verdict.
const Verdicts = int(ShedDrain) + 1

var verdictNames = [Verdicts]string{"pass", "pass_queued", "pass_reserved", "pass_graded",
	"shed_reserve_full", "shed_graded", "shed_low", "shed_queue", "shed_gone", "shed_circuit", "shed_drain"}

// Possible reports whether admission can give a request of priority p
// verdict v: the reserve is high's (pass_reserved, shed_reserve_full), the
// waiting medium's (pass_graded, shed_graded), the refusal at once low's
// (shed_low); the other verdicts come to every priority.
func (v Verdict) Possible(p Priority) bool {
	switch v {
	case PassReserved, ShedReserveFull:
		return p == High
	case PassGraded, ShedGraded:
		return p == Medium
	case ShedLow:
		return p == Low
	}
	return int(v) < Verdicts
}

func (v Verdict) String() string {
	if int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return "unknown"
}

// Admitted reports whether the request goes on to the upstream.
func (v Verdict) Admitted() bool { return v <= PassGraded }

// Status is the HTTP status of a refusal of priority p: 503 when the
// server cannot take even high priority now (its wait ran out, the
// circuit is open, or an operator drains it), 429 when the client's class
// is being rationed. Zero for admitted requests.
func (v Verdict) Status(p Priority) int {
	switch v {
	case ShedReserveFull, ShedCircuit, ShedDrain:
		return http.StatusServiceUnavailable
	case ShedQueue, ShedGone:
		if p == High {
			return http.StatusServiceUnavailable
		}
		return http.StatusTooManyRequests
	case ShedGraded, ShedLow:
		return http.StatusTooManyRequests
	}
	return 0
}
