//go:build unix

package sensors

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func script(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNvidiaSMIScripts(t *testing.T) {
	ctx := context.Background()
	devs, err := NewNvidiaSMI(script(t, "smi_ok.sh")).Read(ctx)
	if err != nil {
		t.Fatalf("smi_ok (checks our arguments): %v", err)
	}
	if len(devs) != 4 || devs[0].UUID != "GPU-5f1c2a9e-8d4b-4a7c-9e3f-1b2c3d4e5f60" || devs[0].Used != 61234*MiB || devs[3].Used != 0 {
		t.Fatalf("smi_ok: %+v", devs)
	}
	if devs, err := NewNvidiaSMI(script(t, "smi_3col.sh")).Read(ctx); err != nil || len(devs) != 2 || devs[0].Ratio() < 0.85 {
		t.Fatalf("smi_3col: %+v %v", devs, err)
	}
	for _, tc := range []struct{ name, want string }{
		{"smi_garbage.sh", "bad GPU index"},
		{"smi_empty.sh", "no devices in output"},
		{"smi_fail.sh", "exit status 9: NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."},
		{"smi_stderr.sh", "exit status 18: Failed to initialize NVML: Driver/library version mismatch"},
		{"smi_flood.sh", "output larger than 1048576 bytes"},
		{"no-such-nvidia-smi", "no such file"},
	} {
		_, err := NewNvidiaSMI(script(t, tc.name)).Read(ctx)
		if err == nil {
			t.Fatalf("%s: no error", tc.name)
		}
		mustContain(t, err.Error(), tc.want)
	}
}

func TestNvidiaSMIThroughSensor(t *testing.T) {
	cfg := cfgFor(time.Second)
	cfg.Devices = []string{"GPU-9c3d2b1a-7e6f-4a5b-8c9d-0e1f2a3b4c5d", "1"}
	r := NewSensor(NewNvidiaSMI(script(t, "smi_ok.sh")), cfg).SampleOnce(context.Background(), t0)
	if !r.Available || !near(r.Value, 40780.0/81559) || len(r.Devices) != 2 || r.Devices[0].Index != 2 {
		t.Fatalf("%+v", r)
	}

	r = NewSensor(NewNvidiaSMI(script(t, "smi_na.sh")), cfgFor(time.Second)).SampleOnce(context.Background(), t0)
	if r.Available {
		t.Fatalf("a [N/A] device among the selected must fail: %+v", r)
	}
	mustContain(t, r.Reason, "nvidia-smi: device 1 (GPU-0a7e63c1-2f44-4b1d-8c0e-6d2b9f3a1e77): memory.used is [N/A]")

	r = NewSensor(NewNvidiaSMI(script(t, "smi_fail.sh")), cfgFor(time.Second)).SampleOnce(context.Background(), t0)
	mustContain(t, r.Reason, "nvidia-smi: exit status 9: NVIDIA-SMI has failed")
}

// A wedged nvidia-smi: the sample fails by the timeout and the whole process
// group (the script and the sleep holding its stdout) is killed. The source
// honours its deadline, so the read is not left hung.
func TestNvidiaSMIHangIsKilled(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "pid")
	t.Setenv("SMI_PIDFILE", pidfile)
	src := NewNvidiaSMI(script(t, "smi_hang.sh"))
	returned := make(chan struct{})
	s := NewSensor(readNotify{src, returned}, cfgFor(300*time.Millisecond))

	start := time.Now()
	r := s.SampleOnce(context.Background(), t0)
	if took := time.Since(start); took < 200*time.Millisecond || took > 1500*time.Millisecond {
		t.Fatalf("sample took %v, want about the 300ms timeout", took)
	}
	mustContain(t, r.Reason, "nvidia-smi: read timed out after 300ms: killed: context deadline exceeded")
	if r.Hung != 0 || r.Errors != 1 {
		t.Fatalf("hung %d errors %d, want 0 and 1", r.Hung, r.Errors)
	}

	select {
	case <-returned: // the abandoned read ends soon after: killed, pipes closed after WaitDelay
	case <-time.After(5 * time.Second):
		t.Fatal("the abandoned nvidia-smi read never returned")
	}
	raw, err := os.ReadFile(pidfile)
	if err != nil {
		t.Fatalf("script never wrote its child pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("sleep child %d still alive: process group not killed", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readNotify signals each time a Read returns.
type readNotify struct {
	Source
	done chan struct{}
}

func (r readNotify) Read(ctx context.Context) ([]Device, error) {
	defer close(r.done)
	return r.Source.Read(ctx)
}

// alive: the process exists and is not a zombie awaiting a reaper.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}
