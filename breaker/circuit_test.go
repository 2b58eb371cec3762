package breaker

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/config"
)

// ct0 sits on a whole second after epoch, so 1 s buckets align with it.
var ct0 = epoch.Add(time.Hour)

func at(d time.Duration) time.Time { return ct0.Add(d) }

// s is time.Second, untyped so that it reads both as a time.Duration and as
// a config.Duration.
const s = 1_000_000_000

// outcomes runs n admitted requests at now, all failed or all not.
func outcomes(t *testing.T, c *Circuit, now time.Time, n int, failed bool) (trs []Transition) {
	t.Helper()
	for range n {
		tk, ok, _ := c.Allow(now)
		if !ok {
			t.Fatalf("Allow rejected in state %v", c.State())
		}
		if tr, ch := done(c, now, tk, failed); ch {
			trs = append(trs, tr)
		}
	}
	return trs
}

// openCircuit returns a circuit opened at ct0.
func openCircuit(t *testing.T, cfg CircuitConfig) *Circuit {
	t.Helper()
	cfg.MinRequests = 4
	if cfg.Window == 0 {
		cfg.Window = 10 * s
	}
	c := NewCircuit(cfg)
	if trs := outcomes(t, c, ct0, 4, true); len(trs) != 1 || c.State() != Open {
		t.Fatalf("setup: circuit did not open: %v", trs)
	}
	return c
}

func TestCircuitClosedBelowMinRequests(t *testing.T) {
	c := NewCircuit(CircuitConfig{MinRequests: 20})
	if trs := outcomes(t, c, ct0, 19, true); len(trs) != 0 || c.State() != Closed {
		t.Fatalf("opened below MinRequests at 100%% failures: %v", trs)
	}
	st := c.Status(ct0)
	if st.Requests != 19 || st.Failures != 19 || st.Ratio != 1 || st.State != Closed {
		t.Fatalf("status %+v", st)
	}
	if trs := outcomes(t, c, ct0, 1, true); len(trs) != 1 {
		t.Fatal("did not open at MinRequests")
	}
}

func TestCircuitOpensAtExactRatio(t *testing.T) {
	c := NewCircuit(CircuitConfig{ErrorRatio: 0.5, MinRequests: 20})
	outcomes(t, c, ct0, 11, false)
	if trs := outcomes(t, c, ct0, 9, true); len(trs) != 0 {
		t.Fatal("opened at 9/20 = 0.45 < 0.5")
	}
	// 10/21 < 0.5; 11/22 = 0.5 opens.
	if trs := outcomes(t, c, ct0, 1, true); len(trs) != 0 {
		t.Fatal("opened at 10/21")
	}
	trs := outcomes(t, c, ct0, 1, true)
	if len(trs) != 1 {
		t.Fatalf("did not open at exactly 11/22: %v", c.Status(ct0))
	}
	tr := trs[0]
	if tr.Name != "circuit" || !tr.Tripped || tr.From != Closed || tr.To != Open ||
		tr.Value != 0.5 || tr.Threshold != 0.5 || !tr.At.Equal(ct0) || !strings.Contains(tr.Reason, "11 of 22") {
		t.Fatalf("transition %+v", tr)
	}
	st := c.Status(ct0)
	if st.State != Open || st.Opens != 1 || st.OpenFor != DefaultOpenFor || st.RetryIn != DefaultOpenFor || st.LastReason != tr.Reason {
		t.Fatalf("status %+v", st)
	}
	// Successes never open, even once the ratio is reached.
	c = NewCircuit(CircuitConfig{MinRequests: 4})
	outcomes(t, c, ct0, 3, true)
	if trs := outcomes(t, c, ct0, 3, false); len(trs) != 0 || c.State() != Closed {
		t.Fatal("a success opened the circuit")
	}
}

