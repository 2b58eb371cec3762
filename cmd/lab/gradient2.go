package main

import (
	"fmt"
	"math"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"
)

// Gradient2 is the concurrency-limit algorithm published by Netflix in
// its concurrency-limits library (Gradient2Limit), written here for the
// lab from the published description: this is the lab's own code, not the
// library (neither the Java library nor its Go port can be fetched here),
// and tables call it "Gradient2 (published algorithm, lab implementation)".
//
// The algorithm, per sample window:
//
//	shortRTT = the window's average RTT
//	longRTT  = exponential average of shortRTT over ~600 windows (a plain
//	           average over the first 10); when longRTT/shortRTT > 2 it is
//	           decayed toward shortRTT (× 0.95): latency is back to normal
//	           after a long overload, and the baseline follows it down
//	if the window's most in flight < limit/2: keep the limit (app-limited)
//	gradient = clamp(tolerance × longRTT / shortRTT, 0.5, 1)
//	newLimit = limit × gradient + queueSize, queueSize = sqrt(limit)
//	limit    = limit × (1 − smoothing) + newLimit × smoothing, in [min, max]
//
// RTT is the upstream's time to its response headers, measured in the
// proxy: llmsim sends its headers with the first SSE chunk, so this is the
// time to the first token, the latency that grows with its queue. Answers
// of status 5xx and requests whose client left before the headers are no
// samples. Beyond the limit a request is refused at once (429 + Retry-After:
// 1), as the library's servlet limiter does.
//
// One choice differs from the library's defaults: a window closes once it
// is at least MinWindow long AND has MinSamples samples, where the library
// drops a window short of samples. At the lab's lowest rates (the hetero
// scenario's long answers, a few admitted per second) dropped windows
// would freeze the limit; accumulating keeps it learning, just less often.
type gradient2Config struct {
	Initial, Min, Max float64
	Smoothing         float64
	Tolerance         float64
	LongWindow        int // windows the long RTT averages over
	Warmup            int // windows averaged plainly before the exponential average
	MinWindow         time.Duration
	MinSamples        int
}

// defaultGradient2 is the published algorithm's defaults (initial limit
// 20, max 200, smoothing 0.2, tolerance 1.5, long window 600 with a
// warm-up of 10, windows of 1 s and 10 samples), with a floor of 1 rather
// than the library's 20: llmsim has 8 slots, so a floor of 20 would keep 12
// requests queued at all times and could not protect it.
var defaultGradient2 = gradient2Config{
	Initial: 20, Min: 1, Max: 200, Smoothing: 0.2, Tolerance: 1.5,
	LongWindow: 600, Warmup: 10, MinWindow: time.Second, MinSamples: 10,
}

// gradient2Limit is the algorithm's state; safe for concurrent use.
type gradient2Limit struct {
	cfg gradient2Config

	mu    sync.Mutex
	limit float64
	// longRTT, in seconds, and how many windows it has seen.
	longRTT float64
	longN   int
	// The open window: start, sum of RTTs (s), samples, most in flight.
	winStart  time.Time
	winSum    float64
	winN      int
	winMaxInf int
	updates   int // windows closed (tests, the plot's title)
}

func newGradient2Limit(cfg gradient2Config) (*gradient2Limit, error) {
	switch {
	case cfg.Min < 1 || cfg.Max < cfg.Min || cfg.Initial < cfg.Min || cfg.Initial > cfg.Max:
		return nil, fmt.Errorf("gradient2: limits min %g ≤ initial %g ≤ max %g, min ≥ 1", cfg.Min, cfg.Initial, cfg.Max)
	case cfg.Smoothing <= 0 || cfg.Smoothing > 1:
		return nil, fmt.Errorf("gradient2: smoothing %g must be in (0, 1]", cfg.Smoothing)
	case cfg.Tolerance < 1:
		return nil, fmt.Errorf("gradient2: tolerance %g must be ≥ 1", cfg.Tolerance)
	case cfg.LongWindow < 1 || cfg.Warmup < 0 || cfg.MinSamples < 1 || cfg.MinWindow < 0:
		return nil, fmt.Errorf("gradient2: long window, warm-up, samples and window length out of range: %+v", cfg)
	}
	return &gradient2Limit{cfg: cfg, limit: cfg.Initial}, nil
}

