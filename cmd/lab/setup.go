package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"text/template"
	"time"
)

// env is one running set-up: where the load goes and what to poll.
type env struct {
	Setup          string
	Target         string   // the URL the generator hits (Caddy's site)
	Upstream       string   // llmsim's base URL
	ThrottleStatus string   // Caddy admin /throttle/status; adaptive only
	peer           peer     // the lab's limiter in front of llmsim; peers only
	pool           *poolEnv // a pool scenario's upstreams; pool scenarios only
	stop           func()
}

// bins are the programs the lab runs, each built or found once.
type bins struct {
	llmsim, loadgen, caddy string
}

// caddyVars fill lab/*.Caddyfile.tmpl.
type caddyVars struct {
	Admin    string // host:port of the admin API
	Port     int    // the site's port on 127.0.0.1
	Upstream string // host:port reverse_proxy forwards to
	Metrics  string // llmsim's /metrics URL (adaptive only)
	// Concurrency: lines for the adaptive set-up's concurrency block
	// (-adaptive-concurrency); "" keeps its defaults.
	Concurrency string
	// Latency: lines for the adaptive set-up's latency block (the
	// scenario's stated SLO); "" keeps its defaults.
	Latency string
}

// adaptiveConcurrency is -adaptive-concurrency.
var adaptiveConcurrency string

// renderCaddyfile fills the template at path with v (caddyVars,
// ollamaCaddyVars) into out.
func renderCaddyfile(path, out string, v any) error {
	t, err := template.New(filepath.Base(path)).Option("missingkey=error").ParseFiles(path)
	if err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if err := t.Execute(f, v); err != nil {
		f.Close()
		return fmt.Errorf("rendering %s: %w", path, err)
	}
	return f.Close()
}

// startSetup starts llmsim, the peer's limiter when asked, and Caddy for
// one set-up of a scenario. Everything listens on 127.0.0.1; stop ends it
// all. dir holds the rendered Caddyfile, Caddy's XDG folders and the logs.
func startSetup(ctx context.Context, b bins, labDir, dir, setup string, sc scenario) (e *env, err error) {
	if len(sc.Pool) > 0 {
		return startPoolSetup(ctx, b, labDir, dir, setup, sc)
	}
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

	simPort, err := freePort()
	if err != nil {
		return nil, err
	}
	sim, err := startProc("llmsim", dir, b.llmsim, append([]string{"-listen", hostPort(simPort), "-slots", fmt.Sprint(sc.Slots)}, sc.simArgs()...), nil)
	if err != nil {
		return nil, err
	}
	stops = append(stops, func() { sim.stop(5 * time.Second) })
	simURL := "http://" + hostPort(simPort)
	if err := waitReady(ctx, simURL+"/health", sim, 10*time.Second); err != nil {
		return nil, err
	}

	upstream := hostPort(simPort)
	lim, upstream, stop, err := servePeer(setup, upstream, sc)
	if err != nil {
		return nil, err
	}
	stops = append(stops, stop)

	port, err := freePort()
	if err != nil {
		return nil, err
	}
	adminPort, err := freePort()
	if err != nil {
		return nil, err
	}
	tmpl := "plain.Caddyfile.tmpl"
	if isAdaptive(setup) {
		tmpl = "adaptive.Caddyfile.tmpl"
	}
	cfgPath := filepath.Join(dir, "Caddyfile")
	if err := renderCaddyfile(filepath.Join(labDir, tmpl), cfgPath, caddyVars{
		Admin: hostPort(adminPort), Port: port, Upstream: upstream, Metrics: simURL + "/metrics",
		Concurrency: adaptiveConcurrency, Latency: sc.Latency,
	}); err != nil {
		return nil, err
	}
	cad, status, err := startCaddy(ctx, dir, b.caddy, []string{"run", "--config", cfgPath, "--adapter", "caddyfile"},
		rulesOffOf(setup), "http://"+hostPort(adminPort), isAdaptive(setup))
	if err != nil {
		return nil, err
	}
	stops = append(stops, func() { cad.stop(5 * time.Second) })
	e = &env{Setup: setup, Target: "http://" + hostPort(port), Upstream: simURL, ThrottleStatus: status, peer: lim, stop: stopAll}
	// The site itself: llmsim's /health through Caddy (and the limiter).
	if err := waitReady(ctx, e.Target+"/health", cad, 10*time.Second); err != nil {
		return nil, err
	}
	return e, nil
}

// newPeer is the limiter of a peer set-up, in front of upstream.
func newPeer(setup string, upstream *url.URL, sc scenario) (peer, error) {
	switch setup {
	case setupInflight:
		return newInflightLimit(upstream, sc.InflightN)
	case setupGradient2:
		return newGradient2Peer(upstream, defaultGradient2)
	}
	return nil, fmt.Errorf("set-up %s has no limiter in the lab", setup)
}

// servePeer starts, for the peer set-ups (the static in-flight limit,
// Gradient2), the lab's limiter in front of upstream on a port of its own,
// and returns it, the address to proxy to instead, and what stops it; for
// any other set-up nil, upstream itself and a stop that does nothing.
func servePeer(setup, upstream string, sc scenario) (peer, string, func(), error) {
	if setup != setupInflight && setup != setupGradient2 {
		return nil, upstream, func() {}, nil
	}
	lim, err := newPeer(setup, &url.URL{Scheme: "http", Host: upstream}, sc)
	if err != nil {
		return nil, "", nil, err
	}
	addr, stop, err := serveHandler(lim)
	if err != nil {
		return nil, "", nil, err
	}
	return lim, addr, stop, nil
}

// serveHandler serves h on a port of its own on 127.0.0.1; it returns the
// address and what stops it.
func serveHandler(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	stop := func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close()
		}
	}
	return ln.Addr().String(), stop, nil
}
