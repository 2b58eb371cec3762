package llmsim

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

var smiRe = regexp.MustCompile(`^0, GPU-00000000-0000-0000-0000-000000000000, (\d+), 81920\n$`)

func smiUsed(t *testing.T, line string) string {
	t.Helper()
	m := smiRe.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("nvidia-smi line %q", line)
	}
	return m[1]
}

func TestSMIEndpointAndFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "smi.csv")
	cfg := fastConfig()
	cfg.SMIFile = path
	e := newEnv(t, cfg)

	b, err := os.ReadFile(path) // New writes it before returning
	if err != nil {
		t.Fatal(err)
	}
	if got := smiUsed(t, string(b)); got != fmt.Sprint(DefaultBaseMemory/MiB) {
		t.Fatalf("idle used %s MiB", got)
	}
	code, hdr, body := e.call(t, "GET", "/admin/nvidia-smi", "")
	if code != 200 || string(body) != string(b) || !strings.HasPrefix(hdr.Get("Content-Type"), "text/csv") {
		t.Fatalf("/admin/nvidia-smi: %d %q, file %q", code, body, b)
	}

	// Readers racing the 100 ms rewrites must only ever see whole lines.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var bad []string
	var mu sync.Mutex
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			b, err := os.ReadFile(path)
			if err != nil || !smiRe.Match(b) {
				mu.Lock()
				bad = append(bad, fmt.Sprintf("%q %v", b, err))
				mu.Unlock()
			}
		}
	})
	e.sim.SetSlots(0)
	e.background(t, chatBody)
	e.background(t, chatBody)
	want := fmt.Sprint((DefaultBaseMemory + 2*DefaultQueuedMemory) / MiB)
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if smiRe.Match(b) && smiUsed(t, string(b)) == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("file never showed %s MiB used: %q", want, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if len(bad) > 0 {
		t.Fatalf("%d torn or missing reads, e.g. %s", len(bad), bad[0])
	}

	e.sim.Close()
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Fatalf("after Close the directory holds %v, want nothing (file removed, no temp files)", entries)
	}
}

func TestSMIWriteErrorIsReported(t *testing.T) {
	cfg := fastConfig()
	cfg.SMIFile = filepath.Join(t.TempDir(), "missing-dir", "smi.csv")
	s := New(cfg)
	defer s.Close()
	if st := s.State(); st.SMIError == "" {
		t.Fatal("no smi_error for an unwritable path")
	}
}

// runStandIn runs demo/nvidia-smi with nvidia-smi's own arguments.
func runStandIn(t *testing.T, file string) (stdout, stderr string, code int) {
	t.Helper()
	script, err := filepath.Abs("../../demo/nvidia-smi")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(script, "--query-gpu=index,uuid,memory.used,memory.total", "--format=csv,noheader,nounits")
	cmd.Env = append(os.Environ(), "LLMSIM_SMI_FILE="+file)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		return o.String(), e.String(), ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("running %s: %v", script, err)
	}
	return o.String(), e.String(), 0
}

func TestNvidiaSMIStandIn(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "smi.csv")
	cfg := fastConfig()
	cfg.SMIFile = path
	s := New(cfg)

	out, errOut, code := runStandIn(t, path)
	if code != 0 || errOut != "" {
		t.Fatalf("live: exit %d, stderr %q", code, errOut)
	}
	if got := smiUsed(t, out); got != fmt.Sprint(DefaultBaseMemory/MiB) {
		t.Fatalf("live: used %s", got)
	}

	s.Close() // removes the file: the "driver" is gone
	out, errOut, code = runStandIn(t, path)
	if code != 9 || out != "" || !strings.Contains(errOut, "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver") {
		t.Fatalf("missing file: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	// A file left behind by a killed llmsim goes stale.
	if err := os.WriteFile(path, []byte("0, "+GPUUUID+", 1, 81920\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, code := runStandIn(t, path); code != 0 {
		t.Fatalf("fresh file: exit %d", code)
	}
	old := time.Now().Add(-10 * time.Second)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := runStandIn(t, path); code != 9 || out != "" || !strings.Contains(errOut, "NVIDIA-SMI has failed") {
		t.Fatalf("stale file: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}
