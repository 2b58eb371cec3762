package admission

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/priority"
)

// waitQueued spins until the gate has n waiters: a precondition of the
// test, never what it asserts.
func waitQueued(t *testing.T, g *Gate, n int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for g.Waiting() != n {
		if time.Now().After(deadline) {
			t.Fatalf("waiting = %d, want %d", g.Waiting(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestGateFreeSlotsThenFull(t *testing.T) {
	g := NewGate(2, 10)
	if a, b := g.TryAcquire(priority.Low, false), g.TryAcquire(priority.Low, false); !a || !b {
		t.Fatal("two free slots refused")
	}
	if g.TryAcquire(priority.High, false) {
		t.Fatal("a third slot granted at limit 2")
	}
	g.Release(false)
	if !g.TryAcquire(priority.Low, false) {
		t.Fatal("a released slot was not free")
	}
	if g.InFlight() != 2 {
		t.Fatalf("in flight %d, want 2", g.InFlight())
	}
}

// Every release goes to the oldest waiter of the highest priority.
func TestGateReleaseInPriorityOrder(t *testing.T) {
	g := NewGate(1, 10)
	if !g.TryAcquire(priority.Low, false) {
		t.Fatal("first slot refused")
	}
	order := make(chan string, 6)
	var wg sync.WaitGroup
	queue := func(p priority.Priority, name string, n int64) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := g.Wait(context.Background(), p, false, time.Minute, 0); r != Granted {
				order <- name + ":" + "not granted"
				return
			}
			order <- name
		}()
		waitQueued(t, g, n)
	}
	queue(priority.Low, "low1", 1)
	queue(priority.Medium, "medium1", 2)
	queue(priority.Low, "low2", 3)
	queue(priority.High, "high1", 4)
	queue(priority.Medium, "medium2", 5)
	queue(priority.High, "high2", 6)
	if g.TryAcquire(priority.High, false) {
		t.Fatal("the fast path jumped the queue")
	}
	want := []string{"high1", "high2", "medium1", "medium2", "low1", "low2"}
	for i, w := range want {
		g.Release(false)
		if got := <-order; got != w {
			t.Fatalf("release %d went to %s, want %s", i, got, w)
		}
		if g.InFlight() != 1 {
			t.Fatalf("in flight %d after a hand-off, want 1", g.InFlight())
		}
	}
	wg.Wait()
	g.Release(false)
	if g.InFlight() != 0 || g.Waiting() != 0 {
		t.Fatalf("in flight %d, waiting %d at the end", g.InFlight(), g.Waiting())
	}
}

func TestGateWaitExpires(t *testing.T) {
	g := NewGate(1, 10)
	g.TryAcquire(priority.Medium, false)
	if r := g.Wait(context.Background(), priority.Medium, false, 5*time.Millisecond, 0); r != Expired {
		t.Fatalf("wait = %v, want Expired", r)
	}
	if g.Waiting() != 0 || g.InFlight() != 1 {
		t.Fatalf("after expiry: waiting %d, in flight %d; want 0, 1", g.Waiting(), g.InFlight())
	}
	g.Release(false)
	if !g.TryAcquire(priority.Low, false) {
		t.Fatal("an expired waiter left its slot behind")
	}
}

// A client that goes away leaves the queue at once and holds nothing.
func TestGateCancelLeavesNoSlot(t *testing.T) {
	g := NewGate(1, 10)
	g.TryAcquire(priority.High, false)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan Result)
	go func() { done <- g.Wait(ctx, priority.High, false, time.Hour, 0) }()
	waitQueued(t, g, 1)
	cancel()
	if r := <-done; r != Gone {
		t.Fatalf("wait = %v, want Gone", r)
	}
	if g.Waiting() != 0 {
		t.Fatalf("waiting %d after a cancel", g.Waiting())
	}
	g.Release(false)
	if g.InFlight() != 0 {
		t.Fatalf("in flight %d: the cancelled waiter took a slot", g.InFlight())
	}
}

func TestGateQueueFull(t *testing.T) {
	g := NewGate(1, 1)
	g.TryAcquire(priority.Low, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go g.Wait(ctx, priority.Low, false, time.Hour, 0)
	waitQueued(t, g, 1)
	if r := g.Wait(context.Background(), priority.Low, false, time.Hour, 0); r != Full {
		t.Fatalf("wait on a full queue = %v, want Full", r)
	}
	// Each priority has its own queue.
	go g.Wait(ctx, priority.High, false, time.Hour, 0)
	waitQueued(t, g, 2)
}

// While shedding, the reserve is room only high priority may take, inside
// the limit; a request it holds back has not found the limit full.
func TestGateReserveInsideLimit(t *testing.T) {
	g := NewGate(4, 10)
	g.SetReserve(1)
	for i := range 3 {
		if !g.TryAcquire(priority.Medium, true) {
			t.Fatalf("medium slot %d refused", i)
		}
	}
	if g.TryAcquire(priority.Low, true) || g.TryAcquire(priority.Medium, true) {
		t.Fatal("medium or low took the reserve while shedding")
	}
	// Held back by the reserve, they found the limit with room: Fulls
	// counts only the takes that find every slot of it taken.
	if g.Fulls() != 0 {
		t.Fatalf("medium and low held back by the reserve: fulls %d, want 0", g.Fulls())
	}
	if !g.TryAcquire(priority.High, true) {
		t.Fatal("high was refused its reserve")
	}
	if g.TryAcquire(priority.High, true) || g.Fulls() != 1 {
		t.Fatalf("high took more than the limit, or was not counted finding it full (fulls %d)", g.Fulls())
	}
	g.Release(false)
	g.Release(false)
	// Not shedding: the reserve is everyone's.
	if a, b := g.TryAcquire(priority.Low, false), g.TryAcquire(priority.Low, false); !a || !b {
		t.Fatal("the reserve was kept while not shedding")
	}
}

// A waiting medium request is not handed the reserve while shedding; a
// high one is.
func TestGateHandOffRespectsReserve(t *testing.T) {
	g := NewGate(2, 10)
	g.SetReserve(1)
	g.SetShedding(true)
	g.TryAcquire(priority.High, true)
	g.TryAcquire(priority.High, true)
	got := make(chan priority.Priority, 2)
	go func() {
		if g.Wait(context.Background(), priority.Medium, false, time.Minute, 0) == Granted {
			got <- priority.Medium
		}
	}()
	waitQueued(t, g, 1)
	g.Release(false) // one taken: medium's room is 2 − 1 = 1, full
	select {
	case p := <-got:
		t.Fatalf("%v was handed the reserve", p)
	default:
	}
	go func() {
		if g.Wait(context.Background(), priority.High, false, time.Minute, 0) == Granted {
			got <- priority.High
		}
	}()
	if p := <-got; p != priority.High {
		t.Fatalf("the free reserve slot went to %v", p)
	}
	g.SetShedding(false) // the reserve is everyone's again: no slot free yet
	g.Release(false)
	if p := <-got; p != priority.Medium {
		t.Fatalf("the next slot went to %v", p)
	}
}

func TestGateLoweredLimitDrains(t *testing.T) {
	g := NewGate(3, 10)
	for range 3 {
		g.TryAcquire(priority.Low, false)
	}
	g.SetLimit(1)
	g.Release(false)
	if g.TryAcquire(priority.High, false) {
		t.Fatal("a slot was free at 2 in flight under limit 1")
	}
	g.Release(false)
	g.Release(false)
	if !g.TryAcquire(priority.High, false) {
		t.Fatal("no slot at 0 in flight")
	}
	// A raised limit hands its new room to waiters at once.
	done := make(chan Result)
	go func() { done <- g.Wait(context.Background(), priority.Low, false, time.Minute, 0) }()
	waitQueued(t, g, 1)
	g.SetLimit(2)
	if r := <-done; r != Granted {
		t.Fatalf("wait = %v after the limit rose", r)
	}
}

// A probe raises the limit by a slot and the reserve with it (the slot is
// for short and high requests): a long medium answer waiting for room is
// not handed the new slot, whatever the order of the two inside Set; a
// short one is. With the limit alone raised, it would be.
func TestGateSetRaisesLimitAndReserveTogether(t *testing.T) {
	g := NewGate(4, 10)
	g.Set(4, 1, true)
	for range 3 {
		g.TryAcquire(priority.Medium, false)
	}
	long := make(chan Result, 1)
	go func() { long <- g.Wait(context.Background(), priority.Medium, false, 50*time.Millisecond, 0) }()
	waitQueued(t, g, 1)
	g.Set(5, 2, true)
	if r := <-long; r != Expired {
		t.Fatalf("the long waiter: %v, want it left waiting until its wait ran out (the new slot is a probe)", r)
	}
	short := make(chan Result, 1)
	go func() { short <- g.Wait(context.Background(), priority.Medium, true, time.Minute, 0) }()
	if r := <-short; r != Granted {
		t.Fatalf("a short waiter: %v, want the free slot", r)
	}
	if g.Limit() != 5 || g.Reserve() != 2 || !g.Guarding() {
		t.Fatalf("limit %d, reserve %d, guard %v after Set(5, 2, true)", g.Limit(), g.Reserve(), g.Guarding())
	}
	g.Set(5, 0, false) // room again for the long ones
	if !g.TryAcquire(priority.Medium, false) {
		t.Fatal("reserve 0, 4 of 5 taken: a long request refused")
	}
}

// Under contention the limit holds and nothing leaks: every slot is given
// back, every waiter leaves.
func TestGateConcurrentNoLeak(t *testing.T) {
	const limit = 3
	g := NewGate(limit, 1000)
	var peak, cur atomic.Int64
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(i), 1))
			for range 200 {
				p := priority.Priority(r.IntN(3))
				ok := g.TryAcquire(p, false)
				if !ok {
					ctx, cancel := context.WithCancel(context.Background())
					if r.IntN(4) == 0 {
						cancel()
					}
					ok = g.Wait(ctx, p, false, time.Duration(r.IntN(200))*time.Microsecond, 0) == Granted
					cancel()
				}
				if !ok {
					continue
				}
				n := cur.Add(1)
				for {
					m := peak.Load()
					if n <= m || peak.CompareAndSwap(m, n) {
						break
					}
				}
				cur.Add(-1)
				g.Release(false)
			}
		}()
	}
	wg.Wait()
	if g.InFlight() != 0 || g.Waiting() != 0 {
		t.Fatalf("in flight %d, waiting %d after everyone finished", g.InFlight(), g.Waiting())
	}
	if peak.Load() > limit {
		t.Fatalf("%d held at once under limit %d", peak.Load(), limit)
	}
	if l, _ := g.Queues(0); l != [priority.Count]int{} {
		t.Fatalf("queues %v not empty", l)
	}
}

