package pool

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/ai-guardian/adaptivethrottle/admission"
	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/levels"
	"github.com/ai-guardian/adaptivethrottle/levels/gpu"
)

// MaxMembers bounds a pool: an upstream seen beyond it gets no member
// (Hold returns nil for it) and is never picked.
const MaxMembers = 256

// ForgetAfter is how long a member that no selection policy holds and
// that has nothing in flight keeps what it learned, so that a reload that
// drops an upstream and brings it back within it finds its limit again.
const ForgetAfter = 10 * time.Minute

// Pool is the members of one named throttle's pool, by key.
//
// Invariants: members holds at most MaxMembers; a member is removed only
// while nothing holds it and nothing is in flight on it, after
// ForgetAfter; limit and serving are the sums Step last published; every
// member has a gauge exactly while gauge is set and the pool is not shut,
// and a removed member's gauge is closed.
type Pool struct {
	mu      sync.Mutex
	members map[string]*Member
	cfg     admission.Config
	circuit breaker.CircuitConfig
	gauge   *gpu.Upstream // each upstream's own gauge; nil: none
	shut    bool

	// Sampler only (and Status, under mu).
	limit, serving int
}

// New returns an empty pool whose members learn with cfg, judge failures
// with cc, and read their own gauge with g (nil: none; see
// gpu.Upstream). g must be valid.
func New(cfg admission.Config, cc breaker.CircuitConfig, g *gpu.Upstream) *Pool {
	return &Pool{members: map[string]*Member{}, cfg: cfg, circuit: cc, gauge: g}
}

// SetConfig applies a reloaded config to every member, keeping what they
// learned; g must be valid. A member's gauge that fails to open again is
// an error: it keeps reading as it did.
func (p *Pool) SetConfig(cfg admission.Config, cc breaker.CircuitConfig, g *gpu.Upstream) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cfg, p.circuit, p.gauge = cfg, cc, g
	var errs []error
	for _, m := range p.members {
		m.limit.SetConfig(cfg)
		m.circuit.SetConfig(cc)
		errs = append(errs, p.regauge(m))
	}
	return errors.Join(errs...)
}

// regauge gives m the gauge the pool's config asks for: opened, set
// anew, or closed. A gauge that cannot be opened (an address that makes
// no URL, such as one with a placeholder) is kept as an error for status
// and judges nothing. p.mu is held.
func (p *Pool) regauge(m *Member) error {
	old := m.gauge.Load()
	switch {
	case p.gauge == nil || p.shut:
		m.gaugeErr.Store(nil)
		if old != nil {
			m.gauge.Store(nil)
			return old.Close()
		}
	case old == nil:
		l, err := gpu.New(p.gauge.For(m.key))
		if err != nil {
			err = fmt.Errorf("upstream %s: %w", m.key, err)
			msg := err.Error()
			m.gaugeErr.Store(&msg)
			return err
		}
		m.gaugeErr.Store(nil)
		m.gauge.Store(l)
	default:
		if _, err := old.SetConfig(p.gauge.For(m.key)); err != nil {
			return fmt.Errorf("upstream %s: %w", m.key, err)
		}
	}
	return nil
}

// Shut closes every member's gauge, for good: the throttle is closing.
func (p *Pool) Shut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.shut = true
	for _, m := range p.members {
		_ = p.regauge(m)
	}
}

// Hold returns the members of keys, in their order, made as needed, each
// held once more until Release; nil for a key beyond MaxMembers.
func (p *Pool) Hold(keys []string) []*Member {
	p.mu.Lock()
	defer p.mu.Unlock()
	ms := make([]*Member, len(keys))
	for i, k := range keys {
		m := p.members[k]
		if m == nil && len(p.members) < MaxMembers {
			m = newMember(k, p.cfg, p.circuit)
			_ = p.regauge(m) // an error shows in its status
			p.members[k] = m
		}
		if m != nil {
			m.refs.Add(1)
		}
		ms[i] = m
	}
	return ms
}

// Release gives back what Hold returned.
func (p *Pool) Release(ms []*Member) {
	for _, m := range ms {
		if m != nil {
			m.refs.Add(-1)
		}
	}
}

// Forget has every member start learning its limit over.
func (p *Pool) Forget() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.members {
		m.limit.Forget()
		m.lim.Store(int64(m.limit.Value()))
	}
}

