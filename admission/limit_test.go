package admission

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

// upstream is a model of an LLM server with slots batch slots and a FIFO
// queue: with inflight requests, those beyond the slots wait for one, each
// place in the queue costing service/slots, before a prefill.
type upstream struct {
	slots   int
	prefill time.Duration
	service time.Duration
}

func (u upstream) ttfb(inflight int) time.Duration {
	queued := max(0, inflight-u.slots)
	return u.prefill + time.Duration(queued)*u.service/time.Duration(u.slots)
}

// saturate runs steps of 250 ms with more demand than the limit (every
// slot taken, requests waiting) and returns the limits seen.
func saturate(l *Limit, u upstream, now *time.Time, steps int) []int {
	var seen []int
	for range steps {
		*now = now.Add(250 * time.Millisecond)
		n := l.Value()
		seen = append(seen, l.Step(Signal{Now: *now, TTFB: 5 * u.ttfb(n), Count: 5, InFlight: int64(n), Waiting: true}))
	}
	return seen
}

// steps runs n steps of 250 ms with the same signal and returns the last
// limit.
func steps(l *Limit, now *time.Time, n int, s Signal) int {
	v := l.Value()
	for range n {
		*now = now.Add(250 * time.Millisecond)
		s.Now = *now
		v = l.Step(s)
	}
	return v
}

func span(v []int) (lo, hi int) {
	lo, hi = math.MaxInt, 0
	for _, x := range v {
		lo, hi = min(lo, x), max(hi, x)
	}
	return lo, hi
}

// From a cold start the limit climbs to the upstream's slots within a
// couple of seconds and then holds just above them: the slots full, a
// queue of one or two inside the server. When the server loses half its
// slots the limit follows down; when they come back, up.
func TestLimitConvergesUpAndDown(t *testing.T) {
	l := NewLimit(Config{})
	now := time.Unix(0, 0)
	u := upstream{slots: 8, prefill: 40 * time.Millisecond, service: 750 * time.Millisecond}

	first := saturate(l, u, &now, 8) // two seconds
	if first[len(first)-1] < u.slots {
		t.Fatalf("cold start: limit %v after 2 s, below the %d slots", first, u.slots)
	}
	lo, hi := span(saturate(l, u, &now, 120)[40:])
	if lo < u.slots || hi > u.slots+3 {
		t.Fatalf("saturated at 8 slots: limit within [%d, %d], want within [8, 11]", lo, hi)
	}

	u.slots = 4
	lo, hi = span(saturate(l, u, &now, 120)[40:])
	if lo < 4 || hi > 6 {
		t.Fatalf("after a drop to 4 slots: limit within [%d, %d], want within [4, 6]", lo, hi)
	}

	u.slots = 16
	lo, hi = span(saturate(l, u, &now, 240)[160:])
	if lo < 16 || hi > 20 {
		t.Fatalf("after a rise to 16 slots: limit within [%d, %d], want within [16, 20]", lo, hi)
	}
}

// A limit its traffic does not come near does not grow: not under a
// light load, nor with three quarters of its slots taken and none found
// full (Gradient2 grows from half its slots taken: with a load that rises
// slowly the limit stays twice what it uses, and when the load arrives
// with long answers the upstream is flooded); within √limit of it, it
// does.
func TestLimitUnusedDoesNotGrow(t *testing.T) {
	l := NewLimit(Config{Initial: 20})
	now := time.Unix(0, 0)
	steps(l, &now, 400, Signal{TTFB: 5 * 40 * time.Millisecond, Count: 5, InFlight: 3})
	if v := l.Value(); v != 20 {
		t.Fatalf("limit %d after 100 s of light load, want 20", v)
	}
	if d := l.Status().Driver; d != "limit unused" {
		t.Fatalf("driver %q", d)
	}
	steps(l, &now, 40, Signal{TTFB: 5 * 40 * time.Millisecond, Count: 5, InFlight: 15})
	if v := l.Value(); v != 20 {
		t.Fatalf("limit %d after 10 s with 15 of 20 slots taken and none found full, want 20", v)
	}
	if v := steps(l, &now, 1, Signal{TTFB: 5 * 40 * time.Millisecond, Count: 5, InFlight: 16}); v <= 20 {
		t.Fatalf("limit %d with 16 of 20 slots taken (within √20), want it probing up", v)
	}
}

