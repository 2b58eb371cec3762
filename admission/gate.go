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
//   - a request takes a slot only while inflight < the limit, except
//     through Force; after the limit is lowered, inflight drains down to
//     it;
//   - while the reserve is held (shedding, or guarding: short requests
//     are about and slots turn over slowly), a medium or low request not
//     known to be short takes a slot only while the slots not held by
//     short requests (inflight − shorts) are fewer than the limit less
//     the reserve: the reserve is high's, lent to short requests only;
//   - shorts counts the slots held by requests known to be short, never
//     more than inflight: a short slot is counted after it is taken and
//     uncounted before it is given back, so inflight − shorts is never
//     understated;
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
	guard    atomic.Bool // the reserve is held while not shedding too
	maxQueue atomic.Int64
	_        [128]byte

	inflight atomic.Int64
	_        [120]byte
	shorts   atomic.Int64  // slots held by requests known to be short
	fulls    atomic.Uint64 // takes that found every slot of the limit taken
	_        [112]byte

	// standing: per priority, the queue has not emptied for a while
	// (Watch): its waiters are served newest first, and the throttle
	// shortens new waits. Read by Wait's caller without the lock.
	standing [priority.Count]atomic.Bool
	// prompt: per priority, when a waiter was last served promptly
	// (ServedPromptly), monotonic ns; 0: never.
	prompt [priority.Count]atomic.Int64

	mu sync.Mutex
	// queues: per priority, the waiters not known to be short and those
	// known to be short, each oldest first.
	queues [priority.Count][2]queue
	// busySince: per priority, when its queue last went from empty to
	// not empty (monotonic ns); meaningless while it is empty.
	busySince [priority.Count]int64
}

// outcome of take.
type took uint8

const (
	taken       took = iota
	full             // no slot within the limit
	reserveOnly      // room left only in the reserve, which this request may not take
)

// NewGate returns a gate of limit slots, none taken, queues of at most
// maxQueue waiters per priority.
func NewGate(limit, maxQueue int) *Gate {
	g := &Gate{}
	g.limit.Store(int64(max(1, limit)))
	g.maxQueue.Store(int64(maxQueue))
	return g
}

// take takes a slot for a request of priority p, short if it is known to
// be short, if the limit and the reserve leave it one.
func (g *Gate) take(p priority.Priority, short, shedding bool) took {
	limit := g.limit.Load()
	bound := limit // for the slots not held by short requests
	if p != priority.High && !short && (shedding || g.guard.Load()) {
		bound -= g.reserve.Load()
	}
	for {
		n := g.inflight.Load()
		if n >= limit {
			g.fulls.Add(1)
			return full
		}
		if bound < limit && n-g.shorts.Load() >= bound {
			return reserveOnly
		}
		if g.inflight.CompareAndSwap(n, n+1) {
			if short {
				g.shorts.Add(1)
			}
			return taken
		}
	}
}

// TryAcquire takes a free slot for priority p, if nobody waits. Lock-free;
// it never blocks and does not allocate. The request is not known to be
// short: while the reserve is held, medium and low leave it alone.
func (g *Gate) TryAcquire(p priority.Priority, shedding bool) bool {
	return g.waiting.Load() == 0 && g.take(p, false, shedding) == taken
}

// Force takes a slot whatever the limit: a Half-Open probe, or an
// operator's override "pass". It is released like any other.
func (g *Gate) Force() { g.inflight.Add(1) }

// Release gives a slot back: to the best waiter that has room, if any.
// short is what the slot was taken as (Wait's short, false otherwise).
func (g *Gate) Release(short bool) {
	if short {
		g.shorts.Add(-1)
	}
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
	// Late: more requests were waiting ahead of it than can be served
	// within its wait; it did not wait.
	Late
)

// NoBound is WaitAhead's ahead when any number of waiters may be ahead.
const NoBound = -1

