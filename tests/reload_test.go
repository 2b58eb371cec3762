package tests

import (
	"io"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/internal/llmsim"
)

// 50 config reloads while a bounded load runs through Caddy: no request
// fails because of a reload, no goroutine or collector leaks, and what was
// learned survives.
func TestReloadsUnderLoad(t *testing.T) {
	_, addr := upstream(t, llmsim.Config{Slots: 64})
	site := func(i int) string {
		return `http://localhost:9080 {
	adaptive_throttle {
		name reloads
		gpu {
			source prometheus http://` + addr + `/metrics
			threshold ` + []string{"80%", "81%"}[i%2] + `
		}
		qps {
			warmup 2
			trip_factor ` + []string{"5", "6"}[i%2] + `
		}
	}
	reverse_proxy ` + addr + `
}`
	}
	tc := start(t, site(0))
	// Fresh connections for each request: a reload closes idle keep-alive
	// connections of the old server, and a POST cannot be retried safely.
	// Caddy itself drops a few new connections while a /load swaps servers
	// (see dropRetry): such a request never reached a handler and is
	// retried once, as any client would.
	client := &http.Client{Timeout: 10 * time.Second,
		Transport: dropRetry{next: &http.Transport{DisableKeepAlives: true}, t: t}}
	warm := lightTraffic(t, client, 20)
	eventually(t, 10*time.Second, "a learned baseline", func() bool { return status(t, "reloads").Levels.QPS.LearnedS >= 3 })
	warm()
	goroutinesBefore := moduleGoroutines()
	learnedBefore := status(t, "reloads").Levels.QPS.LearnedS

	// Every request must get a 200.
	var sent, failed atomic.Int64
	var firstErr atomic.Value
	do := func() (*http.Response, error) {
		req, _ := http.NewRequest("POST", siteURL+"/v1/chat/completions", strings.NewReader(`{"messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("X-Priority", "medium")
		return client.Do(req)
	}
	// Open-loop load at twice the warm-up rate: four senders, each on a
	// 100 ms schedule. Far under the QPS trip (5× the learned baseline), so
	// any refusal here is the reload's fault, not the load's. (A closed
	// loop would run as fast as the machine allows and trip the QPS level
	// on a fast one.)
	send := func() {
		sent.Add(1)
		resp, err := do()
		if err != nil {
			failed.Add(1)
			firstErr.CompareAndSwap(nil, err.Error())
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			failed.Add(1)
			firstErr.CompareAndSwap(nil, resp.Status+" "+strings.TrimSpace(string(body)))
		}
	}
	var stops []func()
	for range 4 {
		stops = append(stops, paced(100*time.Millisecond, send))
	}
	// The reloads are spaced so that the load spans them: about 4 s and
	// 160 requests in all.
	for i := 1; i <= 50; i++ {
		tc.InitServer(caddyfile(site(i)), "caddyfile")
		if t.Failed() {
			break
		}
		time.Sleep(80 * time.Millisecond)
	}
	for _, stop := range stops {
		stop()
	}
	loaded.Add(50)
	if failed.Load() != 0 || sent.Load() < 100 {
		t.Fatalf("%d of %d requests failed during 50 reloads (first: %v)", failed.Load(), sent.Load(), firstErr.Load())
	}
	t.Logf("%d requests through 50 reloads, none failed", sent.Load())

	st := status(t, "reloads")
	if st.Levels.QPS.LearnedS < learnedBefore {
		t.Fatalf("learned %d s before the reloads, %d after", learnedBefore, st.Levels.QPS.LearnedS)
	}
	// One instance, one collector: no duplicate series on /metrics.
	resp, err := http.Get(adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body := drain(t, resp)
	if n := strings.Count(body, `caddy_adaptive_throttle_shedding{name="reloads"}`); n != 1 {
		t.Fatalf("%d shedding series for one instance after 50 reloads", n)
	}
	// The module's own goroutines (samplers, event emitters, the clock) are
	// exactly as many as before: one instance, whatever the reloads did.
	// (Caddy's reverse_proxy keeps idle upstream connections of replaced
	// transports until their idle timeout; those are not counted.)
	if after := moduleGoroutines(); after != goroutinesBefore {
		pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
		t.Fatalf("module goroutines: %d before the reloads, %d after", goroutinesBefore, after)
	}
}

// moduleGoroutines counts goroutines running the module's code (outside
// this test package).
func moduleGoroutines() int {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/ai-guardian/adaptivethrottle.") ||
			strings.Contains(g, "github.com/ai-guardian/adaptivethrottle/throttle") ||
			strings.Contains(g, "github.com/ai-guardian/adaptivethrottle/levels") {
			n++
		}
	}
	return n
}
