package gpu

import (
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/levels"
)

func sample(l *Level, now time.Time) []breaker.Transition {
	var trs []breaker.Transition
	l.Sample(now, levels.Inputs{Second: true}, func(tr breaker.Transition) { trs = append(trs, tr) })
	return trs
}

func TestLevelReadingsAndOnError(t *testing.T) {
	f := published(t, Config{OnError: "shed"}, "nvidia-smi")
	l := f.l
	now := time.Unix(1000, 0)
	f.ok(now, 0.5)
	sample(l, now)
	if l.h.Tripped() {
		t.Fatal("50% of memory tripped")
	}
	now = now.Add(2 * time.Second)
	f.ok(now, 0.9)
	if trs := sample(l, now); len(trs) != 1 || !trs[0].Tripped || !l.h.Tripped() {
		t.Fatalf("90%% of memory did not trip: %+v", trs)
	}
	if r := l.Status(now).LastReason; r != "gpu nvidia-smi 90.0% > 75.0%" {
		t.Fatalf("reason %q", r)
	}
	// The same reading seen again is not a second observation.
	for range 4 {
		now = now.Add(250 * time.Millisecond)
		if trs := sample(l, now); len(trs) != 0 {
			t.Fatalf("a reading observed twice: %+v", trs)
		}
	}
	for range 4 {
		now = now.Add(2 * time.Second)
		f.ok(now, 0.3)
		sample(l, now)
	}
	if l.h.Tripped() {
		t.Fatal("did not recover at 30%")
	}
	// on_error shed: a failing source trips at once, with its reason.
	now = now.Add(2 * time.Second)
	f.fail(now, "exit status 9")
	sample(l, now)
	if !l.h.Tripped() {
		t.Fatal("an unreadable source under on_error shed did not trip")
	}
	if r := l.Status(now).LastReason; r != "gpu source unavailable (on_error shed): nvidia-smi: exit status 9" {
		t.Fatalf("reason %q", r)
	}

	// on_error allow: the same failure is no pressure.
	fa := published(t, Config{}, "nvidia-smi")
	allow := fa.l
	fa.fail(now, "exit status 9")
	sample(allow, now)
	if allow.h.Tripped() {
		t.Fatal("an unreadable source under on_error allow tripped")
	}
}

// A sensor that stops publishing leaves a reading that goes stale: status
// says so, and under on_error shed the stale reading trips the level.
func TestLevelStaleReading(t *testing.T) {
	f := published(t, Config{OnError: "shed"}, "nvml")
	l := f.l
	now := time.Unix(1000, 0)
	f.ok(now, 0.2)
	sample(l, now)
	now = now.Add(11 * time.Second) // stale_after 10s
	if st := l.Status(now); st.Available || st.Reason == "" || st.SampleAgeS == nil || *st.SampleAgeS != 11 {
		t.Fatalf("a stale reading reads as %+v", st)
	}
	sample(l, now)
	if !l.h.Tripped() {
		t.Fatal("a stale reading under on_error shed did not trip")
	}
}

// A reload or the last cleanup holds the level's lock while it stops the
// sensor: the sampler's observation must not wait for that lock, or both
// would wait for ever. The sensor calls nobody, so nothing can.
func TestSampleNeverWaitsForTheReopenLock(t *testing.T) {
	f := published(t, Config{OnError: "shed"}, "nvidia-smi")
	l := f.l
	now := time.Unix(1000, 0)
	f.fail(now, "exit status 9")
	l.mu.Lock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		sample(l, now)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("an observation waited for the lock a reload holds: deadlock")
	}
	l.mu.Unlock()
	if !l.h.Tripped() {
		t.Fatal("an unreadable source under on_error shed did not trip the GPU level")
	}
}

// A reload that asks for a source that cannot open leaves the running one.
func TestSetConfigFailureKeepsTheRunningSource(t *testing.T) {
	l, err := New(Config{Source: "nvidia-smi", Path: "/bin/true"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	before := l.sensor.Load()
	if _, err := l.SetConfig(Config{Source: "nvidia-smi", Path: "/nonexistent/nvidia-smi", OnError: "shed"}); err == nil {
		t.Fatal("an unusable source under on_error shed was accepted")
	}
	if l.sensor.Load() != before || l.cfg.Load().Path != "/bin/true" {
		t.Fatal("a rejected reload replaced the running source")
	}
	reopened, err := l.SetConfig(Config{Source: "nvidia-smi", Path: "/bin/true", OnError: "shed"})
	if err != nil || reopened || l.sensor.Load() != before {
		t.Fatalf("on_error alone reopened the source: %v %v", reopened, err)
	}
}

// A recovery is worded like a trip: the source and percent of memory, and
// how many readings held; an unreadable source under on_error allow says
// so instead of "0 <".
func TestLevelRecoveryReason(t *testing.T) {
	f := published(t, Config{}, "nvidia-smi")
	l := f.l
	now := time.Unix(1000, 0)
	f.ok(now, 0.3)
	sample(l, now)
	now = now.Add(2 * time.Second)
	f.ok(now, 0.9)
	if trs := sample(l, now); len(trs) != 1 || !trs[0].Tripped {
		t.Fatalf("90%% of memory after 30%% did not trip: %+v", trs)
	}
	var trs []breaker.Transition
	for range 4 {
		now = now.Add(2 * time.Second)
		f.ok(now, 0.3)
		trs = append(trs, sample(l, now)...)
	}
	if len(trs) != 1 || trs[0].Tripped {
		t.Fatalf("transitions %+v, want one recovery", trs)
	}
	if want := "gpu: nvidia-smi 30.0% < 0.9 × 75.0% for 2 readings"; trs[0].Reason != want {
		t.Fatalf("recovery %q, want %q", trs[0].Reason, want)
	}

	f.ok(now.Add(time.Second), 0.95)
	now = now.Add(time.Second)
	sample(l, now)
	trs = nil
	for range 5 {
		now = now.Add(2 * time.Second)
		f.fail(now, "exit status 9")
		trs = append(trs, sample(l, now)...)
	}
	if want := "gpu: source unavailable for 2 readings (on_error allow): nvidia-smi: exit status 9"; len(trs) != 1 || trs[0].Reason != want {
		t.Fatalf("transitions %+v, want one recovery %q", trs, want)
	}
}
