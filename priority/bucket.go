package priority

import (
	"math"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// BucketConfig tunes the medium lane's controller.
type BucketConfig struct {
	// Floor is the lowest rate (req/s) the lane ever admits at: medium_floor.
	Floor float64
	// Increase is the additive step per healthy period, as a fraction of
	// the current rate (never less than 1 req/s). Default 0.1.
	Increase float64
	// Decrease multiplies the rate when the upstream stops keeping up.
	// Default 0.7.
	Decrease float64
	// Burst is how many seconds of the current rate may arrive at once.
	// Default 0.25 (never less than one request).
	Burst float64
}

func (c *BucketConfig) defaults() {
	if c.Floor <= 0 {
		c.Floor = 1
	}
	if c.Increase <= 0 {
		c.Increase = 0.1
	}
	if c.Decrease <= 0 || c.Decrease >= 1 {
		c.Decrease = 0.7
	}
	if c.Burst <= 0 {
		c.Burst = 0.25
	}
}

// Health is what the controller learns about the upstream each period. It
// deliberately holds no arrival rate: arrivals stay high for a whole surge
// however much is shed, so steering by them would drive the lane to its
// floor (DESIGN.md, "Trip versus throttle").
type Health struct {
	// Shedding reports whether any level is tripped, i.e. whether the lane
	// is in force at all.
	Shedding bool
	// Served is the rate (req/s) at which the upstream answered over the
	// last period, whatever the priority.
	Served float64
	// Congested reports that the upstream stopped keeping up: time to
	// first byte above its history, GPU over threshold, a circuit that is
	// not closed.
	Congested bool
	// Draining reports that, congested or not, the upstream's queue is
	// shrinking (time to first byte falling since the last period): the
	// last cut is working, and cutting again would only starve the GPU.
	Draining bool
}

// Bucket is the medium lane: a golang.org/x/time/rate token bucket whose
// rate is re-tuned once per period by additive increase / multiplicative
// decrease (AIMD) from the upstream's health.
//
// Allow may be called from any goroutine. Tune must be called from one
// goroutine only (the sampler).
type Bucket struct {
	lim     *rate.Limiter
	cfg     BucketConfig
	limit   atomic.Uint64 // float64 bits of the current rate, for status
	refused atomic.Uint64 // Allow calls that found no token

	// sampler-only state
	lastRefused uint64
	hold        bool // skip one decision after a decrease: TTFB lags the cut
}

// NewBucket returns a lane starting at the floor rate.
func NewBucket(cfg BucketConfig) *Bucket {
	cfg.defaults()
	b := &Bucket{cfg: cfg, lim: rate.NewLimiter(rate.Limit(cfg.Floor), 1)}
	b.set(time.Now(), cfg.Floor)
	return b
}

// SetConfig replaces the tuning (a config reload) and keeps the learned rate,
// raised to the new floor if need be.
func (b *Bucket) SetConfig(now time.Time, cfg BucketConfig) {
	cfg.defaults()
	b.cfg = cfg
	b.set(now, math.Max(b.Limit(), cfg.Floor))
}

// Allow reports whether a medium request may pass now.
func (b *Bucket) Allow(now time.Time) bool {
	if b.lim.AllowN(now, 1) {
		return true
	}
	b.refused.Add(1)
	return false
}

// Limit is the current rate in req/s.
func (b *Bucket) Limit() float64 { return math.Float64frombits(b.limit.Load()) }

// Refused counts medium requests the bucket turned away.
func (b *Bucket) Refused() uint64 { return b.refused.Load() }

// Tune runs one period of the controller and returns the new rate.
//
//   - not shedding: follow what the upstream serves, so that when a level
//     trips the lane starts from the rate the upstream was sustaining;
//   - congested: multiply by Decrease, then hold one period, because the
//     upstream's latency reflects the queue built before the cut; and
//     hold as long as the queue is draining;
//   - healthy and the bucket was the constraint (it refused someone):
//     add Increase·rate (at least 1 req/s). A bucket nobody pressed
//     against keeps its rate, so an idle lane cannot inflate without
//     bound and then let a whole surge through.
func (b *Bucket) Tune(now time.Time, h Health) float64 {
	refused := b.refused.Load()
	pressed := refused != b.lastRefused
	b.lastRefused = refused

	r := b.Limit()
	switch {
	case !h.Shedding:
		r = h.Served
		b.hold = false
	case b.hold:
		b.hold = false
	case h.Congested && h.Draining:
	case h.Congested:
		r *= b.cfg.Decrease
		b.hold = true
	case pressed:
		r += math.Max(1, r*b.cfg.Increase)
	}
	r = math.Max(r, b.cfg.Floor)
	b.set(now, r)
	return r
}

func (b *Bucket) set(now time.Time, r float64) {
	b.limit.Store(math.Float64bits(r))
	b.lim.SetLimitAt(now, rate.Limit(r))
	b.lim.SetBurstAt(now, max(1, int(math.Ceil(r*b.cfg.Burst))))
}
