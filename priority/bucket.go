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
	// Decrease is the least a congested period cuts the rate by. Default
	// 0.9: the queue estimate below usually cuts deeper.
	Decrease float64
	// Drain is how fast a queue found at the upstream is to be worked off:
	// the lane gives up queue/Drain req/s for it. Default 2s.
	Drain time.Duration
	// Burst is how many seconds of the current rate may arrive at once.
	// Default 1: arrivals come in clumps (Poisson, retries, client
	// batching), and a bucket that fills up between clumps admits less than
	// its rate. Never less than one request.
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
		c.Decrease = 0.9
	}
	if c.Drain <= 0 {
		c.Drain = 2 * time.Second
	}
	if c.Burst <= 0 {
		c.Burst = 1
	}
}

// Health is what the controller learns about the upstream each period. It
// deliberately holds no arrival rate: arrivals stay high for a whole surge
// however much is shed, so steering by them would drive the lane to its
// floor (README, "How the medium lane is steered").
type Health struct {
	// Shedding reports whether any level is tripped, i.e. whether the lane
	// is in force at all.
	Shedding bool
	// Served is the rate (req/s) at which the upstream answered over the
	// last period, whatever the priority: while it is saturated, its
	// capacity.
	Served float64
	// Reserved is the rate (req/s) at which high-priority requests were
	// admitted over the last period: the share of the upstream the medium
	// lane must leave them.
	Reserved float64
	// InFlight is the number of requests admitted and not yet answered:
	// what the upstream is running plus what it has queued, now.
	InFlight float64
	// Congested reports that the upstream stopped keeping up: time to
	// first byte above its history, GPU over threshold, a circuit that is
	// not closed.
	Congested bool
	// Draining reports that the upstream's time to first byte fell since
	// the last period: a cut is already working.
	Draining bool
}

// Bucket is the medium lane: a golang.org/x/time/rate token bucket whose
// rate is re-tuned once per period from the upstream's health.
//
// Allow may be called from any goroutine, SetConfig from any goroutine
// while Tune runs (a reload); Tune must be called from one goroutine only
// (the sampler).
type Bucket struct {
	lim     *rate.Limiter
	cfg     atomic.Pointer[BucketConfig]
	limit   atomic.Uint64 // float64 bits of the current rate, for status
	refused atomic.Uint64 // Allow calls that found no token
	// float64 bits of what Tune learned, published for status
	learnedCapacity, learnedConcurrency atomic.Uint64

	// sampler-only state
	lastRefused uint64
	// concurrency is what the upstream runs without queueing, learned from
	// the requests in flight whenever it keeps up (fast up, slow down).
	concurrency float64
	// capacity is what the upstream serves when saturated, learned from
	// the served rate while it is congested.
	capacity float64
	// served and reserved smooth Health's one-period rates: completions
	// and high-priority admissions arrive in lumps.
	served, reserved float64
}

// NewBucket returns a lane starting at the floor rate.
func NewBucket(cfg BucketConfig) *Bucket {
	cfg.defaults()
	b := &Bucket{lim: rate.NewLimiter(rate.Limit(cfg.Floor), 1)}
	b.cfg.Store(&cfg)
	b.set(time.Now(), cfg.Floor)
	return b
}

// SetConfig replaces the tuning (a config reload) and keeps the learned rate,
// raised to the new floor if need be.
func (b *Bucket) SetConfig(now time.Time, cfg BucketConfig) {
	cfg.defaults()
	b.cfg.Store(&cfg)
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

// Concurrency is the learned number of requests the upstream runs at once
// without queueing.
func (b *Bucket) Concurrency() float64 { return math.Float64frombits(b.learnedConcurrency.Load()) }

// Capacity is the learned rate (req/s) the upstream serves when saturated;
// 0 until it has been seen congested.
func (b *Bucket) Capacity() float64 { return math.Float64frombits(b.learnedCapacity.Load()) }

// Tune runs one period of the controller and returns the new rate.
//
//   - not shedding: follow what the upstream serves, so that when a level
//     trips the lane starts from the rate the upstream was sustaining;
//   - congested: aim at what the upstream serves, less the high-priority
//     share, less what working off its queue needs — the queue being the
//     requests in flight beyond the concurrency it runs without queueing —
//     (those rates smoothed over a few periods: completions come in lumps),
//     and, when no queue is in sight (the GPU, the circuit or latency say
//     so), cut by at least Decrease; while the queue is already draining,
//     only aim, do not cut again for latency that lags the cut;
//   - keeping up, and the bucket was the constraint (it refused someone):
//     below the medium share of the learned capacity, come straight
//     back to it — once a queue is worked off, creeping up 1 req/s at a
//     time would leave the GPU idle; above it, probe by 2% a period; with
//     no capacity learned yet, add Increase·rate (at least 1 req/s). A
//     bucket nobody pressed against keeps its rate, so an idle lane cannot
//     inflate without bound and then let a whole surge through.
//
// The concurrency is learned whenever the upstream keeps up: the highest
// in-flight count seen then, decaying by 2% a period so that a loss of
// capacity is learned too. The capacity is learned while it is congested
// (saturated, so serving all it can): a moving average of the served rate.
func (b *Bucket) Tune(now time.Time, h Health) float64 {
	cfg := b.cfg.Load()
	refused := b.refused.Load()
	pressed := refused != b.lastRefused
	b.lastRefused = refused
	b.served = smooth(b.served, h.Served)
	b.reserved = smooth(b.reserved, h.Reserved)
	if !h.Congested {
		b.concurrency = math.Max(h.InFlight, 0.98*b.concurrency)
	} else if h.Served > 0 {
		b.capacity = smooth(b.capacity, h.Served)
	}

	r := b.Limit()
	switch {
	case !h.Shedding:
		r = h.Served
	case h.Congested:
		queue := math.Max(0, h.InFlight-b.concurrency)
		aim := b.served - b.reserved - queue/cfg.Drain.Seconds()
		if h.Draining || queue > 0 {
			// The cut is working, or the aim already makes room for
			// the queue it sees: aim, do not cut blindly on top.
			r = math.Min(r, aim)
		} else {
			r = math.Min(r*cfg.Decrease, aim)
		}
	case pressed:
		share := shareOfCapacity * (b.capacity - b.reserved) // 0 or less while no capacity is learned
		if r < share {
			r = share
		} else if share > 0 {
			r += 0.02 * r // near capacity: probe gently, an overshoot costs a queue
		} else {
			r += math.Max(1, r*cfg.Increase)
		}
	}
	r = math.Max(r, cfg.Floor)
	b.set(now, r)
	b.learnedCapacity.Store(math.Float64bits(b.capacity))
	b.learnedConcurrency.Store(math.Float64bits(b.concurrency))
	return r
}

// shareOfCapacity is how much of the capacity left by high priority the
// lane comes back to at once after a queue is worked off. All of it: the
// learned capacity is a smoothed served rate, already a little under the
// peak, and an overshoot shows in the median time to first byte within a
// period.
const shareOfCapacity = 1.0

// smooth is a moving average giving a new period 30% weight; the first
// value is taken as is.
func smooth(avg, v float64) float64 {
	if avg == 0 {
		return v
	}
	return avg + 0.3*(v-avg)
}

func (b *Bucket) set(now time.Time, r float64) {
	b.limit.Store(math.Float64bits(r))
	b.lim.SetLimitAt(now, rate.Limit(r))
	b.lim.SetBurstAt(now, max(1, int(math.Ceil(r*b.cfg.Load().Burst))))
}
