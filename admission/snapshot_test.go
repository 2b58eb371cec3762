package admission

import (
	"strings"
	"testing"
	"time"
)

// A restored limit starts where the learned one was, within the bounds,
// and is judged against the long-run average it had: it neither starts
// at initial nor doubles as from a cold start.
func TestLimitSnapshotRestore(t *testing.T) {
	l := NewLimit(Config{})
	now := time.Unix(0, 0)
	u := upstream{slots: 16, prefill: 40 * time.Millisecond, service: 750 * time.Millisecond}
	saturate(l, u, &now, 60)
	snap, ok := l.Snapshot()
	if !ok || snap.Limit < 12 || snap.TTFBLongS <= 0 {
		t.Fatalf("snapshot %+v (ok %v) after learning a 16-slot upstream", snap, ok)
	}

	r := NewLimit(Config{})
	if err := r.Restore(snap); err != nil {
		t.Fatal(err)
	}
	st := r.Status()
	if st.Limit != l.Value() || st.LongS != l.Status().LongS || st.Driver != "restored" {
		t.Fatalf("restored %+v, want the limit %d and long average of %+v", st, l.Value(), l.Status())
	}
	// Saturated from the first step: the restored limit probes up by √limit
	// at most, no doubling.
	got := saturate(r, u, &now, 1)[0]
	if got > st.Limit+5 {
		t.Fatalf("restored limit %d went to %d in one step: a cold start's doubling", st.Limit, got)
	}

	// Within the new bounds.
	b := NewLimit(Config{Max: 8})
	if err := b.Restore(snap); err != nil || b.Value() != 8 {
		t.Fatalf("restore under max 8: %v, limit %d", err, b.Value())
	}
}

// Nothing to keep from a fixed limit or before any first byte; a fixed
// limit, or values no limit has, refuse a restore and change nothing.
func TestLimitRestoreRefuses(t *testing.T) {
	if _, ok := NewLimit(Config{}).Snapshot(); ok {
		t.Fatal("a snapshot before any first byte")
	}
	if _, ok := NewLimit(Config{Limit: 5}).Snapshot(); ok {
		t.Fatal("a snapshot of a fixed limit")
	}
	for _, c := range []struct {
		cfg  Config
		snap Snapshot
		want string
	}{
		{Config{Limit: 5}, Snapshot{Limit: 20, TTFBLongS: 0.1}, "fixed at 5"},
		{Config{}, Snapshot{Limit: 0, TTFBLongS: 0.1}, "no limit"},
		{Config{}, Snapshot{Limit: 20, TTFBLongS: -1}, "no time"},
	} {
		l := NewLimit(c.cfg)
		before := l.Status()
		if err := l.Restore(c.snap); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Restore(%+v) under %+v = %v, want %q", c.snap, c.cfg, err, c.want)
		}
		if l.Status() != before {
			t.Errorf("a refused restore changed the limit: %+v, was %+v", l.Status(), before)
		}
	}
}
