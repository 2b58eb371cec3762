package loadgen

import (
	"strings"
	"testing"
)

func TestParseMix(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Mix
	}{
		{"high=0.1,medium=0.3,low=0.6", Mix{0.1, 0.3, 0.6}},
		{" low = 2 , HIGH=1 ", Mix{High: 1, Low: 2}},
		{"0.2/0.3/0.5", Mix{0.2, 0.3, 0.5}},
	} {
		got, err := ParseMix(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseMix(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "high", "urgent=1", "high=x", "0.1/0.9", "high=-1,low=1", "high=0,low=0", "high=NaN", "1/x/1"} {
		if _, err := ParseMix(bad); err == nil {
			t.Errorf("ParseMix(%q) accepted", bad)
		}
	}
}

func TestPickerDeterministicAndProportional(t *testing.T) {
	const n = 100000
	draw := func(m Mix, seed uint64) ([]Priority, [numPriorities]int) {
		pick := m.picker(seed)
		var seq []Priority
		var counts [numPriorities]int
		for range n {
			p := pick()
			seq = append(seq, p)
			counts[p]++
		}
		return seq, counts
	}
	a, counts := draw(DefaultMix, 42)
	b, _ := draw(DefaultMix, 42)
	c, _ := draw(DefaultMix, 43)
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("seed 42 drew %v then %v at %d", a[i], b[i], i)
		}
	}
	same := 0
	for i := range a {
		if a[i] == c[i] {
			same++
		}
	}
	if same == n {
		t.Fatal("seeds 42 and 43 drew the same sequence")
	}
	// Binomial σ is under 0.0016 of n for these shares: 1% is over 6σ.
	for p, want := range []float64{0.1, 0.3, 0.6} {
		if got := float64(counts[p]) / n; got < want-0.01 || got > want+0.01 {
			t.Errorf("%v drawn %.3f of the time, want %.1f", Priority(p), got, want)
		}
	}
	// A zero share is never drawn; unnormalised shares work.
	_, counts = draw(Mix{High: 3, Medium: 1}, 1)
	if counts[Low] != 0 || counts[High] < 74000 || counts[High] > 76000 {
		t.Errorf("mix 3:1:0 drew %v", counts)
	}
	_, counts = draw(Mix{Low: 1}, 1)
	if counts[Low] != n {
		t.Errorf("low-only mix drew %v", counts)
	}
}

func TestPriorityText(t *testing.T) {
	for _, p := range Priorities {
		b, _ := p.MarshalText()
		var q Priority
		if err := q.UnmarshalText(b); err != nil || q != p {
			t.Errorf("round trip of %v gave %v, %v", p, q, err)
		}
	}
	var q Priority
	if err := q.UnmarshalText([]byte("urgent")); err == nil || !strings.Contains(err.Error(), "urgent") {
		t.Errorf("unknown priority: err = %v", err)
	}
}
