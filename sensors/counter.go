// Package sensors measures what arrives at the handler and how fast the
// upstream answers: the QPS and latency signals. The request path only adds
// to sharded counters and histograms; every statistic is computed by a
// sampler on a timer, with the time passed in explicitly.
package sensors

import (
	"math/rand/v2"
	"runtime"
	"sync/atomic"
)

// ShardCount returns a power of two of at least four shards per CPU (and at
// least 8): writers pick shards at random, so two writing at once collide
// with a chance of one in ShardCount.
func ShardCount() int {
	n := 8
	for n < 4*runtime.GOMAXPROCS(0) && n < 1024 {
		n <<= 1
	}
	return n
}

// paddedCounter fills two cache lines (the unit adjacent-line prefetchers
// move), so neighbouring shards never share one.
type paddedCounter struct {
	n atomic.Uint64
	_ [120]byte
}

// Counter is a monotonically increasing count that many goroutines add to
// without a shared lock. Reading sums the shards, so it costs more than
// adding and belongs on the sampler side.
type Counter struct {
	shards []paddedCounter
	mask   uint32
}

// NewCounter returns a counter at zero.
func NewCounter() *Counter {
	n := ShardCount()
	return &Counter{shards: make([]paddedCounter, n), mask: uint32(n - 1)}
}

// Inc adds one. It does not allocate.
func (c *Counter) Inc() { c.IncAt(rand.Uint32()) }

// IncAt adds one on the shard hint selects, so a caller bumping several
// counters for one event draws one random number, not one per counter.
func (c *Counter) IncAt(hint uint32) { c.shards[hint&c.mask].n.Add(1) }

// Load returns the total so far.
func (c *Counter) Load() uint64 {
	var t uint64
	for i := range c.shards {
		t += c.shards[i].n.Load()
	}
	return t
}
