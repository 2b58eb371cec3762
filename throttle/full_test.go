package throttle

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/admission"
	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/config"
	"github.com/ai-guardian/adaptivethrottle/priority"
)

// upstreamFull is a next that answers as a server whose queue is full:
// status, an optional Retry-After, and its own JSON body (Ollama's 503).
func upstreamFull(status int, retryAfter string) nextFunc {
	return func(w http.ResponseWriter, _ *http.Request) error {
		h := w.Header()
		h.Set("Content-Type", "application/json; charset=utf-8")
		h.Set("Content-Length", "82")
		if retryAfter != "" {
			h.Set("Retry-After", retryAfter)
		}
		w.WriteHeader(status)
		_, err := w.Write([]byte(`{"error":"server busy, please try again.  maximum pending requests exceeded"}` + "\n"))
		return err
	}
}

// serveOne admits a request of priority p at now and serves it with next,
// returning what the client received.
func serveOne(t *testing.T, th *Throttle, p priority.Priority, now time.Time, next nextFunc) *httptest.ResponseRecorder {
	t.Helper()
	d := th.Admit(context.Background(), p, InstantOf(now))
	if !d.Admitted() {
		t.Fatalf("refused at admission: %v", d.Verdict())
	}
	w := httptest.NewRecorder()
	r := httptest.NewRequest("POST", "/v1/chat/completions", nil)
	if err := th.Serve(w, r, d, next); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	return w
}

// An upstream that answers 503, 429 or 529 is full, not broken: the
// circuit stays closed however many such answers come, the limit comes
// down to the requests in flight beside the refused one, and the client
// gets the module's own refusal (its JSON, level upstream, Retry-After),
// never the upstream's body.
func TestUpstreamFullLowersTheLimitAndLeavesTheCircuitClosed(t *testing.T) {
	for _, status := range []int{http.StatusServiceUnavailable, http.StatusTooManyRequests, 529} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			th := testThrottle(t, Config{Circuit: breaker.CircuitConfig{MinRequests: 5}, Concurrency: admission.Config{Initial: 20}})
			now := time.Unix(1000, 0)
			th.step(now, true)
			limit := th.limit.Value()
			// 6 requests hold slots (the upstream serves them).
			var held []Decision
			for range 6 {
				held = append(held, th.Admit(context.Background(), priority.Medium, InstantOf(now)))
			}
			for i := range 30 {
				p := priority.Medium
				if i%3 == 0 {
					p = priority.High
				}
				w := serveOne(t, th, p, now, upstreamFull(status, ""))
				want := http.StatusTooManyRequests
				if p == priority.High {
					want = http.StatusServiceUnavailable
				}
				body := w.Body.String()
				if w.Code != want || !strings.Contains(body, `"error":"overloaded"`) || !strings.Contains(body, `"level":"upstream"`) ||
					strings.Contains(body, "server busy") {
					t.Fatalf("%s client got %d %q, want the module's %d refusal", p, w.Code, body, want)
				}
				if ra, err := strconv.Atoi(w.Header().Get("Retry-After")); err != nil || ra < 5 {
					t.Fatalf("Retry-After %q, want at least the 5 s floor", w.Header().Get("Retry-After"))
				}
				if cl := w.Header().Get("Content-Length"); cl != "" {
					t.Fatalf("the upstream's Content-Length %q reached the client", cl)
				}
			}
			st := th.Status(now)
			if st.Circuit.State != breaker.Closed || st.Circuit.Failures != 0 {
				t.Fatalf("circuit %+v after 30 full answers, want closed with no failure", st.Circuit)
			}
			if st.Upstream.FullAnswers != 30 || st.Shed["upstream"] != 30 {
				t.Fatalf("full answers %d, shed upstream %d, want 30 and 30", st.Upstream.FullAnswers, st.Shed["upstream"])
			}
			if c, a := th.firstBytes.count.Load(), th.firstBytes.answered(); c != 0 || a != 30 {
				t.Fatalf("full answers: %d counted as first bytes, %d as answered; want 0 and 30 (each ends its wait once)", c, a)
			}
			now = now.Add(250 * time.Millisecond)
			th.step(now, false)
			if v := th.limit.Value(); v != 6 || v >= limit {
				t.Fatalf("limit %d (was %d) after full answers with 6 others in flight, want 6", v, limit)
			}
			for i := range held {
				th.Finish(&held[i], Outcome{Status: 200})
			}
		})
	}
}

