package llmsim

import (
	"context"
	"errors"
	"testing"
	"time"
)

// memConfig: 10 MiB card, 4 MiB weights, 1 MiB per queued request, 1 KiB
// of KV per token.
func memConfig(slots int) Config {
	return Config{Slots: slots, TotalMemory: 10 * MiB, BaseMemory: 4 * MiB, QueuedMemory: MiB, KVPerToken: 1 << 10}.withDefaults()
}

// admittedNow reports whether q already has its answer, and what it is.
func admittedNow(q *seq) (bool, error) {
	select {
	case err := <-q.admitted:
		return true, err
	default:
		return false, nil
	}
}

func mustEnqueue(t *testing.T, s *scheduler, prompt int) *seq {
	t.Helper()
	q, err := s.enqueue(prompt, time.Now())
	if err != nil {
		t.Fatalf("enqueue: %v", err)
	}
	return q
}

func TestSchedulerFIFOAndMemory(t *testing.T) {
	c := memConfig(1)
	s := newScheduler(c)
	a := mustEnqueue(t, s, 100)
	b := mustEnqueue(t, s, 50)
	cq := mustEnqueue(t, s, 10)
	if ok, err := admittedNow(a); !ok || err != nil {
		t.Fatalf("first request: admitted=%v err=%v, want a slot at once", ok, err)
	}
	if ok, _ := admittedNow(b); ok {
		t.Fatal("second request admitted with one slot taken")
	}
	snap := s.snapshot()
	want := c.BaseMemory + 100*c.KVPerToken + 2*c.QueuedMemory
	if snap.Running != 1 || snap.Waiting != 2 || snap.MemUsed != want {
		t.Fatalf("snapshot %+v, want running 1, waiting 2, mem %d", snap, want)
	}
	s.addToken(a)
	s.addToken(a)
	if got := s.snapshot().MemUsed; got != want+2*c.KVPerToken {
		t.Fatalf("after 2 tokens mem %d, want %d", got, want+2*c.KVPerToken)
	}
	s.leave(a, true)
	if ok, err := admittedNow(b); !ok || err != nil {
		t.Fatalf("b after a left: admitted=%v err=%v", ok, err)
	}
	if ok, _ := admittedNow(cq); ok {
		t.Fatal("c overtook b")
	}
	snap = s.snapshot()
	want = c.BaseMemory + 50*c.KVPerToken + c.QueuedMemory
	if snap.Served != 1 || snap.MemUsed != want {
		t.Fatalf("snapshot %+v, want served 1, mem %d", snap, want)
	}
	s.leave(a, true) // twice: harmless
	if s.snapshot() != snap {
		t.Fatal("second leave changed the counters")
	}
}

func TestSchedulerOOMOnArrival(t *testing.T) {
	c := memConfig(1)
	s := newScheduler(c)
	s.setSlots(0) // everything queues
	for i := range 6 {
		mustEnqueue(t, s, 1) // 4 + 6×1 MiB = 10 MiB: exactly full is still fine
		if got := s.snapshot().MemUsed; got != c.BaseMemory+int64(i+1)*MiB {
			t.Fatalf("after %d queued: mem %d", i+1, got)
		}
	}
	if _, err := s.enqueue(1, time.Now()); !errors.Is(err, errOOM) {
		t.Fatalf("7th arrival: %v, want OOM", err)
	}
	snap := s.snapshot()
	if snap.OOMs != 1 || snap.Waiting != 6 || snap.MemUsed != c.TotalMemory {
		t.Fatalf("snapshot %+v, want 1 OOM, 6 waiting, memory full", snap)
	}
}

func TestSchedulerOOMOnAdmission(t *testing.T) {
	c := memConfig(1)
	c.KVPerToken = MiB
	s := newScheduler(c)
	s.setSlots(0)
	big := mustEnqueue(t, s, 7) // 7 MiB of KV over 4 MiB of weights: cannot run
	small := mustEnqueue(t, s, 2)
	s.setSlots(1)
	if ok, err := admittedNow(big); !ok || !errors.Is(err, errOOM) {
		t.Fatalf("big prompt: admitted=%v err=%v, want OOM", ok, err)
	}
	if ok, err := admittedNow(small); !ok || err != nil {
		t.Fatalf("small prompt after the OOM: admitted=%v err=%v", ok, err)
	}
	snap := s.snapshot()
	if snap.OOMs != 1 || snap.Running != 1 || snap.Waiting != 0 || snap.MemUsed != c.BaseMemory+2*MiB {
		t.Fatalf("snapshot %+v", snap)
	}
}

func TestSchedulerQueueLimit(t *testing.T) {
	c := memConfig(1)
	c.QueueLimit = 1
	s := newScheduler(c)
	mustEnqueue(t, s, 1) // runs
	mustEnqueue(t, s, 1) // queues
	if _, err := s.enqueue(1, time.Now()); !errors.Is(err, errQueueFull) {
		t.Fatalf("over the limit: %v, want queue full", err)
	}
	if s.snapshot().Rejected != 1 {
		t.Fatal("rejection not counted")
	}
}

func TestSchedulerCancel(t *testing.T) {
	c := memConfig(1)
	s := newScheduler(c)
	running := mustEnqueue(t, s, 1)
	queued := mustEnqueue(t, s, 1)
	next := mustEnqueue(t, s, 1)
	<-running.admitted

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.wait(ctx, queued, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait with a cancelled context: %v", err)
	}
	if snap := s.snapshot(); snap.Waiting != 1 || snap.Canceled != 1 {
		t.Fatalf("queued client left: %+v, want 1 waiting, 1 cancelled", snap)
	}
	s.leave(running, false) // client of the running one leaves
	if ok, err := admittedNow(next); !ok || err != nil {
		t.Fatalf("next after the slot was freed: admitted=%v err=%v", ok, err)
	}
	if snap := s.snapshot(); snap.Canceled != 2 || snap.Served != 0 || snap.Running != 1 {
		t.Fatalf("snapshot %+v", snap)
	}

	done := make(chan struct{})
	close(done)
	s.setSlots(0)
	late := mustEnqueue(t, s, 1)
	if err := s.wait(context.Background(), late, done); !errors.Is(err, errClosed) {
		t.Fatalf("wait on a closed server: %v", err)
	}
}

func TestSchedulerSetSlots(t *testing.T) {
	s := newScheduler(memConfig(4))
	var qs []*seq
	for range 6 {
		qs = append(qs, mustEnqueue(t, s, 1))
	}
	s.setSlots(2) // 4 running stay, 2 wait
	s.leave(qs[0], true)
	s.leave(qs[1], true)
	if snap := s.snapshot(); snap.Running != 2 || snap.Waiting != 2 {
		t.Fatalf("after 2 of 4 finished under 2 slots: %+v, want running 2, waiting 2", snap)
	}
	s.leave(qs[2], true)
	if snap := s.snapshot(); snap.Running != 2 || snap.Waiting != 1 {
		t.Fatalf("one under the new size admits one: %+v", snap)
	}
	s.setSlots(8)
	if snap := s.snapshot(); snap.Running != 3 || snap.Waiting != 0 {
		t.Fatalf("growing the batch admits the rest: %+v", snap)
	}
}
