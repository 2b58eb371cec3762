package tests

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/ai-guardian/adaptivethrottle/internal/llmsim"
)

// quick asserts a request through Caddy answers within d: a failing sensor
// must never stall a request.
func quick(t *testing.T, tc interface {
	Do(*http.Request) (*http.Response, error)
}, prio string, d time.Duration) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", siteURL+"/v1/chat/completions",
		strings.NewReader(`{"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("X-Priority", prio)
	resp, err := tc.Do(req)
	if err != nil {
		t.Fatalf("request stalled or failed: %v", err)
	}
	return resp
}

// Each broken nvidia-smi ends in a clear status and the configured policy,
// and requests keep flowing without delay.
func TestNvidiaSMIFaults(t *testing.T) {
	_, addr := upstream(t, llmsim.Config{})
	scripts, _ := filepath.Abs("../levels/gpu/testdata")
	cases := []struct {
		name, path, onError, reason string
	}{
		{"hang", scripts + "/smi_hang.sh", "shed", "timed out"},
		{"garbage", scripts + "/smi_garbage.sh", "shed", "nvidia-smi"},
		{"exit", scripts + "/smi_fail.sh", "allow", "exit status"},
		{"missing", "/nonexistent/nvidia-smi", "allow", "no such file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tc := start(t, `http://localhost:9080 {
	adaptive_throttle {
		name smi-`+c.name+`
		gpu {
			source nvidia-smi `+c.path+`
			interval 500ms
			on_error `+c.onError+`
		}
	}
	reverse_proxy `+addr+`
}`)
			name := "smi-" + c.name
			// Under on_error shed the sampler's next step (within 250 ms)
			// trips the level on the failed read the sensor published.
			eventually(t, 5*time.Second, "an error in status", func() bool {
				g := status(t, name).Levels.GPU
				return g.Errors > 0 && (c.onError != "shed" || g.Tripped)
			})
			g := status(t, name).Levels.GPU
			if g.Available || !strings.Contains(strings.ToLower(g.Reason), c.reason) {
				t.Fatalf("status: %+v", g)
			}
			resp := quick(t, tc.Client, "low", 2*time.Second)
			if c.onError == "shed" {
				assertShed(t, resp, 429, "gpu", "low", 5)
				if !strings.Contains(status(t, name).Levels.GPU.LastReason, "on_error shed") {
					t.Fatalf("reason %q", status(t, name).Levels.GPU.LastReason)
				}
			} else if body := drain(t, resp); resp.StatusCode != 200 {
				t.Fatalf("on_error allow refused: %d %s", resp.StatusCode, body)
			}
		})
	}
}

// An explicitly configured nvidia-smi that does not exist, with on_error
// shed, is a configuration error: Caddy refuses the config, naming the
// path, rather than start shedding everything.
func TestMissingNvidiaSMIWithShedRefusesConfig(t *testing.T) {
	caddytest.AssertLoadError(t, caddyfile(`http://localhost:9080 {
	adaptive_throttle {
		gpu {
			source nvidia-smi /nonexistent/nvidia-smi
			on_error shed
		}
	}
	respond ok
}`), "caddyfile", "/nonexistent/nvidia-smi")
	loaded.Add(1)
}

// A metrics endpoint that hangs, errs, never ends its body, or drops the
// metric: a clear status, the policy, no stalled request.
func TestMetricsEndpointFaults(t *testing.T) {
	_, addr := upstream(t, llmsim.Config{})
	var mode atomic.Value
	mode.Store("ok")
	metrics := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch mode.Load() {
		case "hang":
			<-r.Context().Done()
		case "500":
			http.Error(w, "boom", 500)
		case "endless":
			for r.Context().Err() == nil {
				if _, err := fmt.Fprintf(w, "# padding %s\n", strings.Repeat("x", 4096)); err != nil {
					return
				}
			}
		case "drop":
			fmt.Fprintln(w, "vllm:num_requests_running 1")
		default:
			fmt.Fprintln(w, "# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc 0.1")
		}
	}))
	defer metrics.Close()
	tc := start(t, `http://localhost:9080 {
	adaptive_throttle {
		name scrape
		gpu {
			source prometheus `+metrics.URL+`
			interval 400ms
			on_error shed
		}
	}
	reverse_proxy `+addr+`
}`)
	eventually(t, 5*time.Second, "a good scrape", func() bool { return status(t, "scrape").Levels.GPU.Available })
	errs := status(t, "scrape").Levels.GPU.Errors
	for _, c := range []struct{ mode, reason string }{
		{"hang", "timed out"}, {"500", "500"}, {"endless", "larger than"}, {"drop", "not found"},
	} {
		mode.Store(c.mode)
		eventually(t, 5*time.Second, c.mode+" to show", func() bool {
			// The sensor publishes the failed read; the sampler's next
			// step (within 250 ms) trips the level on it.
			g := status(t, "scrape").Levels.GPU
			return g.Errors > errs && !g.Available && strings.Contains(g.Reason, c.reason) && g.Tripped
		})
		errs = status(t, "scrape").Levels.GPU.Errors
		assertShed(t, quick(t, tc.Client, "low", 2*time.Second), 429, "gpu", "low", 5)
	}
	mode.Store("ok")
	eventually(t, 5*time.Second, "the source to come back", func() bool { return status(t, "scrape").Levels.GPU.Available })
}

// Upstream faults count against the circuit and answer promptly: a reset
// connection is a 502, a first byte that never comes a 504 once
// reverse_proxy's timeout fires.
func TestUpstreamFaultsAreFailures(t *testing.T) {
	sim, addr := upstream(t, llmsim.Config{})
	tc := start(t, `http://localhost:9080 {
	adaptive_throttle {
		name upfaults
		gpu off
	}
	reverse_proxy `+addr+` {
		transport http {
			response_header_timeout 300ms
		}
	}
}`)
	sim.SetFault(llmsim.Fault{Reset: true})
	if resp := quick(t, tc.Client, "high", 5*time.Second); resp.StatusCode != 502 {
		t.Fatalf("reset: %d", resp.StatusCode)
	}
	sim.SetFault(llmsim.Fault{Hang: true})
	if resp := quick(t, tc.Client, "high", 5*time.Second); resp.StatusCode != 504 {
		t.Fatalf("hang: %d", resp.StatusCode)
	}
	sim.SetFault(llmsim.Fault{})
	st := status(t, "upfaults")
	if st.Circuit.Failures != 2 || st.Admission.InFlight != 0 {
		t.Fatalf("after a reset and a timeout: %+v in flight %d", st.Circuit, st.Admission.InFlight)
	}
}

// An upstream that never answers, with no timeout configured: the latency
// level still sees it (a window with requests waiting and none answered),
// and clients that give up are not counted as upstream failures.
func TestHungUpstreamTripsLatency(t *testing.T) {
	sim, addr := upstream(t, llmsim.Config{})
	tc := start(t, `http://localhost:9080 {
	adaptive_throttle {
		name hung
		gpu off
		latency {
			window 1s
			ceiling 800ms
		}
	}
	reverse_proxy `+addr+`
}`)
	sim.SetFault(llmsim.Fault{Hang: true})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		req, _ := http.NewRequestWithContext(ctx, "POST", siteURL+"/v1/chat/completions", strings.NewReader(`{}`))
		req.Header.Set("X-Priority", "high")
		if resp, err := tc.Client.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	eventually(t, 5*time.Second, "the latency level to trip on a hung upstream", func() bool { return status(t, "hung").Levels.Latency.Tripped })
	if r := status(t, "hung").Levels.Latency.LastReason; !strings.Contains(r, "no response") {
		t.Fatalf("reason %q", r)
	}
	cancel() // the client gives up
	<-done
	eventually(t, 5*time.Second, "the request to leave", func() bool { return status(t, "hung").Admission.InFlight == 0 })
	if f := status(t, "hung").Circuit.Failures; f != 0 {
		t.Fatalf("a client giving up counted as %d upstream failures", f)
	}
	sim.SetFault(llmsim.Fault{})
}

// A client that disconnects mid-stream from an upstream that streams
// forever: its reserve slot is released and nothing stays in flight.
func TestClientLeavesEndlessStream(t *testing.T) {
	endless := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; r.Context().Err() == nil; i++ {
			fmt.Fprintf(w, "data: {\"token\":%d}\n\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(20 * time.Millisecond)
		}
	}))
	defer endless.Close()
	tc := start(t, `http://localhost:9080 {
	adaptive_throttle {
		name endless
		gpu off
		priority {
			high_reserve 1
		}
	}
	reverse_proxy `+strings.TrimPrefix(endless.URL, "http://")+`
}`)
	adminDo(t, "POST", "/throttle/override", `{"name":"endless","state":"shed"}`)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", siteURL+"/v1/chat/completions", strings.NewReader(`{"stream":true}`))
	req.Header.Set("X-Priority", "high")
	resp, err := tc.Client.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("stream: %v %v", err, resp)
	}
	sc := bufio.NewScanner(resp.Body)
	for i := 0; i < 5 && sc.Scan(); {
		if strings.HasPrefix(sc.Text(), "data:") {
			i++
		}
	}
	if st := status(t, "endless"); st.Priorities.High.InUse != 1 || st.Admission.InFlight != 1 {
		t.Fatalf("while streaming: %+v in flight %d", st.Priorities.High, st.Admission.InFlight)
	}
	cancel()
	resp.Body.Close()
	eventually(t, 5*time.Second, "the slot to be released", func() bool {
		st := status(t, "endless")
		return st.Priorities.High.InUse == 0 && st.Admission.InFlight == 0
	})
	if resp := quick(t, tc.Client, "high", 2*time.Second); resp.StatusCode != 200 {
		t.Fatalf("the reserve was not reusable: %d", resp.StatusCode)
	} else {
		resp.Body.Close() // endless: do not drain
	}
}