func TestCircuitWindowAgesOut(t *testing.T) {
	c := NewCircuit(CircuitConfig{MinRequests: 20, Window: 10 * s}) // 1 s buckets
	outcomes(t, c, at(0), 15, true)
	// 9.999 s later the failures still count...
	if st := c.Status(at(9*s + 999*time.Millisecond)); st.Failures != 15 {
		t.Fatalf("failures aged out early: %+v", st)
	}
	// ...10 s later their bucket has left the window.
	if st := c.Status(at(10 * s)); st.Requests != 0 {
		t.Fatalf("failures did not age out: %+v", st)
	}
	if trs := outcomes(t, c, at(10*s), 10, true); len(trs) != 0 || c.State() != Closed {
		t.Fatal("aged-out failures still counted towards opening")
	}
	// Within the window they add up across buckets.
	if trs := outcomes(t, c, at(15*s), 10, true); len(trs) != 1 {
		t.Fatalf("10+10 failures across buckets did not open: %+v", c.Status(at(15*s)))
	}
}

func TestCircuitOpenRejectsWithRetryIn(t *testing.T) {
	c := openCircuit(t, CircuitConfig{OpenFor: 60 * s})
	tk, ok, retry := c.Allow(at(10 * s))
	if ok || retry != 50*s || tk.Probe() {
		t.Fatalf("Allow in Open = %v %v %v, want rejected, 50s", tk, ok, retry)
	}
	if _, ok, retry := c.Allow(at(60*s - 1)); ok || retry != 1 {
		t.Fatalf("1ns before Half-Open: %v %v", ok, retry)
	}
	if st := c.Status(at(10 * s)); st.RetryIn != 50*s {
		t.Fatalf("status retry_in %v", st.RetryIn)
	}
	// A normal request admitted before opening reports late: counted, no change.
	if _, ch := done(c, at(11*s), normalTicket, true); ch || c.State() != Open {
		t.Fatal("late failure changed an Open circuit")
	}
}

func TestCircuitHalfOpenViaAllow(t *testing.T) {
	c := openCircuit(t, CircuitConfig{OpenFor: 60 * s})
	tk, ok, retry := c.Allow(at(60 * s))
	if !ok || retry != 0 || !tk.Probe() || c.State() != HalfOpen {
		t.Fatalf("Allow at openUntil = %+v %v %v, state %v", tk, ok, retry, c.State())
	}
	st := c.Status(at(60 * s))
	if st.State != HalfOpen || !st.Since.Equal(at(60*s)) || st.ProbesInFlight != 1 || st.Transitions != 2 {
		t.Fatalf("status %+v", st)
	}
	// Poll reports the move Allow made, once.
	tr, ch := c.Poll(at(61 * s))
	if !ch || tr.From != Open || tr.To != HalfOpen || !tr.At.Equal(at(60*s)) || !tr.Tripped {
		t.Fatalf("Poll after Allow's move = %+v %v", tr, ch)
	}
	if _, ch := c.Poll(at(62 * s)); ch {
		t.Fatal("Poll reported the same move twice")
	}
}

func TestCircuitHalfOpenViaPoll(t *testing.T) {
	c := openCircuit(t, CircuitConfig{OpenFor: 60 * s})
	if _, ch := c.Poll(at(60*s - 1)); ch || c.State() != Open {
		t.Fatal("Poll moved to Half-Open early")
	}
	tr, ch := c.Poll(at(60 * s))
	if !ch || tr.From != Open || tr.To != HalfOpen || c.State() != HalfOpen {
		t.Fatalf("Poll at openUntil = %+v %v", tr, ch)
	}
	if _, ch := c.Poll(at(60 * s)); ch {
		t.Fatal("second Poll reported again")
	}
	if _, ok, _ := c.Allow(at(60 * s)); !ok {
		t.Fatal("no probe admitted after Poll's move")
	}
}

// Allow and Poll racing for the Open → Half-Open move: exactly one wins and
// it is reported exactly once.
func TestCircuitHalfOpenRace(t *testing.T) {
	for range 50 {
		c := openCircuit(t, CircuitConfig{OpenFor: 60 * s, Probes: 2})
		before := c.Status(ct0).Transitions
		var reported, admitted atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range 8 {
			wg.Go(func() {
				<-start
				if i%2 == 0 {
					if _, ch := c.Poll(at(60 * s)); ch {
						reported.Add(1)
					}
				} else if _, ok, _ := c.Allow(at(60 * s)); ok {
					admitted.Add(1)
				}
			})
		}
		close(start)
		wg.Wait()
		if _, ch := c.Poll(at(60 * s)); ch {
			reported.Add(1)
		}
		if n := c.Status(ct0).Transitions - before; n != 1 {
			t.Fatalf("%d Open→Half-Open moves, want 1", n)
		}
		if reported.Load() != 1 || admitted.Load() != 2 {
			t.Fatalf("reported %d (want 1), admitted %d (want 2)", reported.Load(), admitted.Load())
		}
	}
}