// Limit is the concurrency admitted now (the estimate, rounded down).
func (g *gradient2Limit) Limit() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return int(g.limit)
}

// estimate is the unrounded limit (tests).
func (g *gradient2Limit) estimate() float64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.limit
}

// Sample adds one request's RTT, seen at now with inflight requests in
// flight (itself included) when it was admitted, and closes the window
// when it is long and full enough.
func (g *gradient2Limit) Sample(now time.Time, rtt time.Duration, inflight int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.winN == 0 {
		g.winStart = now
	}
	g.winSum += rtt.Seconds()
	g.winN++
	g.winMaxInf = max(g.winMaxInf, inflight)
	if now.Sub(g.winStart) < g.cfg.MinWindow || g.winN < g.cfg.MinSamples {
		return
	}
	g.updateLocked(g.winSum/float64(g.winN), g.winMaxInf)
	g.winSum, g.winN, g.winMaxInf = 0, 0, 0
}

// updateLocked is one window of the algorithm: short is its average RTT
// (s), maxInflight the most in flight during it.
func (g *gradient2Limit) updateLocked(short float64, maxInflight int) {
	g.updates++
	if short <= 0 {
		return
	}
	// The long RTT: a plain average while warming up, then exponential.
	if g.longN < g.cfg.Warmup {
		g.longRTT = (g.longRTT*float64(g.longN) + short) / float64(g.longN+1)
	} else {
		f := 2 / float64(g.cfg.LongWindow+1)
		g.longRTT = g.longRTT*(1-f) + short*f
	}
	g.longN++
	if g.longRTT/short > 2 {
		g.longRTT *= 0.95
	}
	if float64(maxInflight) < g.limit/2 {
		return // app-limited: the demand, not the upstream, set the latency
	}
	gradient := math.Max(0.5, math.Min(1, g.cfg.Tolerance*g.longRTT/short))
	next := g.limit*gradient + math.Sqrt(g.limit)
	next = g.limit*(1-g.cfg.Smoothing) + next*g.cfg.Smoothing
	g.limit = math.Max(g.cfg.Min, math.Min(g.cfg.Max, next))
}

// gradient2Peer is the Gradient2 set-up: the limit in front of llmsim.
type gradient2Peer struct {
	lim   *gradient2Limit
	gate  gate
	proxy *httputil.ReverseProxy
	now   func() time.Time
}

// admitKey carries the in-flight count at admission to the transport,
// where the RTT is measured.
type admitKey struct{}

func newGradient2Peer(upstream *url.URL, cfg gradient2Config) (*gradient2Peer, error) {
	lim, err := newGradient2Limit(cfg)
	if err != nil {
		return nil, err
	}
	g := &gradient2Peer{lim: lim, now: time.Now}
	p, err := newPeerProxy(upstream, func(next http.RoundTripper) http.RoundTripper {
		return ttfbTransport{next: next, peer: g}
	})
	if err != nil {
		return nil, err
	}
	g.proxy = p
	return g, nil
}

func (g *gradient2Peer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	inflight, ok := g.gate.tryAcquire(g.lim.Limit())
	if !ok {
		refuse(w, "gradient2")
		return
	}
	defer g.gate.release()
	g.proxy.ServeHTTP(w, r.WithContext(contextWithAdmit(r, inflight)))
}

func (g *gradient2Peer) snapshot() peerSnap {
	in, peak := g.gate.look()
	return peerSnap{Limit: g.lim.Limit(), InFlight: in, Peak: peak}
}

// ttfbTransport times the upstream's response headers and hands the time
// to the limit as a sample.
type ttfbTransport struct {
	next http.RoundTripper
	peer *gradient2Peer
}

func (t ttfbTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	start := t.peer.now()
	resp, err := t.next.RoundTrip(r)
	if err != nil || resp.StatusCode >= 500 {
		return resp, err
	}
	if inflight, ok := r.Context().Value(admitKey{}).(int); ok {
		now := t.peer.now()
		t.peer.lim.Sample(now, now.Sub(start), inflight)
	}
	return resp, nil
}
