package throttle

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// A waiting request's body is read while it waits and reaches the next
// handler byte for byte; a read before the body is whole waits for it.
func TestHeldBodyIsReadWhileWaitingAndReplayed(t *testing.T) {
	var th Throttle
	body := strings.Repeat("0123456789", 1000)
	pr, pw := io.Pipe()
	r := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", pr)
	r.ContentLength = int64(len(body))
	n := th.holdBody(r)
	if n != int64(len(body))+1 || th.held.Load() != n {
		t.Fatalf("reserved %d (held %d), want the body's length and one", n, th.held.Load())
	}
	got := make(chan string, 1)
	go func() {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			b = []byte(err.Error())
		}
		got <- string(b)
	}()
	if _, err := io.WriteString(pw, body[:5000]); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		t.Fatalf("the next handler read %d bytes before the body ended", len(b))
	case <-time.After(50 * time.Millisecond):
	}
	io.WriteString(pw, body[5000:])
	pw.Close()
	if b := <-got; b != body {
		t.Fatalf("replayed %d bytes, want the %d sent, unchanged", len(b), len(body))
	}
	th.unhold(n)
	if th.held.Load() != 0 {
		t.Fatalf("held %d after unhold", th.held.Load())
	}
}

// Only HTTP/1 bodies of a known length within the bound are read, within
// the total bound; a body the weigher read is not read twice.
func TestHeldBodyBounds(t *testing.T) {
	req := func(size int64) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(make([]byte, max(size, 0))))
		r.ContentLength = size
		return r
	}
	var th Throttle
	for _, c := range []struct {
		name string
		r    *http.Request
	}{
		{"over 1 MiB", req(holdBodyMax + 1)},
		{"unknown length", req(-1)},
		{"empty", req(0)},
		{"HTTP/2", func() *http.Request { r := req(10); r.ProtoMajor = 2; return r }()},
		{"weighed", func() *http.Request { r := req(10); r.Body = &replayBody{rest: r.Body}; return r }()},
		{"no request", nil},
	} {
		var before io.ReadCloser
		if c.r != nil {
			before = c.r.Body
		}
		if n := th.holdBody(c.r); n != 0 || (c.r != nil && c.r.Body != before) {
			t.Errorf("%s: read (reserved %d)", c.name, n)
		}
	}
	th.held.Store(holdBodyTotal - holdBodyMax)
	if n := th.holdBody(req(holdBodyMax)); n != 0 {
		t.Fatalf("over the total bound: reserved %d", n)
	}
	if n := th.holdBody(req(holdBodyMax - 1)); n != holdBodyMax {
		t.Fatalf("at the total bound: reserved %d, want %d", n, holdBodyMax)
	}
}