func TestCircuitHalfOpenAdmitsExactlyProbes(t *testing.T) {
	c := openCircuit(t, CircuitConfig{OpenFor: 60 * s, Probes: 3, ProbeTimeout: 30 * s})
	var mu sync.Mutex
	slots := map[int32]bool{}
	var rejected atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range 50 {
		wg.Go(func() {
			<-start
			tk, ok, retry := c.Allow(at(60 * s))
			if !ok {
				rejected.Add(1)
				if retry != 30*s {
					t.Errorf("rejected probe retryIn = %v, want the lease 30s", retry)
				}
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if !tk.Probe() || slots[tk.slot] {
				t.Errorf("bad or duplicate probe ticket %+v", tk)
			}
			slots[tk.slot] = true
		})
	}
	close(start)
	wg.Wait()
	if len(slots) != 3 || rejected.Load() != 47 {
		t.Fatalf("admitted %d probes (want 3), rejected %d", len(slots), rejected.Load())
	}
	if st := c.Status(at(70 * s)); st.ProbesInFlight != 3 {
		t.Fatalf("probes in flight %d", st.ProbesInFlight)
	}
	// Later, retryIn counts down to the earliest lease expiry.
	if _, ok, retry := c.Allow(at(80 * s)); ok || retry != 10*s {
		t.Fatalf("Allow at +20s = %v %v, want rejected, 10s", ok, retry)
	}
}

func TestCircuitProbeSuccessCloses(t *testing.T) {
	c := openCircuit(t, CircuitConfig{OpenFor: 60 * s, Probes: 2})
	a, _, _ := c.Allow(at(60 * s))
	b, _, _ := c.Allow(at(60 * s))
	if _, ok, _ := c.Allow(at(60 * s)); ok || !a.Probe() || !b.Probe() {
		t.Fatal("setup: want two probes and no third")
	}
	if _, ch := done(c, at(61*s), a, false); ch || c.State() != HalfOpen {
		t.Fatal("closed after 1 of 2 probe successes")
	}
	// The freed slot admits another probe meanwhile.
	d, ok, _ := c.Allow(at(61 * s))
	if !ok || !d.Probe() {
		t.Fatal("freed probe slot not reusable")
	}
	tr, ch := done(c, at(62*s), b, false)
	if !ch || tr.From != HalfOpen || tr.To != Closed || tr.Tripped || c.State() != Closed {
		t.Fatalf("second success = %+v %v", tr, ch)
	}
	st := c.Status(at(62 * s))
	if st.Requests != 0 || st.OpenFor != 60*s || st.ProbesInFlight != 0 {
		t.Fatalf("closed status %+v: want window cleared, backoff reset", st)
	}
	// The straggler's result belongs to a finished episode.
	if _, ch := done(c, at(63*s), d, true); ch || c.State() != Closed {
		t.Fatal("a probe from a closed episode changed the state")
	}
	if _, ok, _ := c.Allow(at(63 * s)); !ok {
		t.Fatal("Closed rejected")
	}
}

func TestCircuitProbeFailureBacksOff(t *testing.T) {
	c := openCircuit(t, CircuitConfig{OpenFor: 10 * s, MaxOpenFor: 30 * s})
	now := time.Duration(10 * s) // Half-Open is due
	for i, want := range []time.Duration{20 * s, 30 * s, 30 * s} {
		tk, ok, _ := c.Allow(at(now))
		if !ok || !tk.Probe() {
			t.Fatalf("round %d: no probe at %v", i, now)
		}
		tr, ch := done(c, at(now), tk, true)
		if !ch || tr.From != HalfOpen || tr.To != Open {
			t.Fatalf("round %d: probe failure = %+v %v", i, tr, ch)
		}
		st := c.Status(at(now))
		if st.OpenFor != want || st.RetryIn != want || st.Opens != uint64(i+2) {
			t.Fatalf("round %d: status %+v, want open for %v", i, st, want)
		}
		if _, ok, retry := c.Allow(at(now + want - 1)); ok || retry != 1 {
			t.Fatalf("round %d: still open 1ns before: %v %v", i, ok, retry)
		}
		now += want
	}
	// Success resets the backoff: the next open lasts OpenFor again.
	tk, _, _ := c.Allow(at(now))
	if _, ch := done(c, at(now), tk, false); !ch || c.State() != Closed {
		t.Fatal("probe success did not close")
	}
	outcomes(t, c, at(now), 4, true)
	if st := c.Status(at(now)); st.State != Open || st.RetryIn != 10*s {
		t.Fatalf("after close, reopen %+v: want 10s", st)
	}
}

func TestCircuitDefaultMaxOpenFor(t *testing.T) {
	c := openCircuit(t, CircuitConfig{OpenFor: s})
	if c.Config().MaxOpenFor != 16*s {
		t.Fatalf("default MaxOpenFor %v", c.Config().MaxOpenFor)
	}
	now := time.Second
	var last time.Duration
	for range 8 {
		tk, _, _ := c.Allow(at(now))
		done(c, at(now), tk, true)
		last = c.Status(at(now)).OpenFor
		now += last
	}
	if last != 16*time.Second {
		t.Fatalf("backoff capped at %v, want 16s", last)
	}
}

func TestCircuitProbeTimeout(t *testing.T) {
	c := openCircuit(t, CircuitConfig{OpenFor: 60 * s, ProbeTimeout: 30 * s})
	a, ok, _ := c.Allow(at(60 * s)) // never completes in time
	if !ok {
		t.Fatal("setup")
	}
	if _, ok, retry := c.Allow(at(90*s - 1)); ok || retry != 1 {
		t.Fatalf("before lease expiry: %v %v", ok, retry)
	}
	if st := c.Status(at(90 * s)); st.ProbesInFlight != 0 {
		t.Fatalf("expired lease counted in flight: %+v", st)
	}
	b, ok, _ := c.Allow(at(90 * s))
	if !ok || !b.Probe() || b.slot != a.slot {
		t.Fatalf("lease expired but no new probe: %+v %v", b, ok)
	}
	// The first probe's late failure is ignored.
	if _, ch := done(c, at(91*s), a, true); ch || c.State() != HalfOpen {
		t.Fatal("late result of an expired probe acted")
	}
	if tr, ch := done(c, at(92*s), b, false); !ch || tr.To != Closed {
		t.Fatal("the current probe's success did not close")
	}
	// An expired lease whose slot was not reassigned still reports.
	c = openCircuit(t, CircuitConfig{OpenFor: 60 * s, ProbeTimeout: 30 * s})
	a, _, _ = c.Allow(at(60 * s))
	if tr, ch := done(c, at(200*s), a, true); !ch || tr.To != Open {
		t.Fatal("an expired but unreassigned probe's result was dropped")
	}
}

func TestCircuitReset(t *testing.T) {
	c := openCircuit(t, CircuitConfig{OpenFor: 10 * s})
	tk, _, _ := c.Allow(at(10 * s))
	done(c, at(10*s), tk, true) // backoff 20s
	p, _, _ := c.Allow(at(30 * s))
	c.Reset(at(31 * s))
	st := c.Status(at(31 * s))
	if st.State != Closed || st.Requests != 0 || st.OpenFor != 10*s || st.LastReason != "reset" || !st.Since.Equal(at(31*s)) {
		t.Fatalf("after Reset %+v", st)
	}
	if _, ch := done(c, at(32*s), p, true); ch || c.State() != Closed {
		t.Fatal("a probe from before Reset acted")
	}
	outcomes(t, c, at(33*s), 4, true)
	if st := c.Status(at(33 * s)); st.RetryIn != 10*s {
		t.Fatalf("backoff after Reset %v", st.RetryIn)
	}
}

func TestCircuitZeroTicketIgnored(t *testing.T) {
	c := openCircuit(t, CircuitConfig{OpenFor: 10 * s})
	c.Allow(at(10 * s))
	if _, ch := done(c, at(10*s), Ticket{}, true); ch || c.State() != HalfOpen {
		t.Fatal("zero Ticket acted")
	}
}

// Synthetic wall times (no monotonic reading) before epoch work too.
func TestCircuitSyntheticTime(t *testing.T) {
	t0 := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewCircuit(CircuitConfig{MinRequests: 4, Window: 10 * s, OpenFor: 5 * s})
	for i := range 4 {
		tk, _, _ := c.Allow(t0)
		if _, ch := done(c, t0.Add(time.Duration(i)*time.Millisecond), tk, true); ch != (i == 3) {
			t.Fatalf("request %d: changed=%v", i, ch)
		}
	}
	if _, ok, retry := c.Allow(t0.Add(2 * s)); ok || retry != 3*s+3*time.Millisecond {
		t.Fatalf("open: %v %v", ok, retry)
	}
	tk, ok, _ := c.Allow(t0.Add(6 * s))
	if !ok {
		t.Fatal("no probe")
	}
	if tr, ch := done(c, t0.Add(6*s), tk, false); !ch || tr.To != Closed {
		t.Fatal("did not close")
	}
}

func TestCircuitStatusJSON(t *testing.T) {
	c := openCircuit(t, CircuitConfig{})
	b, err := json.Marshal(c.Status(ct0))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{`"state":"open"`, `"opens":1`, `"window_requests":4`, `"window_failures":4`, `"window_ratio":1`, `"retry_in_s":60`, `"open_for_s":60`, `"since":"`} {
		if !strings.Contains(string(b), k) {
			t.Errorf("%s lacks %s", b, k)
		}
	}
	for st, want := range map[State]string{Closed: "closed", Open: "open", HalfOpen: "half-open", 7: "State(7)"} {
		if st.String() != want {
			t.Errorf("%d.String() = %q", st, st.String())
		}
	}
}

func TestCircuitConfig(t *testing.T) {
	got := NewCircuit(CircuitConfig{}).Config()
	want := CircuitConfig{ErrorRatio: 0.5, MinRequests: 20, Window: 30 * s, OpenFor: 60 * s,
		MaxOpenFor: 16 * 60 * s, Probes: 1, ProbeTimeout: 30 * s}
	if got != want {
		t.Fatalf("defaults %+v\nwant %+v", got, want)
	}
	if err := (CircuitConfig{}).Validate(); err != nil {
		t.Fatal(err)
	}
	bad := CircuitConfig{ErrorRatio: 2, MinRequests: -1, Window: -s, OpenFor: -s, Probes: MaxProbes + 1, ProbeTimeout: -s}
	err := bad.Validate()
	if err == nil {
		t.Fatal("bad config validated")
	}
	for _, k := range []string{"error_ratio", "min_requests", "window", "open_for", "probes", "probe_timeout"} {
		if !strings.Contains(err.Error(), k) {
			t.Errorf("%q does not name %s", err, k)
		}
	}
	if err := (CircuitConfig{OpenFor: 10 * s, MaxOpenFor: 5 * s}).Validate(); err == nil || !strings.Contains(err.Error(), "max_open_for") {
		t.Errorf("MaxOpenFor < OpenFor: %v", err)
	}
	if err := (CircuitConfig{ErrorRatio: math.NaN()}).Validate(); err == nil {
		t.Error("NaN ratio validated")
	}
	// NewCircuit survives bad input.
	if got := NewCircuit(bad).Config(); got.ErrorRatio != 0.5 || got.Probes != 1 || got.Window != 30*s {
		t.Fatalf("bad config normalised to %+v", got)
	}
	if got := NewCircuit(CircuitConfig{OpenFor: 10 * s, MaxOpenFor: 5 * s}).Config(); got.MaxOpenFor != 10*s {
		t.Fatalf("MaxOpenFor below OpenFor normalised to %v", got.MaxOpenFor)
	}
}

func TestCircuitClosedSuccessAllocs(t *testing.T) {
	c := NewCircuit(CircuitConfig{})
	now := ct0
	if n := testing.AllocsPerRun(1000, func() {
		tk, _, _ := c.Allow(now)
		done(c, now, tk, false)
		now = now.Add(time.Millisecond)
	}); n != 0 {
		t.Fatalf("Closed + success allocates %v times", n)
	}
}

// Many goroutines hammer one circuit on a shared synthetic clock. With one
// probe and leases longer than the run, at most one probe is ever in flight.
func TestCircuitStress(t *testing.T) {
	for _, probes := range []int{1, 3} {
		c := NewCircuit(CircuitConfig{MinRequests: 10, Window: s, OpenFor: config.Duration(20 * time.Millisecond),
			MaxOpenFor: config.Duration(100 * time.Millisecond), Probes: probes, ProbeTimeout: config.Duration(time.Hour)})
		var clock atomic.Int64 // µs after ct0
		var inFlight, maxInFlight, probesGranted atomic.Int64
		var wg sync.WaitGroup
		for g := range 16 {
			wg.Go(func() {
				r := rand.New(rand.NewPCG(uint64(g), 99))
				for range 3000 {
					now := at(time.Duration(clock.Add(7)) * time.Microsecond)
					tk, ok, retry := c.Allow(now)
					if st := c.State(); st != Closed && st != Open && st != HalfOpen {
						t.Errorf("invalid state %d", st)
						return
					}
					if retry < 0 || (ok && retry != 0) {
						t.Errorf("Allow = %v, %v", ok, retry)
						return
					}
					if !ok {
						continue
					}
					if tk.Probe() {
						if tk.slot < 0 || int(tk.slot) >= probes {
							t.Errorf("probe slot %d out of range", tk.slot)
							return
						}
						probesGranted.Add(1)
						n := inFlight.Add(1)
						for m := maxInFlight.Load(); n > m && !maxInFlight.CompareAndSwap(m, n); m = maxInFlight.Load() {
						}
						runtime.Gosched() // let others try to probe meanwhile
						inFlight.Add(-1)
					}
					done(c, now, tk, r.IntN(100) < 60)
					if st := c.Status(now); st.ProbesInFlight > probes || st.Ratio < 0 || st.Ratio > 1 || st.RetryIn < 0 {
						t.Errorf("status %+v", st)
						return
					}
				}
			})
		}
		wg.Wait()
		if probes == 1 && maxInFlight.Load() > 1 {
			t.Errorf("%d probes in flight at once, want <= 1", maxInFlight.Load())
		}
		st := c.Status(at(time.Duration(clock.Load()) * time.Microsecond))
		if st.Opens < 2 || probesGranted.Load() == 0 {
			t.Errorf("probes=%d: the run exercised too little: %+v, %d probes", probes, st, probesGranted.Load())
		}
		// Liveness: after the storm, time and successful probes close it.
		now := at(time.Duration(clock.Load())*time.Microsecond + time.Second)
		for range probes * 2 {
			if c.State() == Closed {
				break
			}
			if tk, ok, _ := c.Allow(now); ok {
				done(c, now, tk, false)
			}
		}
		if c.State() != Closed {
			t.Fatalf("probes=%d: stuck in %v after the storm: %+v", probes, c.State(), c.Status(now))
		}
	}
}

func BenchmarkCircuitClosedSuccess(b *testing.B) {
	c := NewCircuit(CircuitConfig{})
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		tk, _, _ := c.Allow(now)
		done(c, now, tk, false)
	}
}

