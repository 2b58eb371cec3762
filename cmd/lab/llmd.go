package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The llm-d-style scorer is the pool scenarios' third set-up: an endpoint
// picker of the kind llm-d's router (formerly the Kubernetes Gateway API
// Inference Extension's endpoint picker) publishes, written here for the
// lab from its published description — the lab's own code, not llm-d's,
// which needs Kubernetes — and named in tables "llm-d-style scorer
// (published algorithm, lab implementation)". It sits behind the same
// plain Caddy as the other peers and forwards to the pool itself.
//
// The published algorithm, as implemented here:
//
//   - Every endpoint's /metrics is scraped every 50 ms (the picker's
//     refresh interval): vllm:num_requests_waiting (queue depth) and
//     vllm:kv_cache_usage_perc (KV-cache use, 0–1).
//   - Scores, weighted as the published default profile weighs them:
//     queue ×2, min-max normalized over the candidates ((max − q) ÷
//     (max − min); 1 for all when they are equal), and KV-cache ×2,
//     1 − use. The prefix-cache scorer (×3) is left out: every prompt of
//     the lab is the same, so it would score every warm endpoint alike.
//   - The highest total wins; ties are broken at random (max-score picker).
//   - The saturation detector: an endpoint has room when its metrics are
//     fresh (at most 200 ms old) and it has at most 5 waiting and KV use
//     at most 0.8; the pool is saturated when none has room. Then
//     sheddable requests are refused (429); others are still scored and
//     sent. Stale metrics count as no room, so metrics that stop coming
//     saturate the pool: the published behaviour.
//   - Priorities map onto the published criticalities: X-Priority low is
//     sheddable; medium and high are not.
//
// One choice is the lab's: an endpoint whose last scrape failed is left
// out of the candidates until a scrape succeeds again. In Kubernetes a
// dead pod leaves the pool when its readiness probe fails, seconds later;
// the lab has no Kubernetes, and the scrape is the closest signal.
type llmdConfig struct {
	QueueWeight, KVWeight float64
	QueueThreshold        int     // waiting requests at most this: room
	KVThreshold           float64 // KV-cache use at most this: room
	Refresh               time.Duration
	Staleness             time.Duration
}

// defaultLLMD is the published defaults.
var defaultLLMD = llmdConfig{QueueWeight: 2, KVWeight: 2, QueueThreshold: 5, KVThreshold: 0.8,
	Refresh: 50 * time.Millisecond, Staleness: 200 * time.Millisecond}

// llmdEndpoint is one upstream as the scorer knows it.
type llmdEndpoint struct {
	addr    string
	metrics string // its /metrics URL
	proxy   *httputil.ReverseProxy

	// Guarded by llmdScorer.mu.
	waiting int
	kv      float64
	updated time.Time // the last successful scrape
	ready   bool      // the last scrape succeeded
}

// llmdScorer is the set-up's handler; safe for concurrent use.
type llmdScorer struct {
	cfg    llmdConfig
	eps    []*llmdEndpoint
	now    func() time.Time
	client *http.Client
	gate   gate

	mu        sync.Mutex
	rnd       *rand.Rand
	saturated int // requests refused as sheddable while saturated
	stop      context.CancelFunc
}

// newLLMDScorer builds the scorer over upstreams (host:port); start begins
// the scraping.
func newLLMDScorer(upstreams []string, cfg llmdConfig) (*llmdScorer, error) {
	if len(upstreams) == 0 {
		return nil, errors.New("llm-d scorer: no upstreams")
	}
	// A scrape may take up to a second on a loaded machine: a slow one
	// leaves the metrics stale, which the saturation check reads as no
	// room, as published; only a failed one takes the endpoint out.
	s := &llmdScorer{cfg: cfg, now: time.Now, rnd: rand.New(rand.NewPCG(1, 2)),
		client: &http.Client{Timeout: time.Second}}
	for _, a := range upstreams {
		p, err := newPeerProxy(&url.URL{Scheme: "http", Host: a}, nil)
		if err != nil {
			return nil, err
		}
		s.eps = append(s.eps, &llmdEndpoint{addr: a, metrics: "http://" + a + "/metrics", proxy: p})
	}
	return s, nil
}

// start scrapes every endpoint every Refresh until close.
func (s *llmdScorer) start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	for _, ep := range s.eps {
		go func() {
			t := time.NewTicker(s.cfg.Refresh)
			defer t.Stop()
			for {
				s.scrape(ctx, ep)
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		}()
	}
}

