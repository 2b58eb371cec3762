// Package admission decides how much the upstream is given and in what
// order: a limit on the requests in flight at the upstream (learned from
// time to first byte by Limit, or fixed), a share of it that only high
// priority may take while shedding, and bounded wait queues, one per
// priority, to which every completion hands its slot: highest priority
// first, oldest first. See the README, "How a request is admitted".
//
// Nothing here knows about Caddy or HTTP.
package admission

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ai-guardian/adaptivethrottle/priority"
)

// Gate holds the upstream's slots: TryAcquire takes a free one without a
// lock, Wait queues for one, Release gives one back (to the best waiter).
//
// Invariants:
//   - inflight counts every slot taken (TryAcquire, Wait granted, Force)
//     and not yet released, so it is never negative;
//   - a request takes a slot only while inflight < its room (the limit,
//     less the reserve for medium and low while shedding), except through
//     Force; after the limit is lowered, inflight drains down to it;
//   - waiting is the number of queued waiters, and TryAcquire takes nothing
//     while it is not zero: nobody jumps a queue;
//   - a waiter is in its queue until it is granted a slot or leaves, never
//     both: granting and leaving happen under mu.
type Gate struct {
	// Read on every request, written rarely (the sampler, a queue
	// forming): on lines of their own, away from inflight, which every
	// request writes twice, so that reading them does not miss the cache
	// each time another core took or gave a slot.
	limit    atomic.Int64
	reserve  atomic.Int64 // slots of the limit that only high may take while shedding
	waiting  atomic.Int64
	shedding atomic.Bool // for Release's hand-off; TryAcquire is told
	maxQueue atomic.Int64
	_        [128]byte

	inflight atomic.Int64
	_        [120]byte

	mu     sync.Mutex
	queues [priority.Count]queue
}

// NewGate returns a gate of limit slots, none taken, queues of at most
// maxQueue waiters per priority.
func NewGate(limit, maxQueue int) *Gate {
	g := &Gate{}
	g.limit.Store(int64(max(1, limit)))
	g.maxQueue.Store(int64(maxQueue))
	return g
}

// room is how many slots a request of priority p may see taken and still
// take one.
func (g *Gate) room(p priority.Priority, shedding bool) int64 {
	n := g.limit.Load()
	if shedding && p != priority.High {
		n -= g.reserve.Load()
	}
	return n
}