func BenchmarkCircuitClosedSuccessParallel(b *testing.B) {
	c := NewCircuit(CircuitConfig{})
	now := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tk, _, _ := c.Allow(now)
			done(c, now, tk, false)
		}
	})
}

func BenchmarkLevelTripped(b *testing.B) {
	l := NewHysteresis("qps", HysteresisConfig{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_ = l.Tripped()
		}
	})
}

func TestCircuitCancelFreesProbeWithoutOutcome(t *testing.T) {
	now := time.Unix(1000, 0)
	c := NewCircuit(CircuitConfig{MinRequests: 1, ErrorRatio: 0.5, OpenFor: s, Probes: 1})
	tk, _, _ := c.Allow(now)
	done(c, now, tk, true)
	now = now.Add(time.Second)
	probe, ok, _ := c.Allow(now)
	if !ok || !probe.Probe() {
		t.Fatalf("no probe granted at Half-Open")
	}
	if _, ok, _ := c.Allow(now); ok {
		t.Fatal("a second probe while the first is out")
	}
	c.Cancel(probe)
	if c.State() != HalfOpen {
		t.Fatalf("cancel changed the state to %v", c.State())
	}
	next, ok, _ := c.Allow(now)
	if !ok || !next.Probe() {
		t.Fatal("the cancelled probe's slot was not freed")
	}
	c.Cancel(Ticket{slot: -1}) // a normal ticket: nothing to do
	if tr, ok := done(c, now, next, false); !ok || tr.To != Closed {
		t.Fatalf("probe success after a cancel: %+v %v", tr, ok)
	}
}