// Other failures still count toward the circuit: a 500 or 502 the
// upstream wrote, and an error next returned without an answer (a dial
// error: reverse_proxy's 502), open it as before.
func TestOtherFailuresStillOpenTheCircuit(t *testing.T) {
	for name, next := range map[string]nextFunc{
		"500": func(w http.ResponseWriter, _ *http.Request) error { w.WriteHeader(500); return nil },
		"502": func(w http.ResponseWriter, _ *http.Request) error { w.WriteHeader(502); return nil },
		"dial error": func(http.ResponseWriter, *http.Request) error {
			return errors.New("dial tcp 127.0.0.1:1: connect: connection refused")
		},
	} {
		t.Run(name, func(t *testing.T) {
			th := testThrottle(t, Config{Circuit: breaker.CircuitConfig{MinRequests: 5}})
			now := time.Unix(1000, 0)
			for range 5 {
				d := th.Admit(context.Background(), priority.Medium, InstantOf(now))
				_ = th.Serve(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil), d, next)
			}
			if st := th.Status(now); st.Circuit.State != breaker.Open || st.Upstream.FullAnswers != 0 {
				t.Fatalf("circuit %q, full answers %d after 5 × %s, want open and 0", st.Circuit.State, st.Upstream.FullAnswers, name)
			}
		})
	}
	// A caller of Finish reporting 503 means the same as Serve seeing it.
	th := testThrottle(t, Config{Circuit: breaker.CircuitConfig{MinRequests: 5}})
	now := time.Unix(1000, 0)
	for range 10 {
		d := th.Admit(context.Background(), priority.Medium, InstantOf(now))
		th.Finish(&d, Outcome{Status: 503, End: breaker.Mono(now)})
	}
	if st := th.Status(now); st.Circuit.State != breaker.Closed || st.Upstream.FullAnswers != 10 {
		t.Fatalf("Finish with 503 × 10: circuit %q, full answers %d; want closed, 10", st.Circuit.State, st.Upstream.FullAnswers)
	}
}

// The client's Retry-After is the module's (when a slot is expected, at
// least retry_after) or the upstream's when that is later, in seconds or
// as an HTTP-date, and never above retry_after_max (60 s).
func TestUpstreamRetryAfterWinsWhenLater(t *testing.T) {
	th := testThrottle(t, Config{RetryAfter: config.Duration(5 * time.Second)})
	now := time.Unix(1000, 0)
	later := time.Now().Add(50 * time.Second).UTC().Format(http.TimeFormat)
	for _, c := range []struct {
		upstream string
		lo, hi   int
	}{
		{"", 5, 6},      // the module's: the floor, up to 20% jitter
		{"1", 5, 6},     // earlier than the module's: the module's
		{"junk", 5, 6},  // unreadable: the module's
		{"45", 45, 45},  // later: the upstream's
		{"120", 60, 60}, // later, past retry_after_max: the cap
		{later, 49, 51}, // an HTTP-date, later
	} {
		w := serveOne(t, th, priority.Medium, now, upstreamFull(http.StatusServiceUnavailable, c.upstream))
		ra, err := strconv.Atoi(w.Header().Get("Retry-After"))
		if err != nil || ra < c.lo || ra > c.hi || !strings.Contains(w.Body.String(), `"retry_after":`+strconv.Itoa(ra)) {
			t.Fatalf("upstream Retry-After %q: client got %q (body %q), want %d..%d", c.upstream, w.Header().Get("Retry-After"), w.Body.String(), c.lo, c.hi)
		}
	}
}

// A server that answers nothing but that it is full shows in status for
// how long; one successful answer clears it.
func TestStatusShowsAnUpstreamAnsweringOnlyFull(t *testing.T) {
	th := testThrottle(t, Config{})
	now := time.Unix(1000, 0)
	th.step(now, true)
	for range 12 {
		for range 3 {
			serveOne(t, th, priority.Medium, now, upstreamFull(http.StatusServiceUnavailable, ""))
		}
		now = now.Add(time.Second)
		th.step(now, true)
	}
	st := th.Status(now).Upstream
	if st.OnlyFullSince == nil || st.OnlyFullS < 11 || st.FullAnswers != 36 {
		t.Fatalf("upstream %+v after 12 s of nothing but full answers, want only_full_s ≥ 11 and 36 answers", st)
	}
	serveOne(t, th, priority.Medium, now, func(w http.ResponseWriter, _ *http.Request) error {
		_, err := w.Write([]byte("ok"))
		return err
	})
	now = now.Add(time.Second)
	th.step(now, true)
	if st := th.Status(now).Upstream; st.OnlyFullSince != nil || st.OnlyFullS != 0 {
		t.Fatalf("upstream %+v after it served again, want only_full cleared", st)
	}
}