// An upstream that answers within the clock's step gives first bytes of
// 0: the limit still probes up when used, and its status stays a number
// (a NaN gradient made the status unencodable as JSON).
func TestLimitWithFirstBytesOfZero(t *testing.T) {
	l := NewLimit(Config{Initial: 20})
	now := time.Unix(0, 0)
	if v := steps(l, &now, 8, Signal{Count: 5, InFlight: 20, Waiting: true}); v <= 20 {
		t.Fatalf("limit %d, want it to grow from 20", v)
	}
	st := l.Status()
	if st.Gradient != 1 || st.ShortS != 0 || st.LongS != 0 {
		t.Fatalf("status %+v", st)
	}
	if _, err := json.Marshal(st); err != nil {
		t.Fatal(err)
	}
}

// First bytes that come later under load, but steadily (continuous
// batching at 90% load), do not drive the limit down for good: the
// long-run average takes them as the norm.
func TestLimitTakesASteadyRiseAsTheNorm(t *testing.T) {
	l := NewLimit(Config{Initial: 16})
	now := time.Unix(0, 0)
	step := func(ttfb time.Duration) int {
		now = now.Add(250 * time.Millisecond)
		return l.Step(Signal{Now: now, TTFB: 5 * ttfb, Count: 5, InFlight: 12})
	}
	for range 20 {
		step(20 * time.Millisecond) // idle floor
	}
	// A rise within the tolerance never shrinks it.
	for range 200 {
		if v := step(38 * time.Millisecond); v < 16 {
			t.Fatalf("limit %d at 1.9× the floor", v)
		}
	}
}

// Pressure from a level cuts the limit by a tenth a step, even while first
// bytes come fast, down to half what it was; once it is gone, the limit
// climbs back as from a cold start (by half a step).
func TestLimitPressureCuts(t *testing.T) {
	l := NewLimit(Config{Initial: 100})
	now := time.Unix(0, 0)
	step := func(n int, s Signal) { steps(l, &now, n, s) }
	step(5, Signal{TTFB: 5 * 40 * time.Millisecond, Count: 5, InFlight: 100, Pressure: true})
	if v := l.Value(); v != 59 { // 100 × 0.9⁵
		t.Fatalf("limit %d after 5 steps of pressure, want 59", v)
	}
	step(20, Signal{TTFB: 5 * 40 * time.Millisecond, Count: 5, InFlight: 59, Pressure: true})
	if v := l.Value(); v != 50 {
		t.Fatalf("limit %d after 25 steps of pressure, want half of 100", v)
	}
	step(1, Signal{TTFB: 5 * 40 * time.Millisecond, Count: 5, InFlight: 50, Waiting: true})
	if v, d := l.Value(), l.Status().Driver; v != 75 || d != "slow start" {
		t.Fatalf("after the pressure: limit %d, driver %q; want 50 × 1.5 by slow start", v, d)
	}
}

// Fewer first bytes than a judgement needs are carried to the next step;
// a second's worth is judged whatever its count.
func TestLimitCarriesThinSteps(t *testing.T) {
	l := NewLimit(Config{Initial: 10})
	now := time.Unix(0, 0)
	for range 3 {
		now = now.Add(250 * time.Millisecond)
		l.Step(Signal{Now: now, TTFB: 40 * time.Millisecond, Count: 1, InFlight: 10, Waiting: true})
	}
	if s := l.Status(); s.ShortS != 0 {
		t.Fatalf("judged after 3 samples: %+v", s)
	}
	now = now.Add(250 * time.Millisecond)
	l.Step(Signal{Now: now, TTFB: 80 * time.Millisecond, Count: 1, InFlight: 10, Waiting: true})
	if s := l.Status(); s.ShortS != 0.05 {
		t.Fatalf("short %v, want the mean of the four, 0.05", s.ShortS)
	}
}

