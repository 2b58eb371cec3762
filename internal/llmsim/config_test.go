package llmsim

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestCapacityDefault(t *testing.T) {
	got := Config{}.Capacity()
	want := 8 / (0.040 + 24*0.015*2)
	if math.Abs(got-want) > 1e-9 {
		t.Fatalf("Capacity() = %v, want %v", got, want)
	}
	if got < 9 || got > 12 {
		t.Fatalf("default capacity %v req/s, want about 10", got)
	}
	half := Config{Slots: 4}.Capacity()
	if math.Abs(half-want/2) > 1e-9 {
		t.Fatalf("4 slots: %v, want %v", half, want/2)
	}
}

func TestCapacityFor(t *testing.T) {
	if got, want := (Config{}).CapacityFor(24), (Config{}).Capacity(); got != want {
		t.Errorf("CapacityFor(24) = %v, want Capacity() %v", got, want)
	}
	// A quarter at 512 tokens, the rest at 16: mean 140 tokens.
	got := Config{}.CapacityFor(140)
	want := 8 / (0.040 + 140*0.015*2)
	if math.Abs(got-want) > 1e-9 {
		t.Errorf("CapacityFor(140) = %v, want %v", got, want)
	}
}

func TestTokenDelayRisesWithOccupancy(t *testing.T) {
	c := Config{TokenTime: 10 * time.Millisecond, TokenSlowdown: 3}
	for _, tc := range []struct {
		running, slots int
		want           time.Duration
	}{
		{0, 8, 10 * time.Millisecond},
		{4, 8, 20 * time.Millisecond},
		{8, 8, 30 * time.Millisecond},
		{1, 4, 15 * time.Millisecond},
		{8, 4, 30 * time.Millisecond}, // over a capacity drop: capped at a full batch
		{3, 0, 30 * time.Millisecond}, // no slots left: as full as it gets
	} {
		if got := c.TokenDelay(tc.running, tc.slots); got != tc.want {
			t.Errorf("TokenDelay(%d, %d) = %v, want %v", tc.running, tc.slots, got, tc.want)
		}
	}
	prev := time.Duration(0)
	for r := 0; r <= 8; r++ {
		d := Config{}.TokenDelay(r, 8)
		if d <= prev {
			t.Fatalf("default TokenDelay(%d, 8) = %v, not above %v", r, d, prev)
		}
		prev = d
	}
	if prev != 30*time.Millisecond {
		t.Fatalf("default full-batch token time %v, want 30ms", prev)
	}
}

// The defaults must tell the overload story: healthy load well under the
// 75% threshold, a queue of a few hundred past the card.
func TestDefaultMemoryStory(t *testing.T) {
	c := Config{}.withDefaults()
	// A full batch of 200-token prompts near the end of generation, and ten queued.
	healthy := c.BaseMemory + int64(c.Slots)*(200+int64(c.DefaultMaxTokens))*c.KVPerToken + 10*c.QueuedMemory
	if r := float64(healthy) / float64(c.TotalMemory); r > 0.5 {
		t.Fatalf("healthy load uses %.0f%% of memory, want well under 75%%", r*100)
	}
	toOOM := (c.TotalMemory - c.BaseMemory) / c.QueuedMemory
	if toOOM < 100 || toOOM > 500 {
		t.Fatalf("the card fills at %d queued requests, want a few hundred", toOOM)
	}
	if c.TotalMemory/MiB != 81920 {
		t.Fatalf("total %d MiB, want 81920", c.TotalMemory/MiB)
	}
}

func TestValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("zero config: %v", err)
	}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Slots: -1}, "slots"},
		{Config{PrefillTime: -1}, "prefill"},
		{Config{TokenTime: -1}, "token time"},
		{Config{TokenSlowdown: 0.5}, "slowdown"},
		{Config{QueueLimit: -1}, "queue limit"},
		{Config{KVPerToken: -1}, "memory"},
		{Config{TotalMemory: GiB, BaseMemory: 2 * GiB}, "base memory"},
		{Config{DefaultMaxTokens: 100, MaxTokensLimit: 10}, "exceeds"},
	} {
		err := tc.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want an error about %q", tc.cfg, err, tc.want)
		}
	}
}
