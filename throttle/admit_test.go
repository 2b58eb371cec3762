package throttle

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/breaker"
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
	if !errors.As(err, &ref) || ref.Status != http.StatusServiceUnavailable || ref.Cause != "circuit" || d.Admitted() || ref.RetryAfter < 55 {
		t.Fatalf("open circuit: %+v %v", ref, err)
	}
	if st := th.Status(time.Now()); st.InFlight != 0 || st.Shed["circuit"] != 1 || st.Circuit.State != "open" {
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
		d := th.Admit(priority.Low, InstantOf(now))
		if !d.Admitted() {
			t.Fatalf("refused under pass: %v", d.Verdict())
		}
		th.Finish(&d, Outcome{Status: 500, End: breaker.Mono(now)})
	}
	if st := th.Status(now).Circuit; st.State != "open" || st.Failures != 20 {
		t.Fatalf("circuit under pass: %+v", st)
	}
	if d := th.Admit(priority.Low, InstantOf(now)); !d.Admitted() {
		t.Fatal("pass refused a request while the circuit is open")
	}
}