func TestLimitFixedAndBounds(t *testing.T) {
	l := NewLimit(Config{Limit: 7})
	now := time.Unix(0, 0)
	u := upstream{slots: 2, prefill: 40 * time.Millisecond, service: time.Second}
	if lo, hi := span(saturate(l, u, &now, 40)); lo != 7 || hi != 7 {
		t.Fatalf("fixed limit moved: [%d, %d]", lo, hi)
	}
	// Fixed, it still reports the step's first bytes.
	l.Step(Signal{Now: now, TTFB: 90 * time.Millisecond, Count: 3})
	if s := l.Status(); s.ShortS != 0.03 || s.Limit != 7 || !s.Fixed {
		t.Fatalf("fixed limit's status %+v, want first bytes of 0.03 s at 7", s)
	}
	l.SetConfig(Config{Min: 3, Max: 5})
	lo, hi := span(saturate(l, upstream{slots: 100, prefill: time.Millisecond, service: time.Second}, &now, 100))
	if lo < 3 || hi > 5 {
		t.Fatalf("limit within [%d, %d], bounds [3, 5]", lo, hi)
	}
	if err := (Config{Min: 6, Max: 5}).Validate(); err == nil || err.Error() != "concurrency: min 6 must not exceed max 5" {
		t.Fatalf("Validate: %v", err)
	}
	if err := (Config{Queue: -1}).Validate(); err == nil || err.Error() != "concurrency: queue must not be negative, got -1" {
		t.Fatalf("Validate: %v", err)
	}
	if err := (Config{WeighBody: -5}).Validate(); err == nil || err.Error() != "concurrency: weigh_body must be a size in bytes, or -1 (off), got -5" {
		t.Fatalf("Validate: %v", err)
	}
}

// server is a model of a streaming LLM server with long answers: slots
// batch slots, each answer holding its slot for prefill + hold, the first
// byte after the prefill; requests beyond the slots wait in its FIFO, and
// their first bytes come only when a slot frees, many seconds late.
type server struct {
	slots          int
	prefill, hold  time.Duration
	running        []time.Time // the ends of the answers in a slot
	firstBytes     []time.Time // first bytes to come
	started, ended uint64
	answered       uint64
	ttfbSum        time.Duration
	ttfbCount      uint64
	admittedAt     []time.Time // FIFO of the queued requests' admissions
}

// tick advances the server to now: answers end, queued requests take the
// freed slots, first bytes come.
func (s *server) tick(now time.Time) {
	var n uint64
	s.running, n = past(s.running, now)
	s.ended += n
	for len(s.running) < s.slots && len(s.admittedAt) > 0 {
		at := s.admittedAt[0]
		s.admittedAt = s.admittedAt[1:]
		s.running = append(s.running, now.Add(s.prefill+s.hold))
		s.firstBytes = append(s.firstBytes, now.Add(s.prefill))
		s.ttfbSum += now.Add(s.prefill).Sub(at)
		s.ttfbCount++
	}
	s.firstBytes, n = past(s.firstBytes, now)
	s.answered += n
}

// past drops the instants of ts that are not after now, in place, and
// counts them.
func past(ts []time.Time, now time.Time) (kept []time.Time, n uint64) {
	kept = ts[:0]
	for _, at := range ts {
		if at.After(now) {
			kept = append(kept, at)
		} else {
			n++
		}
	}
	return kept, n
}

func (s *server) admit(now time.Time) {
	s.started++
	s.admittedAt = append(s.admittedAt, now)
}

func (s *server) inflight() int64 { return int64(s.started - s.ended) }