func (s *llmdScorer) close() {
	if s.stop != nil {
		s.stop()
	}
}

// scrape reads ep's gauges once.
func (s *llmdScorer) scrape(ctx context.Context, ep *llmdEndpoint) {
	waiting, kv, err := s.fetch(ctx, ep.metrics)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		ep.ready = false
		return
	}
	ep.waiting, ep.kv, ep.updated, ep.ready = waiting, kv, s.now(), true
}

func (s *llmdScorer) fetch(ctx context.Context, u string) (int, float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return parseVLLMGauges(io.LimitReader(resp.Body, 1<<20))
}

// parseVLLMGauges reads vllm:num_requests_waiting and
// vllm:kv_cache_usage_perc from Prometheus text; both must be there.
func parseVLLMGauges(r io.Reader) (waiting int, kv float64, err error) {
	var haveW, haveKV bool
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, _ := strings.Cut(line, " ")
		if i := strings.IndexByte(line, '{'); i >= 0 && i < len(name) {
			name = line[:i]
			if j := strings.LastIndexByte(line, '}'); j > i {
				rest = line[j+1:]
			}
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		switch name {
		case "vllm:num_requests_waiting":
			v, perr := strconv.ParseFloat(fields[0], 64)
			if perr != nil {
				return 0, 0, fmt.Errorf("%s: %v", name, perr)
			}
			waiting, haveW = int(v), true
		case "vllm:kv_cache_usage_perc":
			v, perr := strconv.ParseFloat(fields[0], 64)
			if perr != nil {
				return 0, 0, fmt.Errorf("%s: %v", name, perr)
			}
			kv, haveKV = v, true
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if !haveW || !haveKV {
		return 0, 0, errors.New("metrics lack vllm:num_requests_waiting or vllm:kv_cache_usage_perc")
	}
	return waiting, kv, nil
}

// pick is the endpoint for a request (sheddable: low priority) at now:
// its index, or -1 with the status to refuse with — 429 when the pool is
// saturated and the request sheddable, 503 when no endpoint is ready.
func (s *llmdScorer) pick(sheddable bool, now time.Time) (int, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	minQ, maxQ, any, room := 0, 0, false, false
	for _, ep := range s.eps {
		if !ep.ready {
			continue
		}
		if !any || ep.waiting < minQ {
			minQ = ep.waiting
		}
		if !any || ep.waiting > maxQ {
			maxQ = ep.waiting
		}
		any = true
		fresh := now.Sub(ep.updated) <= s.cfg.Staleness
		if fresh && ep.waiting <= s.cfg.QueueThreshold && ep.kv <= s.cfg.KVThreshold {
			room = true
		}
	}
	if !any {
		return -1, http.StatusServiceUnavailable
	}
	if !room && sheddable {
		s.saturated++
		return -1, http.StatusTooManyRequests
	}
	best, bestScore, ties := -1, 0.0, 0
	for i, ep := range s.eps {
		if !ep.ready {
			continue
		}
		q := 1.0
		if maxQ > minQ {
			q = float64(maxQ-ep.waiting) / float64(maxQ-minQ)
		}
		score := s.cfg.QueueWeight*q + s.cfg.KVWeight*(1-ep.kv)
		switch {
		case best < 0 || score > bestScore+1e-12:
			best, bestScore, ties = i, score, 1
		case score >= bestScore-1e-12:
			// Reservoir sampling: each of the tied is kept with
			// probability 1/ties, so the pick among them is uniform.
			ties++
			if s.rnd.IntN(ties) == 0 {
				best = i
			}
		}
	}
	return best, 0
}

func (s *llmdScorer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	i, status := s.pick(r.Header.Get("X-Priority") == "low", s.now())
	switch status {
	case http.StatusTooManyRequests:
		refuse(w, "llm-d-scorer")
		return
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "1")
		http.Error(w, `{"error":"no endpoint ready","limiter":"llm-d-scorer"}`, status)
		return
	}
	s.gate.tryAcquire(int(^uint(0) >> 1))
	defer s.gate.release()
	s.eps[i].proxy.ServeHTTP(w, r)
}

// snapshot: the scorer has no limit (0); what it had in flight.
func (s *llmdScorer) snapshot() peerSnap {
	in, peak := s.gate.look()
	return peerSnap{InFlight: in, Peak: peak}
}
