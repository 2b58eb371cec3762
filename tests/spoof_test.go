package tests

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/internal/llmsim"
)

// Without `trusted`, anyone may claim high priority; the concurrency
// limit caps what such claims can take: a fixed limit of 2 slots, the rest
// 503 once their wait runs out.
func TestSpoofedHighIsCappedByTheLimit(t *testing.T) {
	_, addr := upstream(t, llmsim.Config{TokenTime: 100 * time.Millisecond, DefaultMaxTokens: 10})
	tc := start(t, `http://localhost:9080 {
	adaptive_throttle {
		name spoof
		gpu off
		concurrency {
			limit 2
			max_wait high 100ms
		}
	}
	reverse_proxy `+addr+`
}`)
	adminDo(t, "POST", "/throttle/override", `{"name":"spoof","state":"shed"}`)
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			resp := chat(t, tc, "high", false)
			drain(t, resp)
			mu.Lock()
			codes[resp.StatusCode]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if codes[200] != 2 || codes[503] != 4 {
		t.Fatalf("six concurrent high claims (a second each) against a limit of 2: %v", codes)
	}
	if st := status(t, "spoof"); st.Priorities.High.InUse != 0 || st.Priorities.High.Shed != 4 || st.Admission.InFlight != 0 {
		t.Fatalf("after the burst: %+v %+v", st.Priorities.High, st.Admission)
	}
}

// With `trusted`, a claim from elsewhere is ignored: the request gets the
// default priority. From a trusted address the same claim is honoured.
func TestTrustedMatcherDecidesWhoseClaimCounts(t *testing.T) {
	_, addr := upstream(t, llmsim.Config{})
	site := func(trusted string) string {
		return `http://localhost:9080 {
	header >X-Priority-Seen {http.adaptive_throttle.priority}
	adaptive_throttle {
		name trust
		gpu off
		priority {
			default low
			trusted remote_ip ` + trusted + `
		}
	}
	reverse_proxy ` + addr + `
}`
	}
	tc := start(t, site("10.0.0.0/8"))
	adminDo(t, "POST", "/throttle/override", `{"name":"trust","state":"shed"}`)
	resp := chat(t, tc, "high", false)
	if seen := resp.Header.Get("X-Priority-Seen"); seen != "low" {
		t.Fatalf("an untrusted client's high claim was taken as %q", seen)
	}
	assertShed(t, resp, http.StatusTooManyRequests, "override", "low", 5)

	start(t, site("127.0.0.1/32")) // the test client's own address
	resp = chat(t, tc, "high", false)
	if body := drain(t, resp); resp.StatusCode != 200 || resp.Header.Get("X-Priority-Seen") != "high" {
		t.Fatalf("a trusted client's high claim: %d %q %s", resp.StatusCode, resp.Header.Get("X-Priority-Seen"), body)
	}
}
