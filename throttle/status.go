package throttle

import (
	"math"
	"time"

	"github.com/ai-guardian/adaptivethrottle/admission"
	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/levels"
	"github.com/ai-guardian/adaptivethrottle/levels/gpu"
	"github.com/ai-guardian/adaptivethrottle/levels/latency"
	"github.com/ai-guardian/adaptivethrottle/levels/qps"
	"github.com/ai-guardian/adaptivethrottle/pool"
	"github.com/ai-guardian/adaptivethrottle/priority"
)

// Status is one throttle as GET /throttle/status shows it. Durations are in
// seconds (fields ending _s); latency values and thresholds too. Every
// figure is rounded to four decimals.
type Status struct {
	// Name is the throttle's name: the Caddyfile's name, the metrics'
	// name label, the admin API's name.
	Name string `json:"name"`
	// Shedding: requests are refused, or graded by priority, for anything
	// but the concurrency limit: a tripped level, a circuit that is not
	// closed (it refuses all but its probes), or an override shed or drain.
	Shedding bool            `json:"shedding"`
	Override *OverrideStatus `json:"override"`
	// Restored is what was restored from storage at start (the Caddy
	// module's persist); null when nothing was.
	Restored  *RestoredStatus       `json:"restored"`
	Levels    LevelsStatus          `json:"levels"`
	Circuit   breaker.CircuitStatus `json:"circuit"`
	Admission AdmissionStatus       `json:"admission"`
	// Priorities is what each priority passed and shed, and high's
	// reserve.
	Priorities PrioritiesStatus `json:"priorities"`
	// Upstream is the upstream's answers that it is full.
	Upstream UpstreamStatus `json:"upstream"`
	// Upstreams is each upstream of a pool (lb_policy adaptive_throttle),
	// by address; empty without one.
	Upstreams []pool.MemberStatus `json:"upstreams"`
	// Refusals so far by cause: gpu, latency, qps, circuit, override,
	// concurrency, upstream.
	Shed map[string]uint64 `json:"shed"`
	// Events dropped because the emitter fell behind (the queue holds 64).
	EventsDropped uint64 `json:"events_dropped"`
}

// OverrideStatus is an operator's override in force.
type OverrideStatus struct {
	State      string     `json:"state"`
	Set        time.Time  `json:"set"`
	Until      *time.Time `json:"until"`
	ExpiresInS float64    `json:"expires_in_s,omitempty"`
}

// LevelsStatus holds the three levels, each as its own package shows it.
type LevelsStatus struct {
	QPS     qps.Status     `json:"qps"`
	GPU     gpu.Status     `json:"gpu"`
	Latency latency.Status `json:"latency"`
}

// PrioritiesStatus is occupancy and counts per priority since start.
type PrioritiesStatus struct {
	High   HighStatus   `json:"high"`
	Medium MediumStatus `json:"medium"`
	Low    LowStatus    `json:"low"`
}

// AdmissionStatus is the concurrency limit and its queues.
type AdmissionStatus struct {
	admission.LimitStatus
	InFlight int64 `json:"in_flight"`
	// Queued is the requests waiting for a slot, per priority; the oldest
	// of them has waited OldestWaitS.
	Queued      map[string]int `json:"queued"`
	OldestWaitS float64        `json:"oldest_wait_s"`
	// DrainPerS is the rate requests complete at (smoothed, per second):
	// what a queue refusal's Retry-After is derived from.
	DrainPerS float64 `json:"drain_per_s"`
	// Short is how requests are weighed (weigh_body).
	Short ShortStatus `json:"short"`
}

// ShortStatus is what the weigher learned: requests asking for at most
// BelowTokens (half the mean asked) are short and may borrow high's
// reserve; InFlight of them hold a slot now, Waiting wait for one.
// Guarded: the reserve is held while not shedding too, because short
// requests keep it busy. Weighed counts the requests whose body told
// their length, Short those found short.
type ShortStatus struct {
	BelowTokens int64  `json:"below_tokens"`
	InFlight    int64  `json:"in_flight"`
	Waiting     int64  `json:"waiting"`
	Weighed     uint64 `json:"weighed"`
	Short       uint64 `json:"short"`
	Guarded     bool   `json:"reserve_guarded"`
}