// With answers that hold a slot for 12 s, a first byte is the late news
// of a queue: the requests stuck waiting for one say it first. The limit
// comes down to what the server serves within a step or two of a
// request's getting stuck, and once the cold start's overshoot (one
// growth step too many, 12 s to drain) is gone, the server's own queue stays
// within one or two, where first bytes alone let it grow with every probe.
func TestLimitSeesRequestsStuckBeforeTheirFirstByte(t *testing.T) {
	for _, tc := range []struct {
		name  string
		stuck bool // report Started and Answered
	}{{"first bytes only", false}, {"stuck requests seen", true}} {
		t.Run(tc.name, func(t *testing.T) {
			l := NewLimit(Config{})
			srv := &server{slots: 8, prefill: 40 * time.Millisecond, hold: 12 * time.Second}
			now := time.Unix(0, 0)
			var lastSum time.Duration
			var lastCount uint64
			worst := 0
			for i := 1; i <= 6000; i++ { // 60 s in 10 ms ticks, more demand than any limit
				now = now.Add(10 * time.Millisecond)
				for srv.inflight() < int64(l.Value()) {
					srv.admit(now)
				}
				srv.tick(now)
				if i > 1500 { // after the cold start's overshoot has drained
					worst = max(worst, len(srv.admittedAt)) // the server's own queue
				}
				if i%25 == 0 {
					sig := Signal{Now: now, TTFB: srv.ttfbSum - lastSum, Count: srv.ttfbCount - lastCount,
						InFlight: srv.inflight(), Waiting: true}
					if tc.stuck {
						sig.Started, sig.Answered = srv.started, srv.answered
					}
					lastSum, lastCount = srv.ttfbSum, srv.ttfbCount
					l.Step(sig)
				}
			}
			t.Logf("server queue after 15 s: at most %d; limit %d", worst, l.Value())
			if !tc.stuck {
				if worst < 4 {
					t.Fatalf("first bytes alone kept the server's queue within %d: the model does not show the late news", worst)
				}
				return
			}
			if worst > 2 {
				t.Fatalf("the server's queue reached %d after the first 15 s, want at most 2 (limit now %d, %+v)", worst, l.Value(), l.Status())
			}
			if v := l.Value(); v < srv.slots || v > srv.slots+2 {
				t.Fatalf("limit %d, want within [%d, %d]: the slots kept full", v, srv.slots, srv.slots+2)
			}
		})
	}
}

// An upstream that sends its answers whole gives no first byte before the
// end: a long wait for one is a long answer, not a queue, and cuts
// nothing.
func TestLimitIgnoresWaitsWhenAnswersComeWhole(t *testing.T) {
	l := NewLimit(Config{Initial: 10})
	now := time.Unix(0, 0)
	var started, answered uint64
	for range 80 {
		now = now.Add(250 * time.Millisecond)
		started += 2
		answered += 2
		// 10 in flight, every one still without its first byte; 2 answered a step
		l.Step(Signal{Now: now, TTFB: 2 * 50 * time.Millisecond, Count: 2, InFlight: 10, Waiting: true,
			Started: started + 10, Answered: answered})
	}
	if v, d := l.Value(), l.Status().Driver; v < 10 || strings.Contains(d, "first byte:") {
		t.Fatalf("limit %d, driver %q: whole answers read as a queue", v, d)
	}
}

// What the upstream served when requests got stuck is its capacity: for
// probeHold the limit does not probe above it, however fast first bytes
// come (a probe would cost a request seconds in the upstream's queue),
// and after that it probes again, to find capacity that came back; the
// capacity measured stands until more are served at once.
func TestLimitHoldsProbesAtTheMeasuredCapacity(t *testing.T) {
	l := NewLimit(Config{Initial: 10})
	now := time.Unix(0, 0)
	steps(l, &now, 40, Signal{TTFB: 5 * 40 * time.Millisecond, Count: 5, InFlight: 3}) // the long-run average learns 40 ms
	started := uint64(1000)
	// 10 in flight, 2 of them without a first byte for 2 s
	steps(l, &now, 8, Signal{TTFB: 5 * 40 * time.Millisecond, Count: 5, InFlight: 10, Waiting: true,
		Started: started, Answered: started - 2})
	if v := l.Value(); v != 8 {
		t.Fatalf("limit %d with 2 of 10 stuck, want the 8 served (%+v)", v, l.Status())
	}
	// One answer ends and a stuck request takes its slot: 9 in flight, 2
	// still without a first byte, 8 served all along.
	if v := steps(l, &now, 2, Signal{TTFB: 5 * 40 * time.Millisecond, Count: 5, InFlight: 9, Waiting: true,
		Started: started + 1, Answered: started - 2}); v != 8 {
		t.Fatalf("limit %d when a stuck request takes a freed slot, want 8 still (%+v)", v, l.Status())
	}
	served := Signal{TTFB: 5 * 40 * time.Millisecond, Count: 5, InFlight: 8, Waiting: true,
		Started: started + 100, Answered: started + 100}
	held := int((probeHold - time.Second) / (250 * time.Millisecond))
	if v, d := steps(l, &now, held, served), l.Status().Driver; v != 8 || !strings.HasPrefix(d, "probing held at 8") {
		t.Fatalf("limit %d, driver %q within the hold, want 8, held", v, d)
	}
	if m := l.Status().Measured; m != 8 {
		t.Fatalf("measured %d within the hold, want 8", m)
	}
	// After the hold, traffic within √limit of it but nobody finding it
	// full: below the measured capacity that is use, at it a probe that
	// nobody asked for.
	near := served
	near.Waiting = false
	if v := steps(l, &now, 8, near); v != 8 {
		t.Fatalf("limit %d after the hold, 8 in flight, nobody finding the limit full: want 8 (no probe unasked)", v)
	}
	if v := steps(l, &now, 8, served); v <= 8 || l.Status().Measured != 8 || l.Serving() != 8 {
		t.Fatalf("limit %d, measured %d, serving %d after the hold, want it probing up again, 8 measured and serving still", v, l.Status().Measured, l.Serving())
	}
	// The probes served at once: 10 in flight, each with its first byte.
	more := served
	more.InFlight, more.Started, more.Answered = 10, started+200, started+200
	// One step of it can be an answer finished upstream and not yet
	// released here, its slot already serving the next: not capacity.
	if steps(l, &now, 1, more); l.Status().Measured != 8 {
		t.Fatalf("10 served at once for one step: measured %d, want 8 still", l.Status().Measured)
	}
	back := served
	back.Started, back.Answered = started+300, started+300
	steps(l, &now, 1, back)
	more.Started, more.Answered = started+400, started+400
	eleven := more
	eleven.InFlight = 11
	steps(l, &now, 1, eleven)
	if steps(l, &now, 3, more); l.Status().Measured != 8 {
		t.Fatalf("10 served at once for a step, 8 for one, then 11 and 10 for four: measured %d, want 8 still (not a second running)", l.Status().Measured)
	}
	// A second of it running is capacity that came back: the fewest
	// served in that second, 10.
	if steps(l, &now, 1, more); l.Status().Measured != 10 || l.Serving() != min(l.Value(), 10) {
		t.Fatalf("10 served at once: measured %d, serving %d of a limit of %d, want 10 and the lower of the two", l.Status().Measured, l.Serving(), l.Value())
	}
}

