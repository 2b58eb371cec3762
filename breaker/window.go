package breaker

import (
	"math"
	"runtime"
	"sync/atomic"
	"time"
)

// windowBuckets is how many buckets a window is counted in.
const windowBuckets = 10

// window counts requests and failures over a sliding window of
// windowBuckets buckets of dur each, lock-free.
//
// A bucket belongs to the bucket epoch floor(mono/dur) it last counted for;
// it is reused for epoch e when e ≡ its index (mod windowBuckets). The first
// writer of a new epoch claims the bucket by CAS on its epoch and zeroes its
// counters. Races lose a little precision, never correctness of the state
// machine: an increment landing between the claim and the zeroing is lost,
// and a reader may see a bucket's counters mid-update. Samples older than the
// bucket's epoch (a caller with a stale now) are dropped rather than clobber
// newer counts.
//
// The ring is sharded: each writer counts into the shard its hint selects,
// so cores recording outcomes at once do not fight over one cache line;
// readers (on failures, and status) add the shards up.
type window struct {
	dur    int64 // bucket length in ns, > 0
	mask   uint32
	shards [][windowBuckets]bucket
	// cur caches the bucket epoch being counted now and its span, so that
	// recording skips a 64-bit division on every request; it is replaced
	// once per bucket length.
	cur atomic.Pointer[epochSpan]
}

// epochSpan is bucket epoch e, covering mono times [start, start+dur).
type epochSpan struct {
	e, start int64
}

// epochOf returns the bucket epoch of mono time m.
func (w *window) epochOf(m int64) int64 {
	if c := w.cur.Load(); c != nil && m >= c.start && m-c.start < w.dur {
		return c.e
	}
	e := floorDiv(m, w.dur)
	w.cur.Store(&epochSpan{e: e, start: e * w.dur})
	return e
}

type bucket struct {
	epoch    atomic.Int64
	total    atomic.Uint64
	failures atomic.Uint64
	_        [104]byte // pad to two cache lines: buckets are written by many cores
}

func newWindow(size time.Duration) *window {
	d := int64(size) / windowBuckets
	if d <= 0 {
		d = 1
	}
	// Four shards per CPU: writers pick one at random, so two writing at
	// once collide with a chance of 1/n.
	n := 8
	for n < 4*runtime.GOMAXPROCS(0) && n < 256 {
		n <<= 1
	}
	w := &window{dur: d, mask: uint32(n - 1), shards: make([][windowBuckets]bucket, n)}
	for s := range w.shards {
		for i := range w.shards[s] {
			// No epoch yet: older than any, so the first sample claims it
			// even for synthetic times before the package epoch.
			w.shards[s][i].epoch.Store(math.MinInt64)
		}
	}
	return w
}

// slot returns bucket epoch e's bucket in shard s.
func (w *window) slot(s uint32, e int64) *bucket {
	i := e % windowBuckets
	if i < 0 {
		i += windowBuckets
	}
	return &w.shards[s&w.mask][i]
}

// record counts one outcome at mono time m in the shard hint selects: two
// or three atomic ops in the common case (bucket already current), no
// allocation.
func (w *window) record(m int64, failed bool, hint uint32) {
	e := w.epochOf(m)
	b := w.slot(hint, e)
	if old := b.epoch.Load(); old != e {
		if old > e {
			return // stale sample: the bucket already counts a newer epoch
		}
		if b.epoch.CompareAndSwap(old, e) {
			b.total.Store(0)
			b.failures.Store(0)
		}
	}
	b.total.Add(1)
	if failed {
		b.failures.Add(1)
	}
}

// sum returns the counts of the buckets within the last windowBuckets
// epochs up to and including m's.
func (w *window) sum(m int64) (total, failures uint64) {
	e := floorDiv(m, w.dur)
	for s := range w.shards {
		for i := range w.shards[s] {
			b := &w.shards[s][i]
			if be := b.epoch.Load(); be <= e && be > e-windowBuckets && be != math.MinInt64 {
				total += b.total.Load()
				failures += b.failures.Load()
			}
		}
	}
	return total, failures
}

// reset zeroes every bucket. Increments racing with it may survive.
func (w *window) reset() {
	for s := range w.shards {
		for i := range w.shards[s] {
			w.shards[s][i].total.Store(0)
			w.shards[s][i].failures.Store(0)
		}
	}
}