func TestGateQueuesAndOldest(t *testing.T) {
	g := NewGate(1, 10)
	g.TryAcquire(priority.Low, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go g.Wait(ctx, priority.Medium, false, time.Hour, 100)
	waitQueued(t, g, 1)
	go g.Wait(ctx, priority.Low, false, time.Hour, 300)
	waitQueued(t, g, 2)
	l, oldest := g.Queues(1100)
	if l != [priority.Count]int{priority.Low: 1, priority.Medium: 1} || oldest != 1000 {
		t.Fatalf("queues %v oldest %v; want low 1 medium 1, 1µs", l, oldest)
	}
}

func TestGateFastPathAllocatesNothing(t *testing.T) {
	g := NewGate(1, 10)
	if n := testing.AllocsPerRun(1000, func() {
		g.TryAcquire(priority.Medium, false)
		g.Release(false)
	}); n != 0 {
		t.Fatalf("TryAcquire+Release: %v allocs", n)
	}
	g.Wait(context.Background(), priority.Low, false, time.Second, 0) // warm the pool
	g.Release(false)
	if n := testing.AllocsPerRun(1000, func() {
		g.Wait(context.Background(), priority.Low, false, time.Second, 0)
		g.Release(false)
	}); n != 0 {
		t.Fatalf("a wait granted at once: %v allocs", n)
	}
}

func BenchmarkGateTryAcquireRelease(b *testing.B) {
	g := NewGate(1<<20, 10)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			g.TryAcquire(priority.Medium, false)
			g.Release(false)
		}
	})
}

