package latency

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// An answer that is not streamed is sent whole: its first byte is its end,
// so its time to first byte is how long the whole answer took to generate,
// which grows with its length. A 9 s answer of some thousands of tokens is
// no sign of a queue, where a 9 s first byte is. So a whole answer is
// judged by what is normal for its size: its time less how much longer the
// fastest answer of its size took, in the last minutes, than the fastest
// short answer (at most shortWhole bytes; none: 0). A short answer is
// judged as it is, and so is an answer of a size never seen (its own time
// is then the fastest).

// shortWhole is the size up to which a whole answer is short: some tens of
// tokens in an OpenAI or Ollama JSON envelope.
const shortWhole = 1 << 10

// sizeSteps is how many size classes each doubling of the size spans
// (the sizes in a class differ by at most a quarter).
const sizeSteps = 4

// sizeClasses covers sizes up to 2^48 bytes.
const sizeClasses = 48 * sizeSteps

// sizeFloors holds, per size class, the fastest whole answer of the
// current and of the previous period of floorMinutes: the fastest of
// the last 10 to 20 minutes. The request path reads and lowers them with
// atomics; the sampler rotates them.
type sizeFloors struct {
	cur, prev [sizeClasses]atomic.Int64 // ns; 0: none
	rotated   time.Time                 // sampler only
}

// sizeClass is the class of an answer of n bytes: sizeSteps per doubling.
func sizeClass(n int64) int {
	if n < 1<<2 {
		return int(max(n, 0))
	}
	l := bits.Len64(uint64(n))                      // 2^(l-1) ≤ n < 2^l
	frac := int(uint64(n)>>(l-3)) & (sizeSteps - 1) // the two bits below the leading one
	return min((l-1)*sizeSteps+frac, sizeClasses-1)
}

// fastest returns the fastest answer of class c of the last minutes (0:
// none).
func (f *sizeFloors) fastest(c int) time.Duration {
	a, b := f.cur[c].Load(), f.prev[c].Load()
	switch {
	case a == 0:
		return time.Duration(b)
	case b == 0:
		return time.Duration(a)
	}
	return time.Duration(min(a, b))
}

// note lowers class c's floor to d if it is faster.
func (f *sizeFloors) note(c int, d time.Duration) {
	v := max(int64(d), 1)
	for m := f.cur[c].Load(); m == 0 || v < m; m = f.cur[c].Load() {
		if f.cur[c].CompareAndSwap(m, v) {
			return
		}
	}
}

// judged is the time a whole answer of n bytes that took d is judged as:
// d less what its size adds, at normal speed, to a short answer's time.
func (f *sizeFloors) judged(d time.Duration, n int64) time.Duration {
	c := sizeClass(n)
	f.note(c, d)
	if n <= shortWhole {
		return d
	}
	base := time.Duration(math.MaxInt64)
	for s := sizeClass(shortWhole); s >= 0; s-- {
		if v := f.fastest(s); v > 0 {
			base = min(base, v)
		}
	}
	if base == math.MaxInt64 {
		base = 0
	}
	return d - max(0, f.fastest(c)-base)
}

// rotate starts a new period once floorMinutes have passed.
func (f *sizeFloors) rotate(now time.Time) {
	if f.rotated.IsZero() {
		f.rotated = now
	}
	if now.Sub(f.rotated) < floorMinutes*time.Minute {
		return
	}
	f.rotated = now
	for i := range f.cur {
		f.prev[i].Store(f.cur[i].Swap(0))
	}
}

// reset forgets every floor.
func (f *sizeFloors) reset() {
	for i := range f.cur {
		f.cur[i].Store(0)
		f.prev[i].Store(0)
	}
}