// A probe that finds no more room than measured doubles the hold before
// the next (each costs a request a wait in the upstream's queue, and the
// high requests behind the cut their slots); more served at once brings
// the hold back to probeHold.
func TestLimitProbesLessOftenWhenTheyFindNoRoom(t *testing.T) {
	l := NewLimit(Config{Initial: 10})
	now := time.Unix(0, 0)
	steps(l, &now, 40, Signal{TTFB: 5 * 40 * time.Millisecond, Count: 5, InFlight: 3})
	n := uint64(1000)
	stuck := func(inFlight int64, waiting uint64) {
		n += 10
		steps(l, &now, 8, Signal{TTFB: 5 * 40 * time.Millisecond, Count: 5, InFlight: inFlight, Waiting: true,
			Started: n, Answered: n - waiting})
	}
	// served runs d of 8 served, the limit binding, and returns the
	// limit after it.
	served := func(d time.Duration) int {
		n += 10
		return steps(l, &now, int(d/(250*time.Millisecond)), Signal{TTFB: 5 * 40 * time.Millisecond, Count: 5, InFlight: 8,
			Waiting: true, Started: n, Answered: n})
	}
	stuck(10, 2) // the first queue: 8 measured, held 15 s
	if v := served(probeHold - 3*time.Second); v != 8 {
		t.Fatalf("limit %d within the first hold, want 8", v)
	}
	if v := served(4 * time.Second); v <= 8 {
		t.Fatalf("limit %d after the first hold, want a probe above 8", v)
	}
	stuck(9, 1) // the probe found no room: 8 served again
	if v := served(2*probeHold - 3*time.Second); v != 8 {
		t.Fatalf("limit %d within twice the hold after a probe that found no room, want 8 (%+v)", v, l.Status())
	}
	if v := served(4 * time.Second); v <= 8 {
		t.Fatalf("limit %d after twice the hold, want a probe", v)
	}
	// The probe's request gets stuck just as an answer ends: 8 in flight,
	// 1 of them stuck, and the server still serves 8 (the stuck one takes
	// the slot freed). The probe found no more room, not less.
	stuck(8, 1)
	if v, m := l.Value(), l.Status().Measured; v != 8 || m != 8 {
		t.Fatalf("a probe stuck as an answer ended: limit %d, measured %d, want 8 and 8 (%+v)", v, m, l.Status())
	}
	if v := served(4*probeHold - 3*time.Second); v != 8 {
		t.Fatalf("limit %d within four times the hold, want 8 (%+v)", v, l.Status())
	}
	if v := served(4 * time.Second); v <= 8 {
		t.Fatalf("limit %d after four times the hold, want a probe", v)
	}
	// The next probe finds room: 10 served at once for a second, and the hold is back
	// to probeHold, so the probe after it that finds none holds the next
	// for twice that, not four times.
	n += 10
	steps(l, &now, 5, Signal{TTFB: 5 * 40 * time.Millisecond, Count: 5, InFlight: 10, Waiting: true, Started: n, Answered: n})
	if m := l.Status().Measured; m != 10 {
		t.Fatalf("measured %d with 10 served at once, want 10", m)
	}
	stuck(12, 2)
	served = func(d time.Duration) int {
		n += 10
		return steps(l, &now, int(d/(250*time.Millisecond)), Signal{TTFB: 5 * 40 * time.Millisecond, Count: 5, InFlight: 10,
			Waiting: true, Started: n, Answered: n})
	}
	if v := served(2*probeHold - 3*time.Second); v != 10 {
		t.Fatalf("limit %d within twice the hold after a probe past 10 found no room, want 10 (%+v)", v, l.Status())
	}
	if v := served(4 * time.Second); v <= 10 {
		t.Fatalf("limit %d after twice the hold, want a probe (the hold was back to %v before the queue)", v, probeHold)
	}
}

