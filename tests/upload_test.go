package tests

import (
	"bufio"
	"bytes"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/internal/llmsim"
)

// refusingUpstream accepts a connection, reads the request's head and a
// little of its body, and resets the connection: an upstream refusing a
// body too large for it.
func refusingUpstream(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil || line == "\r\n" {
						break
					}
				}
				buf := make([]byte, 64<<10)
				_, _ = br.Read(buf)
				if tc, ok := c.(*net.TCPConn); ok {
					_ = tc.SetLinger(0) // close with a reset
				}
				c.Close()
			}()
		}
	}()
	return ln.Addr().String()
}

// Uploads the upstream refuses mid-body are the request's failure, not the
// upstream's: 25 of them leave the circuit closed and uncounted, where 25
// small requests failing alike would open it.
func TestRefusedUploadsDoNotOpenTheCircuit(t *testing.T) {
	refusing := refusingUpstream(t)
	_, healthy := upstream(t, llmsim.Config{})
	tc := start(t, `http://localhost:9080 {
	adaptive_throttle {
		name uploads
		gpu off
		circuit {
			min_requests 5
		}
	}
	@upload path /upload
	reverse_proxy @upload `+refusing+`
	reverse_proxy `+healthy+`
}`)
	adminDo(t, "POST", "/throttle/reset", `{"name":"uploads","what":"all"}`) // a circuit an earlier run opened
	opens := status(t, "uploads").Circuit.Opens
	big := bytes.Repeat([]byte("x"), 32<<20) // well beyond what the sockets buffer, so the reset comes mid-body
	for i := range 25 {
		req, _ := http.NewRequest(http.MethodPost, siteURL+"/upload", bytes.NewReader(big))
		req.Header.Set("X-Priority", "high")
		req.Close = true // the unread rest of the body must not be read as the next request
		resp, err := tc.Client.Do(req)
		if err != nil {
			continue // the reset may reach the client too
		}
		body := drain(t, resp)
		if resp.StatusCode < 500 {
			t.Fatalf("upload %d: %d %s", i, resp.StatusCode, body)
		}
	}
	eventually(t, 5*time.Second, "every upload finished", func() bool { return status(t, "uploads").Admission.InFlight == 0 })
	if c := status(t, "uploads").Circuit; c.State != breaker.Closed || c.Failures != 0 || c.Opens != opens {
		t.Fatalf("circuit after 25 refused uploads: %+v", c)
	}
	resp := chat(t, tc, "low", false)
	if body := drain(t, resp); resp.StatusCode != 200 {
		t.Fatalf("an ordinary request after the uploads: %d %s", resp.StatusCode, body)
	}

	// The same failure on small bodies is the upstream's: it counts.
	for range 5 {
		req, _ := http.NewRequest(http.MethodPost, siteURL+"/upload", strings.NewReader(`{"messages":[]}`))
		req.Close = true
		if resp, err := tc.Client.Do(req); err == nil {
			drain(t, resp)
		}
	}
	eventually(t, 5*time.Second, "the circuit to open", func() bool { return status(t, "uploads").Circuit.State == breaker.Open })
}
