//go:build cgo

package gpu

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"

	"github.com/ai-guardian/adaptivethrottle/sensors"
)

const (
	MiB       = sensors.MiB
	h100Total = h100MiB * MiB
)

// nvmlWith is an NVML (the go-nvml mock, a driver with memory info v2)
// that sees one device.
func nvmlWith(dev *mock.Device) nvml.Interface {
	return &mock.Interface{
		InitFunc:     func() nvml.Return { return nvml.SUCCESS },
		ShutdownFunc: func() nvml.Return { return nvml.SUCCESS },
		ExtensionsFunc: func() nvml.ExtendedInterface {
			return &mock.ExtendedInterface{LookupSymbolFunc: func(string) error { return nil }}
		},
		DeviceGetCountFunc: func() (int, nvml.Return) { return 1, nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) {
			if i != 0 {
				return nil, nvml.ERROR_INVALID_ARGUMENT
			}
			return dev, nvml.SUCCESS
		},
	}
}

// The same host read through NVML (the go-nvml mock, memory info v2): a
// reservation of 90% held flat never trips, and growth to 95% trips at
// the next reading.
func TestNVMLFlatReservedMemory(t *testing.T) {
	var usedMiB atomic.Uint64
	dev := &mock.Device{
		GetUUIDFunc: func() (string, nvml.Return) { return "GPU-a", nvml.SUCCESS },
		GetNameFunc: func() (string, nvml.Return) { return "NVIDIA H100 80GB HBM3", nvml.SUCCESS },
		GetMemoryInfo_v2Func: func() (nvml.Memory_v2, nvml.Return) {
			u := usedMiB.Load() * MiB
			return nvml.Memory_v2{Total: h100Total, Reserved: 509 * MiB, Used: u, Free: h100Total - u - 509*MiB}, nvml.SUCCESS
		},
	}
	src, err := sensors.NewNVML(nvmlWith(dev))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	h := newHost(t, Config{}, src, func(ratio float64) { usedMiB.Store(uint64(ratio * h100Total / MiB)) })
	if h.hold(0.9, 5*time.Minute, 0, 2, 1, 30, 60) {
		t.Fatalf("NVML: a flat 90%% tripped: %+v", h.trs)
	}
	mustContain(t, h.l.Status(h.now).Note, "nvml: memory flat at 90.0% since start")
	if !h.interval(0.95) {
		t.Fatalf("NVML: 90%% → 95%% did not trip: %+v", h.l.Status(h.now))
	}
}
