package throttle

import (
	"context"
	"errors"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/admission"
	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/config"
	"github.com/ai-guardian/adaptivethrottle/levels/gpu"
	"github.com/ai-guardian/adaptivethrottle/priority"
)

// Admit and Finish without HTTP: 5xx outcomes open the circuit, the
// transition reaches the emitter, and then Allow refuses with a Refusal
// that carries 503 and the circuit as its cause.
func TestAdmitFinishOpensTheCircuitAndEmits(t *testing.T) {
	events := make(chan string, 8)
	th, err := New(WithConfig(Config{GPU: gpu.Config{Source: "off"}, Circuit: breaker.CircuitConfig{MinRequests: 2}}),
		WithEmitter(func(name string, data map[string]any) { events <- name + " " + data["to"].(string) }))
	if err != nil {
		t.Fatal(err)
	}
	defer th.Close()
	for range 2 {
		d, err := th.Allow(context.Background(), priority.Medium)
		if err != nil || !d.Admitted() {
			t.Fatalf("healthy: %v %v", d.Verdict(), err)
		}
		th.Finish(&d, Outcome{Status: http.StatusBadGateway})
	}
	select {
	case e := <-events:
		if e != EventCircuit+" open" {
			t.Fatalf("event %q", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no circuit event")
	}
	d, err := th.Allow(context.Background(), priority.High)
	var ref *Refusal
	if !errors.As(err, &ref) || ref.Status != http.StatusServiceUnavailable || ref.Cause != "circuit" || d.Admitted() || ref.RetryAfter < 48 || ref.RetryAfter > 60 {
		t.Fatalf("open circuit: %+v %v", ref, err)
	}
	if st := th.Status(time.Now()); st.Admission.InFlight != 0 || st.Shed["circuit"] != 1 || st.Circuit.State != breaker.Open {
		t.Fatalf("status %+v", st)
	}
	// A caller whose context is done is refused before anything is counted.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := th.Allow(ctx, priority.High); !errors.Is(err, context.Canceled) {
		t.Fatalf("done context: %v", err)
	}
}

// Under override pass the circuit keeps counting outcomes, as the README
// says: an operator's pass must not blind it.
func TestOverridePassKeepsTheCircuitCounting(t *testing.T) {
	th := testThrottle(t, Config{})
	now := time.Unix(1000, 0)
	if err := th.SetOverride("pass", now, time.Time{}); err != nil {
		t.Fatal(err)
	}
	for range 25 {
		d := th.Admit(context.Background(), priority.Low, breaker.MonoOf(now))
		if !d.Admitted() {
			t.Fatalf("refused under pass: %v", d.Verdict())
		}
		th.Finish(&d, Outcome{Status: 500, End: breaker.MonoOf(now)})
	}
	if st := th.Status(now).Circuit; st.State != breaker.Open || st.Failures != 20 {
		t.Fatalf("circuit under pass: %+v", st)
	}
	if d := th.Admit(context.Background(), priority.Low, breaker.MonoOf(now)); !d.Admitted() {
		t.Fatal("pass refused a request while the circuit is open")
	}
}

// waitFor spins until cond holds: a precondition, never the assertion.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// With every slot taken, a request waits in its queue and the next
// completion hands it the slot; higher priority first.
func TestAdmitWaitsForASlot(t *testing.T) {
	th := testThrottle(t, Config{Concurrency: admission.Config{Limit: 1, MaxWait: admission.MaxWait{High: config.Duration(time.Minute), Low: config.Duration(time.Minute)}}})
	ctx := context.Background()
	first := th.Admit(ctx, priority.Low, Now())
	if first.Verdict() != priority.Pass {
		t.Fatalf("a free slot: %v", first.Verdict())
	}
	got := make(chan Decision, 2)
	go func() { got <- th.Admit(ctx, priority.Low, Now()) }()
	waitFor(t, "the low request to queue", func() bool { return th.gate.Waiting() == 1 })
	go func() { got <- th.Admit(ctx, priority.High, Now()) }()
	waitFor(t, "the high request to queue", func() bool { return th.gate.Waiting() == 2 })
	if st := th.Status(time.Now()).Admission; st.Queued["high"] != 1 || st.Queued["low"] != 1 || st.InFlight != 1 {
		t.Fatalf("status while waiting: %+v", st)
	}

	th.Finish(&first, Outcome{Status: 200})
	d := <-got
	if d.Priority() != priority.High || d.Verdict() != priority.PassQueued {
		t.Fatalf("the slot went to %v (%v), want high", d.Priority(), d.Verdict())
	}
	th.Finish(&d, Outcome{Status: 200})
	d = <-got
	if d.Priority() != priority.Low || d.Verdict() != priority.PassQueued {
		t.Fatalf("then %v (%v), want low", d.Priority(), d.Verdict())
	}
	th.Finish(&d, Outcome{Status: 200})
	if th.gate.InFlight() != 0 || th.gate.Waiting() != 0 {
		t.Fatalf("in flight %d waiting %d at the end", th.gate.InFlight(), th.gate.Waiting())
	}
}

// A wait that runs out is refused with a Retry-After from the rate the
// queue drains at; a client that goes away while waiting leaves no slot.
func TestAdmitWaitExpiresOrIsCancelled(t *testing.T) {
	th := testThrottle(t, Config{RetryAfter: config.Duration(time.Millisecond),
		Concurrency: admission.Config{Limit: 1, MaxWait: admission.MaxWait{High: config.Duration(10 * time.Millisecond),
			Medium: config.Duration(10 * time.Millisecond), Low: config.Duration(time.Hour)}}})
	ctx := context.Background()
	first := th.Admit(ctx, priority.Medium, Now())
	th.drain.Store(math.Float64bits(0.5)) // a request completes every 2 s

	d := th.Admit(ctx, priority.Medium, Now())
	if d.Verdict() != priority.ShedQueue || d.Status() != 429 || d.Cause() != "concurrency" {
		t.Fatalf("medium's wait ran out: %v %d %q", d.Verdict(), d.Status(), d.Cause())
	}
	if r := d.RetryAfter(); r < 2 || r > 3 {
		t.Fatalf("Retry-After %d with nobody else waiting at 0.5/s, want 2 (+20%%)", r)
	}
	if d := th.Admit(ctx, priority.High, Now()); d.Verdict() != priority.ShedQueue || d.Status() != 503 {
		t.Fatalf("high's wait ran out: %v %d", d.Verdict(), d.Status())
	}

	cctx, cancel := context.WithCancel(ctx)
	got := make(chan Decision)
	go func() { got <- th.Admit(cctx, priority.Low, Now()) }()
	waitFor(t, "the low request to queue", func() bool { return th.gate.Waiting() == 1 })
	cancel()
	if d := <-got; d.Verdict() != priority.ShedGone || d.Admitted() {
		t.Fatalf("a cancelled wait: %v", d.Verdict())
	}
	th.Finish(&first, Outcome{Status: 200})
	if st := th.Status(time.Now()); st.Admission.InFlight != 0 || st.Admission.Queued["low"] != 0 || st.Shed["concurrency"] != 2 {
		t.Fatalf("after the cancel: in flight %d, queued %v, shed %v", st.Admission.InFlight, st.Admission.Queued, st.Shed)
	}
}

// While the QPS level alone is tripped, high keeps the reserve inside the
// limit, medium waits for a slot, low takes a free slot but is refused at
// once when none is. An override shed (or a level that says the upstream
// hurts) refuses low even with slots free.
func TestAdmitGradedWhileShedding(t *testing.T) {
	th := testThrottle(t, Config{Concurrency: admission.Config{Limit: 5, MaxWait: admission.MaxWait{High: config.Duration(10 * time.Millisecond),
		Medium: config.Duration(10 * time.Millisecond), Low: config.Duration(time.Hour)}}})
	now := time.Now()
	th.step(now, true)
	th.tripped.Store(1 << levelQPS) // as the sampler publishes a QPS trip
	th.gate.SetShedding(true)
	ctx := context.Background()
	var held []Decision
	for i := range 4 {
		d := th.Admit(ctx, priority.Low, Now())
		if d.Verdict() != priority.Pass {
			t.Fatalf("low %d into a free slot while arrivals surge: %v", i, d.Verdict())
		}
		held = append(held, d)
	}
	if d := th.Admit(ctx, priority.Low, Now()); d.Verdict() != priority.ShedLow || d.Status() != 429 || d.Cause() != "qps" {
		t.Fatalf("low with only the reserve free: %v %q", d.Verdict(), d.Cause())
	}
	if d := th.Admit(ctx, priority.Medium, Now()); d.Verdict() != priority.ShedGraded || d.Status() != 429 {
		t.Fatalf("medium with only the reserve free: %v", d.Verdict())
	}
	h := th.Admit(ctx, priority.High, Now())
	if h.Verdict() != priority.PassReserved {
		t.Fatalf("high into the reserve: %v", h.Verdict())
	}
	if d := th.Admit(ctx, priority.High, Now()); d.Verdict() != priority.ShedReserveFull || d.Status() != 503 {
		t.Fatalf("high with the limit full: %v", d.Verdict())
	}
	if st := th.Status(time.Now()).Priorities.High; st.InUse != 1 || st.Reserve != 1 {
		t.Fatalf("high lane %+v", st)
	}
	th.Finish(&h, Outcome{Status: 200})
	for i := range held {
		th.Finish(&held[i], Outcome{Status: 200})
	}
	if st := th.Status(time.Now()); st.Admission.InFlight != 0 || st.Priorities.High.InUse != 0 {
		t.Fatalf("in flight %d, high in use %d at the end", st.Admission.InFlight, st.Priorities.High.InUse)
	}

	for _, mask := range []uint32{1 << levelGPU, 1 << levelLatency} {
		th.tripped.Store(mask)
		if d := th.Admit(ctx, priority.Low, Now()); d.Verdict() != priority.ShedLow {
			t.Fatalf("low with every slot free while %s is tripped: %v", CauseName(th.shedCause()), d.Verdict())
		}
	}
	th.tripped.Store(0)
	if err := th.SetOverride("shed", now, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if d := th.Admit(ctx, priority.Low, Now()); d.Verdict() != priority.ShedLow || d.Cause() != "override" {
		t.Fatalf("low under override shed: %v %q", d.Verdict(), d.Cause())
	}
}

type nextFunc func(http.ResponseWriter, *http.Request) error

func (f nextFunc) ServeHTTP(w http.ResponseWriter, r *http.Request) error { return f(w, r) }

// Every admitted request ends its wait for a first byte exactly once, in
// what the limit is told (admission.Signal's Started − Answered are the
// requests stuck before a first byte): a streamed answer at its first
// byte, not again at its end; an answer that fails, never comes, panics
// or loses its client at its end.
func TestEveryRequestIsAnsweredOnce(t *testing.T) {
	th := testThrottle(t, Config{})
	ctx := context.Background()
	answered := func() uint64 { return th.firstBytes.answered() }

	// A streamed answer: counted at its first byte, while it still streams.
	wrote, release := make(chan struct{}), make(chan struct{})
	done := make(chan error)
	d := th.Admit(ctx, priority.Medium, Now())
	go func() {
		r, _ := http.NewRequest("POST", "/", nil)
		done <- th.Serve(discard{}, r, d, nextFunc(func(w http.ResponseWriter, _ *http.Request) error {
			w.Write([]byte("data: 1\n\n"))
			close(wrote)
			<-release
			w.Write([]byte("data: 2\n\n"))
			return nil
		}))
	}()
	<-wrote
	if a := answered(); a != 1 {
		t.Fatalf("streaming after its first byte: answered %d, want 1", a)
	}
	close(release)
	<-done
	if a := answered(); a != 1 {
		t.Fatalf("the streamed answer counted again at its end: answered %d", a)
	}

	serve := func(next nextFunc) {
		defer func() { _ = recover() }()
		d := th.Admit(ctx, priority.Medium, Now())
		r, _ := http.NewRequest("POST", "/", nil)
		_ = th.Serve(discard{}, r, d, next)
	}
	serve(func(w http.ResponseWriter, _ *http.Request) error { w.WriteHeader(502); return nil })
	serve(func(http.ResponseWriter, *http.Request) error { return errors.New("no upstream") })
	serve(func(http.ResponseWriter, *http.Request) error { panic(http.ErrAbortHandler) })
	for _, o := range []Outcome{{Status: 200}, {Status: 503}, {ClientGone: true}} {
		d := th.Admit(ctx, priority.Low, Now())
		th.Finish(&d, o)
	}
	if a, fin := answered(), th.finished.Load(); a != 7 || fin != 7 || th.gate.InFlight() != 0 {
		t.Fatalf("answered %d, finished %d, in flight %d: want 7, 7, 0", a, fin, th.gate.InFlight())
	}
}

// discard is a ResponseWriter that keeps nothing.
type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(b []byte) (int, error) { return len(b), nil }
func (discard) WriteHeader(int)             {}

// The limit grows only when it binds: requests that find every slot of it
// taken. Low refused at once while shedding, or medium held back by its
// pacing with slots free, say nothing of the limit; counted as waits (as
// before), they made it probe up every step of a surge, to three times
// what the upstream served, and the surge's next seconds flooded it.
func TestLimitGrowsOnlyWhenItBinds(t *testing.T) {
	th := testThrottle(t, Config{Concurrency: admission.Config{Initial: 10, MaxWait: admission.MaxWait{Medium: config.Duration(time.Millisecond)}}})
	now := time.Unix(1000, 0)
	th.step(now, true)
	if err := th.SetOverride("shed", now, time.Time{}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var held []Decision
	for range 6 { // 6 of 10 slots taken, first bytes fast
		d := th.Admit(ctx, priority.High, Now())
		th.firstBytes.add(0, 20*time.Millisecond)
		held = append(held, d)
	}
	for range 40 {
		for range 10 {
			if d := th.Admit(ctx, priority.Low, Now()); d.Admitted() {
				t.Fatal("low admitted under override shed")
			}
		}
		for range 4 {
			th.firstBytes.add(0, 20*time.Millisecond)
		}
		now = now.Add(250 * time.Millisecond)
		th.step(now, false)
	}
	if v, f := th.limit.Value(), th.gate.Fulls(); v != 10 || f != 0 {
		t.Fatalf("low refused with 4 of 10 slots free for 10 s: limit %d, fulls %d; want 10, 0", v, f)
	}
	for range 4 { // the limit full: the next request finds no slot
		held = append(held, th.Admit(ctx, priority.High, Now()))
	}
	if d := th.Admit(ctx, priority.Medium, Now()); d.Admitted() || th.gate.Fulls() == 0 {
		t.Fatalf("medium with every slot taken: %v, fulls %d", d.Verdict(), th.gate.Fulls())
	}
	for range 4 {
		th.firstBytes.add(0, 20*time.Millisecond)
	}
	now = now.Add(250 * time.Millisecond)
	th.step(now, false)
	if v := th.limit.Value(); v <= 10 {
		t.Fatalf("the limit bound, first bytes fast: limit %d, want it growing", v)
	}
	for i := range held {
		th.Finish(&held[i], Outcome{Status: 200})
	}
}
