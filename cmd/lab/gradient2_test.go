package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// feed gives the limit windows of samples of rtt with inflight in flight:
// MinSamples per window, spread over just over MinWindow, on a clock of its
// own (no sleeping).
func feed(g *gradient2Limit, clock *time.Time, windows int, rtt time.Duration, inflight func() int) {
	n := g.cfg.MinSamples
	step := (g.cfg.MinWindow + time.Duration(n-2)) / time.Duration(n-1) // rounded up: the n-th closes the window
	for range windows {
		for range n {
			g.Sample(*clock, rtt, inflight())
			*clock = clock.Add(step)
		}
	}
}

func TestGradient2Limit(t *testing.T) {
	g, err := newGradient2Limit(defaultGradient2)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Unix(1000, 0)
	atLimit := func() int { return g.Limit() }
	if g.Limit() != 20 {
		t.Fatalf("initial limit %d, want 20", g.Limit())
	}

	// Healthy and pressed against the limit: it grows, by about
	// smoothing × sqrt(limit) a window.
	feed(g, &clock, 1, 70*time.Millisecond, atLimit)
	if got, want := g.estimate(), 20+0.2*4.4721; got < want-0.01 || got > want+0.01 {
		t.Errorf("after one healthy window: %.3f, want %.3f", got, want)
	}
	if g.updates != 1 {
		t.Errorf("%d windows closed, want 1", g.updates)
	}
	feed(g, &clock, 30, 70*time.Millisecond, atLimit)
	grown := g.estimate()
	if grown < 30 {
		t.Errorf("after 31 healthy windows the limit is %.1f, want it well above 20", grown)
	}

	// App-limited (in flight under half the limit): the limit holds.
	feed(g, &clock, 10, 70*time.Millisecond, func() int { return 5 })
	if g.estimate() != grown {
		t.Errorf("app-limited windows moved the limit: %.2f → %.2f", grown, g.estimate())
	}

	// The RTT grows tenfold (a queue at the upstream): the gradient is at
	// its floor of 0.5 and the limit shrinks window after window, toward 4
	// (where 0.5 × limit + sqrt(limit), smoothed, equals the limit).
	prev := g.estimate()
	for i := range 40 {
		feed(g, &clock, 1, 700*time.Millisecond, atLimit)
		if cur := g.estimate(); cur >= prev {
			t.Fatalf("window %d of high RTT: limit %.2f did not shrink from %.2f", i, cur, prev)
		}
		prev = g.estimate()
	}
	if g.estimate() > grown/2 {
		t.Errorf("after 40 windows at 10× the RTT the limit is %.1f (was %.1f)", g.estimate(), grown)
	}

	// Latency back to normal: the long RTT, pulled up by the overload,
	// decays toward the short one, and the limit grows again.
	low := g.estimate()
	feed(g, &clock, 40, 70*time.Millisecond, atLimit)
	if g.estimate() <= low {
		t.Errorf("healthy again, the limit stayed at %.2f", g.estimate())
	}

	// Under lasting overload it settles at 4, the algorithm's own floor
	// (the queue allowance sqrt(limit) against the gradient's 0.5); the
	// configured minimum of 1 is below it. It never leaves [min, max].
	// (Over hundreds of windows the long RTT would follow the short one up,
	// and the limit would grow again: the algorithm takes a lasting latency
	// for the new normal.)
	f, _ := newGradient2Limit(defaultGradient2)
	feed(f, &clock, 10, 70*time.Millisecond, func() int { return f.Limit() })
	feed(f, &clock, 60, 10*time.Second, func() int { return f.Limit() })
	if e := f.estimate(); e < 3.9 || e > 5 || f.Limit() < int(defaultGradient2.Min) {
		t.Errorf("under lasting overload: %.2f, want near 4", e)
	}
	h, _ := newGradient2Limit(defaultGradient2)
	feed(h, &clock, 2000, 70*time.Millisecond, func() int { return h.Limit() })
	if h.Limit() != 200 {
		t.Errorf("ceiling: %d, want 200", h.Limit())
	}

	// A window closes only when it is long enough and has enough samples.
	w, _ := newGradient2Limit(defaultGradient2)
	c := time.Unix(0, 0)
	for range 50 { // 50 samples within half a second: one window, still open
		w.Sample(c, 70*time.Millisecond, 20)
		c = c.Add(10 * time.Millisecond)
	}
	if w.updates != 0 {
		t.Errorf("a window closed after %v", c.Sub(time.Unix(0, 0)))
	}
	for range 9 { // past a second, but short of 10 samples since… it has 50: closes at once
		w.Sample(c.Add(600*time.Millisecond), 70*time.Millisecond, 20)
	}
	if w.updates != 1 {
		t.Errorf("%d windows closed, want 1", w.updates)
	}
	slow, _ := newGradient2Limit(defaultGradient2)
	c = time.Unix(0, 0)
	for i := range 9 { // one sample every 2 s: nine are not a window yet
		slow.Sample(c.Add(time.Duration(i)*2*time.Second), 70*time.Millisecond, 20)
	}
	if slow.updates != 0 {
		t.Errorf("a window of 9 samples closed")
	}
	slow.Sample(c.Add(20*time.Second), 70*time.Millisecond, 20)
	if slow.updates != 1 {
		t.Errorf("the 10th sample did not close the window")
	}

	for _, bad := range []gradient2Config{
		{Initial: 20, Min: 0, Max: 200, Smoothing: 0.2, Tolerance: 1.5, LongWindow: 600, MinSamples: 1},
		{Initial: 300, Min: 1, Max: 200, Smoothing: 0.2, Tolerance: 1.5, LongWindow: 600, MinSamples: 1},
		{Initial: 20, Min: 1, Max: 200, Smoothing: 0, Tolerance: 1.5, LongWindow: 600, MinSamples: 1},
		{Initial: 20, Min: 1, Max: 200, Smoothing: 0.2, Tolerance: 0.5, LongWindow: 600, MinSamples: 1},
		{Initial: 20, Min: 1, Max: 200, Smoothing: 0.2, Tolerance: 1.5, LongWindow: 0, MinSamples: 1},
	} {
		if _, err := newGradient2Limit(bad); err == nil {
			t.Errorf("config accepted: %+v", bad)
		}
	}
}

