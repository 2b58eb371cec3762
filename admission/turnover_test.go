package admission

import (
	"math"
	"testing"
	"time"
)

// finish runs seconds of a steady flow: each second n requests end,
// holding their slots for the holds given in turn, and as many start (in
// flight, by Little's law: n × the mean hold), sampled four times a
// second.
func finish(tu *Turnover, seconds, n int, w time.Duration, holds ...time.Duration) {
	var inFlight time.Duration
	for i := range n {
		inFlight += holds[i%len(holds)]
	}
	for range seconds {
		for range 4 {
			tu.Step(int64(math.Round(inFlight.Seconds())))
		}
		for i := range n {
			tu.Done(uint32(i), holds[i%len(holds)], w)
		}
		tu.Second()
	}
}

// Whether a wait of 1 s can count on a slot to free: never sure before
// any slot was held; sure when every answer is shorter than the wait; not
// when answers of 4 s hold 10 slots; not on 32 slots when one answer in
// four holds its slot 15 s and the rest half a second, although such
// slots complete about 8 answers a second on average (a mean rate says
// sure): once the 15 s ones hold every slot, about 2 a second end; and not
// when a surge of long answers took the slots and none has ended yet.
// Sure again when long answers are few: they cannot hold every slot.
func TestTurnoverSlow(t *testing.T) {
	w := time.Second
	tu := NewTurnover()
	if !tu.Slow(8, w) {
		t.Fatal("nothing known: want slow (the reserve held)")
	}
	finish(tu, 10, 20, w, 400*time.Millisecond)
	if tu.Slow(8, w) {
		t.Fatal("answers of 0.4 s, a wait of 1 s: want not slow")
	}
	tu = NewTurnover()
	finish(tu, 10, 2, w, 4*time.Second)
	if !tu.Slow(10, w) {
		t.Fatal("answers of 4 s on 10 slots: want slow")
	}
	tu = NewTurnover()
	half, long := 500*time.Millisecond, 15*time.Second
	finish(tu, 20, 8, w, half, half, half, long)
	if !tu.Slow(32, w) {
		t.Fatal("one answer in four of 15 s, the rest 0.5 s, on 32 slots: want slow")
	}
	if tu.Slow(32, 3*time.Second) {
		t.Fatal("the same, with a wait of 3 s (32 slots of 15 s end 6.4 in 3 s): want not slow")
	}
	// Answers of 1.5 s: 16 slots of them end about 10.7 a second, 4 slots
	// 2.7.
	tu = NewTurnover()
	finish(tu, 10, 5, w, 1500*time.Millisecond)
	if tu.Slow(16, w) || !tu.Slow(4, w) {
		t.Fatalf("answers of 1.5 s: slow on 16 slots %v (want false), on 4 %v (want true)", tu.Slow(16, w), tu.Slow(4, w))
	}
	// A surge: 30 slots taken by answers that have not ended yet, the
	// short ones ending at the same pace. What ended says nothing of them; the
	// slots held do.
	tu = NewTurnover()
	for range 5 {
		for range 4 {
			tu.Step(32)
		}
		for i := range 8 {
			tu.Done(uint32(i), half, w)
		}
		tu.Second()
	}
	if !tu.Slow(32, w) {
		t.Fatal("30 slots held by answers still running, 2 turning over: want slow")
	}
	// A surge after a lighter load: answers of 512 tokens held their slots
	// 11.5 s in a half-empty batch (13 of 32 slots held), so 32 slots of
	// them would end 5.6 in 2 s, which looks sure. Then the slots fill with
	// new long answers, which a full batch slows to 15.4 s, while only the
	// old ones end: the holds that ended say sure, the slots held say
	// slow, and they are right.
	w2, base := 2*time.Second, 11500*time.Millisecond
	tu = NewTurnover()
	finish(tu, 30, 4, w2, half, half, half, base)
	if tu.Slow(32, w2) {
		t.Fatal("answers of 11.5 s among short ones, 13 of 32 slots held, a wait of 2 s: want not slow")
	}
	for range 6 {
		for range 4 {
			tu.Step(32)
		}
		for i, h := range []time.Duration{half, half, half, base} {
			tu.Done(uint32(i), h, w2)
		}
		tu.Second()
	}
	if !tu.Slow(32, w2) {
		t.Fatal("32 slots held by a surge of long answers that have not ended, the old ones of 11.5 s ending: want slow")
	}
	// A long answer now and then among many short ones cannot hold every
	// slot: one of 3 s every 10 s among 40 of 0.5 s a second.
	tu = NewTurnover()
	for s := range 30 {
		for range 4 {
			tu.Step(20)
		}
		for i := range 40 {
			tu.Done(uint32(i), half, w)
		}
		if s%10 == 0 {
			tu.Done(0, 3*time.Second, w)
		}
		tu.Second()
	}
	if tu.Slow(8, w) {
		t.Fatal("an answer of 3 s every 10 s among 40 of 0.5 s a second, on 8 slots: want not slow")
	}
	// It forgets: some 30 s of short answers after the long ones.
	tu = NewTurnover()
	finish(tu, 10, 2, w, 4*time.Second)
	finish(tu, 30, 20, w, 400*time.Millisecond)
	if tu.Slow(10, w) {
		t.Fatal("30 s of answers of 0.4 s after answers of 4 s: want not slow")
	}
}
