package sensors

import (
	"context"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeSource is a Source whose answers and hangs the test controls. A hang
// ignores ctx, as a wedged driver call would.
type fakeSource struct {
	mu    sync.Mutex
	devs  []Device
	err   error
	block chan struct{} // non-nil: Read waits for it to close, ignoring ctx

	calls    atomic.Int32
	running  atomic.Int32
	maxRun   atomic.Int32
	returned chan struct{} // gets a value after each Read ends (buffered)
}

func newFake(devs ...Device) *fakeSource {
	return &fakeSource{devs: devs, returned: make(chan struct{}, 100)}
}

func (f *fakeSource) Name() string { return "fake" }
func (f *fakeSource) Close() error { return nil }

func (f *fakeSource) set(devs []Device, err error) {
	f.mu.Lock()
	f.devs, f.err = devs, err
	f.mu.Unlock()
}

func (f *fakeSource) hang() chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.block = make(chan struct{})
	return f.block
}

func (f *fakeSource) Read(ctx context.Context) ([]Device, error) {
	f.calls.Add(1)
	n := f.running.Add(1)
	for {
		m := f.maxRun.Load()
		if n <= m || f.maxRun.CompareAndSwap(m, n) {
			break
		}
	}
	defer func() {
		f.running.Add(-1)
		select {
		case f.returned <- struct{}{}:
		default:
		}
	}()
	f.mu.Lock()
	block, devs, err := f.block, f.devs, f.err
	f.mu.Unlock()
	if block != nil {
		<-block
	}
	return append([]Device(nil), devs...), err
}

// gpuDev is a memory device at used/total GiB.
func gpuDev(idx int, uuid string, usedGiB, totalGiB float64) Device {
	return Device{ID: strconv.Itoa(idx), Index: idx, UUID: uuid, Used: usedGiB * (1 << 30), Total: totalGiB * (1 << 30)}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

// cfgFor is the gpu block's defaults (a read every 2 s, stale after
// 10 s, the max across devices) with the given timeout.
func cfgFor(timeout time.Duration) Config {
	return Config{Interval: 2 * time.Second, Timeout: timeout, StaleAfter: 10 * time.Second, Aggregate: "max"}
}

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func mustContain(t *testing.T, got, want string) {
	t.Helper()
	if !strings.Contains(got, want) {
		t.Fatalf("got %q, want it to contain %q", got, want)
	}
}

// over reports whether an available reading is at or over the gpu
// block's default threshold.
func over(r Reading) bool { return r.Available && r.Value >= 0.75 }
