package main

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The set-ups start at the same time; no port is handed out twice, and
// each is free when handed out.
func TestFreePortNeverTwice(t *testing.T) {
	seen := map[int]bool{}
	for range 300 {
		p, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
		ln, err := net.Listen("tcp", hostPort(p))
		if err != nil {
			t.Fatalf("port %d handed out but not free: %v", p, err)
		}
		ln.Close()
	}
}

// A child that ends before it is ready: the error carries the end of its
// log, and says errPortTaken only when it could not listen.
func TestWaitReadyWhenTheChildEnds(t *testing.T) {
	dir := t.TempDir()
	url := "http://" + hostPort(mustFreePort(t)) + "/"
	for _, c := range []struct {
		name, script string
		taken        bool
		want         string
	}{
		{"bindfail", `echo starting; echo 'loading initial config: listen tcp 127.0.0.1:9: bind: address already in use'; exit 1`, true, "bind: address already in use"},
		{"badconfig", `echo starting; echo 'adapting config: unrecognized directive: nope'; exit 1`, false, "unrecognized directive: nope"},
	} {
		p, err := startProc(c.name, dir, "/bin/sh", []string{"-c", c.script}, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = waitReady(context.Background(), url, p, 10*time.Second)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "exited before it was ready") {
			t.Errorf("%s: %v, want the log's %q in it", c.name, err, c.want)
		}
		if got := errors.Is(err, errPortTaken); got != c.taken {
			t.Errorf("%s: errPortTaken %v, want %v", c.name, got, c.taken)
		}
	}

	// The real Caddy (built by ./xcaddy-build.sh, as the lab and CI use
	// it) on a port another process holds.
	caddy, _ := filepath.Abs("../../caddy")
	if _, err := os.Stat(caddy); err != nil {
		t.Logf("no ./caddy (%v): the real Caddy's message is not checked", err)
		return
	}
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	cfg := filepath.Join(dir, "Caddyfile")
	admin := hostPort(mustFreePort(t))
	if err := renderCaddyfile("../../lab/plain.Caddyfile.tmpl", cfg, caddyVars{
		Admin: admin, Port: held.Addr().(*net.TCPAddr).Port, Upstream: "127.0.0.1:9"}); err != nil {
		t.Fatal(err)
	}
	p, err := startProc("caddy", dir, caddy, []string{"run", "--config", cfg, "--adapter", "caddyfile"},
		[]string{"XDG_DATA_HOME=" + dir, "XDG_CONFIG_HOME=" + dir})
	if err != nil {
		t.Fatal(err)
	}
	defer p.stop(5 * time.Second)
	err = waitReady(context.Background(), "http://"+admin+"/config/", p, 20*time.Second)
	if err == nil {
		// Caddy's admin answers before the site listens; it must end.
		err = waitReady(context.Background(), "http://127.0.0.1:9/never", p, 20*time.Second)
	}
	if !errors.Is(err, errPortTaken) {
		t.Errorf("Caddy on a taken port: %v, want errPortTaken", err)
	}
}

func TestLastLines(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"a\nb\nc\n", 2, "b\nc"},
		{"a\nb\nc", 5, "a\nb\nc"},
		{"", 3, ""},
		{"only", 1, "only"},
	} {
		if got := lastLines(c.in, c.n, 100); got != c.want {
			t.Errorf("lastLines(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
	if got := lastLines(strings.Repeat("x", 50), 1, 10); got != strings.Repeat("x", 10) {
		t.Errorf("bounded: %q", got)
	}
}

func mustFreePort(t *testing.T) int {
	t.Helper()
	p, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// ./caddy is stale when missing or older than a Go file of the module,
// and fresh when newer than all of them (tests and testdata do not count).
func TestCaddyStale(t *testing.T) {
	root := t.TempDir()
	caddy := filepath.Join(root, "caddy")
	src := filepath.Join(root, "throttle", "admit.go")
	if err := os.MkdirAll(filepath.Dir(src), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{src, caddy, filepath.Join(root, "throttle", "admit_test.go")} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if why := caddyStale(root, filepath.Join(root, "nothing")); why != "missing" {
		t.Errorf("missing binary: %q", why)
	}
	old, recent := time.Now().Add(-time.Hour), time.Now()
	os.Chtimes(caddy, old, old)
	os.Chtimes(src, recent, recent)
	if why := caddyStale(root, caddy); why != "older than throttle/admit.go" {
		t.Errorf("binary older than a source: %q", why)
	}
	os.Chtimes(caddy, recent.Add(time.Minute), recent.Add(time.Minute))
	if why := caddyStale(root, caddy); why != "" {
		t.Errorf("fresh binary: %q", why)
	}
	// The lab's own code (cmd/) is not in the binary.
	lab := filepath.Join(root, "cmd", "lab", "main.go")
	if err := os.MkdirAll(filepath.Dir(lab), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lab, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	later := recent.Add(time.Hour)
	os.Chtimes(lab, later, later)
	if why := caddyStale(root, caddy); why != "" {
		t.Errorf("a newer file under cmd/ made the binary stale: %q", why)
	}
}
