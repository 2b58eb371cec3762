package priority

import "sync/atomic"

// Reserve is the high lane: a fixed number of concurrent slots kept open for
// high-priority requests while everything else is shed. A slot is held from
// admission until the response is fully written or the client goes away;
// the caller must call Release exactly once per successful TryAcquire.
//
// Invariant: 0 <= InUse() <= Cap() at every instant a TryAcquire can observe,
// except after SetCap lowers the capacity, when InUse drains down to it.
type Reserve struct {
	capacity atomic.Int64
	inUse    atomic.Int64
}

// NewReserve returns a reserve of n slots (n <= 0: none).
func NewReserve(n int) *Reserve {
	r := &Reserve{}
	r.SetCap(n)
	return r
}

// TryAcquire takes a slot if one is free. It never blocks.
func (r *Reserve) TryAcquire() bool {
	for {
		n := r.inUse.Load()
		if n >= r.capacity.Load() {
			return false
		}
		if r.inUse.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// Release returns a slot taken by TryAcquire.
func (r *Reserve) Release() { r.inUse.Add(-1) }

// SetCap changes the number of slots; slots already held stay held.
func (r *Reserve) SetCap(n int) {
	if n < 0 {
		n = 0
	}
	r.capacity.Store(int64(n))
}

// InUse is the number of slots held now.
func (r *Reserve) InUse() int { return int(r.inUse.Load()) }

// Cap is the number of slots.
func (r *Reserve) Cap() int { return int(r.capacity.Load()) }
