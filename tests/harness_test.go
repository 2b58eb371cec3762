// Package tests runs adaptive_throttle inside a real Caddy (caddytest, one
// in-process server per test binary, admin on localhost:2999) in front of
// real upstreams on 127.0.0.1.
package tests

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/caddyserver/certmagic"

	_ "github.com/ai-guardian/adaptivethrottle"
	"github.com/ai-guardian/adaptivethrottle/internal/llmsim"
	"github.com/ai-guardian/adaptivethrottle/throttle"
)

const (
	adminURL = "http://localhost:2999"
	siteURL  = "http://localhost:9080"
)

// loaded counts configs that a real Caddy accepted. caddytest skips rather
// than fails when it cannot start Caddy; a run in which nothing loaded must
// not pass as green.
var loaded atomic.Int32

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "adaptivethrottle-tests-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Caddy writes nothing into $HOME.
	os.Setenv("XDG_DATA_HOME", dir+"/data")
	os.Setenv("XDG_CONFIG_HOME", dir+"/config")
	// Caddy's default storage was resolved from $HOME when its package was
	// initialised, before the lines above: point it at the folder too, so
	// that what one run's throttles persist is not restored by the next.
	caddy.DefaultStorage = &certmagic.FileStorage{Path: dir + "/data/caddy"}
	code := m.Run()
	os.RemoveAll(dir)
	filtered := flag.Lookup("test.run").Value.String() != ""
	if code == 0 && !testing.Short() && !filtered && loaded.Load() == 0 {
		fmt.Fprintln(os.Stderr, "FAIL: no Caddy config was ever loaded: the integration tests ran nothing")
		code = 1
	}
	os.Exit(code)
}

// caddyfile wraps a site block with the global options caddytest needs.
func caddyfile(site string) string { return caddyfileWith("", site) }

// caddyfileWith is caddyfile with more global options (one per line).
func caddyfileWith(global, site string) string {
	return `{
	` + global + `
	admin localhost:2999
	http_port 9080
	https_port 9443
	skip_install_trust
	persist_config off
	grace_period 1s
	log {
		level ERROR
	}
}
` + site
}

// start loads cfg into the test binary's Caddy and fails the test if
// Caddy refuses it.
func start(t *testing.T, cfg string) *caddytest.Tester {
	t.Helper()
	return startWith(t, "", cfg)
}

// startWith is start with more global options.
func startWith(t *testing.T, global, cfg string) *caddytest.Tester {
	t.Helper()
	tc := caddytest.NewTester(t).WithDefaultOverrides(caddytest.Config{TestRequestTimeout: 20 * time.Second})
	tc.InitServer(caddyfileWith(global, cfg), "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	loaded.Add(1)
	next := tc.Client.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	tc.Client.Transport = dropRetry{next: next, t: t}
	return tc
}

// dropRetry retries, once, a request whose connection was closed before any
// answer came. Caddy v2.11.9 stops the previous config's server after a
// load returns, asynchronously, and a connection it accepts meanwhile is
// closed unanswered (the same with no adaptive_throttle in the route); such
// a request never reached a handler, and each test starts right after a
// load. The retry goes on a new connection (idle ones are closed first:
// they belong to the same stopping server). Retries are logged, and a
// handler that kills its connections (a panic) would fail the retry too.
type dropRetry struct {
	next http.RoundTripper
	t    testing.TB
}

func (d dropRetry) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := d.next.RoundTrip(req)
	if err == nil || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) || req.Context().Err() != nil {
		return resp, err
	}
	again := req.Clone(req.Context())
	if req.Body != nil && req.Body != http.NoBody {
		if req.GetBody == nil {
			return resp, err
		}
		body, gerr := req.GetBody()
		if gerr != nil {
			return resp, err
		}
		again.Body = body
	}
	d.t.Logf("%s %s: connection closed before any answer (%v); retried once", req.Method, req.URL.Path, err)
	// On a new connection: the other idle ones the pool holds were
	// accepted by the same stopping server, and would drop the retry too.
	if c, ok := d.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
	return d.next.RoundTrip(again)
}

// upstream starts the demo LLM server on 127.0.0.1 with fast timings.
func upstream(t *testing.T, cfg llmsim.Config) (*llmsim.Server, string) {
	t.Helper()
	if cfg.PrefillTime == 0 {
		cfg.PrefillTime = time.Millisecond
	}
	if cfg.TokenTime == 0 {
		cfg.TokenTime = time.Millisecond
	}
	if cfg.DefaultMaxTokens == 0 {
		cfg.DefaultMaxTokens = 4
	}
	sim := llmsim.New(cfg)
	srv := httptest.NewServer(sim)
	t.Cleanup(func() {
		sim.Close()
		srv.Close()
	})
	return sim, strings.TrimPrefix(srv.URL, "http://")
}

// chat sends one chat completion through Caddy with the given priority.
func chat(t *testing.T, tc *caddytest.Tester, prio string, stream bool) *http.Response {
	t.Helper()
	body := fmt.Sprintf(`{"model":"demo-llm","messages":[{"role":"user","content":"hello there"}],"stream":%v}`, stream)
	req, err := http.NewRequest(http.MethodPost, siteURL+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if prio != "" {
		req.Header.Set("X-Priority", prio)
	}
	resp, err := tc.Client.Do(req)
	if err != nil {
		t.Fatalf("request through Caddy: %v", err)
	}
	return resp
}

// drain reads and closes a response body, returning it.
func drain(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return string(b)
}

// status fetches one instance from the admin API.
func status(t *testing.T, name string) throttle.Status {
	t.Helper()
	resp, err := http.Get(adminURL + "/throttle/status?name=" + name)
	if err != nil {
		t.Fatal(err)
	}
	body := drain(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status: %d %s", resp.StatusCode, body)
	}
	var out struct{ Instances []throttle.Status }
	if err := json.Unmarshal([]byte(body), &out); err != nil || len(out.Instances) != 1 {
		t.Fatalf("status body %q: %v", body, err)
	}
	return out.Instances[0]
}

// eventually polls cond until it holds or the deadline passes. It waits
// for a state to be reached; the assertions are made on that state.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// shedBody is the JSON a refused client receives.
type shedBody struct {
	Error      string `json:"error"`
	Level      string `json:"level"`
	Priority   string `json:"priority"`
	RetryAfter int    `json:"retry_after"`
}

// assertShed checks a refusal: status, Retry-After matching the body, and
// the documented JSON.
func assertShed(t *testing.T, resp *http.Response, code int, level, prio string, minRetry int) shedBody {
	t.Helper()
	body := drain(t, resp)
	if resp.StatusCode != code {
		t.Fatalf("status %d, want %d (body %q)", resp.StatusCode, code, body)
	}
	var b shedBody
	if err := json.Unmarshal([]byte(body), &b); err != nil {
		t.Fatalf("refusal body %q is not JSON: %v", body, err)
	}
	if b.Error != "overloaded" || b.Level != level || b.Priority != prio {
		t.Fatalf("refusal body %+v, want level %s priority %s", b, level, prio)
	}
	ra := resp.Header.Get("Retry-After")
	if ra != fmt.Sprint(b.RetryAfter) || b.RetryAfter < minRetry {
		t.Fatalf("Retry-After %q, body retry_after %d, want equal and ≥ %d", ra, b.RetryAfter, minRetry)
	}
	return b
}
