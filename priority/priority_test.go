package priority

import (
	"encoding/json"
	"strings"
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

func TestVerdictStatus(t *testing.T) {
	cases := []struct {
		v    Verdict
		p    Priority
		want int
	}{
		{Pass, Low, 0}, {PassQueued, Medium, 0}, {PassReserved, High, 0}, {PassGraded, Medium, 0},
		{ShedReserveFull, High, 503}, {ShedCircuit, Low, 503},
		{ShedGraded, Medium, 429}, {ShedLow, Low, 429},
		{ShedQueue, Low, 429}, {ShedQueue, Medium, 429}, {ShedQueue, High, 503}, {ShedGone, High, 503},
	}
	for _, c := range cases {
		if got := c.v.Status(c.p); got != c.want {
			t.Errorf("%v for %v: status %d, want %d", c.v, c.p, got, c.want)
		}
		if c.v.Admitted() != (c.want == 0) {
			t.Errorf("%v: Admitted %v", c.v, c.v.Admitted())
		}
	}
}

// The reserve is a share of the limit by default, a fixed count when set,
// and never the whole of a learned limit.
func TestReserveOfLimit(t *testing.T) {
	four := 4
	cases := []struct {
		c     Config
		limit int
		want  int
	}{
		{Config{}, 10, 2}, {Config{}, 1, 0}, {Config{}, 2, 0}, {Config{}, 3, 1}, {Config{}, 100, 20},
		{Config{HighReserveShare: 0.5}, 9, 5},
		{Config{HighReserve: &four}, 10, 4}, {Config{HighReserve: &four}, 3, 3},
	}
	for _, c := range cases {
		if got := c.c.Reserve(c.limit); got != c.want {
			t.Errorf("%+v at limit %d: reserve %d, want %d", c.c, c.limit, got, c.want)
		}
	}
	if err := (Config{HighReserveShare: 1}).Validate(); err == nil {
		t.Error("a share of 1 accepted")
	}
	if err := (Config{HighReserve: &four, HighReserveShare: 0.1}).Validate(); err == nil {
		t.Error("both a count and a share accepted")
	}
}

func TestRetryAfter(t *testing.T) {
	const hour = time.Hour
	if got := RetryAfter(0, 5*time.Second, hour, 0); got != 5 {
		t.Errorf("floor: %d", got)
	}
	if got := RetryAfter(12300*time.Millisecond, 5*time.Second, hour, 0); got != 13 {
		t.Errorf("rounds up: %d", got)
	}
	if got := RetryAfter(0, 0, 0, 0); got != 1 {
		t.Errorf("never zero: %d", got)
	}
	seen := map[int]bool{}
	for range 500 {
		got := RetryAfter(10*time.Second, 5*time.Second, hour, 0.2)
		if got < 10 || got > 12 {
			t.Fatalf("jittered value %d outside [10,12]", got)
		}
		seen[got] = true
	}
	if len(seen) < 2 {
		t.Errorf("jitter produced a single value: %v", seen)
	}
	if n := testing.AllocsPerRun(100, func() { RetryAfter(time.Second, time.Second, hour, 0.2) }); n != 0 {
		t.Errorf("RetryAfter allocates %v", n)
	}
}

// The ceiling binds: an estimate of minutes (a latency trip's countdown, a
// circuit's backoff) is told as at most the ceiling, spread below it by the
// jitter, never below the floor; a ceiling under the floor is the floor.
func TestRetryAfterCeiling(t *testing.T) {
	seen := map[int]bool{}
	for range 500 {
		got := RetryAfter(138*time.Second, 5*time.Second, 60*time.Second, 0.2)
		if got < 48 || got > 60 {
			t.Fatalf("estimate 138s under a 60s ceiling told as %d, want 48..60", got)
		}
		seen[got] = true
	}
	if len(seen) < 2 {
		t.Errorf("clients at the ceiling all told the same second: %v", seen)
	}
	if got := RetryAfter(138*time.Second, 5*time.Second, 60*time.Second, 0); got != 60 {
		t.Errorf("no jitter: %d, want the ceiling 60", got)
	}
	for range 100 {
		if got := RetryAfter(time.Minute, 10*time.Second, 11*time.Second, 0.2); got < 10 || got > 11 {
			t.Fatalf("ceiling 11s, floor 10s: %d", got)
		}
		if got := RetryAfter(time.Minute, 10*time.Second, time.Second, 0.2); got != 10 {
			t.Fatalf("ceiling under the floor: %d, want the floor 10", got)
		}
	}
}

// A removed key is refused with why, not read as unknown nor ignored.
func TestRemovedKeyRefused(t *testing.T) {
	var c Config
	err := json.Unmarshal([]byte(`{"default":"low","medium_floor":1}`), &c)
	if err == nil || !strings.Contains(err.Error(), "priority: medium_floor was removed: while shedding, medium takes a free slot") {
		t.Fatalf("medium_floor: err = %v", err)
	}
	if err := json.Unmarshal([]byte(`{"default":"low"}`), &c); err != nil || c.Default != "low" {
		t.Fatalf("without it: %v, %+v", err, c)
	}
}
