package priority

import (
	"math"
	"testing"
	"time"
)

// drain presses on the bucket so that the next Tune sees demand above the rate.
func drain(b *Bucket, now time.Time) {
	for b.Allow(now) {
	}
}

func TestBucketFollowsServedRateWhileNotShedding(t *testing.T) {
	now := time.Unix(0, 0)
	b := NewBucket(BucketConfig{Floor: 2})
	if got := b.Tune(now, Health{Served: 40}); got != 40 {
		t.Fatalf("not shedding: rate %v, want the served 40", got)
	}
	if got := b.Tune(now, Health{Served: 0.5}); got != 2 {
		t.Fatalf("never below the floor: %v", got)
	}
}

func TestBucketController(t *testing.T) {
	now := time.Unix(0, 0)
	tick := func(b *Bucket, h Health) float64 {
		now = now.Add(time.Second)
		return b.Tune(now, h)
	}
	// The upstream serves 10 req/s; high priority takes 3 of them.
	up := func(h Health) Health { h.Served, h.Reserved = 10, 3; return h }
	b := NewBucket(BucketConfig{Floor: 1, Increase: 0.1, Decrease: 0.9, Drain: 2 * time.Second})
	// Healthy, not shedding: follow the upstream, and learn that it runs
	// 8 at once without queueing.
	if got := tick(b, up(Health{InFlight: 8})); got != 10 || b.Concurrency() != 8 {
		t.Fatalf("not shedding: rate %v concurrency %v", got, b.Concurrency())
	}
	// Shedding, keeping up, nobody pressed on the bucket: the rate holds.
	if got := tick(b, up(Health{Shedding: true, InFlight: 8})); got != 10 {
		t.Fatalf("idle bucket moved to %v", got)
	}
	// Pressed and keeping up, no capacity learned yet: add 10%.
	drain(b, now)
	if got := tick(b, up(Health{Shedding: true, InFlight: 8})); got != 11 {
		t.Fatalf("increase: %v, want 11", got)
	}
	// Congested with 20 queued (28 in flight, 8 without queueing): aim at
	// 10 served − 3 reserved − 20/2 s to work the queue off: the floor.
	if got := tick(b, up(Health{Shedding: true, Congested: true, InFlight: 28})); got != 1 {
		t.Fatalf("deep queue: %v, want the floor", got)
	}
	if b.Concurrency() != 8 {
		t.Fatalf("learned concurrency moved while congested: %v", b.Concurrency())
	}
	// Draining, 2 left queued: aim at 10 − 3 − 1 = 6 without cutting below.
	b.set(now, 9)
	if got := tick(b, up(Health{Shedding: true, Congested: true, Draining: true, InFlight: 10})); got != 6 {
		t.Fatalf("draining: %v, want 6", got)
	}
	b.set(now, 5)
	if got := tick(b, up(Health{Shedding: true, Congested: true, Draining: true, InFlight: 10})); got != 5 {
		t.Fatalf("draining raised the rate to %v", got)
	}
	// Congested with no queue in sight (latency, GPU or the circuit say
	// so): cut by at least Decrease.
	if got := tick(b, up(Health{Shedding: true, Congested: true, InFlight: 6})); got != 4.5 {
		t.Fatalf("congested without a queue: %v, want 5 × 0.9", got)
	}
	// The congested periods taught the capacity: once the upstream keeps
	// up again, a pressed bucket comes straight back to the medium share
	// of it rather than creep up.
	if c := b.Capacity(); c != 10 {
		t.Fatalf("learned capacity %v, want 10", c)
	}
	b.set(now, 1)
	drain(b, now)
	if got := tick(b, up(Health{Shedding: true, InFlight: 3})); math.Abs(got-7) > 1e-9 {
		t.Fatalf("after the queue drained: %v, want 10 − 3", got)
	}
	// At that share, probe by 2% a period.
	drain(b, now)
	if got := tick(b, up(Health{Shedding: true, InFlight: 3})); math.Abs(got-7*1.02) > 1e-9 {
		t.Fatalf("probe near capacity: %v, want 7 × 1.02", got)
	}
	// At small rates (and no capacity learned) the step is at least 1 req/s.
	fresh := NewBucket(BucketConfig{Floor: 1})
	drain(fresh, now)
	if got := tick(fresh, up(Health{Shedding: true, InFlight: 3})); got != 2 {
		t.Fatalf("minimum step: %v", got)
	}
	// Keeping up with fewer in flight: the learned concurrency decays 2%
	// a period (two such periods here).
	if got := b.Concurrency(); math.Abs(got-8*0.98*0.98) > 1e-9 {
		t.Fatalf("concurrency %v, want 8 decayed twice", got)
	}
}