// Close closes every member's circuit at now: each is back in the pool.
func (p *Pool) Close(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.members {
		m.circuit.Reset(breaker.MonoOf(now))
		m.look()
	}
}

// Change is a member's circuit changing state, or its gauge tripping or
// recovering, for the log.
type Change struct {
	Key string
	// From and To: its circuit's states; equal when Gauge is set.
	From, To breaker.State
	Reason   string
	// Gauge is its gauge's trip or recovery; nil for a circuit's change.
	Gauge *breaker.Transition
}

// Step is the sampler's step: every member's gauge, if any, is judged,
// every member learns from its counts and publishes its limit, and
// members nothing has held nor used for ForgetAfter are dropped. It
// returns the pool's limit, the sum of what its members can take (a
// closed member its limit, a half-open one its probes, an open one
// nothing; at least 1), and the slots of it that serve
// (admission.Limit.Serving); ok is false while the pool has no member.
// Each member's circuit that changed state since the last step, and each
// gauge that tripped or recovered, is passed to changed.
func (p *Pool) Step(s Signal, changed func(Change)) (limit, serving int, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, m := range p.members {
		tripped := false
		if g := m.gauge.Load(); g != nil {
			g.Sample(s.Now, levels.Inputs{InFlight: m.inflight.Load()}, func(tr breaker.Transition) {
				if changed != nil {
					changed(Change{Key: k, From: m.state, To: m.state, Reason: tr.Reason, Gauge: &tr})
				}
			})
			tripped = g.Hysteresis().Tripped()
		}
		n, st := m.step(s, tripped)
		if st != m.state {
			if changed != nil {
				changed(Change{Key: k, From: m.state, To: st, Reason: m.circuit.Status(breaker.MonoOf(s.Now)).LastReason})
			}
			m.state = st
		}
		switch st {
		case breaker.Closed:
			limit += n
			serving += m.limit.Serving()
		case breaker.HalfOpen:
			limit += max(1, p.circuit.Probes)
			serving += max(1, p.circuit.Probes)
		}
		switch {
		case m.refs.Load() > 0 || m.inflight.Load() > 0:
			m.idleSince = time.Time{}
		case m.idleSince.IsZero():
			m.idleSince = s.Now
		case s.Now.Sub(m.idleSince) >= ForgetAfter:
			if g := m.gauge.Swap(nil); g != nil {
				_ = g.Close()
			}
			delete(p.members, k)
		}
	}
	if len(p.members) == 0 {
		p.limit, p.serving = 0, 0
		return 0, 0, false
	}
	p.limit, p.serving = max(1, limit), max(1, serving)
	return p.limit, p.serving, true
}

// Limit is the pool's limit as Step last published it; ok is false while
// the pool has no member or was never stepped.
func (p *Pool) Limit() (int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.limit, p.limit > 0
}

// MemberStatus is one upstream as status shows it.
type MemberStatus struct {
	Upstream string `json:"upstream"`
	// State is its circuit's: closed (it serves), open (it has left the
	// pool until its probe is due), half-open (a probe is being sent).
	State    string `json:"state"`
	InFlight int64  `json:"in_flight"`
	// Room is its limit less its requests in flight.
	Room int64 `json:"room"`
	admission.LimitStatus
	Circuit CircuitStatus `json:"circuit"`
	// Gauge is its own saturation gauge (the upstream_gauge block), or,
	// unavailable, why it could not be opened; nil without one.
	Gauge *gpu.Status `json:"gauge,omitempty"`
	// FullAnswers counts its answers that it is full (503, 429, 529).
	FullAnswers uint64 `json:"full_answers"`
	Requests    uint64 `json:"requests"`
}

// CircuitStatus is a member's circuit.
type CircuitStatus struct {
	Opens      uint64  `json:"opens"`
	RetryInS   float64 `json:"retry_in_s"`
	Failures   uint64  `json:"window_failures"`
	Requests   uint64  `json:"window_requests"`
	LastReason string  `json:"last_reason"`
}

