//go:build cgo

package sensors

import (
	"bufio"
	"context"
	"math"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// TestRealGPU checks NVML against the real nvidia-smi on device 0, watches
// an allocation show up in both, and times the two sources. It needs an
// NVIDIA GPU and driver: ADAPTIVE_THROTTLE_GPU_TEST=1 go test -run TestRealGPU -v ./sensors/
func TestRealGPU(t *testing.T) {
	if os.Getenv("ADAPTIVE_THROTTLE_GPU_TEST") != "1" {
		t.Skip("set ADAPTIVE_THROTTLE_GPU_TEST=1 on a host with an NVIDIA GPU and driver")
	}
	src, err := OpenNVML()
	if err != nil {
		t.Fatalf("NVML: %v", err)
	}
	defer src.Close()
	nv := src.(*nvmlSource)
	h, ret := nv.lib.DeviceGetHandleByIndex(0)
	if ret != nvml.SUCCESS {
		t.Fatalf("DeviceGetHandleByIndex(0): %v", ret.Error())
	}
	name, _ := h.GetName()
	t.Logf("device 0: %s (memory info v2: %v)", name, nv.v2)

	smiPath, err := exec.LookPath("nvidia-smi")
	if err != nil {
		t.Fatalf("nvidia-smi: %v", err)
	}
	smi := NewNvidiaSMI(smiPath)
	read := func(s Source) Device {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		devs, err := s.Read(ctx)
		if err != nil {
			t.Fatalf("%s: %v", s.Name(), err)
		}
		for _, d := range devs {
			if d.Index == 0 {
				if d.Err != "" {
					t.Fatalf("%s device 0: %s", s.Name(), d.Err)
				}
				return d
			}
		}
		t.Fatalf("%s: no device 0 in %+v", s.Name(), devs)
		return Device{}
	}

	a, b := read(nv), read(smi)
	t.Logf("nvml: used %.0f MiB of %.0f MiB; nvidia-smi: used %.0f MiB of %.0f MiB",
		a.Used/MiB, a.Total/MiB, b.Used/MiB, b.Total/MiB)
	if a.UUID != b.UUID {
		t.Errorf("UUID: nvml %q, nvidia-smi %q", a.UUID, b.UUID)
	}
	if d := math.Abs(a.Used - b.Used); d > 0.01*a.Total {
		t.Errorf("memory.used differs by %.0f MiB (more than 1%% of total)", d/MiB)
	}
	if d := math.Abs(a.Total - b.Total); d > 0.01*a.Total {
		t.Errorf("memory.total differs by %.0f MiB", d/MiB)
	}

	allocate(t, a.UUID, func() float64 { return read(nv).Used }, func() float64 { return read(smi).Used })

	const nvmlN, smiN = 100, 10
	start := time.Now()
	for range nvmlN {
		read(nv)
	}
	nvmlPer := time.Since(start) / nvmlN
	start = time.Now()
	for range smiN {
		read(smi)
	}
	smiPer := time.Since(start) / smiN
	t.Logf("%s: nvml %d ns/sample, nvidia-smi %d ns/sample (%.0fx)", name, nvmlPer.Nanoseconds(), smiPer.Nanoseconds(),
		float64(smiPer)/float64(max(nvmlPer, 1)))
}

// allocate holds 2 GiB on the GPU with the given UUID through PyTorch, when
// it is installed, and checks both sources see used memory rise.
func allocate(t *testing.T, uuid string, nvUsed, smiUsed func() float64) {
	probe := exec.Command("python3", "-c", "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)")
	if err := probe.Run(); err != nil {
		t.Logf("no python3 with CUDA torch (%v): skipping the allocation check", err)
		return
	}
	beforeNV, beforeSMI := nvUsed(), smiUsed()
	const script = "import torch, sys\n" +
		"x = torch.empty(2 << 30, dtype=torch.uint8, device='cuda:0')\n" +
		"x.fill_(1); torch.cuda.synchronize()\n" +
		"print('held', flush=True)\n" +
		"sys.stdin.read()\n"
	cmd := exec.Command("python3", "-c", script)
	cmd.Env = append(os.Environ(), "CUDA_VISIBLE_DEVICES="+uuid)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}()
	held := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "held" {
				held <- true
				return
			}
		}
		held <- false
	}()
	select {
	case ok := <-held:
		if !ok {
			t.Fatal("the PyTorch helper exited before holding its memory")
		}
	case <-time.After(3 * time.Minute):
		t.Fatal("the PyTorch helper did not allocate within 3 minutes")
	}
	riseNV, riseSMI := nvUsed()-beforeNV, smiUsed()-beforeSMI
	t.Logf("holding 2 GiB: used rose by %.0f MiB (nvml), %.0f MiB (nvidia-smi)", riseNV/MiB, riseSMI/MiB)
	const want = 0.9 * (2 << 30)
	if riseNV < want || riseSMI < want {
		t.Errorf("used memory rose by %.0f / %.0f MiB, want at least %.0f MiB", riseNV/MiB, riseSMI/MiB, want/MiB)
	}
}
