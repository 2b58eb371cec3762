package main

import (
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
)

// inflightLimit is the static in-flight peer: at most N requests in flight
// to the upstream, the N+1th refused at once (429, Retry-After: 1), a slot
// freed when an answer ends or its client leaves. It is the usual fixed
// concurrency limit, blind to priorities and to the upstream's health, and
// it is tuned with the answer in hand: N defaults to 1.5 × llmsim's batch
// slots (the -inflight flag), enough to keep every slot busy with a short
// queue behind it.
type inflightLimit struct {
	n     int
	gate  gate
	proxy *httputil.ReverseProxy
}

// defaultInflight is N for a batch of slots: 1.5 × slots.
func defaultInflight(slots int) int { return max(1, (3*slots+1)/2) }

func newInflightLimit(upstream *url.URL, n int) (*inflightLimit, error) {
	if n < 1 {
		return nil, fmt.Errorf("in-flight limit %d: must be ≥ 1", n)
	}
	p, err := newPeerProxy(upstream, nil)
	if err != nil {
		return nil, err
	}
	return &inflightLimit{n: n, proxy: p}, nil
}

func (l *inflightLimit) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, ok := l.gate.tryAcquire(l.n); !ok {
		refuse(w, "inflight")
		return
	}
	defer l.gate.release()
	l.proxy.ServeHTTP(w, r)
}

func (l *inflightLimit) snapshot() peerSnap {
	in, peak := l.gate.look()
	return peerSnap{Limit: l.n, InFlight: in, Peak: peak}
}
