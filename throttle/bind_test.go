package throttle

import (
	"net/http"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/admission"
	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/pool"
	"github.com/ai-guardian/adaptivethrottle/priority"
)

// up is an upstream that is always available.
type up struct{}

func (up) Available() bool { return true }

// via is a load balancer that sends the request to members in turn (a
// retry for each after the first) and answers with status from the last.
func via(t *testing.T, status int, members ...*pool.Member) nextFunc {
	return func(w http.ResponseWriter, _ *http.Request) error {
		b, ok := Find(unwrapOnly{w})
		if !ok {
			t.Fatal("no binding found through a wrapping writer")
		}
		for _, m := range members {
			_, tk := pool.Pick([]up{{}}, []*pool.Member{m}, time.Now(), true)
			b.Bind(m, tk, Now())
			if m.InFlight() != 1 {
				t.Fatalf("member %s holds %d in flight, want 1", m.Key(), m.InFlight())
			}
		}
		w.WriteHeader(status)
		return nil
	}
}

// A request the load balancer sent to a member counts there: in flight
// while it runs, its first byte, and its outcome on the member's circuit,
// not the throttle's own (which judges the requests no member took). A retry moves it to the next member, the
// attempt it left counting as that member's failure.
func TestBoundRequestsCountOnTheirMember(t *testing.T) {
	th := testThrottle(t, Config{Circuit: breaker.CircuitConfig{MinRequests: 2}})
	ms := th.Pool().Hold([]string{"a", "b"})
	now := time.Now()
	serveOne(t, th, priority.Medium, now, via(t, http.StatusOK, ms[0]))
	serveOne(t, th, priority.Medium, now, via(t, http.StatusBadGateway, ms[0], ms[1]))
	serveOne(t, th, priority.Medium, now, via(t, http.StatusBadGateway, ms[1]))
	st := th.Pool().Status(now)
	a, b := st[0], st[1]
	if a.InFlight != 0 || b.InFlight != 0 {
		t.Fatalf("in flight after the answers: a %d, b %d", a.InFlight, b.InFlight)
	}
	if a.Requests != 2 || a.Circuit.Failures != 1 || a.Circuit.Requests != 2 {
		t.Fatalf("a: %+v, want 2 requests, 1 failure (the attempt a retry left)", a)
	}
	if b.State != "open" || b.Circuit.Failures != 2 {
		t.Fatalf("b: %+v, want its circuit open on its 2 failures", b)
	}
	if c := th.Status(now).Circuit; c.State != breaker.Closed || c.Requests != 0 {
		t.Fatalf("the throttle's own circuit counted what members answered: %+v", c)
	}
	if n := ms[0].InFlight() + ms[1].InFlight(); n != 0 {
		t.Fatalf("%d left in flight", n)
	}
}

// The handler's gate admits against the pool's sum of limits once the
// pool has members.
func TestPoolSetsTheGateLimit(t *testing.T) {
	th := testThrottle(t, Config{Concurrency: admission.Config{Limit: 3}})
	th.step(time.Now(), true)
	if n := th.gate.Limit(); n != 3 {
		t.Fatalf("gate limit %d without a pool, want the throttle's 3", n)
	}
	th.Pool().Hold([]string{"a", "b", "c"})
	th.step(time.Now(), true)
	if n := th.gate.Limit(); n != 9 {
		t.Fatalf("gate limit %d with three upstreams of 3, want 9", n)
	}
	if st := th.Status(time.Now()); st.Admission.Limit != 9 || len(st.Upstreams) != 3 {
		t.Fatalf("status: limit %d, %d upstreams", st.Admission.Limit, len(st.Upstreams))
	}
}
