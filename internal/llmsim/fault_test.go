package llmsim

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestFaultStatus(t *testing.T) {
	e := newEnv(t, fastConfig())
	e.sim.SetFault(Fault{Status: 502})
	code, _, b := e.call(t, "POST", "/v1/chat/completions", chatBody)
	var eb errBody
	decode(t, b, &eb)
	if code != 502 || eb.Error.Code != 502 || eb.Error.Type != "server_error" {
		t.Fatalf("chat under a 502 fault: %d %s", code, b)
	}
	if code, _, _ := e.call(t, "GET", "/health", ""); code != 502 {
		t.Fatalf("health under a 502 fault: %d", code)
	}
	if code, _, _ := e.call(t, "GET", "/metrics", ""); code != 200 {
		t.Fatalf("metrics must stay reachable: %d", code)
	}
	if st := e.sim.State(); st.Served != 0 || st.Fault.Status != 502 {
		t.Fatalf("state %+v", st)
	}
	e.sim.SetFault(Fault{})
	if code, _, _ := e.call(t, "POST", "/v1/chat/completions", chatBody); code != 200 {
		t.Fatalf("after clearing: %d", code)
	}
}

func TestFaultDelay(t *testing.T) {
	e := newEnv(t, fastConfig())
	e.sim.SetFault(Fault{Delay: 30 * time.Millisecond})
	start := time.Now()
	code, _, _ := e.call(t, "POST", "/v1/chat/completions", chatBody)
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	if el := time.Since(start); el < 30*time.Millisecond {
		t.Fatalf("answered after %v, before the 30ms delay", el)
	}
	// A client that gives up during the delay is never queued.
	e.sim.SetFault(Fault{Delay: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := e.do(t, ctx, "POST", "/v1/chat/completions", chatBody); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("client timeout during delay: %v", err)
	}
	if st := e.sim.State(); st.Waiting != 0 || st.Served != 1 {
		t.Fatalf("state %+v", st)
	}
}

func TestFaultHang(t *testing.T) {
	e := newEnv(t, fastConfig())
	e.sim.SetFault(Fault{Hang: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if _, err := e.do(t, ctx, "POST", "/v1/chat/completions", chatBody); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hung request: %v, want the client's deadline", err)
	}
	// Close releases hung handlers with a 503 rather than leaving them forever.
	out := make(chan int, 1)
	go func() {
		resp, err := e.do(t, context.Background(), "POST", "/v1/chat/completions", chatBody)
		if err != nil {
			out <- -1
			return
		}
		resp.Body.Close()
		out <- resp.StatusCode
	}()
	select {
	case code := <-out:
		t.Fatalf("hung request answered %d before Close", code)
	case <-time.After(20 * time.Millisecond):
	}
	e.sim.Close()
	if code := recv(t, out); code != http.StatusServiceUnavailable {
		t.Fatalf("after Close: %d, want 503", code)
	}
}

func TestFaultReset(t *testing.T) {
	e := newEnv(t, fastConfig())
	e.sim.SetFault(Fault{Reset: true})
	resp, err := e.do(t, context.Background(), "POST", "/v1/chat/completions", chatBody)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("got a response (%d) from a reset connection", resp.StatusCode)
	}
	if msg := err.Error(); !strings.Contains(msg, "EOF") && !strings.Contains(msg, "reset") {
		t.Fatalf("error %v, want EOF or connection reset", err)
	}
	e.sim.SetFault(Fault{})
	if code, _, _ := e.call(t, "POST", "/v1/chat/completions", chatBody); code != 200 {
		t.Fatalf("after clearing: %d", code)
	}
}
