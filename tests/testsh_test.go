package tests

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testShSkips runs `./test.sh --skips` with PATH holding only bin (and
// what test.sh adds itself) and returns what it prints.
func testShSkips(t *testing.T, bin string, env ...string) string {
	t.Helper()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash not found")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bash, "../test.sh", "--skips")
	cmd.Env = append([]string{"PATH=" + bin, "HOME=" + os.Getenv("HOME")}, env...)
	// Killed whole on a timeout: a test.sh that ignores --skips runs the suite.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("./test.sh --skips: %v\n%s", err, out)
	}
	return string(out)
}

// binDir is a PATH folder with dirname (test.sh needs it) and a stand-in
// for each of tools.
func binDir(t *testing.T, tools ...string) string {
	t.Helper()
	dir := t.TempDir()
	dirname, err := exec.LookPath("dirname")
	if err != nil {
		t.Skip("dirname not found")
	}
	if err := os.Symlink(dirname, filepath.Join(dir, "dirname")); err != nil {
		t.Fatal(err)
	}
	for _, tool := range tools {
		if err := os.WriteFile(filepath.Join(dir, tool), []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// ./test.sh says which part of the suite it skips, and why, as the README
// promises: the Prometheus test skips itself when prometheus or promtool is
// missing, and go test prints no skip unless -v.
func TestTestShSaysWhatItSkips(t *testing.T) {
	const line = "skipped: the dashboard's queries against a real Prometheus (tests/prometheus_test.go)"
	if out := testShSkips(t, binDir(t)); !strings.Contains(out, line) || !strings.Contains(out, "prometheus promtool not on PATH") {
		t.Fatalf("neither prometheus nor promtool on PATH: test.sh said %q, want %q naming both", out, line)
	}
	if out := testShSkips(t, binDir(t, "prometheus")); !strings.Contains(out, ": promtool not on PATH") {
		t.Fatalf("promtool missing: test.sh said %q, want it named alone", out)
	}
	if out := testShSkips(t, binDir(t, "prometheus", "promtool")); out != "" {
		t.Fatalf("both on PATH: test.sh said %q, want nothing skipped", out)
	}
	if out := testShSkips(t, binDir(t), requirePrometheus+"=1"); out != "" {
		t.Fatalf("%s set (a missing binary fails the test): test.sh said %q, want nothing skipped", requirePrometheus, out)
	}
}
