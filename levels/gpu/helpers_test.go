package gpu

import (
	"context"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ai-guardian/adaptivethrottle/sensors"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func mustContain(t *testing.T, got, want string) {
	t.Helper()
	if !strings.Contains(got, want) {
		t.Fatalf("got %q, want it to contain %q", got, want)
	}
}

// gauge is a source named as a real one that reads what the test sets:
// one device at a ratio, or an error.
type gauge struct {
	name  string
	mu    sync.Mutex
	ratio float64
	err   error
}

func (g *gauge) Name() string { return g.name }
func (g *gauge) Close() error { return nil }
func (g *gauge) Read(context.Context) ([]sensors.Device, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil {
		return nil, g.err
	}
	return []sensors.Device{{ID: "0", Index: 0, Used: g.ratio, Total: 1}}, nil
}

// feed is a level whose sensor reads a gauge that the test sets, one
// sample at a time.
type feed struct {
	t   *testing.T
	l   *Level
	s   *sensors.Sensor
	src *gauge
}

// published is a level fed by a source named source (nvml, nvidia-smi or
// prometheus: the name says whether the readings are memory).
func published(t *testing.T, cfg Config, source string) *feed {
	t.Helper()
	cfg.Source = "off"
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	src := &gauge{name: source}
	s := sensors.NewSensor(src, l.cfg.Load().sensor())
	l.sensor.Store(s)
	return &feed{t: t, l: l, s: s, src: src}
}

// ok publishes a good sample of ratio at now.
func (f *feed) ok(now time.Time, ratio float64) {
	f.t.Helper()
	f.set(ratio, nil)
	if r := f.s.SampleOnce(context.Background(), now); !r.Available {
		f.t.Fatalf("reading unavailable: %s", r.Reason)
	}
}

// fail publishes a failed read at now.
func (f *feed) fail(now time.Time, reason string) {
	f.t.Helper()
	f.set(0, errors.New(reason))
	if r := f.s.SampleOnce(context.Background(), now); r.Available {
		f.t.Fatalf("a failed read reads as available: %+v", r)
	}
}

func (f *feed) set(ratio float64, err error) {
	f.src.mu.Lock()
	f.src.ratio, f.src.err = ratio, err
	f.src.mu.Unlock()
}
