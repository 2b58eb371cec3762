package pool

import (
	"sync"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/admission"
	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/config"
)

// cand is an upstream as a load balancer sees it.
type cand struct{ up bool }

func (c *cand) Available() bool { return c.up }

func cands(n int) []*cand {
	cs := make([]*cand, n)
	for i := range cs {
		cs[i] = &cand{up: true}
	}
	return cs
}

func keys(n int) []string {
	ks := make([]string, n)
	for i := range ks {
		ks[i] = string(rune('a' + i))
	}
	return ks
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// send starts a request on the member Pick chose and returns it with its
// ticket.
func send(t *testing.T, cs []*cand, ms []*Member, now time.Time) (*Member, breaker.Ticket) {
	t.Helper()
	i, tk := Pick(cs, ms, breaker.MonoOf(now), true)
	if i < 0 {
		t.Fatal("nothing picked")
	}
	ms[i].Start(0)
	return ms[i], tk
}

func TestPickMostRoom(t *testing.T) {
	p := New(admission.Config{Limit: 4}, breaker.CircuitConfig{}, nil)
	ms := p.Hold(keys(3))
	cs := cands(3)
	ms[0].inflight.Store(3) // room 1
	ms[1].inflight.Store(1) // room 3
	ms[2].inflight.Store(2) // room 2
	for range 20 {
		if i, _ := Pick(cs, ms, breaker.MonoOf(t0), true); i != 1 {
			t.Fatalf("picked %d, want 1, the most room", i)
		}
	}
	// Ties are broken at random: each of two gets a fair share.
	ms[2].inflight.Store(1)
	var got [3]int
	for range 1000 {
		i, _ := Pick(cs, ms, breaker.MonoOf(t0), true)
		got[i]++
	}
	if got[0] != 0 || got[1] < 400 || got[2] < 400 {
		t.Fatalf("ties split %v, want about 500 each to 1 and 2", got)
	}
}

// Among equals, one that is not available is never picked, and the
// others still split evenly: the one pass that asks only its winner
// falls back to asking every candidate.
func TestPickTiesSkipTheUnavailable(t *testing.T) {
	p := New(admission.Config{Limit: 4}, breaker.CircuitConfig{}, nil)
	ms := p.Hold(keys(3))
	cs := cands(3)
	cs[0].up = false
	var got [3]int
	for range 1000 {
		i, _ := Pick(cs, ms, breaker.MonoOf(t0), true)
		got[i]++
	}
	if got[0] != 0 || got[1] < 400 || got[2] < 400 {
		t.Fatalf("ties split %v, want none to 0 (unavailable), about 500 each to 1 and 2", got)
	}
}

func TestPickRespectsAvailable(t *testing.T) {
	p := New(admission.Config{Limit: 4}, breaker.CircuitConfig{}, nil)
	ms := p.Hold(keys(3))
	cs := cands(3)
	ms[0].inflight.Store(3)
	ms[2].inflight.Store(3)
	cs[1].up = false // the most room, but its health check failed
	for range 20 {
		if i, _ := Pick(cs, ms, breaker.MonoOf(t0), true); i == 1 {
			t.Fatal("picked an upstream that is not available")
		}
	}
	cs[0].up, cs[2].up = false, false
	if i, _ := Pick(cs, ms, breaker.MonoOf(t0), true); i != -1 {
		t.Fatalf("picked %d with none available, want -1", i)
	}
	// Beyond MaxMembers an upstream has no member and is never picked.
	cs[1].up = true
	ms[1] = nil
	if i, _ := Pick(cs, ms, breaker.MonoOf(t0), true); i != -1 {
		t.Fatalf("picked %d, an upstream without a member", i)
	}
}

// server is an upstream with slots batch slots: beyond them, requests
// queue, each place costing service/slots before its first byte.
type server struct {
	slots   int
	prefill time.Duration
	service time.Duration
}

func (s server) ttfb(inflight int) time.Duration {
	return s.prefill + time.Duration(max(0, inflight-s.slots))*s.service/time.Duration(s.slots)
}

// load runs steps of 250 ms in which each member is sent one request
// more than its limit (its limit binds), all answered at its server's
// time to first byte for that many, and returns the limits after.
func load(p *Pool, ms []*Member, srv []server, now *time.Time, steps int) []int {
	for range steps {
		*now = now.Add(250 * time.Millisecond)
		for i, m := range ms {
			n := int(m.lim.Load()) + 1
			tk, _, _ := m.circuit.Allow(breaker.MonoOf(*now))
			for range n {
				m.Start(0)
			}
			for range n {
				m.FirstByte(0, srv[i].ttfb(n))
				m.Finish(0, tk, Served, breaker.MonoOf(*now), true)
			}
		}
		p.Step(Signal{Now: *now}, nil)
	}
	out := make([]int, len(ms))
	for i, m := range ms {
		out[i] = int(m.lim.Load())
	}
	return out
}

func TestSlowMemberLimitFallsWhileTheOtherHolds(t *testing.T) {
	p := New(admission.Config{}, breaker.CircuitConfig{}, nil)
	ms := p.Hold(keys(2))
	srv := []server{{slots: 8, prefill: 100 * time.Millisecond, service: 2 * time.Second},
		{slots: 8, prefill: 100 * time.Millisecond, service: 2 * time.Second}}
	now := t0
	before := load(p, ms, srv, &now, 120)
	if before[0] < 6 || before[1] < 6 {
		t.Fatalf("limits %v after learning two servers of 8 slots, want at least 6 each", before)
	}
	srv[1].slots = 2 // the second server loses most of its slots
	after := load(p, ms, srv, &now, 120)
	if after[1] > 2*srv[1].slots {
		t.Fatalf("the slowed upstream's limit went %d → %d, want at most twice its %d slots", before[1], after[1], srv[1].slots)
	}
	if after[0] < before[0]*8/10 {
		t.Fatalf("the healthy upstream's limit went %d → %d, want it held", before[0], after[0])
	}
	if n, ok := p.Limit(); !ok || n != after[0]+after[1] {
		t.Fatalf("pool limit %d (%v), want the sum %d", n, ok, after[0]+after[1])
	}
}

func TestFailingMemberLeavesAndReturnsByProbes(t *testing.T) {
	cc := breaker.CircuitConfig{MinRequests: 4, ErrorRatio: 0.5, OpenFor: config.Duration(time.Second)}
	p := New(admission.Config{Limit: 4}, cc, nil)
	ms := p.Hold(keys(2))
	cs := cands(2)
	now := t0
	// The second upstream fails every request sent to it.
	for range 20 {
		now = now.Add(10 * time.Millisecond)
		m, tk := send(t, cs, ms, now)
		r := Served
		if m == ms[1] {
			r = Failed
		}
		m.Finish(0, tk, r, breaker.MonoOf(now), r == Served)
	}
	if st := ms[1].circuit.State(); st != breaker.Open {
		t.Fatalf("the failing upstream's circuit is %v, want open", st)
	}
	if st := ms[0].circuit.State(); st != breaker.Closed {
		t.Fatalf("the healthy upstream's circuit is %v, want closed", st)
	}
	if n, _, _ := p.Step(Signal{Now: now}, nil); n != 4 {
		t.Fatalf("pool limit %d with one upstream open, want the other's 4", n)
	}
	// It has left the pool: everything goes to the other, even with more
	// room on it.
	ms[0].inflight.Store(3)
	for range 10 {
		if i, _ := Pick(cs, ms, breaker.MonoOf(now), true); i != 0 {
			t.Fatalf("picked %d while its circuit is open", i)
		}
	}
	ms[0].inflight.Store(0)
	// Once open_for has passed, a request that will be finished probes it.
	now = now.Add(time.Second)
	if i, _ := Pick(cs, ms, breaker.MonoOf(now), false); i != 0 {
		t.Fatal("a request nobody finishes was sent as a probe")
	}
	i, tk := Pick(cs, ms, breaker.MonoOf(now), true)
	if i != 1 || !tk.Probe() {
		t.Fatalf("picked %d (probe %v) once its probe was due, want 1 with a probe", i, tk.Probe())
	}
	ms[1].Start(0)
	var changes []Change
	p.Step(Signal{Now: now}, func(c Change) { changes = append(changes, c) })
	if len(changes) != 1 || changes[0].Key != "b" || changes[0].To != breaker.HalfOpen {
		t.Fatalf("changes %+v, want b to half-open", changes)
	}
	// While the probe is out, nobody else goes there.
	if i, _ := Pick(cs, ms, breaker.MonoOf(now), true); i != 0 {
		t.Fatalf("picked %d while its probe is out", i)
	}
	ms[1].FirstByte(0, 50*time.Millisecond)
	ms[1].Finish(0, tk, Served, breaker.MonoOf(now), true)
	if st := ms[1].circuit.State(); st != breaker.Closed {
		t.Fatalf("after its probe succeeded: %v, want closed", st)
	}
	ms[0].inflight.Store(3)
	if i, _ := Pick(cs, ms, breaker.MonoOf(now), true); i != 1 {
		t.Fatalf("picked %d, want the upstream that came back (more room)", i)
	}
	if n, _, _ := p.Step(Signal{Now: now}, nil); n != 8 {
		t.Fatalf("pool limit %d once both serve, want 8", n)
	}
}

func TestFullAnswerLowersOnlyThatMember(t *testing.T) {
	p := New(admission.Config{Initial: 10}, breaker.CircuitConfig{}, nil)
	ms := p.Hold(keys(2))
	now := t0.Add(250 * time.Millisecond)
	for _, m := range ms {
		for range 6 {
			m.Start(0)
		}
	}
	tk, _, _ := ms[1].circuit.Allow(breaker.MonoOf(now))
	ms[1].Finish(0, tk, Full, breaker.MonoOf(now), false) // 5 others in flight
	p.Step(Signal{Now: now}, nil)
	if a, b := ms[0].lim.Load(), ms[1].lim.Load(); a != 10 || b != 5 {
		t.Fatalf("limits %d and %d, want 10 (untouched) and 5 (what the full one took)", a, b)
	}
	if st := ms[1].circuit.Status(breaker.MonoOf(now)); st.Requests != 0 {
		t.Fatalf("a full answer counted in the circuit: %+v", st)
	}
}

func TestMembersOutliveAReloadAndAreForgottenLater(t *testing.T) {
	p := New(admission.Config{Limit: 3}, breaker.CircuitConfig{}, nil)
	old := p.Hold([]string{"a", "b"})
	a := old[0]
	// A reload: the new config holds a and c, then the old one lets go.
	cur := p.Hold([]string{"a", "c"})
	p.Release(old)
	if cur[0] != a {
		t.Fatal("a reload made a new member for an upstream the pool had")
	}
	now := t0
	p.Step(Signal{Now: now}, nil)
	now = now.Add(ForgetAfter - time.Second)
	p.Step(Signal{Now: now}, nil)
	if got := len(p.Status(now)); got != 3 {
		t.Fatalf("%d members before ForgetAfter, want 3", got)
	}
	now = now.Add(time.Second)
	p.Step(Signal{Now: now}, nil)
	st := p.Status(now)
	if len(st) != 2 || st[0].Upstream != "a" || st[1].Upstream != "c" {
		t.Fatalf("members %+v after ForgetAfter, want a and c (b dropped)", st)
	}
	if again := p.Hold([]string{"b"}); again[0] == old[1] {
		t.Fatal("a dropped member came back with its old state")
	}
}

func TestPickAllocatesNothing(t *testing.T) {
	p := New(admission.Config{}, breaker.CircuitConfig{}, nil)
	ms := p.Hold(keys(8))
	cs := cands(8)
	if n := testing.AllocsPerRun(100, func() {
		i, tk := Pick(cs, ms, breaker.MonoOf(t0), true)
		ms[i].Start(0)
		ms[i].Finish(0, tk, Served, 0, false)
	}); n != 0 {
		t.Fatalf("a pick allocates %v times", n)
	}
}

// BenchmarkPick8 is a pick among 8 upstreams, with its Start and Finish.
func BenchmarkPick8(b *testing.B) {
	p := New(admission.Config{}, breaker.CircuitConfig{}, nil)
	ms := p.Hold(keys(8))
	cs := cands(8)
	b.ReportAllocs()
	for b.Loop() {
		i, tk := Pick(cs, ms, breaker.MonoOf(t0), true)
		ms[i].Start(0)
		ms[i].Finish(0, tk, Served, 0, false)
	}
}

// Forget starts every limit over; Close brings every upstream back.
func TestForgetAndClose(t *testing.T) {
	p := New(admission.Config{Initial: 4}, breaker.CircuitConfig{MinRequests: 1}, nil)
	ms := p.Hold(keys(1))
	m := ms[0]
	m.limit.SetConfig(admission.Config{Limit: 9})
	m.limit.SetConfig(admission.Config{Initial: 4})
	m.lim.Store(9)
	m.Start(0)
	_, tk := Pick(cands(1), ms, breaker.MonoOf(t0), true)
	m.Finish(0, tk, Failed, breaker.MonoOf(t0), false)
	if m.closed.Load() {
		t.Fatal("a failure at min_requests 1 left the circuit closed")
	}
	p.Forget()
	p.Close(t0)
	if m.lim.Load() != 4 || !m.closed.Load() {
		t.Fatalf("after Forget and Close: limit %d, closed %v; want 4 and true", m.lim.Load(), m.closed.Load())
	}
}

// Picks, starts and finishes from many goroutines while the sampler
// steps: every request counted once, nothing left in flight.
func TestConcurrentPicksAndSteps(t *testing.T) {
	p := New(admission.Config{}, breaker.CircuitConfig{MinRequests: 1000}, nil)
	ms := p.Hold(keys(4))
	cs := cands(4)
	done := make(chan struct{})
	go func() {
		defer close(done)
		now := t0
		for range 200 {
			now = now.Add(250 * time.Millisecond)
			p.Step(Signal{Now: now}, nil)
		}
	}()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for j := range 1000 {
				i, tk := Pick(cs, ms, breaker.MonoOf(t0), true)
				ms[i].Start(uint32(g))
				fb := j%3 != 0
				if fb {
					ms[i].FirstByte(uint32(g), time.Millisecond)
				}
				ms[i].Finish(uint32(g), tk, Result(j%4), breaker.MonoOf(t0), fb)
			}
		})
	}
	wg.Wait()
	<-done
	var n uint64
	for _, st := range p.Status(t0) {
		if st.InFlight != 0 {
			t.Fatalf("%s: %d left in flight", st.Upstream, st.InFlight)
		}
		n += st.Requests
	}
	if n != 4000 {
		t.Fatalf("%d requests counted, want 4000", n)
	}
}
