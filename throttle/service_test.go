package throttle

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/admission"
	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/config"
	"github.com/ai-guardian/adaptivethrottle/levels/latency"
	"github.com/ai-guardian/adaptivethrottle/priority"
)

// queued spins until the gate has n waiters: a precondition of the test,
// never what it asserts.
func queued(t *testing.T, th *Throttle, n int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for th.gate.Waiting() != n {
		if time.Now().After(deadline) {
			t.Fatalf("waiting = %d, want %d", th.gate.Waiting(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func askFor(tokens int) string {
	return fmt.Sprintf(`{"model":"m","max_tokens":%d,"messages":[{"role":"user","content":"hi"}]}`, tokens)
}

// With an slo stated, a request waits for a slot only as long as its
// answer can still be on time: the slo less its class's expected service
// time, learned on the sampler's steps. One whose answer cannot be on
// time is refused at once, with a Retry-After; one that can waits and is
// served.
func TestSLOWaitBudget(t *testing.T) {
	th := testThrottle(t, Config{
		Concurrency: admission.Config{Limit: 1, MaxWait: admission.MaxWait{Medium: config.Duration(time.Minute)}},
		Latency:     latency.Config{SLO: config.Duration(2500 * time.Millisecond), Measure: "total"},
	})
	now := time.Unix(1000, 0)
	th.step(now, true)
	if w, _, ok := th.waitFor(priority.Medium, classOf(64)); !ok || w != time.Minute {
		t.Fatalf("nothing learned: wait %v (%v), want max_wait", w, ok)
	}
	// Answers of 64 tokens take 2 s, answers of 512 take 3 s.
	for i := range 8 {
		th.service.record(uint32(i), classOf(64), 2*time.Second)
		th.service.record(uint32(i), classOf(512), 3*time.Second)
	}
	now = now.Add(250 * time.Millisecond)
	th.step(now, false)
	w, ahead, ok := th.waitFor(priority.Medium, classOf(64))
	if !ok || w != 400*time.Millisecond || ahead != admission.NoBound {
		t.Fatalf("64 tokens in 2 s under a 2.5 s slo: wait %v, ahead %d (%v); want 400ms (2 s + 5%%), no bound", w, ahead, ok)
	}
	if _, _, ok := th.waitFor(priority.Medium, classOf(512)); ok {
		t.Fatal("512 tokens in 3 s under a 2.5 s slo: allowed to wait")
	}
	// A class not learned borrows the unknown class's figure, or waits
	// max_wait while that is not learned either.
	if w, _, ok := th.waitFor(priority.Medium, classOf(8)); !ok || w != time.Minute {
		t.Fatalf("a class not learned: wait %v (%v)", w, ok)
	}

	if !th.gate.TryAcquire(priority.Low, false) {
		t.Fatal("the one slot was refused")
	}
	// A long answer cannot be on time: refused at once, not after max_wait.
	start := time.Now()
	d := th.AdmitRequest(chatRequest(askFor(512), "application/json"), priority.Medium, Now())
	if d.Admitted() || d.Status() != 429 || d.RetryAfter() < 1 || d.Cause() != "concurrency" {
		t.Fatalf("512 tokens: %v %d, Retry-After %d, cause %q", d.Verdict(), d.Status(), d.RetryAfter(), d.Cause())
	}
	if el := time.Since(start); el > time.Second || th.gate.Waiting() != 0 {
		t.Fatalf("refused after %v with %d waiting: it waited", el, th.gate.Waiting())
	}
	// A 64-token answer can: it waits and gets the slot.
	done := make(chan Decision, 1)
	go func() { done <- th.AdmitRequest(chatRequest(askFor(64), "application/json"), priority.Medium, Now()) }()
	queued(t, th, 1)
	th.gate.Release(false)
	if d := <-done; !d.Admitted() {
		t.Fatalf("64 tokens, a slot freed within the budget: %v", d.Verdict())
	} else {
		th.Finish(&d, Outcome{Status: 200})
	}

	// Completing 1.25 a second, 0.4 s frees half a slot on average: one
	// may wait ahead (aheadSlack), and with two waiting the next is
	// refused at once; high, with nobody ahead of it, waits.
	th.drain.Store(math.Float64bits(1.25))
	if _, ahead, _ := th.waitFor(priority.Medium, classOf(64)); ahead != 1 {
		t.Fatalf("1.25 completions a second, 0.4 s: %d may be ahead, want 1", ahead)
	}
	if !th.gate.TryAcquire(priority.Low, false) {
		t.Fatal("the slot was not given back")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range 2 {
		go th.Admit(ctx, priority.Medium, Now())
		queued(t, th, int64(i+1))
	}
	// Admit knows no length: the unknown class, learned from these.
	for i := range 8 {
		th.service.record(uint32(i), classUnknown, 2*time.Second)
	}
	th.step(now.Add(250*time.Millisecond), false)
	start = time.Now()
	if d := th.Admit(context.Background(), priority.Medium, Now()); d.Admitted() || th.gate.Waiting() != 2 {
		t.Fatalf("two ahead of a request that has room for one: %v, %d waiting", d.Verdict(), th.gate.Waiting())
	}
	if el := time.Since(start); el >= 400*time.Millisecond {
		t.Fatalf("refused after %v: it waited its budget out", el)
	}
	go th.Admit(ctx, priority.High, Now())
	queued(t, th, 3) // high has nobody ahead of it
}

// A queue that has not emptied for its max_wait is standing: a new
// request of its priority waits max_wait ÷ standingCut, and the newest is
// served first. A queue that forms and drains keeps max_wait.
func TestStandingQueueShortensWaits(t *testing.T) {
	th := testThrottle(t, Config{Concurrency: admission.Config{Limit: 1, MaxWait: admission.MaxWait{Medium: config.Duration(time.Minute)}}})
	now := time.Unix(1000, 0)
	th.step(now, true)
	if !th.gate.TryAcquire(priority.Low, false) {
		t.Fatal("the one slot was refused")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go th.Admit(ctx, priority.Medium, breaker.MonoOf(now))
	queued(t, th, 1)
	th.step(now.Add(30*time.Second), false)
	if w, _, _ := th.waitFor(priority.Medium, classUnknown); w != time.Minute {
		t.Fatalf("a queue 30 s old under a max_wait of 1m: wait %v, want 1m", w)
	}
	th.step(now.Add(61*time.Second), false)
	if w, _, _ := th.waitFor(priority.Medium, classUnknown); w != time.Minute/standingCut || !th.gate.Standing(priority.Medium) {
		t.Fatalf("a queue not emptied for 61 s: wait %v, want %v", w, time.Minute/standingCut)
	}
	if w, _, _ := th.waitFor(priority.High, classUnknown); w != time.Duration(th.maxWait[priority.High].Load()) {
		t.Fatalf("high's empty queue: wait %v", w)
	}
	cancel() // the waiter leaves: the queue empties
	queued(t, th, 0)
	if w, _, _ := th.waitFor(priority.Medium, classUnknown); w != time.Minute {
		t.Fatalf("an emptied queue: wait %v, want 1m", w)
	}
}

// High's wait, on which the turnover judges whether the reserve is held,
// is the shortest budget of the classes learned: requests that found a
// free slot teach the unknown class quick answers at a light load, while
// the high requests that wait are weighed and wait their class's budget.
func TestHighWaitIsTheShortestBudget(t *testing.T) {
	th := testThrottle(t, Config{Latency: latency.Config{SLO: config.Duration(2500 * time.Millisecond), Measure: "total"}})
	now := time.Unix(1000, 0)
	th.step(now, true)
	if w := time.Duration(th.highWait.Load()); w != time.Duration(th.maxWait[priority.High].Load()) {
		t.Fatalf("nothing learned: high waits %v, want its max_wait", w)
	}
	for i := range 8 {
		th.service.record(uint32(i), classUnknown, time.Second)
		th.service.record(uint32(i), classOf(64), 2*time.Second)
	}
	th.step(now.Add(250*time.Millisecond), false)
	if w := time.Duration(th.highWait.Load()); w != 400*time.Millisecond {
		t.Fatalf("answers of 1 s unweighed, 2 s of 64 tokens, slo 2.5 s: high waits %v, want 400ms (64 tokens' budget)", w)
	}
}

// High's budget leaves room for its class's mean answer (5% over it), not
// for the mean and two standard deviations as medium's: a high request
// refused is late for certain. With the rule off, high's is medium's.
func TestHighBudgetIsTheMean(t *testing.T) {
	for _, off := range []bool{false, true} {
		th := testThrottle(t, Config{Latency: latency.Config{SLO: config.Duration(2500 * time.Millisecond), Measure: "total"}})
		if off {
			th.off = admission.Rules(1 << admission.RuleHighBudget)
		}
		now := time.Unix(1000, 0)
		th.step(now, true)
		// Answers of 64 tokens: half take 1.6 s, half 2 s (mean 1.8 s, sd 0.2 s).
		for i := range 8 {
			th.service.record(uint32(i), classOf(64), 1600*time.Millisecond+time.Duration(i%2)*400*time.Millisecond)
		}
		th.step(now.Add(250*time.Millisecond), false)
		medium, _, okM := th.waitFor(priority.Medium, classOf(64))
		high, _, okH := th.waitFor(priority.High, classOf(64))
		wantHigh := 610 * time.Millisecond // 2.5 s − 1.05 × 1.8 s
		if off {
			wantHigh = 300 * time.Millisecond
		}
		if !okM || !okH || medium != 300*time.Millisecond || high != wantHigh {
			t.Errorf("highbudget off %v: medium waits %v (%v), high %v (%v); want 300ms (2.5 s − 1.8 s − 2 × 0.2 s), high %v", off, medium, okM, high, okH, wantHigh)
		}
		if w := time.Duration(th.highWait.Load()); w != wantHigh {
			t.Errorf("highbudget off %v: the turnover judges a wait of %v, want high's %v", off, w, wantHigh)
		}
	}
}
