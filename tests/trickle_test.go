package tests

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/internal/llmsim"
)

// trickle opens a request that claims high priority and sends its body a
// byte every 200 ms, holding a slot for as long as the server lets it.
func trickle(t *testing.T) net.Conn {
	c, err := net.Dial("tcp", "127.0.0.1:9080")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost:9080\r\nX-Priority: high\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
	go func() {
		for range 100 {
			time.Sleep(200 * time.Millisecond)
			if _, err := c.Write([]byte(" ")); err != nil {
				return
			}
		}
	}()
	return c
}

// Clients trickling their bodies hold slots while they send; Caddy's
// read timeout (the Caddyfile's `timeouts { read_body }`) bounds how long.
// With every slot held by tricklers, a real high-priority request waits
// and is served once the timeout frees them, within its max_wait.
func TestReadTimeoutFreesSlotsHeldByTricklers(t *testing.T) {
	_, addr := upstream(t, llmsim.Config{})
	// The README's global option, as written there.
	tc := startWith(t, "servers {\n\t\ttimeouts {\n\t\t\tread_body 1s\n\t\t}\n\t}", `http://localhost:9080 {
	adaptive_throttle {
		name trickle
		gpu off
		concurrency {
			limit 2
			max_wait high 8s
		}
	}
	reverse_proxy `+addr+`
}`)
	adminDo(t, "POST", "/throttle/override", `{"name":"trickle","state":"shed"}`)
	trickle(t)
	trickle(t)
	eventually(t, 5*time.Second, "the tricklers to hold both slots", func() bool { return status(t, "trickle").Admission.InFlight == 2 })

	began := time.Now()
	resp := chat(t, tc, "high", false)
	if body := drain(t, resp); resp.StatusCode != 200 {
		t.Fatalf("a real high request behind two tricklers: %d %s", resp.StatusCode, body)
	}
	if waited := time.Since(began); waited > 5*time.Second {
		t.Fatalf("served after %v: the read timeout did not free the slots", waited)
	}
	eventually(t, 5*time.Second, "no slot held", func() bool { return status(t, "trickle").Admission.InFlight == 0 })
}
