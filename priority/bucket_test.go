package priority

import (
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

func TestBucketAIMD(t *testing.T) {
	now := time.Unix(0, 0)
	b := NewBucket(BucketConfig{Floor: 1, Increase: 0.1, Decrease: 0.5})
	b.Tune(now, Health{Served: 20})

	// Healthy but nobody pressed on the bucket: the rate holds.
	now = now.Add(time.Second)
	if got := b.Tune(now, Health{Shedding: true}); got != 20 {
		t.Fatalf("idle bucket moved to %v", got)
	}
	// Pressed and healthy: additive increase of 10%.
	drain(b, now)
	now = now.Add(time.Second)
	if got := b.Tune(now, Health{Shedding: true}); got != 22 {
		t.Fatalf("increase: %v, want 22", got)
	}
	// Congested: halve, then hold for one period even if still congested.
	now = now.Add(time.Second)
	if got := b.Tune(now, Health{Shedding: true, Congested: true}); got != 11 {
		t.Fatalf("decrease: %v, want 11", got)
	}
	now = now.Add(time.Second)
	if got := b.Tune(now, Health{Shedding: true, Congested: true}); got != 11 {
		t.Fatalf("hold after a decrease: %v", got)
	}
	now = now.Add(time.Second)
	if got := b.Tune(now, Health{Shedding: true, Congested: true}); got != 5.5 {
		t.Fatalf("second decrease: %v", got)
	}
	// Congested but draining: the cut is working, hold.
	now = now.Add(time.Second)
	b.Tune(now, Health{Shedding: true}) // end the hold
	now = now.Add(time.Second)
	if got := b.Tune(now, Health{Shedding: true, Congested: true, Draining: true}); got != 5.5 {
		t.Fatalf("cut while draining: %v", got)
	}
	// Congestion that never ends stops at the floor.
	for range 20 {
		now = now.Add(time.Second)
		b.Tune(now, Health{Shedding: true, Congested: true})
	}
	if got := b.Limit(); got != 1 {
		t.Fatalf("floor: %v", got)
	}
	// At small rates the step is at least 1 req/s (after the hold that
	// follows the last decrease).
	now = now.Add(time.Second)
	b.Tune(now, Health{Shedding: true})
	drain(b, now)
	now = now.Add(time.Second)
	if got := b.Tune(now, Health{Shedding: true}); got != 2 {
		t.Fatalf("minimum step: %v", got)
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
	if b.Refused() != uint64(500-admitted) {
		t.Fatalf("refused %d", b.Refused())
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
