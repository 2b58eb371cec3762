package sensors

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestSensorAggregatesMaxAndMean(t *testing.T) {
	src := newFake(gpuDev(0, "GPU-a", 20, 80), gpuDev(1, "GPU-b", 70, 80), gpuDev(2, "GPU-c", 0, 80))
	s := NewSensor(src, cfgFor(time.Second))
	r := s.SampleOnce(context.Background(), t0)
	if !r.Available || r.Reason != "" {
		t.Fatalf("not available: %+v", r)
	}
	if !near(r.Value, 70.0/80) || !over(r) {
		t.Fatalf("max: got %v over=%v, want %v and over 0.75", r.Value, over(r), 70.0/80)
	}
	if len(r.Devices) != 3 || r.LastGood != t0 || r.At != t0 || r.LastAttempt != t0 || r.Source != "fake" {
		t.Fatalf("reading fields wrong: %+v", r)
	}

	cfg := cfgFor(time.Second)
	cfg.Aggregate = "mean"
	r = NewSensor(src, cfg).SampleOnce(context.Background(), t0)
	if !near(r.Value, 90.0/240) || over(r) {
		t.Fatalf("mean: got %v over=%v, want %v", r.Value, over(r), 90.0/240)
	}
}

func TestSensorDeviceSelection(t *testing.T) {
	src := newFake(gpuDev(0, "GPU-a", 20, 80), gpuDev(1, "GPU-b", 70, 80))
	cfg := cfgFor(time.Second)

	cfg.Devices = []string{"0"}
	r := NewSensor(src, cfg).SampleOnce(context.Background(), t0)
	if !r.Available || !near(r.Value, 0.25) || len(r.Devices) != 1 || r.Devices[0].ID != "0" {
		t.Fatalf("select by index: %+v", r)
	}

	cfg.Devices = []string{"GPU-b"}
	r = NewSensor(src, cfg).SampleOnce(context.Background(), t0)
	if !r.Available || !near(r.Value, 70.0/80) || r.Devices[0].UUID != "GPU-b" {
		t.Fatalf("select by UUID: %+v", r)
	}

	cfg.Devices = []string{"0", "3"}
	r = NewSensor(src, cfg).SampleOnce(context.Background(), t0)
	if r.Available || r.Errors != 1 {
		t.Fatalf("absent device must fail: %+v", r)
	}
	mustContain(t, r.Reason, "device 3 not found; have 0,1")
}

func TestSensorBrokenDeviceOnlyMattersWhenSelected(t *testing.T) {
	lost := Device{ID: "1", Index: 1, UUID: "GPU-b", Err: "GetMemoryInfo: ERROR_GPU_IS_LOST"}
	src := newFake(gpuDev(0, "GPU-a", 20, 80), lost)

	r := NewSensor(src, cfgFor(time.Second)).SampleOnce(context.Background(), t0)
	if r.Available {
		t.Fatalf("all devices selected, one lost: must fail: %+v", r)
	}
	mustContain(t, r.Reason, "device 1 (GPU-b): GetMemoryInfo: ERROR_GPU_IS_LOST")

	cfg := cfgFor(time.Second)
	cfg.Devices = []string{"0"}
	if r := NewSensor(src, cfg).SampleOnce(context.Background(), t0); !r.Available {
		t.Fatalf("lost device not selected: must not matter: %+v", r)
	}
}

func TestSensorNoDevicesAndSourceError(t *testing.T) {
	src := newFake()
	s := NewSensor(src, cfgFor(time.Second))
	r := s.SampleOnce(context.Background(), t0)
	if r.Available || r.Reason != "fake: no devices" {
		t.Fatalf("empty sample: %+v", r)
	}
	src.set(nil, errors.New("exit status 9: driver gone"))
	r = s.SampleOnce(context.Background(), t0.Add(time.Second))
	if r.Available || r.Reason != "fake: exit status 9: driver gone" || r.Errors != 2 {
		t.Fatalf("source error: %+v", r)
	}
}