// Lumpy completions do not jerk the rate: served and reserved rates are
// smoothed before the controller aims with them.
func TestBucketSmoothsLumpyRates(t *testing.T) {
	now := time.Unix(0, 0)
	b := NewBucket(BucketConfig{Floor: 1})
	b.Tune(now, Health{Served: 10, Reserved: 3, InFlight: 8})
	b.set(now, 7)
	now = now.Add(time.Second)
	// One second with few completions, as happens when long streams end
	// together: the aim moves 30% of the way, not all of it.
	got := b.Tune(now, Health{Shedding: true, Congested: true, Served: 4, Reserved: 3, InFlight: 8})
	if want := 0.7*10 + 0.3*4 - 3; math.Abs(got-want) > 1e-9 {
		t.Fatalf("rate %v, want %v", got, want)
	}
}

func TestBucketAdmitsAtItsRate(t *testing.T) {
	now := time.Unix(0, 0)
	b := NewBucket(BucketConfig{Floor: 1, Burst: 0.25})
	b.Tune(now, Health{Served: 8}) // 8 req/s, burst 2
	admitted := 0
	// Ten attempts every 10 ms over 5 s: 500 attempts at 100 req/s.
	for i := range 500 {
		if b.Allow(now.Add(time.Duration(i) * 10 * time.Millisecond)) {
			admitted++
		}
	}
	if admitted < 40 || admitted > 43 {
		t.Fatalf("admitted %d in 5 s at 8 req/s (burst 2), want 40..42", admitted)
	}
	if b.refused.Load() != uint64(500-admitted) {
		t.Fatalf("refused %d", b.refused.Load())
	}
}

func TestBucketSetConfigKeepsRate(t *testing.T) {
	now := time.Unix(0, 0)
	b := NewBucket(BucketConfig{Floor: 1})
	b.Tune(now, Health{Served: 30})
	b.SetConfig(now, BucketConfig{Floor: 5})
	if b.Limit() != 30 {
		t.Fatalf("reload lost the learned rate: %v", b.Limit())
	}
	b.SetConfig(now, BucketConfig{Floor: 50})
	if b.Limit() != 50 {
		t.Fatalf("rate not raised to a new floor: %v", b.Limit())
	}
}

func BenchmarkBucketAllow(b *testing.B) {
	bk := NewBucket(BucketConfig{Floor: 1e9})
	bk.Tune(time.Now(), Health{Served: 1e9})
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		bk.Allow(now)
	}
}

// A reload replaces the tuning while the sampler tunes: no race, and the
// new floor holds from the next period on.
func TestBucketSetConfigWhileTuning(t *testing.T) {
	b := NewBucket(BucketConfig{Floor: 1})
	now := time.Unix(1_800_000_000, 0)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 200 {
			b.SetConfig(now, BucketConfig{Floor: float64(1 + i%3)})
		}
	}()
	for i := range 200 {
		b.Tune(now.Add(time.Duration(i)*time.Second), Health{Shedding: true, Served: 5, InFlight: 2, Congested: true})
	}
	<-done
	b.SetConfig(now, BucketConfig{Floor: 4})
	if r := b.Tune(now.Add(time.Hour), Health{Shedding: true, Served: 1, InFlight: 50, Congested: true}); r != 4 {
		t.Fatalf("rate %v after a reload set the floor to 4", r)
	}
}
