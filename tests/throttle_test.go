package tests

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/internal/llmsim"
)

// (a) Healthy traffic passes untouched: the upstream's answer, its headers
// and its streaming all reach the client.
func TestHealthyTrafficPassesUntouched(t *testing.T) {
	_, addr := upstream(t, llmsim.Config{TokenTime: 40 * time.Millisecond, DefaultMaxTokens: 10})
	tc := start(t, `http://localhost:9080 {
	adaptive_throttle {
		name healthy
		gpu off
	}
	reverse_proxy `+addr+`
}`)

	resp := chat(t, tc, "low", false)
	body := drain(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if resp.Header.Get("X-Llmsim-Queue-Wait") == "" || resp.Header.Get("Retry-After") != "" {
		t.Fatalf("headers changed on the way: %v", resp.Header)
	}
	var completion struct {
		Object  string
		Choices []struct{ Message struct{ Content string } }
		Usage   struct {
			CompletionTokens int `json:"completion_tokens"`
		}
	}
	if err := json.Unmarshal([]byte(body), &completion); err != nil || completion.Object != "chat.completion" ||
		completion.Usage.CompletionTokens != 10 || len(completion.Choices) != 1 {
		t.Fatalf("completion %q: %v", body, err)
	}

	// Streaming: every chunk arrives, and arrives as it is produced.
	resp = chat(t, tc, "high", true)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("stream: %d %v", resp.StatusCode, resp.Header)
	}
	sc := bufio.NewScanner(resp.Body)
	var events []string
	var first, last time.Time
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "data: ") {
			continue
		}
		if first.IsZero() {
			first = time.Now()
		}
		last = time.Now()
		events = append(events, strings.TrimPrefix(line, "data: "))
	}
	resp.Body.Close()
	if len(events) != 12 || events[len(events)-1] != "[DONE]" {
		t.Fatalf("got %d events, want 10 tokens + final chunk + [DONE]: %q", len(events), events)
	}
	// Ten tokens at 40 ms: a buffered stream would deliver all at once.
	if gap := last.Sub(first); gap < 200*time.Millisecond {
		t.Fatalf("stream arrived in one burst (%v from first to last event): not flushed per token", gap)
	}

	st := status(t, "healthy")
	if st.Shedding || st.Priorities.Low.Passed != 1 || st.Priorities.High.Passed != 1 || st.Admission.InFlight != 0 {
		t.Fatalf("status after two healthy requests: %+v", st)
	}
}

// (b) An upstream that slows down trips the latency level: low gets 429 with
// Retry-After, high still passes through its reserve.
func TestSlowUpstreamTripsLatency(t *testing.T) {
	sim, addr := upstream(t, llmsim.Config{})
	tc := start(t, `http://localhost:9080 {
	adaptive_throttle {
		name slow
		gpu off
		latency {
			window 1s
			ceiling 150ms
		}
		priority {
			high_reserve 2
		}
		retry_after 2s
	}
	reverse_proxy `+addr+`
}`)
	drain(t, chat(t, tc, "low", false))
	if st := status(t, "slow"); st.Levels.Latency.Tripped {
		t.Fatalf("tripped before the upstream slowed: %+v", st.Levels.Latency)
	}

	sim.SetFault(llmsim.Fault{Delay: 300 * time.Millisecond})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { drain(t, chat(t, tc, "high", false)) })
	}
	wg.Wait()
	eventually(t, 5*time.Second, "the latency level to trip", func() bool { return status(t, "slow").Levels.Latency.Tripped })

	st := status(t, "slow")
	if !strings.Contains(st.Levels.Latency.LastReason, "ceiling") || st.Levels.Latency.Value < 0.3 {
		t.Fatalf("latency level: %+v", st.Levels.Latency)
	}
	assertShed(t, chat(t, tc, "low", false), http.StatusTooManyRequests, "latency", "low", 2)

	resp := chat(t, tc, "high", false)
	if body := drain(t, resp); resp.StatusCode != http.StatusOK {
		t.Fatalf("high priority refused while latency tripped: %d %s", resp.StatusCode, body)
	}
	st = status(t, "slow")
	if st.Priorities.Low.Shed != 1 || st.Shed["latency"] != 1 || st.Priorities.High.InUse != 0 {
		t.Fatalf("counts after one shed and a reserved pass: priorities %+v shed %v", st.Priorities, st.Shed)
	}
}