// The first bytes of requests that were stuck come in seconds late, after
// the stuck rule brought the limit down to what the upstream served: they
// are that same queue, and the gradient does not cut below it for them,
// neither in the steps that see requests stuck nor within the hold after:
// such a cut would leave more in flight than the limit, and with answers
// seconds long nothing, high priority included, would be admitted until
// enough of them ended. Pressure still cuts, and after the hold slow first
// bytes cut again.
func TestLimitDoesNotCutTwiceForOneQueue(t *testing.T) {
	l := NewLimit(Config{Initial: 10})
	now := time.Unix(0, 0)
	steps(l, &now, 40, Signal{TTFB: 5 * 40 * time.Millisecond, Count: 5, InFlight: 3}) // the long-run average learns 40 ms
	started := uint64(1000)
	// 10 in flight, 2 of them without a first byte for 2 s, and the
	// first bytes that do come are slow: one of the queue's got its slot.
	if v := steps(l, &now, 8, Signal{TTFB: 5 * 400 * time.Millisecond, Count: 5, InFlight: 10, Waiting: true,
		Started: started, Answered: started - 2}); v != 8 {
		t.Fatalf("limit %d with 2 of 10 stuck and slow first bytes, want the 8 served (%+v)", v, l.Status())
	}
	late := Signal{TTFB: 5 * time.Second, Count: 5, InFlight: 8, Waiting: true, Started: started + 50, Answered: started + 50}
	if v, d := steps(l, &now, 20, late), l.Status().Driver; v != 8 || !strings.HasPrefix(d, "held at 8") {
		t.Fatalf("limit %d, driver %q while the queue's first bytes come late, want 8, held", v, d)
	}
	pressed := late
	pressed.Pressure = true
	if v := steps(l, &now, 1, pressed); v >= 8 {
		t.Fatalf("limit %d under GPU pressure within the hold, want a cut", v)
	}
	l = NewLimit(Config{Initial: 10})
	now = time.Unix(0, 0)
	steps(l, &now, 40, Signal{TTFB: 5 * 40 * time.Millisecond, Count: 5, InFlight: 3})
	steps(l, &now, 8, Signal{TTFB: 5 * 40 * time.Millisecond, Count: 5, InFlight: 10, Waiting: true,
		Started: started, Answered: started - 2})
	steps(l, &now, int(probeHold/(250*time.Millisecond)), Signal{TTFB: 5 * 40 * time.Millisecond, Count: 5, InFlight: 8, Waiting: true,
		Started: started + 50, Answered: started + 50})
	if v := steps(l, &now, 8, late); v >= 8 {
		t.Fatalf("limit %d after the hold with first bytes far over the tolerance, want a cut (%+v)", v, l.Status())
	}
}