// TestGradient2Peer: the proxy admits up to the limit, refuses beyond it
// with 429 + Retry-After: 1, and feeds the limit one sample per answer,
// the time to the upstream's headers, with the in-flight count at
// admission.
func TestGradient2Peer(t *testing.T) {
	up, u := newBlockingUpstream(t)
	cfg := defaultGradient2
	cfg.Initial, cfg.MinSamples, cfg.MinWindow = 2, 1, 0 // every sample is a window
	g, err := newGradient2Peer(u, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// A clock that moves 100 ms per reading: each RTT is 100 ms, or 200 ms
	// when the other request read the clock in between.
	var mu sync.Mutex
	now := time.Unix(0, 0)
	g.now = func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(100 * time.Millisecond)
		return now
	}
	released := make(chan struct{}, 16)
	g.gate.onRelease = func() { released <- struct{}{} }
	ts := httptest.NewServer(g)
	defer ts.Close()

	done := make(chan int, 2)
	for range 2 {
		go func() {
			req, _ := http.NewRequest(http.MethodPost, ts.URL+"/v1/chat/completions", strings.NewReader("{}"))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				done <- 0
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			done <- resp.StatusCode
		}()
		wait(t, up.entered, "a request to reach the upstream")
	}
	resp, err := http.Post(ts.URL+"/v1/chat/completions", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" {
		t.Errorf("third request at a limit of 2: %s, Retry-After %q", resp.Status, resp.Header.Get("Retry-After"))
	}
	for range 2 {
		up.release <- struct{}{}
		if code := <-done; code != 200 {
			t.Errorf("answer %d", code)
		}
		wait(t, released, "a slot")
	}
	g.lim.mu.Lock()
	updates, long := g.lim.updates, g.lim.longRTT
	g.lim.mu.Unlock()
	if updates != 2 || long < 0.099 || long > 0.301 {
		t.Errorf("%d samples, long RTT %.3f s; want 2 of 0.1–0.3 s", updates, long)
	}
	if s := g.snapshot(); s.InFlight != 0 || s.Peak != 2 || s.Limit < 2 {
		t.Errorf("snapshot %+v", s)
	}
	if _, err := newGradient2Peer(nil, defaultGradient2); err == nil {
		t.Error("no upstream accepted")
	}
}
