package breaker

import (
	"testing"
	"time"
)

func TestFloorDiv(t *testing.T) {
	for _, c := range [][3]int64{{7, 2, 3}, {-7, 2, -4}, {-8, 2, -4}, {0, 3, 0}, {-1, 10, -1}} {
		if got := floorDiv(c[0], c[1]); got != c[2] {
			t.Errorf("floorDiv(%d, %d) = %d, want %d", c[0], c[1], got, c[2])
		}
	}
}

func TestWindowBuckets(t *testing.T) {
	w := newWindow(10 * time.Second) // 1 s buckets
	sec := int64(time.Second)
	base := -50 * sec // before epoch: negative bucket epochs
	w.record(base, true, 0)
	w.record(base+sec/2, false, 0)
	w.record(base+3*sec, true, 0)
	if tot, f := w.sum(base + 3*sec); tot != 3 || f != 2 {
		t.Fatalf("sum = %d/%d, want 3/2", tot, f)
	}
	// The bucket of base leaves the window 10 buckets later.
	if tot, _ := w.sum(base + 10*sec); tot != 1 {
		t.Fatalf("after 10 s sum = %d, want 1", tot)
	}
	// Reusing a bucket for a newer epoch zeroes it first.
	w.record(base+10*sec, false, 0)
	if tot, f := w.sum(base + 10*sec); tot != 2 || f != 1 {
		t.Fatalf("reused bucket: sum = %d/%d, want 2/1", tot, f)
	}
	// A stale sample for the bucket's older epoch is dropped.
	w.record(base, true, 0)
	if tot, f := w.sum(base + 10*sec); tot != 2 || f != 1 {
		t.Fatalf("stale sample counted: %d/%d", tot, f)
	}
	w.reset()
	if tot, _ := w.sum(base + 10*sec); tot != 0 {
		t.Fatal("reset left counts")
	}
	// A tiny window still has positive buckets.
	if newWindow(0).dur != 1 {
		t.Fatal("zero window")
	}
}

func TestWindowShardsAddUp(t *testing.T) {
	w := newWindow(10 * time.Second)
	for hint := range uint32(64) {
		w.record(0, hint%4 == 0, hint)
	}
	if tot, f := w.sum(0); tot != 64 || f != 16 {
		t.Fatalf("sum over shards = %d/%d, want 64/16", tot, f)
	}
}