// While guarding, the reserve is lent to short requests only: a long one
// (or one never weighed) waits for the slots outside it, a short one of a
// lower priority takes the reserve past it, and shorts counts them.
func TestGateLendsTheReserveToShortRequests(t *testing.T) {
	g := NewGate(4, 10)
	g.SetReserve(1)
	g.SetGuard(true)
	for range 3 {
		if !g.TryAcquire(priority.Medium, false) {
			t.Fatal("medium refused a slot outside the reserve")
		}
	}
	if g.TryAcquire(priority.Medium, false) {
		t.Fatal("a request not known short took the reserve while guarding")
	}
	long := make(chan Result, 1)
	go func() { long <- g.Wait(context.Background(), priority.Medium, false, time.Minute, 0) }()
	waitQueued(t, g, 1)
	short := make(chan Result, 1)
	go func() { short <- g.Wait(context.Background(), priority.Low, true, time.Minute, 0) }()
	if r := <-short; r != Granted {
		t.Fatalf("a short low request behind a long medium one: %v, want the reserve", r)
	}
	if in, waiting := g.Shorts(); in != 1 || waiting != 0 || g.InFlight() != 4 {
		t.Fatalf("shorts %d (%d waiting), in flight %d; want 1 (0), 4", in, waiting, g.InFlight())
	}
	// The short one gives the reserve back: the long one may not take it.
	g.Release(true) // hands off before it returns: a grant would show at once
	if g.InFlight() != 3 || g.Waiting() != 1 {
		t.Fatalf("in flight %d, waiting %d after the short slot came back: the long request was handed the reserve", g.InFlight(), g.Waiting())
	}
	// A slot outside the reserve frees: it goes to the long one.
	g.Release(false)
	if r := <-long; r != Granted {
		t.Fatalf("long: %v", r)
	}
	// High may take the reserve whatever it is.
	if !g.TryAcquire(priority.High, false) {
		t.Fatal("high refused the reserve")
	}
	// Not guarding: the reserve is everyone's.
	g.Release(false)
	g.SetGuard(false)
	if !g.TryAcquire(priority.Low, false) {
		t.Fatal("the reserve was held while neither guarding nor shedding")
	}
	if in, _ := g.Shorts(); in != 0 {
		t.Fatalf("shorts %d after every short slot was given back", in)
	}
}

