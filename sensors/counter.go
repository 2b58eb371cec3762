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

// shardCount returns a power of two near GOMAXPROCS, so concurrent writers
// mostly land on different cache lines.
func shardCount() int {
	n := 1
	for n < runtime.GOMAXPROCS(0) && n < 64 {
		n <<= 1
	}
	return n
}

// paddedCounter fills a cache line so neighbouring shards do not share one.
type paddedCounter struct {
	n atomic.Uint64
	_ [56]byte
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
	n := shardCount()
	return &Counter{shards: make([]paddedCounter, n), mask: uint32(n - 1)}
}

// Inc adds one. It does not allocate.
func (c *Counter) Inc() { c.shards[rand.Uint32()&c.mask].n.Add(1) }

// Load returns the total so far.
func (c *Counter) Load() uint64 {
	var t uint64
	for i := range c.shards {
		t += c.shards[i].n.Load()
	}
	return t
}
