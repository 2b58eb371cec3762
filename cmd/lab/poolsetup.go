package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ai-guardian/adaptivethrottle/internal/loadgen"
)

// poolEnv is a pool set-up's upstreams, one llmsim process each, and what
// was done to them and seen of them during the run.
type poolEnv struct {
	bin, dir string
	ups      []*poolProc
	client   *http.Client
	// status is Caddy's /throttle/status where the module runs; each
	// look reads the pool's upstreams there too.
	status string

	mu      sync.Mutex
	run     poolRun
	started time.Time
}

// poolProc is one upstream: its process (nil while dead) and port.
type poolProc struct {
	u     poolUpstream
	port  int
	proc  *proc
	lives int // processes started so far
	// ooms is the OOM count of its earlier lives; lastOOMs its current
	// life's at the last look.
	ooms, lastOOMs int64
}

// poolRun is what a pool set-up's run adds to its outcome: the upstreams
// once a second, what happened to them, and what was in flight on each
// upstream at its death.
type poolRun struct {
	Samples []poolSample `json:"samples,omitempty"`
	Events  []loadgen.Event
	// DeadInFlight sums, over the deaths, the requests running or waiting
	// on the upstream just before it was killed.
	DeadInFlight int   `json:"dead_in_flight"`
	OOMs         int64 `json:"ooms"`
}

// poolSample is every upstream at T seconds from the load's start.
type poolSample struct {
	T         float64        `json:"t"`
	Upstreams []upstreamLook `json:"upstreams"`
}

// upstreamLook is one upstream's /admin/state; Up false: it did not answer.
type upstreamLook struct {
	Up      bool    `json:"up"`
	Slots   int     `json:"slots"`
	Running int     `json:"running"`
	Waiting int     `json:"waiting"`
	KV      float64 `json:"kv"`
	// Limit and State are the module's view of it, from /throttle/status
	// (the policy's set-up: its learned limit and its circuit's state).
	Limit *int   `json:"limit,omitempty"`
	State string `json:"state,omitempty"`
}

func newPoolEnv(bin, dir string, pool []poolUpstream) (*poolEnv, error) {
	pe := &poolEnv{bin: bin, dir: dir, client: &http.Client{Timeout: 2 * time.Second}}
	for _, u := range pool {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		pe.ups = append(pe.ups, &poolProc{u: u, port: port})
	}
	return pe, nil
}

// addrs is the upstreams' host:port, in order.
func (pe *poolEnv) addrs() []string {
	out := make([]string, len(pe.ups))
	for i, p := range pe.ups {
		out[i] = hostPort(p.port)
	}
	return out
}

// start starts every upstream at its initial slots.
func (pe *poolEnv) start(ctx context.Context) error {
	for i, p := range pe.ups {
		if err := pe.launch(ctx, i, p.u.Slots); err != nil {
			return err
		}
	}
	return nil
}

// launch starts upstream i's process at slots and waits for it.
func (pe *poolEnv) launch(ctx context.Context, i, slots int) error {
	p := pe.ups[i]
	p.lives++
	name := fmt.Sprintf("llmsim-%d", i+1)
	if p.lives > 1 {
		name = fmt.Sprintf("llmsim-%d-life%d", i+1, p.lives)
	}
	pr, err := startProc(name, pe.dir, pe.bin, append([]string{"-listen", hostPort(p.port)}, p.u.args(slots)...), nil)
	if err != nil {
		return err
	}
	if err := waitReady(ctx, "http://"+hostPort(p.port)+"/health", pr, 10*time.Second); err != nil {
		pr.stop(time.Second)
		return err
	}
	pe.mu.Lock()
	p.proc = pr
	pe.mu.Unlock()
	return nil
}

// stop ends every upstream.
func (pe *poolEnv) stop() {
	for _, p := range pe.ups {
		pe.mu.Lock()
		pr := p.proc
		pe.mu.Unlock()
		if pr != nil {
			pr.stop(5 * time.Second)
		}
	}
}