// Done with the request path's integer time counts a success in the
// window on the shard given, and closes a Half-Open circuit through its
// probes, stamping the transition with that time.
func TestCircuitDoneCountsAndCloses(t *testing.T) {
	c := NewCircuit(CircuitConfig{Window: 10 * s, MinRequests: 4})
	for i := range 3 {
		tk, _, _ := c.Allow(at(time.Duration(i) * s))
		if tr := c.Done(Mono(at(time.Duration(i)*s)), tk, false, uint32(i)); tr != nil {
			t.Fatalf("a success changed the state: %+v", tr)
		}
	}
	if st := c.Status(at(3 * s)); st.Requests != 3 || st.Failures != 0 {
		t.Fatalf("window after 3 successes: %+v", st)
	}

	c = openCircuit(t, CircuitConfig{OpenFor: 60 * s, Probes: 1})
	probe, ok, _ := c.Allow(at(60 * s))
	if !ok || !probe.Probe() {
		t.Fatal("setup: no probe after open_for")
	}
	tr := c.Done(Mono(at(61*s)), probe, false, 0)
	if tr == nil || tr.From != HalfOpen || tr.To != Closed || c.State() != Closed {
		t.Fatalf("a probe's success through Done: %+v, state %v", tr, c.State())
	}
	if !tr.At.Equal(at(61 * s)) {
		t.Fatalf("transition at %v, want %v", tr.At, at(61*s))
	}
}