// HighStatus is high priority: the slots of the limit only it may take while
// shedding, and how many of its requests are in flight.
type HighStatus struct {
	Reserve int    `json:"reserve"`
	InUse   int    `json:"in_use"`
	Passed  uint64 `json:"passed"`
	Shed    uint64 `json:"shed"`
}

// MediumStatus is medium priority: it takes a free slot outside high's
// reserve while shedding, or waits for one behind high.
type MediumStatus struct {
	Passed uint64 `json:"passed"`
	Shed   uint64 `json:"shed"`
}

// LowStatus is low priority, refused while shedding.
type LowStatus struct {
	Passed uint64 `json:"passed"`
	Shed   uint64 `json:"shed"`
}

// Status takes a snapshot of the throttle at now.
func (t *Throttle) Status(now time.Time) Status {
	st := Status{Name: t.name, Shedding: t.refusing(now), Shed: map[string]uint64{},
		EventsDropped: t.events.dropped.Load(), Restored: t.restored.Load()}
	if o := t.override.Load(); o != nil && t.overrideAt(now) != "" {
		st.Override = &OverrideStatus{State: o.State, Set: o.Set}
		if !o.Until.IsZero() {
			until := o.Until
			st.Override.Until = &until
			st.Override.ExpiresInS = levels.Round(until.Sub(now).Seconds())
		}
	}
	st.Levels = LevelsStatus{QPS: t.qps.Status(now), GPU: t.gpu.Status(now), Latency: t.latency.Status(now)}

	st.Circuit = t.circuit.Status(breaker.MonoOf(now))

	counts := t.Verdicts()
	passed := func(p priority.Priority) uint64 {
		var n uint64
		for v := priority.Pass; v.Admitted(); v++ {
			n += counts[p][v]
		}
		return n
	}
	shed := func(p priority.Priority) uint64 {
		var n uint64
		for v := priority.ShedReserveFull; int(v) < priority.Verdicts; v++ {
			n += counts[p][v]
		}
		return n
	}
	st.Priorities = PrioritiesStatus{
		High:   HighStatus{Reserve: t.gate.Reserve(), InUse: int(t.highIn.Load()), Passed: passed(priority.High), Shed: shed(priority.High)},
		Medium: MediumStatus{Passed: passed(priority.Medium), Shed: shed(priority.Medium)},
		Low:    LowStatus{Passed: passed(priority.Low), Shed: shed(priority.Low)},
	}
	queued, oldest := t.gate.Queues(int64(Now()))
	inShort, waitShort := t.gate.Shorts()
	st.Admission = AdmissionStatus{LimitStatus: t.limit.Status(), InFlight: t.gate.InFlight(),
		Queued:      map[string]int{"high": queued[priority.High], "medium": queued[priority.Medium], "low": queued[priority.Low]},
		OldestWaitS: levels.Round(oldest.Seconds()), DrainPerS: levels.Round(math.Float64frombits(t.drain.Load())),
		Short: ShortStatus{BelowTokens: t.weigher.below.Load(), InFlight: inShort, Waiting: waitShort, Weighed: t.weigher.count.Load(),
			Short: t.weigher.shorts.Load(), Guarded: t.gate.Guarding()}}
	st.Upstream = t.upstreamStatus(now)
	st.Upstreams = t.pool.Status(now)
	if n, ok := t.pool.Limit(); ok {
		// The pool's members set the limit: their sum stands for the
		// throttle's own, which only watches.
		st.Admission.Limit, st.Admission.Driver = n, "the sum of the pool's upstreams"
	}
	for c := range numCauses {
		st.Shed[causeNames[c]] = t.shedBy[c].Load()
	}
	return st
}

// Verdicts is the number of requests so far by priority and verdict.
func (t *Throttle) Verdicts() (n [priority.Count][priority.Verdicts]uint64) {
	for p := range t.verdicts {
		for v := range t.verdicts[p] {
			n[p][v] = t.verdicts[p][v].Load()
		}
	}
	return n
}