// Wait queues a request of priority p for at most maxWait and reports how
// it ended. short: the request is known to be short, and may be lent the
// reserve (Release it with short too). since is when it arrived
// (monotonic ns), for OldestWait. A granted request holds a slot; in
// every other case it holds nothing and has left its queue. The waiter is
// pooled: a wait allocates nothing once the pool is warm.
func (g *Gate) Wait(ctx context.Context, p priority.Priority, short bool, maxWait time.Duration, since int64) Result {
	return g.WaitAhead(ctx, p, short, maxWait, NoBound, since)
}

// WaitAhead is Wait for a request that must be served soon or not at
// all: when more than ahead waiters would be served before it (those of
// a higher priority, and those of its own while its queue is served
// oldest first), it is refused at once (Late) and does not queue.
// NoBound: any number.
func (g *Gate) WaitAhead(ctx context.Context, p priority.Priority, short bool, maxWait time.Duration, ahead int, since int64) Result {
	w := waiters.Get().(*waiter)
	defer waiters.Put(w)
	w.p, w.short, w.since, w.granted = p, short, since, false

	g.mu.Lock()
	n := g.queues[p][0].n + g.queues[p][1].n
	if int64(n) >= g.maxQueue.Load() {
		g.mu.Unlock()
		return Full
	}
	if ahead >= 0 && g.ahead(p) > ahead {
		g.mu.Unlock()
		return Late
	}
	if n == 0 {
		g.busySince[p] = since
	}
	q := &g.queues[p][w.kind()]
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
			g.Release(short)
			return Gone
		}
		return Granted
	}
	g.leave(q, w)
	g.mu.Unlock()
	return r
}

// ahead is the number of waiters a new one of priority p would be served
// after: every waiter of a higher priority, and of its own while its
// queue is served oldest first. Caller holds mu.
func (g *Gate) ahead(p priority.Priority) int {
	n := 0
	if !g.standing[p].Load() {
		n = g.queues[p][0].n + g.queues[p][1].n
	}
	for q := p + 1; q <= priority.High; q++ {
		n += g.queues[q][0].n + g.queues[q][1].n
	}
	return n
}

// leave takes w out of q, its queue, granted or not; a queue left empty
// is no longer busy, nor standing. Caller holds mu.
func (g *Gate) leave(q *queue, w *waiter) {
	q.remove(w)
	g.waiting.Add(-1)
	if qs := &g.queues[w.p]; qs[0].n+qs[1].n == 0 {
		g.standing[w.p].Store(false)
	}
}

// Watch judges, at now (monotonic ns), which queues are standing: a queue
// of priority p that has neither emptied nor served a waiter promptly
// (ServedPromptly) for after[p] is, until it empties. Controlled delay
// (CoDel) for queue timeouts and adaptive LIFO, as in "Fail at Scale"
// (ACM Queue, 2015): a standing queue is served newest first, so that
// what the upstream serves has waited least and its oldest waiters,
// least likely to be served in time, go first, and the caller shortens
// new waits (Standing). A queue that forms and drains (a burst), or that
// lasts but serves its waiters promptly (a busy upstream keeping up), is
// untouched. The sampler calls it.
func (g *Gate) Watch(now int64, after [priority.Count]time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for p := range g.queues {
		a := int64(after[p])
		if g.queues[p][0].n+g.queues[p][1].n == 0 || a <= 0 || now-g.busySince[p] < a {
			continue
		}
		if last := g.prompt[p].Load(); last != 0 && now-last < a {
			continue
		}
		g.standing[p].Store(true)
	}
}

// ServedPromptly notes that a waiter of priority p got its slot at
// (monotonic ns) after a short wait: its queue is not standing.
func (g *Gate) ServedPromptly(p priority.Priority, at int64) { g.prompt[p].Store(at) }

// Standing reports whether priority p's queue is standing (Watch).
func (g *Gate) Standing(p priority.Priority) bool { return g.standing[p].Load() }

