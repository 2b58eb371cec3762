package priority

import (
	"net/http"
	"time"
)

// Verdict is a lane's answer for one request.
type Verdict uint8

const (
	// Pass: nothing is tripped, the request goes through untouched.
	Pass Verdict = iota
	// PassReserved: admitted on a high-priority reserve slot, which the
	// caller must Release once the response is done.
	PassReserved
	// PassBucket: a medium request admitted by the token bucket.
	PassBucket
	// ShedReserveFull: high priority, but every reserve slot is taken.
	ShedReserveFull
	// ShedBucket: medium priority over the bucket's rate.
	ShedBucket
	// ShedLow: low priority while anything is tripped.
	ShedLow
	// ShedCircuit: refused by an open circuit, before any lane.
	ShedCircuit
)

// Verdicts is the number of verdicts, for arrays indexed by Verdict.
const Verdicts = int(ShedCircuit) + 1

var verdictNames = [Verdicts]string{"pass", "pass_reserved", "pass_bucket", "shed_reserve_full", "shed_bucket", "shed_low", "shed_circuit"}

func (v Verdict) String() string {
	if int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return "unknown"
}

// Admitted reports whether the request goes on to the upstream.
func (v Verdict) Admitted() bool { return v <= PassBucket }

// Status is the HTTP status of a refusal: 503 when even the reserve is
// full or the circuit is open (the server cannot take more right now), 429
// when the client's class is being rationed. Zero for admitted requests.
func (v Verdict) Status() int {
	switch v {
	case ShedReserveFull, ShedCircuit:
		return http.StatusServiceUnavailable
	case ShedBucket, ShedLow:
		return http.StatusTooManyRequests
	}
	return 0
}

// Lanes grades shedding by priority.
type Lanes struct {
	Reserve *Reserve
	Bucket  *Bucket
}

// Admit decides for one request of priority p. When shedding is false every
// request passes; otherwise high takes a reserve slot, medium a token, and
// low is refused.
func (l *Lanes) Admit(p Priority, shedding bool, now time.Time) Verdict {
	if !shedding {
		return Pass
	}
	switch p {
	case High:
		if l.Reserve.TryAcquire() {
			return PassReserved
		}
		return ShedReserveFull
	case Medium:
		if l.Bucket.Allow(now) {
			return PassBucket
		}
		return ShedBucket
	}
	return ShedLow
}
