// Package shard holds the request path's counters: each is split in
// cache-line-padded shards so that requests on different cores never write
// the same line. Reading sums the shards and belongs on a timer.
package shard

import (
	"runtime"
	"sync/atomic"
)

// Count returns a power of two of at least four shards per CPU (and at
// least 8): writers pick shards at random, so two writing at once collide
// with a chance of one in Count().
func Count() int {
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
	n := Count()
	return &Counter{shards: make([]paddedCounter, n), mask: uint32(n - 1)}
}

// Add adds one on the shard that shard selects (modulo the shard count), so
// a caller bumping several counters for one event picks one shard for all
// of them, and a caller on one core keeps its shard's line in its cache.
func (c *Counter) Add(shard uint32) { c.shards[shard&c.mask].n.Add(1) }

// AddN adds n on the shard that shard selects, as Add.
func (c *Counter) AddN(shard uint32, n uint64) { c.shards[shard&c.mask].n.Add(n) }

// Load returns the total so far.
func (c *Counter) Load() uint64 {
	var t uint64
	for i := range c.shards {
		t += c.shards[i].n.Load()
	}
	return t
}
