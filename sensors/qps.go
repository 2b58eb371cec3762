package sensors

import (
	"math"
	"sync"
	"time"
)

// QPSConfig is the `qps` block.
type QPSConfig struct {
	Window      time.Duration // how much history the baseline covers (5m)
	Sigma       float64       // baseline = mean + Sigma·σ (2)
	TripFactor  float64       // trip above baseline × TripFactor (1.5)
	MinBaseline float64       // the baseline is never taken below this rate (5)
	Limit       float64       // optional fixed ceiling in req/s; 0 = none
	// Warmup is how many one-second samples must be learned before the
	// learned baseline may trip anything (default 30, at most the window):
	// a baseline from three seconds of traffic is noise.
	Warmup int
}

// Defaults fills zero fields with DESIGN.md's defaults.
func (c *QPSConfig) Defaults() {
	if c.Window <= 0 {
		c.Window = 5 * time.Minute
	}
	if c.Sigma == 0 {
		c.Sigma = 2
	}
	if c.TripFactor <= 0 {
		c.TripFactor = 1.5
	}
	if c.MinBaseline <= 0 {
		c.MinBaseline = 5
	}
	if c.Warmup <= 0 {
		c.Warmup = 30
	}
	c.Warmup = min(c.Warmup, c.slots())
}

// slots is the number of one-second samples the window holds.
func (c QPSConfig) slots() int { return max(1, int(c.Window/time.Second)) }

// QPSSample is one sampler period's result.
type QPSSample struct {
	Rate      float64 // arrivals per second over the period
	Baseline  float64 // learned mean + sigma·σ, at least MinBaseline; 0 while warming up
	Threshold float64 // the rate above which the level trips; 0 = none yet
	Learned   int     // samples in the baseline
	Learning  bool    // whether this period was added to the baseline
}

// QPS counts arrivals and learns their normal rate: a ring of one-second
// rates covering Window, with a running sum and sum of squares so the
// baseline costs O(1) per sample.
//
// Arrive may be called from any goroutine; Sample, Reset and SetConfig from
// the sampler only (they share a mutex with Status readers).
type QPS struct {
	arrivals *Counter      // counted here by Arrive, unless total is given
	total    func() uint64 // arrivals so far, read at each Sample

	mu        sync.Mutex
	cfg       QPSConfig
	ring      []float64
	head, n   int
	sum, sq   float64
	lastTotal uint64
	lastAt    time.Time
	last      QPSSample
}

// NewQPS returns a sensor with nothing learned.
func NewQPS(cfg QPSConfig) *QPS {
	cfg.Defaults()
	q := &QPS{arrivals: NewCounter(), cfg: cfg, ring: make([]float64, cfg.slots())}
	q.total = q.arrivals.Load
	return q
}

// NewQPSFrom returns a sensor that reads the arrivals so far from total
// instead of counting them with Arrive: a caller that already counts every
// request (by decision, say) spares the request path a second count.
func NewQPSFrom(cfg QPSConfig, total func() uint64) *QPS {
	q := NewQPS(cfg)
	q.total = total
	return q
}

// Arrive counts one request (a sensor made by NewQPS). It does not
// allocate or lock.
func (q *QPS) Arrive() { q.arrivals.Inc() }

// Arrivals is the number of arrivals counted so far.
func (q *QPS) Arrivals() uint64 { return q.total() }

// SetConfig applies a reloaded config. A window of another length makes the
// learned ring meaningless, so it is forgotten; it reports whether it was.
func (q *QPS) SetConfig(cfg QPSConfig) (forgot bool) {
	cfg.Defaults()
	q.mu.Lock()
	defer q.mu.Unlock()
	if cfg.slots() != len(q.ring) {
		q.ring = make([]float64, cfg.slots())
		q.head, q.n, q.sum, q.sq = 0, 0, 0, 0
		q.last = QPSSample{}
		forgot = true
	}
	q.cfg = cfg
	return forgot
}

// Sample closes the period that ends at now. learn=false freezes the
// baseline, which the caller does while shedding so that an overload never
// becomes the new normal.
func (q *QPS) Sample(now time.Time, learn bool) QPSSample {
	total := q.total()
	q.mu.Lock()
	defer q.mu.Unlock()
	var s QPSSample
	if !q.lastAt.IsZero() {
		if dt := now.Sub(q.lastAt).Seconds(); dt > 0 {
			s.Rate = float64(total-q.lastTotal) / dt
		}
	}
	first := q.lastAt.IsZero()
	q.lastTotal, q.lastAt = total, now
	// A second above the learned threshold is not learned even before the
	// level trips on it: the onset of a surge must not widen the baseline
	// that is about to judge it. Gradual growth below it is learned.
	if _, th := q.learned(); learn && !first && (th == 0 || s.Rate <= th) {
		q.push(s.Rate)
		s.Learning = true
	}
	s.Learned = q.n
	s.Baseline, s.Threshold = q.learned()
	if q.cfg.Limit > 0 && (s.Threshold == 0 || q.cfg.Limit < s.Threshold) {
		s.Threshold = q.cfg.Limit
	}
	q.last = s
	return s
}

// learned returns the baseline and the threshold it implies, or zeros while
// warming up. Called with mu held.
func (q *QPS) learned() (baseline, threshold float64) {
	if q.n < q.cfg.Warmup {
		return 0, 0
	}
	mean := q.sum / float64(q.n)
	sd := math.Sqrt(math.Max(0, q.sq/float64(q.n)-mean*mean))
	baseline = math.Max(mean+q.cfg.Sigma*sd, q.cfg.MinBaseline)
	return baseline, baseline * q.cfg.TripFactor
}

func (q *QPS) push(r float64) {
	if q.n == len(q.ring) {
		old := q.ring[q.head]
		q.sum -= old
		q.sq -= old * old
	} else {
		q.n++
	}
	q.ring[q.head] = r
	q.sum += r
	q.sq += r * r
	q.head = (q.head + 1) % len(q.ring)
	if q.head == 0 {
		// Once per lap, recompute the sums so float error cannot build up.
		q.sum, q.sq = 0, 0
		for _, v := range q.ring[:q.n] {
			q.sum += v
			q.sq += v * v
		}
	}
}

// Last returns the most recent sample.
func (q *QPS) Last() QPSSample {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.last
}

// Reset forgets the learned baseline (the admin API's reset).
func (q *QPS) Reset() {
	q.mu.Lock()
	defer q.mu.Unlock()
	clear(q.ring)
	q.head, q.n, q.sum, q.sq = 0, 0, 0, 0
	q.last = QPSSample{}
}

// Learned returns how many one-second samples the baseline holds.
func (q *QPS) Learned() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}
