package qps

import (
	"math"
	"sync"
	"time"
)

// rateSample is one second's result.
type rateSample struct {
	Rate      float64 // arrivals per second over the period
	Baseline  float64 // learned mean + sigma·σ, at least MinBaseline; 0 while warming up
	Threshold float64 // the rate above which the level trips; 0 = none yet
	Fixed     bool    // Threshold is the configured limit
	Learned   int     // samples in the baseline
	Learning  bool    // whether this period was added to the baseline
}

// rates learns the normal arrival rate: a ring of one-second rates covering
// Window, with a running sum and sum of squares so the baseline costs O(1)
// per sample.
//
// sample, reset and setConfig belong to the sampler; last and learned may
// be called from anywhere (status). They share a mutex.
type rates struct {
	mu        sync.Mutex
	cfg       Config
	ring      []float64
	head, n   int
	sum, sq   float64
	lastTotal uint64
	lastAt    time.Time
	last      rateSample
}

// newRates returns a baseline with nothing learned; cfg is defaulted.
func newRates(cfg Config) *rates {
	cfg.Defaults()
	return &rates{cfg: cfg, ring: make([]float64, cfg.slots())}
}

// setConfig applies a reloaded config. A window of another length makes the
// learned ring meaningless, so it is forgotten; it reports whether it was.
func (q *rates) setConfig(cfg Config) (forgot bool) {
	cfg.Defaults()
	q.mu.Lock()
	defer q.mu.Unlock()
	if cfg.slots() != len(q.ring) {
		q.ring = make([]float64, cfg.slots())
		q.head, q.n, q.sum, q.sq = 0, 0, 0, 0
		q.last = rateSample{}
		forgot = true
	}
	q.cfg = cfg
	return forgot
}

// sample closes the period that ends at now; total is the number of
// arrivals so far. learn=false freezes the baseline, which the caller does
// while shedding so that an overload never becomes the new normal.
func (q *rates) sample(now time.Time, total uint64, learn bool) rateSample {
	q.mu.Lock()
	defer q.mu.Unlock()
	var s rateSample
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
	if q.cfg.MaxRate > 0 && (s.Threshold == 0 || q.cfg.MaxRate < s.Threshold) {
		s.Threshold, s.Fixed = q.cfg.MaxRate, true
	}
	q.last = s
	return s
}

// learned returns the baseline and the threshold it implies, or zeros while
// warming up. Called with mu held.
func (q *rates) learned() (baseline, threshold float64) {
	if q.n < q.cfg.Warmup {
		return 0, 0
	}
	mean := q.sum / float64(q.n)
	sd := math.Sqrt(math.Max(0, q.sq/float64(q.n)-mean*mean))
	baseline = math.Max(mean+q.cfg.Sigma*sd, q.cfg.MinBaseline)
	return baseline, baseline * q.cfg.TripFactor
}

func (q *rates) push(r float64) {
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

// lastSample returns the most recent sample.
func (q *rates) lastSample() rateSample {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.last
}

// reset forgets the learned baseline (the admin API's reset).
func (q *rates) reset() {
	q.mu.Lock()
	defer q.mu.Unlock()
	clear(q.ring)
	q.head, q.n, q.sum, q.sq = 0, 0, 0, 0
	q.last = rateSample{}
}

// learnedSeconds returns how many one-second samples the baseline holds.
func (q *rates) learnedSeconds() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}