// An upstream that answers that it is full (503, 429, 529) refuses fast,
// so first bytes never slow down and the gradient alone would keep
// probing up, every probe another refusal. The answer itself brings the
// limit down at once to what the upstream took (the requests in flight
// beside the refused one), holds probing there for probeHold, and a probe
// that meets the same answer doubles the hold.
func TestLimitComesDownToWhatAFullUpstreamTook(t *testing.T) {
	busy := Signal{TTFB: 5 * 40 * time.Millisecond, Count: 5, Waiting: true}
	l := NewLimit(Config{Initial: 10})
	now := time.Unix(0, 0)
	steps(l, &now, 40, Signal{TTFB: 5 * 40 * time.Millisecond, Count: 5, InFlight: 3})
	// Without the answer, first bytes as fast as ever: the limit climbs.
	busy.InFlight = int64(l.Value())
	if v := steps(l, &now, 20, busy); v <= 14 {
		t.Fatalf("limit %d after 5 s of fast first bytes with requests waiting, want it probing up past 14", v)
	}
	full := busy
	full.InFlight, full.Full, full.FullInFlight = int64(l.Value()), 3, 10
	if v, d := steps(l, &now, 1, full), l.Status().Driver; v != 10 || !strings.Contains(d, "full") {
		t.Fatalf("limit %d (%q) after the upstream answered full with 10 others in flight, want 10 at once", v, d)
	}
	if m := l.Status().Measured; m != 10 {
		t.Fatalf("measured %d, want 10: what the upstream took", m)
	}
	// The answers go on with 9 others in flight (one of the 10 was on its
	// way to the upstream, to be refused too): down to 9.
	full.InFlight, full.FullInFlight = 10, 9
	if v := steps(l, &now, 1, full); v != 9 {
		t.Fatalf("limit %d after a second full answer with 9 others, want 9", v)
	}
	full.FullInFlight = 10
	busy.InFlight = 9
	held := int((probeHold - time.Second) / (250 * time.Millisecond))
	if v := steps(l, &now, held, busy); v != 9 {
		t.Fatalf("limit %d within the hold, first bytes fast and requests waiting: want 9, held", v)
	}
	if v := steps(l, &now, 12, busy); v <= 9 {
		t.Fatalf("limit %d after the hold, want probing up again", v)
	}
	// The probe meets the answer again: back to 9, and the next hold is
	// twice as long.
	full.InFlight, full.FullInFlight = int64(l.Value()), 9
	if v := steps(l, &now, 1, full); v != 9 {
		t.Fatalf("limit %d after the probe met a full answer, want 9", v)
	}
	if v := steps(l, &now, int((2*probeHold-time.Second)/(250*time.Millisecond)), busy); v != 9 {
		t.Fatalf("limit %d within the doubled hold, want 9", v)
	}
	// Nothing in flight beside it: the limit keeps one slot.
	full.FullInFlight = 0
	l2 := NewLimit(Config{Initial: 10})
	if v := steps(l2, &now, 1, full); v != max(1, l2.cfg.Min) {
		t.Fatalf("limit %d after a full answer with nothing else in flight, want %d", v, max(1, l2.cfg.Min))
	}
}

// One quick answer before the load (a health check through the gateway)
// does not become the long-run norm: seeded from it, first bytes thirty
// times slower would read as a queue forever (long learns only from
// first bytes within the tolerance of it), and the gradient's floor of ½
// with its √limit allowance holds the limit at 4 whatever the load.
func TestLimitNotSeededByOneQuickAnswer(t *testing.T) {
	l := NewLimit(Config{})
	now := time.Unix(0, 0)
	steps(l, &now, 1, Signal{TTFB: 2 * time.Millisecond, Count: 1, InFlight: 0})
	steps(l, &now, 5, Signal{InFlight: 0})
	busy := Signal{TTFB: 8 * 60 * time.Millisecond, Count: 8, InFlight: 4, Waiting: true}
	busy.InFlight = int64(l.Value())
	for range 40 {
		busy.InFlight = int64(l.Value())
		steps(l, &now, 1, busy)
	}
	if v, st := l.Value(), l.Status(); v <= 8 || st.LongS < 0.05 {
		t.Fatalf("limit %d, long %.3fs after a health check then 10 s of 60 ms first bytes with requests waiting; want it grown, long ≈ 0.06 s (%+v)", v, st.LongS, st)
	}
}
