//go:build unix

package gpu

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/ai-guardian/adaptivethrottle/sensors"
)

// script is a stand-in nvidia-smi of the sensors' tests.
func script(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", "sensors", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// pathWith makes PATH a fresh folder holding, when name is set, an
// "nvidia-smi" that is that stand-in (testdata/name).
func pathWith(t *testing.T, name string) {
	dir := t.TempDir()
	if name != "" {
		if err := os.Symlink(script(t, name), filepath.Join(dir, "nvidia-smi")); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", dir)
}

func nvmlLoads(t *testing.T) bool {
	src, err := sensors.OpenNVML()
	if err != nil {
		return false
	}
	src.Close()
	return true
}

func TestOpenAutoFindsNvidiaSMI(t *testing.T) {
	if nvmlLoads(t) {
		t.Skip("NVML works here: auto picks it")
	}
	pathWith(t, "smi_ok.sh")
	src, warn, err := Open(Config{})
	if err != nil || warn != "" || src == nil || src.Name() != "nvidia-smi" {
		t.Fatalf("%v %q %v", src, warn, err)
	}
	cfg := Config{}
	cfg.Defaults()
	r := sensors.NewSensor(src, cfg.sensor()).SampleOnce(context.Background(), t0)
	if !r.Available || len(r.Devices) != 4 || !near(r.Value, 61234.0/81559) {
		t.Fatalf("%+v", r)
	}
}

func TestOpenAutoOffWithWarning(t *testing.T) {
	if nvmlLoads(t) {
		t.Skip("NVML works here: auto picks it")
	}
	pathWith(t, "")
	src, warn, err := Open(Config{Source: "auto", OnError: "shed"})
	if err != nil || src != nil {
		t.Fatalf("auto with nothing must be off, not fail: %v %v", src, err)
	}
	mustContain(t, warn, "gpu sensor off: NVML: ")
	mustContain(t, warn, `nvidia-smi: exec: "nvidia-smi": executable file not found in $PATH`)
}

func TestOpenExplicitNvidiaSMIMissing(t *testing.T) {
	pathWith(t, "")
	src, warn, err := Open(Config{Source: "nvidia-smi"})
	if err != nil || src == nil {
		t.Fatalf("%v %v", src, err)
	}
	mustContain(t, warn, "gpu source nvidia-smi unavailable")
	if _, err := src.Read(context.Background()); err == nil {
		t.Fatal("unavailable source read succeeded")
	}
	if _, _, err := Open(Config{Source: "nvidia-smi", OnError: "shed"}); err == nil {
		t.Fatal("missing nvidia-smi with on_error shed must fail at start")
	}

	src, warn, err = Open(Config{Source: "nvidia-smi", Path: script(t, "smi_3col.sh")})
	if err != nil || warn != "" || src.Name() != "nvidia-smi" {
		t.Fatalf("explicit path: %v %q %v", src, warn, err)
	}
}

func TestOpenOffAndInvalid(t *testing.T) {
	src, warn, err := Open(Config{Source: "off"})
	if src != nil || warn != "" || err != nil {
		t.Fatalf("off: %v %q %v", src, warn, err)
	}
	if _, _, err := Open(Config{Source: "prometheus"}); err == nil {
		t.Fatal("prometheus without URLs accepted")
	}
}

// NVML that cannot load here (no driver, or a build without cgo): named,
// it gives a source whose readings say why, and a warning; under on_error
// shed it fails the start.
func TestOpenNVMLUnavailable(t *testing.T) {
	if nvmlLoads(t) {
		t.Skip("NVML works here")
	}
	_, why := sensors.OpenNVML()
	src, warn, err := Open(Config{Source: "nvml"})
	if err != nil || src == nil || src.Name() != "nvml" {
		t.Fatalf("%v %q %v", src, warn, err)
	}
	mustContain(t, warn, "gpu source nvml unavailable: "+why.Error())
	cfg := Config{}
	cfg.Defaults()
	r := sensors.NewSensor(src, cfg.sensor()).SampleOnce(context.Background(), t0)
	if r.Available || r.Reason != "nvml: "+why.Error() {
		t.Fatalf("%+v", r)
	}
	if _, _, err := Open(Config{Source: "nvml", OnError: "shed"}); err == nil {
		t.Fatal("nvml + on_error shed where NVML cannot load must fail at start")
	} else {
		mustContain(t, err.Error(), why.Error())
	}
}
