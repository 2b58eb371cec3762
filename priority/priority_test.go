package priority

import (
	"sync"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	cases := []struct {
		claim string
		def   Priority
		want  Priority
	}{
		{"high", Medium, High},
		{" HIGH ", Low, High},
		{"Medium", Low, Medium},
		{"low", High, Low},
		{"", Medium, Medium},
		{"urgent", Medium, Medium},
		{"hi", Low, Low},
		{"highest", Medium, Medium},
	}
	for _, c := range cases {
		if got := Classify(c.claim, c.def); got != c.want {
			t.Errorf("Classify(%q, %v) = %v, want %v", c.claim, c.def, got, c.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { Classify(" Medium", Low) }); n != 0 {
		t.Errorf("Classify allocates %v times", n)
	}
}

func TestReserveCapsConcurrentSlots(t *testing.T) {
	r := NewReserve(3)
	for i := range 3 {
		if !r.TryAcquire() {
			t.Fatalf("slot %d refused", i)
		}
	}
	if r.TryAcquire() {
		t.Fatal("a fourth slot was granted")
	}
	if r.InUse() != 3 {
		t.Fatalf("in use %d", r.InUse())
	}
	r.Release()
	if !r.TryAcquire() {
		t.Fatal("a released slot was not reusable")
	}
	r.SetCap(1)
	if r.TryAcquire() {
		t.Fatal("granted above a lowered capacity")
	}
}

func TestReserveNeverOversubscribedUnderRace(t *testing.T) {
	r := NewReserve(4)
	var mu sync.Mutex
	held, peak := 0, 0
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 2000 {
				if !r.TryAcquire() {
					continue
				}
				mu.Lock()
				held++
				peak = max(peak, held)
				mu.Unlock()
				mu.Lock()
				held--
				mu.Unlock()
				r.Release()
			}
		})
	}
	wg.Wait()
	if peak > 4 || r.InUse() != 0 {
		t.Fatalf("peak %d in use %d", peak, r.InUse())
	}
}

func TestLanes(t *testing.T) {
	now := time.Unix(1000, 0)
	l := &Lanes{Reserve: NewReserve(1), Bucket: NewBucket(BucketConfig{Floor: 1})}
	for _, p := range []Priority{Low, Medium, High} {
		if v := l.Admit(p, false, now); v != Pass {
			t.Errorf("%v not shedding: %v", p, v)
		}
	}
	if v := l.Admit(Low, true, now); v != ShedLow || v.Status() != 429 || v.Admitted() {
		t.Errorf("low while shedding: %v %d", v, v.Status())
	}
	if v := l.Admit(High, true, now); v != PassReserved || !v.Admitted() {
		t.Errorf("first high: %v", v)
	}
	if v := l.Admit(High, true, now); v != ShedReserveFull || v.Status() != 503 {
		t.Errorf("second high with a full reserve: %v", v)
	}
	if v := l.Admit(Medium, true, now); v != PassBucket {
		t.Errorf("first medium (burst 1): %v", v)
	}
	if v := l.Admit(Medium, true, now); v != ShedBucket || v.Status() != 429 {
		t.Errorf("second medium in the same instant: %v", v)
	}
	if v := l.Admit(Medium, true, now.Add(time.Second)); v != PassBucket {
		t.Errorf("medium a second later at 1 req/s: %v", v)
	}
}

func TestRetryAfter(t *testing.T) {
	if got := RetryAfter(0, 5*time.Second, 0); got != 5 {
		t.Errorf("floor: %d", got)
	}
	if got := RetryAfter(12300*time.Millisecond, 5*time.Second, 0); got != 13 {
		t.Errorf("rounds up: %d", got)
	}
	if got := RetryAfter(0, 0, 0); got != 1 {
		t.Errorf("never zero: %d", got)
	}
	seen := map[int]bool{}
	for range 500 {
		got := RetryAfter(10*time.Second, 5*time.Second, 0.2)
		if got < 10 || got > 12 {
			t.Fatalf("jittered value %d outside [10,12]", got)
		}
		seen[got] = true
	}
	if len(seen) < 2 {
		t.Errorf("jitter produced a single value: %v", seen)
	}
	if n := testing.AllocsPerRun(100, func() { RetryAfter(time.Second, time.Second, 0.2) }); n != 0 {
		t.Errorf("RetryAfter allocates %v", n)
	}
}
