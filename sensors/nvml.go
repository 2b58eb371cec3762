//go:build cgo

package sensors

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// nvmlShared is the process-wide NVML session: NVML is initialised once for
// every source (and every Caddy config that holds one) and shut down when
// the last source closes.
type nvmlShared struct {
	mu     sync.Mutex
	newLib func() nvml.Interface
	lib    nvml.Interface
	v2     bool // nvmlDeviceGetMemoryInfo_v2 exists (driver R510+)
	refs   int
}

var sharedNVML = &nvmlShared{newLib: func() nvml.Interface { return nvml.New() }}

var errNVMLNotFound = errors.New("NVML library not found (no NVIDIA driver on this host)")

func (s *nvmlShared) acquire() (nvml.Interface, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refs > 0 {
		s.refs++
		return s.lib, s.v2, nil
	}
	lib := s.newLib()
	switch ret := lib.Init(); ret {
	case nvml.SUCCESS:
	case nvml.ERROR_LIBRARY_NOT_FOUND:
		return nil, false, errNVMLNotFound
	default:
		return nil, false, fmt.Errorf("NVML init: %v", ret.Error())
	}
	// Calling a symbol an old driver lacks would kill the process: probe first.
	s.lib, s.v2, s.refs = lib, lib.Extensions().LookupSymbol("nvmlDeviceGetMemoryInfo_v2") == nil, 1
	return s.lib, s.v2, nil
}

func (s *nvmlShared) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refs == 0 {
		return
	}
	if s.refs--; s.refs == 0 {
		s.lib.Shutdown()
		s.lib = nil
	}
}

// nvmlSource reads memory of every device through the shared NVML session.
type nvmlSource struct {
	shared *nvmlShared
	lib    nvml.Interface
	v2     bool

	mu       sync.Mutex // a hung read keeps NVML alive past Close until it returns
	inflight int
	closed   bool
	released bool
}

// OpenNVML opens a source on the process-wide NVML session.
func OpenNVML() (Source, error) { return asSource(newNVMLSource(sharedNVML)) }

// NewNVML is a source that reads through lib in a session of its own:
// lib is initialised now and shut down at Close. Tests pass go-nvml's mock.
func NewNVML(lib nvml.Interface) (Source, error) {
	return asSource(newNVMLSource(&nvmlShared{newLib: func() nvml.Interface { return lib }}))
}

// asSource keeps a failed open a nil Source, not a nil *nvmlSource in one.
func asSource(s *nvmlSource, err error) (Source, error) {
	if err != nil {
		return nil, err
	}
	return s, nil
}

func newNVMLSource(shared *nvmlShared) (*nvmlSource, error) {
	lib, v2, err := shared.acquire()
	if err != nil {
		return nil, err
	}
	return &nvmlSource{shared: shared, lib: lib, v2: v2}, nil
}

func (s *nvmlSource) Name() string { return "nvml" }

// Close releases NVML now, or when an abandoned read still inside it returns.
func (s *nvmlSource) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.releaseLocked()
	return nil
}

func (s *nvmlSource) releaseLocked() {
	if s.closed && s.inflight == 0 && !s.released {
		s.released = true
		s.shared.release()
	}
}

func (s *nvmlSource) Read(ctx context.Context) ([]Device, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errors.New("source closed")
	}
	s.inflight++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inflight--
		s.releaseLocked()
		s.mu.Unlock()
	}()

	n, ret := s.lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("DeviceGetCount: %v", ret.Error())
	}
	devs := make([]Device, 0, n)
	for i := range n {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		devs = append(devs, s.device(i))
	}
	return devs, nil
}

// device reads one GPU; a failure marks just that device (Err names the call
// and NVML's error string).
func (s *nvmlSource) device(i int) Device {
	d := Device{ID: strconv.Itoa(i), Index: i}
	h, ret := s.lib.DeviceGetHandleByIndex(i)
	if ret != nvml.SUCCESS {
		d.Err = "DeviceGetHandleByIndex: " + ret.Error()
		return d
	}
	if uuid, ret := h.GetUUID(); ret == nvml.SUCCESS {
		d.UUID = uuid
	}
	var used, total uint64
	if s.v2 { // v2's used leaves out driver-reserved memory, as nvidia-smi does
		m, ret := h.GetMemoryInfo_v2()
		if ret != nvml.SUCCESS {
			d.Err = "GetMemoryInfo_v2: " + ret.Error()
			return d
		}
		used, total = m.Used, m.Total
	} else {
		m, ret := h.GetMemoryInfo()
		if ret != nvml.SUCCESS {
			d.Err = "GetMemoryInfo: " + ret.Error()
			return d
		}
		used, total = m.Used, m.Total
	}
	if total == 0 {
		d.Err = "memory total is 0"
		return d
	}
	d.Used, d.Total = float64(used), float64(total)
	return d
}
