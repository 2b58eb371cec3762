package main

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"

	"golang.org/x/time/rate"
)

// staticLimiter is set-up (b): the usual fixed protection, a token bucket
// at the upstream's nominal capacity in front of it. It knows nothing of
// priorities or of the upstream's health; beyond the rate it answers 429
// with Retry-After: 1 (a token is back within a second at any rate ≥ 1).
type staticLimiter struct {
	lim   *rate.Limiter
	proxy *httputil.ReverseProxy
}

// newStaticLimiter proxies to upstream at rps with a small burst.
func newStaticLimiter(upstream *url.URL, rps float64, burst int) (*staticLimiter, error) {
	if rps <= 0 || math.IsInf(rps, 0) || math.IsNaN(rps) || burst < 1 {
		return nil, fmt.Errorf("static limiter: rate %g req/s and burst %d must be > 0", rps, burst)
	}
	if upstream == nil || upstream.Host == "" {
		return nil, fmt.Errorf("static limiter: no upstream")
	}
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
	}
	p := &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(upstream); r.Out.Host = r.In.Host },
		FlushInterval: -1, // stream every token at once, as Caddy's flush_interval -1
		Transport:     tr,
		// A client that left is nobody to answer; anything else is the
		// upstream failing, which a proxy reports as 502.
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() == nil {
				w.WriteHeader(http.StatusBadGateway)
			}
		},
	}
	return &staticLimiter{lim: rate.NewLimiter(rate.Limit(rps), burst), proxy: p}, nil
}

func (s *staticLimiter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.lim.Allow() {
		w.Header().Set("Retry-After", "1")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write([]byte(`{"error":"rate limited","limiter":"static"}` + "\n"))
		return
	}
	s.proxy.ServeHTTP(w, r)
}
