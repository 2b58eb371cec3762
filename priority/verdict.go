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
	// PassBucket: medium priority admitted while shedding, paced by the
	// medium lane's token bucket or handed a slot by a completion.
	PassBucket
	// ShedReserveFull: high priority while shedding, and no slot came
	// within its wait.
	ShedReserveFull
	// ShedBucket: medium priority while shedding, and no slot came within
	// its wait.
	ShedBucket
	// ShedLow: low priority while shedding, and no slot free at once.
	ShedLow
	// ShedQueue: nothing tripped, but no slot came within the wait, or
	// the priority's queue was full.
	ShedQueue
	// ShedGone: the client went away while it waited for a slot.
	ShedGone
	// ShedCircuit: refused by an open circuit, before any queue.
	ShedCircuit
)

// Verdicts is the number of verdicts, for arrays indexed by Verdict.
const Verdicts = int(ShedCircuit) + 1

var verdictNames = [Verdicts]string{"pass", "pass_queued", "pass_reserved", "pass_bucket",
	"shed_reserve_full", "shed_bucket", "shed_low", "shed_queue", "shed_gone", "shed_circuit"}

func (v Verdict) String() string {
	if int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return "unknown"
}

// Admitted reports whether the request goes on to the upstream.
func (v Verdict) Admitted() bool { return v <= PassBucket }

// Status is the HTTP status of a refusal of priority p: 503 when the
// server cannot take even high priority now (its wait ran out, or the
// circuit is open), 429 when the client's class is being rationed. Zero
// for admitted requests.
func (v Verdict) Status(p Priority) int {
	switch v {
	case ShedReserveFull, ShedCircuit:
		return http.StatusServiceUnavailable
	case ShedQueue, ShedGone:
		if p == High {
			return http.StatusServiceUnavailable
		}
		return http.StatusTooManyRequests
	case ShedBucket, ShedLow:
		return http.StatusTooManyRequests
	}
	return 0
}