// take takes a slot if fewer than room are taken.
func (g *Gate) take(room int64) bool {
	for {
		n := g.inflight.Load()
		if n >= room {
			return false
		}
		if g.inflight.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// TryAcquire takes a free slot for priority p, if nobody waits. Lock-free;
// it never blocks and does not allocate.
func (g *Gate) TryAcquire(p priority.Priority, shedding bool) bool {
	return g.waiting.Load() == 0 && g.take(g.room(p, shedding))
}

// Force takes a slot whatever the limit: a Half-Open probe, or an
// operator's override "pass". It is released like any other.
func (g *Gate) Force() { g.inflight.Add(1) }

// Release gives a slot back: to the best waiter that has room, if any.
func (g *Gate) Release() {
	g.inflight.Add(-1)
	g.kick()
}

// Result is how a Wait ended.
type Result uint8

const (
	// Granted: the request holds a slot; Release it when done.
	Granted Result = iota
	// Expired: no slot within the wait.
	Expired
	// Full: the priority's queue was full; the request did not wait.
	Full
	// Gone: the context ended first (the client went away).
	Gone
)

// Wait queues a request of priority p for at most maxWait and reports how
// it ended. since is when it arrived (monotonic ns), for OldestWait. A
// granted request holds a slot; in every other case it holds nothing and
// has left its queue. The waiter is pooled: a wait allocates nothing once
// the pool is warm.
func (g *Gate) Wait(ctx context.Context, p priority.Priority, maxWait time.Duration, since int64) Result {
	w := waiters.Get().(*waiter)
	defer waiters.Put(w)
	w.p, w.since, w.granted = p, since, false

	g.mu.Lock()
	q := &g.queues[p]
	if int64(q.n) >= g.maxQueue.Load() {
		g.mu.Unlock()
		return Full
	}
	q.push(w)
	g.waiting.Add(1)
	g.dispatch() // a slot may have freed since TryAcquire, or nobody else waits
	granted := w.granted
	g.mu.Unlock()
	if granted {
		<-w.ready
		return Granted
	}

	if w.timer == nil {
		w.timer = time.NewTimer(maxWait)
	} else {
		w.timer.Reset(maxWait)
	}
	r := Expired
	select {
	case <-w.ready:
		w.timer.Stop()
		return Granted
	case <-ctx.Done():
		r = Gone
	case <-w.timer.C:
	}
	w.timer.Stop()

	g.mu.Lock()
	if w.granted { // a slot came in the meantime
		g.mu.Unlock()
		<-w.ready
		if r == Gone {
			g.Release()
			return Gone
		}
		return Granted
	}
	q.remove(w)
	g.waiting.Add(-1)
	g.mu.Unlock()
	return r
}

// dispatch grants slots to the best waiters while they have room: the
// oldest of the highest priority first. It stops at the first best waiter
// without room, so a lower priority never passes a higher one. Caller
// holds mu.
func (g *Gate) dispatch() {
	shedding := g.shedding.Load()
	for p := priority.High; ; p-- {
		for w := g.queues[p].head; w != nil; w = g.queues[p].head {
			if !g.take(g.room(p, shedding)) {
				return
			}
			g.queues[p].remove(w)
			g.waiting.Add(-1)
			w.granted = true
			w.ready <- struct{}{}
		}
		if p == priority.Low {
			return
		}
	}
}

// SetLimit changes the number of slots (at least 1) and hands new room to
// waiters.
func (g *Gate) SetLimit(n int) {
	g.limit.Store(int64(max(1, n)))
	g.kick()
}

// SetReserve sets the slots of the limit that only high priority may take
// while shedding.
func (g *Gate) SetReserve(n int) { g.reserve.Store(int64(max(0, n))) }

// SetShedding tells the gate whether shedding is on, for the room it gives
// waiters.
func (g *Gate) SetShedding(on bool) {
	if g.shedding.Swap(on) != on {
		g.kick()
	}
}

// SetMaxQueue bounds each priority's queue (waiters already queued stay).
func (g *Gate) SetMaxQueue(n int) { g.maxQueue.Store(int64(n)) }

// kick hands free room to waiters, if any wait: one load when none does.
func (g *Gate) kick() {
	if g.waiting.Load() > 0 {
		g.handOff()
	}
}

func (g *Gate) handOff() {
	g.mu.Lock()
	g.dispatch()
	g.mu.Unlock()
}

// Limit is the number of slots.
func (g *Gate) Limit() int { return int(g.limit.Load()) }

// Reserve is the number of slots only high priority may take while
// shedding.
func (g *Gate) Reserve() int { return int(g.reserve.Load()) }

// InFlight is the number of slots taken.
func (g *Gate) InFlight() int64 { return g.inflight.Load() }

// Waiting is the number of queued requests, all priorities.
func (g *Gate) Waiting() int64 { return g.waiting.Load() }

// Queues returns the queue length of each priority and how long the
// oldest waiter of all has waited at now (monotonic ns).
func (g *Gate) Queues(now int64) (lengths [priority.Count]int, oldest time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for p := range g.queues {
		lengths[p] = g.queues[p].n
		if w := g.queues[p].head; w != nil {
			oldest = max(oldest, time.Duration(now-w.since))
		}
	}
	return lengths, oldest
}

// waiter is one queued request. ready is buffered: dispatch never blocks
// on it.
type waiter struct {
	prev, next *waiter
	p          priority.Priority
	since      int64
	granted    bool // under Gate.mu
	ready      chan struct{}
	timer      *time.Timer
}

var waiters = sync.Pool{New: func() any { return &waiter{ready: make(chan struct{}, 1)} }}

// queue is a FIFO of waiters, linked through them, so that a waiter that
// leaves is unlinked in O(1) with no allocation.
type queue struct {
	head, tail *waiter
	n          int
}

func (q *queue) push(w *waiter) {
	w.prev, w.next = q.tail, nil
	if q.tail != nil {
		q.tail.next = w
	} else {
		q.head = w
	}
	q.tail = w
	q.n++
}

func (q *queue) remove(w *waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		q.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		q.tail = w.prev
	}
	w.prev, w.next = nil, nil
	q.n--
}