func TestSensorKeepsLastGoodValuesWhenFailing(t *testing.T) {
	src := newFake(gpuDev(0, "", 40, 80))
	s := NewSensor(src, cfgFor(time.Second))
	s.SampleOnce(context.Background(), t0)
	src.set(nil, errors.New("boom"))
	r := s.SampleOnce(context.Background(), t0.Add(2*time.Second))
	if r.Available || !near(r.Value, 0.5) || r.LastGood != t0 || r.LastAttempt != t0.Add(2*time.Second) || len(r.Devices) != 1 {
		t.Fatalf("failed sample must keep last good value and devices: %+v", r)
	}
	if over(r) {
		t.Fatal("an unavailable reading is never over")
	}
}

func TestSensorTimeoutHungNoPileUp(t *testing.T) {
	src := newFake(gpuDev(0, "", 10, 80))
	cfg := cfgFor(50 * time.Millisecond)
	s := NewSensor(src, cfg)
	if r := s.SampleOnce(context.Background(), t0); !r.Available {
		t.Fatalf("first sample: %+v", r)
	}
	<-src.returned

	release := src.hang()
	start := time.Now()
	r := s.SampleOnce(context.Background(), t0.Add(2*time.Second))
	took := time.Since(start)
	if took < 50*time.Millisecond || took > time.Second {
		t.Fatalf("SampleOnce took %v, want about the 50ms timeout", took)
	}
	if r.Available || r.Hung != 1 || r.Errors != 1 {
		t.Fatalf("hung read: %+v", r)
	}
	mustContain(t, r.Reason, "read timed out after 50ms")

	// While the read is still stuck, samples return at once and start nothing.
	for i := range 20 {
		start := time.Now()
		r = s.SampleOnce(context.Background(), t0.Add(time.Duration(4+2*i)*time.Second))
		if d := time.Since(start); d > 20*time.Millisecond {
			t.Fatalf("sample while hung blocked for %v", d)
		}
		mustContain(t, r.Reason, "previous read still hung")
	}
	if got := src.calls.Load(); got != 2 {
		t.Fatalf("reads started: %d, want 2 (no pile-up)", got)
	}
	if r.Hung != 1 || r.Errors != 21 {
		t.Fatalf("counters: hung %d errors %d, want 1 and 21", r.Hung, r.Errors)
	}
	// It has been stale for a while: the reason says so too.
	mustContain(t, r.Reason, "stale: last good sample 42s ago")

	close(release)
	<-src.returned
	// The sender may not have handed its (discarded) result over yet.
	for range 1000 {
		r = s.SampleOnce(context.Background(), t0.Add(time.Minute))
		if !strings.Contains(r.Reason, "still hung") {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if !r.Available || r.LastGood != t0.Add(time.Minute) || src.calls.Load() != 3 || src.maxRun.Load() != 1 {
		t.Fatalf("after the hang ends a fresh read must run: %+v calls=%d maxRun=%d", r, src.calls.Load(), src.maxRun.Load())
	}
}

func TestSensorParentCancelIsNotHung(t *testing.T) {
	src := newFake(gpuDev(0, "", 10, 80))
	release := src.hang()
	defer close(release)
	s := NewSensor(src, cfgFor(time.Second))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := s.SampleOnce(ctx, t0)
	if r.Available || r.Hung != 0 || src.calls.Load() != 0 {
		t.Fatalf("cancelled before: no read may start: %+v calls=%d", r, src.calls.Load())
	}
	mustContain(t, r.Reason, "read cancelled: context canceled")

	// Cancelled while the read is stuck: the sample returns at once.
	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	start := time.Now()
	r = s.SampleOnce(ctx, t0)
	if time.Since(start) > 500*time.Millisecond || r.Hung != 0 || src.calls.Load() != 1 {
		t.Fatalf("cancel mid-read: %+v after %v", r, time.Since(start))
	}
	mustContain(t, r.Reason, "read cancelled: context canceled")
}

func TestSensorStaleness(t *testing.T) {
	src := newFake(gpuDev(0, "", 10, 80))
	cfg := cfgFor(time.Second) // StaleAfter 10s
	s := NewSensor(src, cfg)
	s.SampleOnce(context.Background(), t0)

	if r := s.LatestAt(t0.Add(10 * time.Second)); !r.Available {
		t.Fatalf("at exactly StaleAfter still fresh: %+v", r)
	}
	r := s.LatestAt(t0.Add(12 * time.Second))
	if r.Available || r.Reason != "stale: last good sample 12s ago" {
		t.Fatalf("stale latest: %+v", r)
	}
	if !s.Latest().Available {
		t.Fatal("Latest is the reading as produced; LatestAt judges it")
	}
	if got := r.Age(t0.Add(12 * time.Second)); got != 12*time.Second {
		t.Fatalf("Age %v", got)
	}
	if (Reading{}).Age(t0) < 100*365*24*time.Hour {
		t.Fatal("never-good reading must be very old")
	}
}

func TestSensorStaleSourceTimestamp(t *testing.T) {
	d := Device{ID: "0", Index: 0, Used: 0.3, Total: 1, Timestamp: t0.Add(-30 * time.Second)}
	src := newFake(d)
	s := NewSensor(src, cfgFor(time.Second))
	r := s.SampleOnce(context.Background(), t0)
	if r.Available {
		t.Fatalf("30s-old source timestamp must be stale: %+v", r)
	}
	mustContain(t, r.Reason, "stale: device 0 sample is 30s old")

	d.Timestamp = t0.Add(-time.Second)
	src.set([]Device{d}, nil)
	if r := s.SampleOnce(context.Background(), t0); !r.Available || !near(r.Value, 0.3) {
		t.Fatalf("fresh timestamp: %+v", r)
	}
}

func TestSensorPublishesLatest(t *testing.T) {
	src := newFake(gpuDev(0, "", 10, 80))
	s := NewSensor(src, cfgFor(time.Second))
	if r := s.Latest(); r.Available || r.Reason != "no sample yet" {
		t.Fatalf("before any sample: %+v", r)
	}
	if r := s.SampleOnce(context.Background(), t0); !r.Available || s.Latest().At != t0 || !s.Latest().Available {
		t.Fatalf("first sample %+v, published %+v", r, s.Latest())
	}
	src.set(nil, errors.New("x"))
	s.SampleOnce(context.Background(), t0.Add(time.Second))
	if l := s.Latest(); l.At != t0.Add(time.Second) || l.Available {
		t.Fatalf("latest: %+v", l)
	}
}

func TestSensorRunTicksUntilCancelled(t *testing.T) {
	src := newFake(gpuDev(0, "", 10, 80))
	cfg := cfgFor(8 * time.Millisecond)
	cfg.Interval = 10 * time.Millisecond
	s := NewSensor(src, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	// Wait for three distinct published readings.
	seen := map[time.Time]bool{}
	deadline := time.Now().Add(5 * time.Second)
	for len(seen) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("Run published %d readings in 5 s", len(seen))
		}
		if r := s.Latest(); !r.At.IsZero() {
			if !r.Available {
				t.Fatalf("sample: %+v", r)
			}
			seen[r.At] = true
		}
		runtime.Gosched()
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop")
	}
}

func TestNilSourceSensor(t *testing.T) {
	r := NewSensor(nil, cfgFor(time.Second)).SampleOnce(context.Background(), t0)
	if r.Available || r.Reason != "sensor off" || r.Source != "off" {
		t.Fatalf("%+v", r)
	}
}

func BenchmarkSampleOnce(b *testing.B) {
	src := newFake(gpuDev(0, "a", 10, 80), gpuDev(1, "b", 50, 80))
	s := NewSensor(src, cfgFor(time.Second))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		s.SampleOnce(ctx, t0)
	}
}

func TestRatio(t *testing.T) {
	if (Device{Used: 3, Total: 4}).Ratio() != 0.75 || (Device{Used: 3}).Ratio() != 0 || (Device{Used: 3, Total: -1}).Ratio() != 0 {
		t.Fatal("Ratio")
	}
}
