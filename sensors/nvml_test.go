//go:build cgo

package sensors

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

const h100Total = 81559 * MiB

// mockGPU is a go-nvml mock device with memory info for both API versions.
func mockGPU(uuid string, usedMiB uint64, memRet nvml.Return) *mock.Device {
	return &mock.Device{
		GetUUIDFunc: func() (string, nvml.Return) { return uuid, nvml.SUCCESS },
		GetNameFunc: func() (string, nvml.Return) { return "NVIDIA H100 80GB HBM3", nvml.SUCCESS },
		GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
			used := usedMiB*MiB + 509*MiB // v1 counts driver-reserved memory as used
			return nvml.Memory{Total: h100Total, Used: used, Free: h100Total - used}, memRet
		},
		GetMemoryInfo_v2Func: func() (nvml.Memory_v2, nvml.Return) {
			return nvml.Memory_v2{Total: h100Total, Reserved: 509 * MiB, Used: usedMiB * MiB, Free: h100Total - usedMiB*MiB - 509*MiB}, memRet
		},
	}
}

type mockLib struct {
	*mock.Interface
	inits, shutdowns atomic.Int32
}

// newMockLib is an NVML with the given devices; hasV2 says whether the
// driver exports nvmlDeviceGetMemoryInfo_v2.
func newMockLib(initRet nvml.Return, hasV2 bool, devs ...*mock.Device) *mockLib {
	m := &mockLib{}
	m.Interface = &mock.Interface{
		InitFunc:     func() nvml.Return { m.inits.Add(1); return initRet },
		ShutdownFunc: func() nvml.Return { m.shutdowns.Add(1); return nvml.SUCCESS },
		ExtensionsFunc: func() nvml.ExtendedInterface {
			return &mock.ExtendedInterface{LookupSymbolFunc: func(name string) error {
				if hasV2 && name == "nvmlDeviceGetMemoryInfo_v2" {
					return nil
				}
				return nvml.ERROR_FUNCTION_NOT_FOUND
			}}
		},
		DeviceGetCountFunc: func() (int, nvml.Return) { return len(devs), nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) {
			if i < 0 || i >= len(devs) {
				return nil, nvml.ERROR_INVALID_ARGUMENT
			}
			return devs[i], nvml.SUCCESS
		},
	}
	return m
}

func sharedFor(lib nvml.Interface) *nvmlShared {
	return &nvmlShared{newLib: func() nvml.Interface { return lib }}
}

func TestNVMLDevicesSelectionAndThreshold(t *testing.T) {
	lib := newMockLib(nvml.SUCCESS, true,
		mockGPU("GPU-a", 20000, nvml.SUCCESS),
		mockGPU("GPU-b", 70000, nvml.SUCCESS), // 70000/81559 = 0.858: over 0.75
		mockGPU("GPU-c", 100, nvml.SUCCESS))
	src, err := newNVMLSource(sharedFor(lib))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	devs, err := src.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 3 || devs[1].ID != "1" || devs[1].Index != 1 || devs[1].UUID != "GPU-b" ||
		devs[1].Used != 70000*MiB || devs[1].Total != h100Total {
		t.Fatalf("%+v", devs)
	}

	cfg := cfgFor(time.Second)
	r := NewSensor(src, cfg).SampleOnce(context.Background(), t0)
	if !r.Available || !near(r.Value, 70000.0/81559) || !over(r) {
		t.Fatalf("all devices, max: %+v", r)
	}
	cfg.Devices = []string{"0", "GPU-c"}
	r = NewSensor(src, cfg).SampleOnce(context.Background(), t0)
	if !r.Available || len(r.Devices) != 2 || r.Devices[1].UUID != "GPU-c" || over(r) || !near(r.Value, 20000.0/81559) {
		t.Fatalf("selected 0 and GPU-c: %+v", r)
	}
	cfg.Devices = []string{"7"}
	r = NewSensor(src, cfg).SampleOnce(context.Background(), t0)
	mustContain(t, r.Reason, "nvml: device 7 not found; have 0,1,2")
}

func TestNVMLOldDriverUsesV1(t *testing.T) {
	dev := mockGPU("GPU-a", 20000, nvml.SUCCESS)
	dev.GetMemoryInfo_v2Func = nil // calling it would panic: the probe must keep us off it
	src, err := newNVMLSource(sharedFor(newMockLib(nvml.SUCCESS, false, dev)))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	devs, err := src.Read(context.Background())
	if err != nil || devs[0].Used != (20000+509)*MiB {
		t.Fatalf("%+v %v", devs, err)
	}
}

func TestNVMLLibraryNotFound(t *testing.T) {
	lib := newMockLib(nvml.ERROR_LIBRARY_NOT_FOUND, true)
	shared := sharedFor(lib)
	if _, err := newNVMLSource(shared); err == nil || err.Error() != "NVML library not found (no NVIDIA driver on this host)" {
		t.Fatalf("err %v", err)
	}
	if shared.refs != 0 || lib.shutdowns.Load() != 0 {
		t.Fatal("a failed init must hold no reference and shut nothing down")
	}
	lib2 := newMockLib(nvml.ERROR_DRIVER_NOT_LOADED, true)
	if _, err := newNVMLSource(sharedFor(lib2)); err == nil {
		t.Fatal("driver not loaded accepted")
	} else {
		mustContain(t, err.Error(), "NVML init: ERROR_DRIVER_NOT_LOADED")
	}
}

