package tests

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/internal/llmsim"
)

// A 503 storm from an upstream whose queue is full (llmsim with no queue,
// answering as Ollama does) is saturation, not failure: the circuit stays
// closed, every request the upstream refused gets the module's own
// refusal (level upstream, Retry-After), never the upstream's body, and
// the limit comes down to what the upstream takes.
func TestUpstream503StormLeavesTheCircuitClosed(t *testing.T) {
	const slots = 2
	_, addr := upstream(t, llmsim.Config{Slots: slots, NoQueue: true, FullAnswer: llmsim.FullOllama,
		TokenTime: 100 * time.Millisecond, DefaultMaxTokens: 3})
	tc := start(t, `http://localhost:9080 {
	adaptive_throttle {
		name storm
		gpu off
		circuit {
			min_requests 5
		}
		concurrency {
			initial 12
			max_wait 3s
		}
	}
	reverse_proxy `+addr+`
}`)
	type answer struct {
		code int
		body string
		ra   string
	}
	var (
		mu      sync.Mutex
		answers []answer
	)
	send := func(n int) {
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				resp := chat(t, tc, "medium", true)
				body := drain(t, resp)
				mu.Lock()
				answers = append(answers, answer{resp.StatusCode, body, resp.Header.Get("Retry-After")})
				mu.Unlock()
			})
		}
		wg.Wait()
	}
	// Three waves of 12 at once on 2 slots: most find the upstream full.
	for range 3 {
		send(12)
	}
	ok, refused := 0, 0
	for _, a := range answers {
		switch {
		case a.code == http.StatusOK:
			ok++
		case strings.Contains(a.body, "server busy"):
			t.Fatalf("a client got the upstream's own refusal: %d %q", a.code, a.body)
		case a.code == http.StatusTooManyRequests && strings.Contains(a.body, `"level":"upstream"`) && a.ra != "":
			refused++
		case a.code == http.StatusTooManyRequests && strings.Contains(a.body, `"level":"concurrency"`) && a.ra != "":
			// waited for a slot past max_wait once the limit came down
		default:
			t.Fatalf("unexpected answer %d %q (Retry-After %q)", a.code, a.body, a.ra)
		}
	}
	st := status(t, "storm")
	if refused == 0 || ok < slots || st.Upstream.FullAnswers != uint64(refused) || st.Shed["upstream"] != uint64(refused) {
		t.Fatalf("%d ok, %d refused for the upstream; status full answers %d, shed upstream %d: want refusals counted alike",
			ok, refused, st.Upstream.FullAnswers, st.Shed["upstream"])
	}
	if st.Circuit.State != breaker.Closed || st.Circuit.Failures != 0 || st.Circuit.Opens != 0 {
		t.Fatalf("circuit %+v after %d upstream 503s, want closed with no failure", st.Circuit, refused)
	}
	eventually(t, 3*time.Second, fmt.Sprintf("the limit to come down from 12 to about the %d slots", slots), func() bool {
		return status(t, "storm").Admission.Limit <= slots+1
	})
}