// (c) An nvidia-smi stand-in reporting memory above the threshold trips the
// GPU level; memory back down clears it.
func TestNvidiaSMIAboveThresholdTripsGPU(t *testing.T) {
	_, addr := upstream(t, llmsim.Config{})
	smi, err := filepath.Abs("../demo/nvidia-smi")
	if err != nil {
		t.Fatal(err)
	}
	csv := filepath.Join(t.TempDir(), "smi.csv")
	t.Setenv("LLMSIM_SMI_FILE", csv)
	write := func(usedMiB int) {
		line := fmt.Sprintf("0, GPU-00000000-0000-0000-0000-000000000000, %d, 81920\n", usedMiB)
		if err := os.WriteFile(csv, []byte(line), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(20000)
	tc := start(t, `http://localhost:9080 {
	adaptive_throttle {
		name gpu
		gpu {
			source nvidia-smi `+smi+`
			interval 250ms
			threshold 75%
		}
	}
	reverse_proxy `+addr+`
}`)
	eventually(t, 5*time.Second, "a first GPU sample", func() bool { return len(status(t, "gpu").Levels.GPU.Devices) == 1 })
	st := status(t, "gpu")
	if g := st.Levels.GPU; g.Tripped || g.Source != "nvidia-smi" || !g.Available || g.Devices[0].Ratio > 0.25 {
		t.Fatalf("healthy GPU: %+v", g)
	}

	write(70000) // 85% of 80 GiB
	eventually(t, 5*time.Second, "the GPU level to trip", func() bool { return status(t, "gpu").Levels.GPU.Tripped })
	assertShed(t, chat(t, tc, "low", false), http.StatusTooManyRequests, "gpu", "low", 5)
	if g := status(t, "gpu").Levels.GPU; g.Value < 0.85 || g.Threshold != 0.75 || !strings.Contains(g.LastReason, "85.4%") {
		t.Fatalf("tripped GPU level: %+v", g)
	}

	write(30000)
	eventually(t, 10*time.Second, "the GPU level to recover", func() bool {
		write(30000) // keep the stand-in's file fresh
		return !status(t, "gpu").Levels.GPU.Tripped
	})
	resp := chat(t, tc, "low", false)
	if body := drain(t, resp); resp.StatusCode != http.StatusOK {
		t.Fatalf("low priority after recovery: %d %s", resp.StatusCode, body)
	}
}

// (d) A failing upstream opens the circuit; once it is healthy again a
// Half-Open probe closes it.
func TestCircuitOpensAndClosesThroughHalfOpen(t *testing.T) {
	sim, addr := upstream(t, llmsim.Config{})
	tc := start(t, `http://localhost:9080 {
	adaptive_throttle {
		name circuit
		gpu off
		circuit {
			min_requests 4
			error_ratio 50%
			open_for 1s
		}
		retry_after 1s
	}
	reverse_proxy `+addr+`
}`)
	sim.SetFault(llmsim.Fault{Status: http.StatusInternalServerError})
	for range 4 {
		if resp := chat(t, tc, "high", false); resp.StatusCode != http.StatusInternalServerError {
			t.Fatalf("upstream failure not passed through: %d", resp.StatusCode)
		} else {
			drain(t, resp)
		}
	}
	st := status(t, "circuit")
	if st.Circuit.State != breaker.Open || st.Circuit.Opens != 1 || st.Circuit.Failures != 4 {
		t.Fatalf("circuit after 4 failures of 4: %+v", st.Circuit)
	}
	// Open: everything, high included, gets 503 and the time to Half-Open.
	assertShed(t, chat(t, tc, "high", false), http.StatusServiceUnavailable, "circuit", "high", 1)

	sim.SetFault(llmsim.Fault{})
	eventually(t, 5*time.Second, "Half-Open", func() bool { return status(t, "circuit").Circuit.State == breaker.HalfOpen })
	resp := chat(t, tc, "low", false) // the probe
	if body := drain(t, resp); resp.StatusCode != http.StatusOK {
		t.Fatalf("probe: %d %s", resp.StatusCode, body)
	}
	st = status(t, "circuit")
	if st.Circuit.State != breaker.Closed || !strings.Contains(st.Circuit.LastReason, "probe") {
		t.Fatalf("circuit after a good probe: %+v", st.Circuit)
	}
	resp = chat(t, tc, "low", false)
	if drain(t, resp); resp.StatusCode != http.StatusOK {
		t.Fatalf("after closing: %d", resp.StatusCode)
	}
}
