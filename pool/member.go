// Package pool learns, for each upstream of a load-balanced pool, how many
// requests it takes and whether it is fit to serve: a concurrency limit
// (admission.Limit) fed by that upstream's own times to first byte and
// its own answers that it is full, its requests in flight, and its own
// circuit (breaker.Circuit) on failures, so that one sick upstream leaves
// the pool and comes back by probes while the others serve. Pick sends a
// request to the upstream with the most headroom. See the README, "A pool
// of upstreams".
//
// Nothing here knows about Caddy or HTTP. The request path (Pick, and a
// Member's Start, FirstByte and Finish) reads and bumps atomics and
// sharded counters only; the sampler (Pool.Step) learns and publishes.
package pool

import (
	"math"
	"sync/atomic"
	"time"

	"github.com/ai-guardian/adaptivethrottle/admission"
	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/internal/shard"
	"github.com/ai-guardian/adaptivethrottle/levels/gpu"
)

// Member is one upstream of a pool, named by its key (the address it is
// dialled at).
//
// Invariants: in flight = started − finished ≥ 0, each Start matched by
// exactly one Finish; every request started is counted once in answered
// (a first byte, or a Finish without one) after its Start; lim is the
// limit as the sampler last published it, the one writer; closed is
// whether the circuit was closed when last looked at: after every call
// that can change its state (Finish, Pick's probe, Step), so that a pick
// reads it beside lim and in flight.
type Member struct {
	key     string
	limit   *admission.Limit
	circuit *breaker.Circuit

	// Request path: read by every pick.
	lim      atomic.Int64 // the limit, as last published by Step
	inflight atomic.Int64
	closed   atomic.Bool
	started  *shard.Counter // requests ever sent to it (admission.Signal.Started)
	fbSum    *shard.Counter // ns: their times to a successful first byte
	fbCount  *shard.Counter
	none     *shard.Counter            // requests finished without a successful first byte
	busy     atomic.Uint64             // requests sent while it had no room (limit − in flight ≤ 0)
	full     atomic.Uint64             // its answers that it is full (503, 429, 529)
	least    atomic.Int64              // the fewest others in flight at one of them since the last step
	refs     atomic.Int64              // views of a selection policy that hold it (Pool.Hold)
	gauge    atomic.Pointer[gpu.Level] // its own saturation gauge; nil: none (Pool.regauge)
	gaugeErr atomic.Pointer[string]    // why its gauge could not be opened; nil: it was, or none is asked for

	// Sampler only.
	last      [4]uint64 // fbSum, fbCount, busy, full at the last step
	state     breaker.State
	idleSince time.Time // since when nothing holds it and nothing is in flight (zero: now something does)
}

func newMember(key string, cfg admission.Config, cc breaker.CircuitConfig) *Member {
	m := &Member{key: key, limit: admission.NewLimit(cfg), circuit: breaker.NewCircuit(cc),
		started: shard.NewCounter(), fbSum: shard.NewCounter(), fbCount: shard.NewCounter(), none: shard.NewCounter()}
	m.lim.Store(int64(m.limit.Value()))
	m.least.Store(math.MaxInt64)
	m.closed.Store(true)
	return m
}

// look publishes whether the member's circuit is closed.
func (m *Member) look() { m.closed.Store(m.circuit.State() == breaker.Closed) }

// Key is the member's key: the upstream's dial address.
func (m *Member) Key() string { return m.key }

// Room is the member's headroom: its limit less its requests in flight
// (negative when it holds more than its limit).
func (m *Member) Room() int64 { return m.lim.Load() - m.inflight.Load() }

// InFlight is the requests the member holds now.
func (m *Member) InFlight() int64 { return m.inflight.Load() }

// Start counts one request sent to the member, on shard sh. Each Start
// must be matched by one Finish.
func (m *Member) Start(sh uint32) {
	if m.inflight.Add(1) > m.lim.Load() {
		m.busy.Add(1) // it had no room: its limit binds
	}
	m.started.Add(sh)
}

// FirstByte counts a successful first byte of a started request, d after
// it was sent; at most once per request, before its Finish.
func (m *Member) FirstByte(sh uint32, d time.Duration) {
	m.fbSum.AddN(sh, uint64(max(0, d)))
	m.fbCount.Add(sh)
}

// Result is how a request sent to a member ended.
type Result uint8

const (
	// Served: an answer that is no failure.
	Served Result = iota
	// Failed: a 5xx, no answer, or an attempt the load balancer gave up
	// to try another upstream. It counts against the member's circuit.
	Failed
	// Full: the upstream answered that it is full (503, 429, 529): it is
	// saturated, not broken. Its limit comes down to what it took; its
	// circuit does not count it.
	Full
	// Gone: the client went away. It says nothing about the upstream.
	Gone
)

// Finish ends a started request on shard sh: tk is the circuit's ticket
// from Pick, end when it ended (breaker.Mono), firstByte whether
// FirstByte counted it.
func (m *Member) Finish(sh uint32, tk breaker.Ticket, r Result, end breaker.Mono, firstByte bool) {
	switch r {
	case Full:
		others := max(0, m.inflight.Load()-1)
		for {
			v := m.least.Load()
			if others >= v || m.least.CompareAndSwap(v, others) {
				break
			}
		}
		m.full.Add(1)
		m.circuit.Cancel(tk)
	case Gone:
		m.circuit.Cancel(tk)
	default:
		m.circuit.Done(end, tk, r == Failed, sh)
		if r == Failed || tk.Probe() {
			m.look()
		}
	}
	if !firstByte {
		m.none.Add(sh)
	}
	m.inflight.Add(-1)
}

// Signal is what the pool's sampler hands every member each step besides
// its own counts.
type Signal struct {
	Now time.Time
	// Pressure: a level that says the upstreams are hurting (GPU) is
	// tripped. A member's own circuit that is not closed, or its own
	// gauge tripped, is its own pressure.
	Pressure bool
	// Waiting: requests wait at the gate for a slot of the pool's limit.
	Waiting bool
}

// step learns from the member's counts since the last step and publishes
// its limit. It returns the circuit's state. While its gauge is tripped
// (the upstream says it is saturated), that is its pressure, as the GPU
// level's is the single limit's: the limit is cut and does not grow.
func (m *Member) step(s Signal, tripped bool) (int, breaker.State) {
	m.circuit.Poll(breaker.MonoOf(s.Now)) // Open → Half-Open when due
	m.look()
	st := m.circuit.State()
	started := m.started.Load() // before answered: the gap is never overstated
	now := [4]uint64{m.fbSum.Load(), m.fbCount.Load(), m.busy.Load(), m.full.Load()}
	answered := now[1] + m.none.Load()
	inflight := m.inflight.Load()
	sig := admission.Signal{Now: s.Now, TTFB: time.Duration(now[0] - m.last[0]), Count: now[1] - m.last[1],
		InFlight: inflight, Waiting: now[2] != m.last[2] || (s.Waiting && inflight >= m.lim.Load()),
		Started: started, Answered: answered, Pressure: s.Pressure || st != breaker.Closed || tripped,
		Full: now[3] - m.last[3]}
	least := m.least.Swap(math.MaxInt64)
	if sig.Full > 0 {
		sig.FullInFlight = least
	}
	m.last = now
	n := m.limit.Step(sig)
	m.lim.Store(int64(n))
	return n, st
}