// While shedding, a short request may borrow the reserve too. Between a
// long waiter and a short one of the same priority, the older goes first
// when either may take the slot; when only the reserve is left, the short
// one passes an older long one.
func TestGateShortWaitersKeepTheirPlace(t *testing.T) {
	g := NewGate(2, 10)
	g.SetShedding(true)
	g.TryAcquire(priority.High, true)
	g.TryAcquire(priority.High, true)
	order := make(chan string, 4)
	wait := func(short bool, since int64, name string) {
		go func() {
			if g.Wait(context.Background(), priority.Medium, short, time.Minute, since) == Granted {
				order <- name
			}
		}()
	}
	wait(false, 1, "long")
	waitQueued(t, g, 1)
	wait(true, 2, "short")
	waitQueued(t, g, 2)
	g.SetLimit(3) // one slot, no reserve: the older
	if w := <-order; w != "long" {
		t.Fatalf("the slot went to the %s one, want the older, long", w)
	}
	g.SetReserve(1)
	wait(false, 0, "long2") // older than short
	waitQueued(t, g, 2)
	g.Release(false) // 2 in flight, neither short: only the reserve is left
	if w := <-order; w != "short" {
		t.Fatalf("the reserve went to %s, want short", w)
	}
	g.Release(false) // a slot outside the reserve
	if w := <-order; w != "long2" {
		t.Fatalf("then %s, want long2", w)
	}
}