// dispatch grants slots to the best waiters while they have room: those
// of the highest priority first, and within a priority the oldest, or
// the newest while its queue is standing (Watch). It stops when no slot
// is left, so a lower priority never passes a higher one to a slot the
// higher could take; room left only in the reserve goes to the first
// short waiter, in the same order, of the highest priority that has one.
// Caller holds mu.
func (g *Gate) dispatch() {
	shedding := g.shedding.Load()
	for p := priority.High; ; p-- {
		qs := &g.queues[p]
		lifo := g.standing[p].Load()
		for {
			w := first(qs, lifo)
			if w == nil {
				break
			}
			r := g.take(p, w.short, shedding)
			if r == reserveOnly { // room for short ones only
				if w = qs[1].end(lifo); w == nil {
					break // none here: perhaps at a lower priority
				}
				r = g.take(p, true, shedding)
			}
			if r != taken {
				return
			}
			g.leave(&qs[w.kind()], w)
			w.granted = true
			w.ready <- struct{}{}
		}
		if p == priority.Low {
			return
		}
	}
}

// older is the waiter that has waited longer, or the one there is.
func older(a, b *waiter) *waiter {
	if a == nil || (b != nil && b.since < a.since) {
		return b
	}
	return a
}

// newer is the waiter that came later, or the one there is.
func newer(a, b *waiter) *waiter {
	if a == nil || (b != nil && b.since > a.since) {
		return b
	}
	return a
}

// first is the waiter of a priority's two queues served next: the
// oldest, or the newest (lifo).
func first(qs *[2]queue, lifo bool) *waiter {
	if lifo {
		return newer(qs[0].tail, qs[1].tail)
	}
	return older(qs[0].head, qs[1].head)
}

// Set changes the limit (at least 1), the reserve and the guard (see
// SetGuard) together, then hands new room to waiters, once. What
// tightens is stored first and what loosens last, so that a request
// taking a slot in between is never given room that the new settings
// deny: a limit raised by a probe before its reserve was set handed the
// probe slot, meant for short and high requests, to a long answer.
func (g *Gate) Set(limit, reserve int, guard bool) {
	r := int64(max(0, reserve))
	if r > g.reserve.Load() {
		g.reserve.Store(r)
	}
	if guard {
		g.guard.Store(true)
	}
	g.limit.Store(int64(max(1, limit)))
	g.reserve.Store(r)
	g.guard.Store(guard)
	g.kick()
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

// SetGuard holds the reserve against medium and low requests not known to
// be short while not shedding too: short requests are about to borrow it,
// and slots turn over slowly.
func (g *Gate) SetGuard(on bool) {
	if g.guard.Swap(on) != on {
		g.kick()
	}
}

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

// Shorts is the number of slots held by requests known to be short, and
// the number of those waiting for one.
func (g *Gate) Shorts() (inFlight, waiting int64) {
	g.mu.Lock()
	for p := range g.queues {
		waiting += int64(g.queues[p][1].n)
	}
	g.mu.Unlock()
	return g.shorts.Load(), waiting
}

// Guarding reports whether the reserve is held while not shedding.
func (g *Gate) Guarding() bool { return g.guard.Load() }

// Fulls counts the times a request found every slot of the limit taken
// (a running total): whether the limit bound, for Limit.
func (g *Gate) Fulls() uint64 { return g.fulls.Load() }

// Waiting is the number of queued requests, all priorities.
func (g *Gate) Waiting() int64 { return g.waiting.Load() }

// Queues returns the queue length of each priority and how long the
// oldest waiter of all has waited at now (monotonic ns).
func (g *Gate) Queues(now int64) (lengths [priority.Count]int, oldest time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for p := range g.queues {
		qs := &g.queues[p]
		lengths[p] = qs[0].n + qs[1].n
		if w := older(qs[0].head, qs[1].head); w != nil {
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
	short      bool
	since      int64
	granted    bool // under Gate.mu
	ready      chan struct{}
	timer      *time.Timer
}

// kind is the waiter's queue within its priority: 1 if known short.
func (w *waiter) kind() int {
	if w.short {
		return 1
	}
	return 0
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

// end is the queue's oldest waiter, or its newest (lifo).
func (q *queue) end(lifo bool) *waiter {
	if lifo {
		return q.tail
	}
	return q.head
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
