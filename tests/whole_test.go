package tests

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/internal/llmsim"
)

// Long answers that are not streamed (2 KB, 1.8 s, well over the 1 s
// ceiling), among short ones at a healthy load, do not trip the latency
// level: a whole answer's first byte is its end, and it is judged by what
// is normal for its size. Judged as a time to first byte, each window
// holding one would be over the ceiling.
func TestWholeLongAnswersDoNotTripLatency(t *testing.T) {
	_, addr := upstream(t, llmsim.Config{Slots: 16, TokenTime: 6 * time.Millisecond, DefaultMaxTokens: 4})
	tc := start(t, `http://localhost:9080 {
	adaptive_throttle {
		name whole
		gpu off
		latency {
			window 1s
			ceiling 1s
		}
		concurrency {
			limit 16
		}
	}
	reverse_proxy `+addr+`
}`)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	ask := func(maxTokens string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, siteURL+"/v1/chat/completions",
			strings.NewReader(`{"model":"demo-llm","messages":[{"role":"user","content":"hi"}],"stream":false,"max_tokens":`+maxTokens+`}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Priority", "high")
		if resp, err := tc.Client.Do(req); err == nil {
			drain(t, resp)
			if resp.StatusCode != 200 {
				t.Errorf("status %d", resp.StatusCode)
			}
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { // short answers, one every 100 ms or so
		for ctx.Err() == nil {
			ask("4")
			time.Sleep(75 * time.Millisecond)
		}
	})
	wg.Go(func() { // long answers sent whole, one after the other
		for range 3 {
			ask("300")
		}
	})
	deadline := time.Now().Add(7 * time.Second)
	for time.Now().Before(deadline) {
		if l := status(t, "whole").Levels.Latency; l.Tripped || l.Transitions != 0 {
			cancel()
			wg.Wait()
			t.Fatalf("the latency level tripped on long answers sent whole: %+v", l)
		}
		time.Sleep(200 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if l := status(t, "whole").Levels.Latency; l.Tripped || l.Transitions != 0 || l.WholeSlowestS < 1.5 {
		t.Fatalf("latency %+v: want no trip, and the long answers seen whole (whole_slowest_s about 1.8)", l)
	}
}