// Status returns every member's status, by key.
func (p *Pool) Status(now time.Time) []MemberStatus {
	p.mu.Lock()
	ms := make([]*Member, 0, len(p.members))
	for _, m := range p.members {
		ms = append(ms, m)
	}
	p.mu.Unlock()
	slices.SortFunc(ms, func(a, b *Member) int { return cmp.Compare(a.key, b.key) })
	out := make([]MemberStatus, len(ms))
	for i, m := range ms {
		c := m.circuit.Status(breaker.MonoOf(now))
		out[i] = MemberStatus{Upstream: m.key, State: c.State.String(), InFlight: m.inflight.Load(), Room: m.Room(),
			LimitStatus: m.limit.Status(), FullAnswers: m.full.Load(), Requests: m.started.Load(),
			Circuit: CircuitStatus{Opens: c.Opens, RetryInS: levels.Round(c.RetryIn.Seconds()), Failures: c.Failures,
				Requests: c.Requests, LastReason: c.LastReason}}
		if g := m.gauge.Load(); g != nil {
			gs := g.Status(now)
			out[i].Gauge = &gs
		} else if e := m.gaugeErr.Load(); e != nil {
			out[i].Gauge = &gpu.Status{Source: "prometheus", Reason: *e, OnError: "allow", Devices: []gpu.DeviceStatus{}}
		}
	}
	return out
}

// Candidate is an upstream as the load balancer sees it: whether it may
// be sent a request now (its health checks, its own cap on requests).
type Candidate interface{ Available() bool }

// Pick chooses among cands, members[i] being cands[i]'s member (nil:
// none, never picked), where to send a request at now, and returns its
// index (−1: none is available) and the member's circuit ticket. An
// unavailable candidate and a member whose circuit is open are passed
// over. When probe is true (the caller will Start and Finish the
// request), a member whose circuit grants a half-open probe is picked at
// once: probes are how a member that left comes back. Otherwise the
// available member with the most room wins, ties broken at random
// (reservoir sampling: each of k equals wins with chance 1/k, from one
// random draw per pick stirred by xorshift).
//
// While every member's circuit is closed, one pass reads the rooms and
// asks only the winner whether it is available; when it is not, or a
// circuit is not closed, pickScan asks every candidate. The winner is
// the same: each available member of the most room still wins with
// chance 1/k.
//
// It takes no lock and allocates nothing: atomic operations only.
func Pick[C Candidate](cands []C, members []*Member, now breaker.Mono, probe bool) (int, breaker.Ticket) {
	best, ties, room := -1, uint64(0), int64(0)
	x := rand.Uint64() | 1 // xorshift's state: never 0
	for i, m := range members[:len(cands)] {
		if m == nil {
			continue
		}
		if !m.closed.Load() {
			if probe {
				return pickScan(cands, members, now, probe)
			}
			continue
		}
		best, room, ties, x = better(i, m.Room(), best, room, ties, x)
	}
	if best < 0 {
		return -1, breaker.Ticket{}
	}
	if !cands[best].Available() {
		return pickScan(cands, members, now, probe)
	}
	tk, _, _ := members[best].circuit.Allow(now) // closed: the normal ticket
	return best, tk
}

// better is one step of the search for the most room: candidate i with
// room r against the best so far (−1: none), its room and the ties at it,
// with xorshift state x. It returns them updated.
func better(i int, r int64, best int, room int64, ties, x uint64) (int, int64, uint64, uint64) {
	switch {
	case best < 0 || r > room:
		return i, r, 1, x
	case r == room:
		ties++
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		// i wins when a uniform draw below ties is 0, without a branch: a
		// branch on a random outcome is mispredicted about once a pick
		// among 8 equals.
		draw := (x >> 32) * ties >> 32 // below 2³²
		won := -int((draw - 1) >> 63)  // all ones when the draw is 0, else 0
		best ^= (best ^ i) & won
	}
	return best, room, ties, x
}

// pickScan is Pick asking every candidate whether it is available.
func pickScan[C Candidate](cands []C, members []*Member, now breaker.Mono, probe bool) (int, breaker.Ticket) {
	best, ties, room := -1, uint64(0), int64(0)
	x := rand.Uint64() | 1
	for i, c := range cands {
		m := members[i]
		if m == nil || !c.Available() {
			continue
		}
		if !m.closed.Load() {
			if probe {
				tk, ok, _ := m.circuit.Allow(now)
				m.look()
				if ok {
					return i, tk
				}
			}
			continue
		}
		best, room, ties, x = better(i, m.Room(), best, room, ties, x)
	}
	if best < 0 {
		return -1, breaker.Ticket{}
	}
	tk, _, _ := members[best].circuit.Allow(now) // closed: the normal ticket
	return best, tk
}