// A request with a bound on the waiters ahead of it is refused at once
// (Late, without queueing) when more wait before it: those of a higher
// priority and, served oldest first, those of its own. Within the bound
// it queues and is served.
func TestGateWaitAheadRefusesWhatCannotBeServedInTime(t *testing.T) {
	g := NewGate(1, 10)
	if !g.TryAcquire(priority.Low, false) {
		t.Fatal("first slot refused")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range 2 {
		go g.Wait(ctx, priority.Medium, false, time.Hour, int64(i+1))
		waitQueued(t, g, int64(i+1))
	}
	start := time.Now()
	if r := g.WaitAhead(context.Background(), priority.Medium, false, time.Hour, 1, 3); r != Late {
		t.Fatalf("two medium ahead, bound 1: %v, want Late", r)
	}
	if r := g.WaitAhead(context.Background(), priority.Low, false, time.Hour, 1, 3); r != Late {
		t.Fatalf("two medium ahead of a low one, bound 1: %v, want Late", r)
	}
	if time.Since(start) > time.Second || g.Waiting() != 2 {
		t.Fatalf("a late request waited (%v) or queued (%d waiting)", time.Since(start), g.Waiting())
	}
	// High passes the medium waiters: none is ahead of it.
	done := make(chan Result, 1)
	go func() { done <- g.WaitAhead(context.Background(), priority.High, false, time.Hour, 0, 4) }()
	waitQueued(t, g, 3)
	g.Release(false)
	if r := <-done; r != Granted {
		t.Fatalf("high with nobody ahead: %v", r)
	}
	// Within its bound a medium request queues, and is served in turn.
	go func() { done <- g.WaitAhead(context.Background(), priority.Medium, false, time.Hour, 2, 5) }()
	waitQueued(t, g, 3)
	for range 3 {
		g.Release(false)
	}
	if r := <-done; r != Granted {
		t.Fatalf("medium within its bound: %v", r)
	}
}

// A queue that has not emptied for its interval is standing: its newest
// waiter is served first, and a new one counts none of its own priority
// ahead of it. A queue younger than the interval stays oldest first; one
// that empties stops standing; a higher priority still goes first.
func TestGateStandingQueueServesNewestFirst(t *testing.T) {
	const sec = int64(time.Second)
	after := [priority.Count]time.Duration{time.Second, time.Second, time.Second}
	g := NewGate(1, 10)
	if !g.TryAcquire(priority.Low, false) {
		t.Fatal("first slot refused")
	}
	got := make(chan string, 8)
	queue := func(p priority.Priority, name string, since int64, n int64) {
		go func() {
			if g.Wait(context.Background(), p, false, time.Hour, since) == Granted {
				got <- name
			}
		}()
		waitQueued(t, g, n)
	}
	queue(priority.Medium, "m1", 10*sec, 1)
	queue(priority.Medium, "m2", 10*sec+1, 2)
	queue(priority.Medium, "m3", 10*sec+2, 3)

	// Transient: not empty for less than the interval.
	g.Watch(10*sec+sec/2, after)
	if g.Standing(priority.Medium) {
		t.Fatal("a queue half a second old is standing")
	}
	g.Release(false)
	if w := <-got; w != "m1" {
		t.Fatalf("a transient queue served %s first, want the oldest, m1", w)
	}
	// Busy for a second, but it served a waiter promptly within it.
	g.ServedPromptly(priority.Medium, 10*sec+sec/2)
	g.Watch(11*sec, after)
	if g.Standing(priority.Medium) {
		t.Fatal("a queue that served a waiter promptly half a second ago is standing")
	}

	// Neither emptied nor served promptly for a second: newest first.
	g.Watch(11*sec+sec/2, after)
	if !g.Standing(priority.Medium) || g.Standing(priority.High) {
		t.Fatalf("standing medium %v, high %v", g.Standing(priority.Medium), g.Standing(priority.High))
	}
	g.mu.Lock()
	ahead := g.ahead(priority.Medium)
	g.mu.Unlock()
	if ahead != 0 {
		t.Fatalf("standing: a new medium request counts %d ahead of it, want 0", ahead)
	}
	g.Release(false)
	if w := <-got; w != "m3" {
		t.Fatalf("a standing queue served %s first, want the newest, m3", w)
	}

	// Priority order stays: high before the newest medium.
	queue(priority.Medium, "m4", 12*sec, 2)
	queue(priority.High, "h1", 12*sec+1, 3)
	g.Release(false)
	if w := <-got; w != "h1" {
		t.Fatalf("standing medium queue: %s served before high", w)
	}
	g.Release(false)
	if w := <-got; w != "m4" {
		t.Fatalf("then %s, want the newest medium m4", w)
	}
	g.Release(false)
	if w := <-got; w != "m2" {
		t.Fatalf("then %s, want m2", w)
	}
	// Emptied: no longer standing, even before the next Watch.
	if g.Standing(priority.Medium) || g.Waiting() != 0 {
		t.Fatalf("an emptied queue is standing (%v) or holds %d", g.Standing(priority.Medium), g.Waiting())
	}
	queue(priority.Medium, "m5", 20*sec, 1)
	g.Watch(20*sec+sec/2, after)
	if g.Standing(priority.Medium) {
		t.Fatal("a queue formed again half a second ago is standing")
	}
	g.Release(false)
	<-got
}