// state reads upstream i's /admin/state.
func (pe *poolEnv) state(ctx context.Context, i int) (upstreamLook, int64, error) {
	var st struct {
		Slots   int     `json:"slots"`
		Running int     `json:"running"`
		Waiting int     `json:"waiting"`
		KV      float64 `json:"kv_cache_usage"`
		OOMs    int64   `json:"ooms"`
	}
	ctx, cancel := context.WithTimeout(ctx, 900*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+hostPort(pe.ups[i].port)+"/admin/state", nil)
	if err != nil {
		return upstreamLook{}, 0, err
	}
	resp, err := pe.client.Do(req)
	if err != nil {
		return upstreamLook{}, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return upstreamLook{}, 0, errors.New(resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return upstreamLook{}, 0, err
	}
	return upstreamLook{Up: true, Slots: st.Slots, Running: st.Running, Waiting: st.Waiting, KV: st.KV}, st.OOMs, nil
}

// timed is one change of one upstream.
type timed struct {
	upstream int
	change   poolChange
}

// timeline is every change of the pool in time order.
func timeline(pool []poolUpstream) []timed {
	var out []timed
	for i, u := range pool {
		for _, c := range u.Changes {
			out = append(out, timed{i, c})
		}
	}
	slices.SortStableFunc(out, func(a, b timed) int { return int(a.change.At - b.change.At) })
	return out
}

// play applies the pool's changes at their offsets from start and looks
// at every upstream once a second, until done closes. The changes run on
// their own goroutine, so that a slow look cannot delay one.
func (pe *poolEnv) play(ctx context.Context, start time.Time, done <-chan struct{}) {
	pe.mu.Lock()
	pe.started = start
	pe.mu.Unlock()
	var pool []poolUpstream
	for _, p := range pe.ups {
		pool = append(pool, p.u)
	}
	changed := make(chan struct{})
	go func() {
		defer close(changed)
		for _, c := range timeline(pool) {
			t := time.NewTimer(time.Until(start.Add(c.change.At)))
			select {
			case <-done:
				t.Stop()
				return
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			pe.apply(ctx, c.upstream, c.change)
		}
	}()
	defer func() { <-changed }()
	var outside sync.WaitGroup
	defer outside.Wait()
	for i, p := range pe.ups {
		for _, o := range p.u.Outside {
			outside.Go(func() { pe.sendOutside(ctx, i, o, start, done) })
		}
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	pe.look(ctx)
	for {
		select {
		case <-done:
			pe.look(ctx)
			return
		case <-ctx.Done():
			return
		case <-tick.C:
			pe.look(ctx)
		}
	}
}

// outsideBody is a request of other clients: a short prompt, llmsim's
// default answer, streamed as the lab's own are.
var outsideBody = []byte(`{"model":"llmsim","messages":[{"role":"user","content":"a request from another client"}],"stream":true}`)

// maxOutside bounds the outside requests in flight at once: past it an
// arrival is dropped and counted.
const maxOutside = 256

// sendOutside sends o's traffic straight to upstream i, Poisson arrivals
// from start+o.From to start+o.To (or until done), and notes what it sent
// as events.
func (pe *poolEnv) sendOutside(ctx context.Context, i int, o outsideLoad, start time.Time, done <-chan struct{}) {
	url := "http://" + hostPort(pe.ups[i].port) + "/v1/chat/completions"
	client := &http.Client{Timeout: 60 * time.Second}
	sem := make(chan struct{}, maxOutside)
	var wg sync.WaitGroup
	var sent, ok, dropped atomic.Int64
	rng := rand.New(rand.NewPCG(uint64(i)+1, uint64(o.From)))
	next := start.Add(o.From)
	end := start.Add(o.To)
	for first := true; next.Before(end); next = next.Add(time.Duration(rng.ExpFloat64() / o.Rate * float64(time.Second))) {
		t := time.NewTimer(time.Until(next))
		select {
		case <-done:
			t.Stop()
			wg.Wait()
			return
		case <-ctx.Done():
			t.Stop()
			wg.Wait()
			return
		case <-t.C:
		}
		if first {
			pe.event(fmt.Sprintf("upstream #%d: other clients send it %.1f req/s straight", i+1, o.Rate))
			first = false
		}
		select {
		case sem <- struct{}{}:
		default:
			dropped.Add(1)
			continue
		}
		sent.Add(1)
		wg.Go(func() {
			defer func() { <-sem }()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(outsideBody))
			if err != nil {
				return
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				ok.Add(1)
			}
		})
	}
	pe.event(fmt.Sprintf("upstream #%d: other clients stop (%d sent, %d dropped at %d in flight)", i+1, sent.Load(), dropped.Load(), maxOutside))
	wg.Wait()
	pe.event(fmt.Sprintf("upstream #%d: other clients' requests done: %d of %d answered 200", i+1, ok.Load(), sent.Load()))
}

// look samples every upstream once.
func (pe *poolEnv) look(ctx context.Context) {
	s := poolSample{T: time.Since(pe.started).Seconds(), Upstreams: make([]upstreamLook, len(pe.ups))}
	for i, p := range pe.ups {
		l, ooms, err := pe.state(ctx, i)
		if err == nil {
			s.Upstreams[i] = l
			pe.mu.Lock()
			p.lastOOMs = ooms
			pe.mu.Unlock()
		}
	}
	if pe.status != "" {
		pe.readMembers(ctx, s.Upstreams)
	}
	pe.mu.Lock()
	pe.run.Samples = append(pe.run.Samples, s)
	pe.mu.Unlock()
}

// readMembers fills the module's view of each upstream into looks, from
// the first instance's "upstreams" in /throttle/status; nothing when it
// lists none (the module without the policy).
func (pe *poolEnv) readMembers(ctx context.Context, looks []upstreamLook) {
	ctx, cancel := context.WithTimeout(ctx, 900*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, pe.status, nil)
	if err != nil {
		return
	}
	resp, err := pe.client.Do(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	var st struct {
		Instances []struct {
			Upstreams []struct {
				Upstream string `json:"upstream"`
				State    string `json:"state"`
				Limit    int    `json:"limit"`
			} `json:"upstreams"`
		} `json:"instances"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&st) != nil || len(st.Instances) == 0 {
		return
	}
	for _, m := range st.Instances[0].Upstreams {
		for i, p := range pe.ups {
			if m.Upstream == hostPort(p.port) {
				l := m.Limit
				looks[i].Limit, looks[i].State = &l, m.State
			}
		}
	}
}

// apply acts out one change on upstream i and notes it as an event.
func (pe *poolEnv) apply(ctx context.Context, i int, c poolChange) {
	p := pe.ups[i]
	pe.mu.Lock()
	pr := p.proc
	pe.mu.Unlock()
	var what string
	switch {
	case c.Dead && pr != nil:
		l, ooms, err := pe.state(ctx, i)
		pr.kill()
		pe.mu.Lock()
		p.proc = nil
		if err == nil {
			pe.run.DeadInFlight += l.Running + l.Waiting
			p.ooms += ooms
		}
		p.lastOOMs = 0
		pe.mu.Unlock()
		what = fmt.Sprintf("upstream #%d killed (SIGKILL) with %d running and %d waiting", i+1, l.Running, l.Waiting)
		if err != nil {
			what = fmt.Sprintf("upstream #%d killed (SIGKILL); its state could not be read first: %v", i+1, err)
		}
	case c.Dead:
		what = fmt.Sprintf("upstream #%d already dead", i+1)
	case pr == nil:
		t0 := time.Now()
		if err := pe.launch(ctx, i, c.Slots); err != nil {
			what = fmt.Sprintf("upstream #%d failed to restart: %v", i+1, err)
		} else {
			what = fmt.Sprintf("upstream #%d restarted with %d slots (ready in %.2f s)", i+1, c.Slots, time.Since(t0).Seconds())
		}
	default:
		what = pe.setSlots(ctx, i, c.Slots)
	}
	pe.event(what)
}

// event notes what happened to the pool, at its time from the start.
func (pe *poolEnv) event(what string) {
	pe.mu.Lock()
	pe.run.Events = append(pe.run.Events, loadgen.Event{T: time.Since(pe.started).Seconds(), What: what})
	pe.mu.Unlock()
}

// setSlots tells upstream i to run n slots.
func (pe *poolEnv) setSlots(ctx context.Context, i, n int) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+hostPort(pe.ups[i].port)+"/admin/slots",
		bytes.NewReader([]byte(fmt.Sprintf(`{"slots":%d}`, n))))
	if err != nil {
		return fmt.Sprintf("upstream #%d: slots not set: %v", i+1, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := pe.client.Do(req)
	if err != nil {
		return fmt.Sprintf("upstream #%d: slots not set: %v", i+1, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("upstream #%d: slots not set: %s", i+1, resp.Status)
	}
	return fmt.Sprintf("upstream #%d slots set to %d", i+1, n)
}

// result is the run so far, with the OOMs of every life summed.
func (pe *poolEnv) result() poolRun {
	pe.mu.Lock()
	defer pe.mu.Unlock()
	r := pe.run
	r.Samples = slices.Clone(r.Samples)
	r.Events = slices.Clone(r.Events)
	for _, p := range pe.ups {
		r.OOMs += p.ooms + p.lastOOMs
	}
	return r
}

// poolCaddyVars fill lab/pool.Caddyfile.tmpl.
type poolCaddyVars struct {
	Admin     string
	Port      int
	Upstreams string // host:port, space-separated
	Module    bool   // adaptive_throttle in front of reverse_proxy
	Name      string // the handler's name (the policy's set-up)
	Policy    string // lb_policy's arguments
	Gauge     string // the upstream_gauge block's body; "" none
}

// poolCaddyVarsFor is the Caddyfile of a pool set-up over upstreams; the
// policy's set-up reads each upstream's gauge with gauge (scenario.PoolGauge).
func poolCaddyVarsFor(setup, admin string, port int, upstreams []string, gauge string) poolCaddyVars {
	v := poolCaddyVars{Admin: admin, Port: port, Upstreams: strings.Join(upstreams, " "), Policy: "least_conn"}
	switch setup {
	case setupPoolModule:
		v.Module = true
	case setupPolicy, setupPolicyNoGauge:
		v.Module, v.Name, v.Policy = true, policyName, "adaptive_throttle "+policyName
		if setup == setupPolicy {
			v.Gauge = gauge
		}
	}
	return v
}

// policyName names the handler the policy set-up's lb_policy refers to.
const policyName = "pool"

// startPoolSetup starts a pool set-up: the scenario's upstreams, the
// llm-d-style scorer in front of them when asked, and Caddy.
func startPoolSetup(ctx context.Context, b bins, labDir, dir, setup string, sc scenario) (e *env, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var stops []func()
	stopAll := inReverse(&stops)
	defer func() {
		if err != nil {
			stopAll()
		}
	}()
	pe, err := newPoolEnv(b.llmsim, dir, sc.Pool)
	if err != nil {
		return nil, err
	}
	stops = append(stops, pe.stop)
	if err := pe.start(ctx); err != nil {
		return nil, err
	}
	upstreams := pe.addrs()
	var lim peer
	if setup == setupLLMD {
		s, err := newLLMDScorer(upstreams, defaultLLMD)
		if err != nil {
			return nil, err
		}
		s.start()
		stops = append(stops, s.close)
		addr, stop, err := serveHandler(s)
		if err != nil {
			return nil, err
		}
		stops = append(stops, stop)
		lim, upstreams = s, []string{addr}
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	adminPort, err := freePort()
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "Caddyfile")
	if err := renderCaddyfile(filepath.Join(labDir, "pool.Caddyfile.tmpl"), cfgPath,
		poolCaddyVarsFor(setup, hostPort(adminPort), port, upstreams, sc.PoolGauge)); err != nil {
		return nil, err
	}
	cad, status, err := startCaddy(ctx, dir, b.caddy, []string{"run", "--config", cfgPath, "--adapter", "caddyfile"},
		"", "http://"+hostPort(adminPort), moduleSetup(setup))
	if err != nil {
		return nil, err
	}
	stops = append(stops, func() { cad.stop(5 * time.Second) })
	pe.status = status
	e = &env{Setup: setup, Target: "http://" + hostPort(port), ThrottleStatus: status, peer: lim, pool: pe, stop: stopAll}
	if err := waitReady(ctx, e.Target+"/health", cad, 10*time.Second); err != nil {
		return nil, err
	}
	return e, nil
}

// shift moves the run's times by d (the generator's start after the
// pool's clock started), so that they read on the generator's clock.
func (r *poolRun) shift(d time.Duration) {
	for i := range r.Samples {
		r.Samples[i].T -= d.Seconds()
	}
	for i := range r.Events {
		r.Events[i].T -= d.Seconds()
	}
}