// done is Done at now, with the transition as a value and a flag.
func done(c *Circuit, now time.Time, t Ticket, failed bool) (Transition, bool) {
	if tr := c.Done(Mono(now), t, failed, 0); tr != nil {
		return *tr, true
	}
	return Transition{}, false
}

// A lease is stamped with its exact expiry, and a stale clock cannot make a
// new lease on a slot repeat an older one's stamp: the expired probe's late
// result stays ignored after its slot was taken, freed and taken again by a
// caller whose clock lags.
func TestCircuitStaleClockKeepsLeasesApart(t *testing.T) {
	c := openCircuit(t, CircuitConfig{OpenFor: 60 * s, Probes: 1, ProbeTimeout: 30 * s})
	a, ok, _ := c.Allow(at(60 * s))
	if !ok || a.lease != Mono(at(90*s)) {
		t.Fatalf("lease %v, want its expiry %v", a.lease, Mono(at(90*s)))
	}
	b, ok, _ := c.Allow(at(91 * s)) // a's lease expired
	if !ok || b.slot != a.slot {
		t.Fatal("setup: expired slot not reassigned")
	}
	c.Cancel(b)
	stale, ok, _ := c.Allow(at(60 * s)) // this caller read the clock 31 s ago
	if !ok || stale.lease == a.lease || stale.lease <= b.lease {
		t.Fatalf("stale lease %v repeats or precedes a %v / b %v", stale.lease, a.lease, b.lease)
	}
	if _, ch := done(c, at(92*s), a, true); ch || c.State() != HalfOpen {
		t.Fatal("the expired probe's late failure acted on a later lease")
	}
}

// A probe ticket from an earlier Half-Open episode never acts on a later
// one, even where the later episode's lease on the same slot carries the
// same stamp.
func TestCircuitEarlierEpisodeTicketIgnored(t *testing.T) {
	c := openCircuit(t, CircuitConfig{OpenFor: 60 * s, Probes: 2, ProbeTimeout: 30 * s})
	old, _, _ := c.Allow(at(60 * s))
	c.Reset(at(60 * s))
	outcomes(t, c, at(60*s), 4, true) // reopens for 60 s
	c.Poll(at(120 * s))
	if c.State() != HalfOpen {
		t.Fatalf("setup: state %v", c.State())
	}
	// Forge the collision a clock that lags by the whole episode would make.
	cur := c.ph.Load()
	cur.probes[old.slot].Store(old.lease)
	if _, ch := done(c, at(121*s), old, true); ch || c.State() != HalfOpen {
		t.Fatal("a ticket of an earlier episode acted on this one")
	}
	c.Cancel(old)
	if v := cur.probes[old.slot].Load(); v != old.lease {
		t.Fatalf("an earlier episode's cancel freed this episode's slot: %v", v)
	}
}
