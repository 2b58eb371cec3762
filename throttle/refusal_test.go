package throttle

import (
	"context"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/config"
	"github.com/ai-guardian/adaptivethrottle/priority"
)

// Retry-After is capped at retry_after_max: a recovery expected in 138 s
// (a latency trip's countdown once reached that) is told as at most the
// ceiling, spread below it by the jitter; without the cap it was told
// whole.
func TestRetryAfterCappedAtMax(t *testing.T) {
	for _, c := range []struct {
		max      time.Duration
		min, top int
	}{
		{0, 48, 60}, // the default ceiling, 60 s
		{20 * time.Second, 16, 20},
		{5 * time.Second, 5, 5}, // the ceiling at the floor
	} {
		th := testThrottle(t, Config{RetryAfterMax: config.Duration(c.max)})
		now := time.Now()
		if err := th.SetOverride("shed", now, time.Time{}); err != nil {
			t.Fatal(err)
		}
		th.shedUntil.Store(now.Add(138 * time.Second).UnixNano())
		for range 50 {
			d := th.Admit(context.Background(), priority.Low, Now())
			if d.Admitted() {
				t.Fatalf("low passed under override shed")
			}
			if r := d.RetryAfter(); r < c.min || r > c.top {
				t.Fatalf("retry_after_max %v: Retry-After %d for a recovery 138 s away, want %d..%d", c.max, r, c.min, c.top)
			}
		}
	}
}