func TestNVMLErrorMidRun(t *testing.T) {
	var lost atomic.Bool
	b := mockGPU("GPU-b", 30000, nvml.SUCCESS)
	good := b.GetMemoryInfo_v2Func
	b.GetMemoryInfo_v2Func = func() (nvml.Memory_v2, nvml.Return) {
		if lost.Load() {
			return nvml.Memory_v2{}, nvml.ERROR_GPU_IS_LOST
		}
		return good()
	}
	src, err := newNVMLSource(sharedFor(newMockLib(nvml.SUCCESS, true, mockGPU("GPU-a", 10000, nvml.SUCCESS), b)))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	s := NewSensor(src, cfgFor(time.Second))
	if r := s.SampleOnce(context.Background(), t0); !r.Available {
		t.Fatalf("%+v", r)
	}
	lost.Store(true)
	r := s.SampleOnce(context.Background(), t0.Add(2*time.Second))
	if r.Available || r.Errors != 1 {
		t.Fatalf("lost GPU must fail the sample: %+v", r)
	}
	mustContain(t, r.Reason, "nvml: device 1 (GPU-b): GetMemoryInfo_v2: "+nvml.ERROR_GPU_IS_LOST.Error())

	cfg := cfgFor(time.Second)
	cfg.Devices = []string{"GPU-a"}
	if r := NewSensor(src, cfg).SampleOnce(context.Background(), t0); !r.Available {
		t.Fatalf("the lost GPU is not selected: %+v", r)
	}
}

func TestNVMLRefcountedInit(t *testing.T) {
	lib := newMockLib(nvml.SUCCESS, true, mockGPU("GPU-a", 1, nvml.SUCCESS))
	shared := sharedFor(lib)
	a, err := newNVMLSource(shared)
	if err != nil {
		t.Fatal(err)
	}
	b, err := newNVMLSource(shared)
	if err != nil {
		t.Fatal(err)
	}
	if lib.inits.Load() != 1 {
		t.Fatalf("inits %d, want 1 for two sources", lib.inits.Load())
	}
	a.Close()
	a.Close() // twice is harmless
	if lib.shutdowns.Load() != 0 {
		t.Fatal("shut down while a source is still open")
	}
	if _, err := b.Read(context.Background()); err != nil {
		t.Fatalf("surviving source: %v", err)
	}
	if _, err := a.Read(context.Background()); err == nil {
		t.Fatal("closed source read")
	}
	b.Close()
	if lib.shutdowns.Load() != 1 {
		t.Fatalf("shutdowns %d, want 1 after the last close", lib.shutdowns.Load())
	}
	// A new source after that initialises again.
	c, err := newNVMLSource(shared)
	if err != nil || lib.inits.Load() != 2 {
		t.Fatalf("reinit: %v inits=%d", err, lib.inits.Load())
	}
	c.Close()
}

// A read stuck inside NVML keeps the session alive past Close: shutting NVML
// down under a running call is undefined behaviour in the driver.
func TestNVMLCloseWaitsForHungRead(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{})
	dev := mockGPU("GPU-a", 1, nvml.SUCCESS)
	dev.GetMemoryInfo_v2Func = func() (nvml.Memory_v2, nvml.Return) {
		close(entered)
		<-release
		return nvml.Memory_v2{Total: 1, Used: 1}, nvml.SUCCESS
	}
	lib := newMockLib(nvml.SUCCESS, true, dev)
	src, err := newNVMLSource(sharedFor(lib))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { src.Read(context.Background()); close(done) }()
	<-entered
	src.Close()
	if lib.shutdowns.Load() != 0 {
		t.Fatal("NVML shut down under a running read")
	}
	close(release)
	<-done
	if lib.shutdowns.Load() != 1 {
		t.Fatalf("shutdowns %d after the read ended, want 1", lib.shutdowns.Load())
	}
}

// On this host (no driver) the real go-nvml reports the library missing,
// and a sensor over it reports why each reading is unavailable.
func TestOpenNVMLWithoutDriver(t *testing.T) {
	if lib := nvml.New(); lib.Init() == nvml.SUCCESS {
		lib.Shutdown()
		t.Skip("an NVIDIA driver is present")
	}
	src, err := OpenNVML()
	if src != nil || err == nil || err.Error() != "NVML library not found (no NVIDIA driver on this host)" {
		t.Fatalf("%v %v", src, err)
	}
	r := NewSensor(Unavailable("nvml", err), cfgFor(time.Second)).SampleOnce(context.Background(), t0)
	if r.Available || r.Reason != "nvml: NVML library not found (no NVIDIA driver on this host)" {
		t.Fatalf("%+v", r)
	}
}

func BenchmarkNVMLReadMock(b *testing.B) {
	devs := make([]*mock.Device, 8)
	for i := range devs {
		devs[i] = mockGPU("GPU-x", uint64(i)*1000, nvml.SUCCESS)
	}
	src, err := newNVMLSource(sharedFor(newMockLib(nvml.SUCCESS, true, devs...)))
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := src.Read(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
