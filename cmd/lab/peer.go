package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"
)

// The peers are the set-ups adaptive_throttle is compared with: limiters
// inside the lab, each an httputil.ReverseProxy in front of its own llmsim
// (behind the same plain Caddy as every set-up), that refuse at once with
// 429 and Retry-After: 1 beyond their concurrency limit — no queue, and
// blind to X-Priority. inflight.go holds the static in-flight limit,
// gradient2.go the Gradient2 limit.

// peer is a running peer as the lab sees it: a handler and, once a
// second, its limit and what was in flight.
type peer interface {
	http.Handler
	snapshot() peerSnap
}

// peerSnap is one look at a peer: its limit now, the requests in flight
// now, and the most in flight since the previous look.
type peerSnap struct {
	Limit    int `json:"limit"`
	InFlight int `json:"in_flight"`
	Peak     int `json:"peak"`
}

// gate counts the requests in flight and admits one only below a limit.
type gate struct {
	mu             sync.Mutex
	inflight, peak int
	onRelease      func() // tests: called after each release
}

// tryAcquire admits a request when fewer than limit are in flight; it
// returns the count in flight with it.
func (g *gate) tryAcquire(limit int) (int, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.inflight >= limit {
		return g.inflight, false
	}
	g.inflight++
	g.peak = max(g.peak, g.inflight)
	return g.inflight, true
}

func (g *gate) release() {
	g.mu.Lock()
	g.inflight--
	g.mu.Unlock()
	if g.onRelease != nil {
		g.onRelease()
	}
}

// look returns what is in flight and the peak since the last look.
func (g *gate) look() (inflight, peak int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	inflight, peak = g.inflight, g.peak
	g.peak = g.inflight
	return inflight, peak
}

// newPeerProxy forwards to upstream, streaming every chunk at once
// (FlushInterval -1, as Caddy's flush_interval -1). wrap, when not nil,
// wraps the transport (Gradient2 measures the time to the first byte
// there).
func newPeerProxy(upstream *url.URL, wrap func(http.RoundTripper) http.RoundTripper) (*httputil.ReverseProxy, error) {
	if upstream == nil || upstream.Host == "" {
		return nil, errors.New("peer: no upstream")
	}
	var tr http.RoundTripper = &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
	}
	if wrap != nil {
		tr = wrap(tr)
	}
	return &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(upstream); r.Out.Host = r.In.Host },
		FlushInterval: -1,
		Transport:     tr,
		// A client that left is nobody to answer; anything else is the
		// upstream failing, which a proxy reports as 502.
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() == nil {
				w.WriteHeader(http.StatusBadGateway)
			}
		},
	}, nil
}

// refuse answers 429 with Retry-After: 1 and names the limiter.
func refuse(w http.ResponseWriter, limiter string) {
	w.Header().Set("Retry-After", "1")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusTooManyRequests)
	_, _ = w.Write([]byte(`{"error":"concurrency limit","limiter":"` + limiter + `"}` + "\n"))
}

func contextWithAdmit(r *http.Request, inflight int) context.Context {
	return context.WithValue(r.Context(), admitKey{}, inflight)
}
