package adaptivethrottle

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/ai-guardian/adaptivethrottle/admission"
	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/config"
	"github.com/ai-guardian/adaptivethrottle/levels/gpu"
	"github.com/ai-guardian/adaptivethrottle/priority"
)

// newHandler provisions a handler outside Caddy, with the GPU level off, and
// cleans it up at the end of the test.
func newHandler(tb testing.TB, h *Handler) *Handler {
	tb.Helper()
	if h.GPU == nil {
		h.GPU = &gpu.Config{Source: "off"}
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	if err := h.Provision(ctx); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := h.Cleanup(); err != nil {
			tb.Error(err)
		}
		cancel()
	})
	return h
}

// override sets an operator's override on h's throttle.
func override(tb testing.TB, h *Handler, state string) {
	tb.Helper()
	if err := h.t.SetOverride(state, time.Now(), time.Time{}); err != nil {
		tb.Fatal(err)
	}
}

func request(prio string, repl *caddy.Replacer) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", nil)
	if prio != "" {
		r.Header.Set("X-Priority", prio)
	}
	return r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl))
}

var ok200 = caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
	w.WriteHeader(http.StatusOK)
	return nil
})

func TestHeaderOf(t *testing.T) {
	cases := map[string]string{
		"{http.request.header.X-Priority}": "X-Priority",
		"{http.request.header.x-tier}":     "X-Tier",
		"{http.request.cookie.tier}":       "",
		"{http.request.header.A}{path}":    "",
		"static":                           "",
	}
	for in, want := range cases {
		if got := headerOf(in); got != want {
			t.Errorf("headerOf(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestClassifyFromPlaceholder(t *testing.T) {
	h := newHandler(t, &Handler{Name: t.Name(), Priority: &PriorityConfig{From: "{http.request.uri.query.tier}", Config: priority.Config{Default: "low"}}})
	repl := caddy.NewReplacer()
	r := httptest.NewRequest(http.MethodGet, "/?tier=high", nil)
	repl.Map(func(key string) (any, bool) {
		if key == "http.request.uri.query.tier" {
			return r.URL.Query().Get("tier"), true
		}
		return nil, false
	})
	if p := h.classify(r, repl); p.String() != "high" {
		t.Fatalf("query placeholder: %v", p)
	}
	if p := h.classify(httptest.NewRequest(http.MethodGet, "/", nil), caddy.NewReplacer()); p.String() != "low" {
		t.Fatalf("default: %v", p)
	}
}

// While shedding, each priority gets its lane's answer; refusals carry the
// documented JSON, a Retry-After matching it, and the placeholders. The
// limit is fixed at 2 slots, one of them high's reserve.
func TestShedByPriority(t *testing.T) {
	reserve := 1
	wait := config.Duration(20 * time.Millisecond)
	h := newHandler(t, &Handler{Name: t.Name(), Priority: &PriorityConfig{Config: priority.Config{HighReserve: &reserve, MediumFloor: 1}},
		Concurrency: &admission.Config{Limit: 2, MaxWait: admission.MaxWait{High: wait, Medium: wait, Low: wait}},
		RetryAfter:  config.Duration(3 * time.Second)})
	override(t, h, "shed")

	serve := func(prio string, next caddyhttp.Handler) (*httptest.ResponseRecorder, *caddy.Replacer, error) {
		repl := caddy.NewReplacer()
		w := httptest.NewRecorder()
		err := h.ServeHTTP(w, request(prio, repl), next)
		return w, repl, err
	}
	// hold serves prio with a handler that answers once release closes.
	hold := func(prio string) (release func(), decision string) {
		inside, done, rel := make(chan struct{}), make(chan struct{}), make(chan struct{})
		repl := caddy.NewReplacer()
		go func() {
			defer close(done)
			h.ServeHTTP(httptest.NewRecorder(), request(prio, repl), caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				close(inside)
				<-rel
				w.WriteHeader(http.StatusOK)
				return nil
			}))
		}()
		<-inside
		d, _ := repl.Get(phDecision)
		return func() { close(rel); <-done }, d.(string)
	}

	// Low is refused at once, though slots are free.
	w, repl, err := serve("low", ok200)
	if err != nil || w.Code != http.StatusTooManyRequests {
		t.Fatalf("low while shedding: %d %v", w.Code, err)
	}
	var body shedJSON
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatalf("body %q: %v", w.Body, err)
	}
	if body.Error != "overloaded" || body.Level != "override" || body.Priority != "low" || body.RetryAfter < 3 || body.RetryAfter > 4 {
		t.Fatalf("body %+v", body)
	}
	if got := w.Header().Get("Retry-After"); got != strconv.Itoa(body.RetryAfter) {
		t.Fatalf("Retry-After %q vs body %d", got, body.RetryAfter)
	}
	if d, _ := repl.Get(phDecision); d != "shed" {
		t.Fatalf("decision placeholder %v", d)
	}
	if l, _ := repl.Get(phLevel); l != "override" {
		t.Fatalf("level placeholder %v", l)
	}
	// Medium takes a free slot at its pacing's floor (1 req/s, burst 1);
	// the next one waits for a slot and gets none within its wait: the
	// other slot is high's reserve.
	releaseMedium, d := hold("medium")
	if d != "pass" {
		t.Fatalf("medium into a free slot: decision %q", d)
	}
	if w, _, _ := serve("medium", ok200); w.Code != http.StatusTooManyRequests {
		t.Fatalf("medium with only the reserve free: %d", w.Code)
	}

	// High takes the reserve and holds it until its response is done; a
	// second high meanwhile finds the limit full (503).
	releaseHigh, _ := hold("high")
	if h.t.Status(time.Now()).Priorities.High.InUse != 1 {
		t.Fatalf("high in use %d", h.t.Status(time.Now()).Priorities.High.InUse)
	}
	if w, _, _ := serve("high", ok200); w.Code != http.StatusServiceUnavailable {
		t.Fatalf("second high with a full limit: %d", w.Code)
	}
	releaseHigh()
	releaseMedium()
	if st := h.t.Status(time.Now()); st.Priorities.High.InUse != 0 || st.Admission.InFlight != 0 {
		t.Fatalf("slots not released after the responses: high %d, in flight %d", st.Priorities.High.InUse, st.Admission.InFlight)
	}

	// With its slot free again, medium out of pacing tokens waits and is
	// handed it at once.
	if w, repl, _ := serve("medium", ok200); w.Code != http.StatusOK {
		t.Fatalf("medium with a slot free: %d", w.Code)
	} else if d, _ := repl.Get(phDecision); d != "pass" {
		t.Fatalf("decision placeholder on pass: %v", d)
	}

	// pass beats everything; auto hands back to the levels (none tripped).
	override(t, h, "pass")
	if w, _, _ := serve("low", ok200); w.Code != http.StatusOK {
		t.Fatalf("low under override pass: %d", w.Code)
	}
	override(t, h, "auto")
	if w, _, _ := serve("low", ok200); w.Code != http.StatusOK {
		t.Fatalf("low with nothing tripped: %d", w.Code)
	}
	st := h.t.Status(time.Now())
	if st.Priorities.Low.Shed != 1 || st.Priorities.High.Shed != 1 || st.Priorities.Medium.Shed != 1 || st.Shed["override"] != 3 {
		t.Fatalf("counts: %+v %v", st.Priorities, st.Shed)
	}
}

type shedJSON struct {
	Error      string `json:"error"`
	Level      string `json:"level"`
	Priority   string `json:"priority"`
	RetryAfter int    `json:"retry_after"`
}

// The outcome of each admitted request reaches the circuit: 5xx and handler
// errors count as failures, client cancellations do not.
func TestOutcomesFeedTheCircuit(t *testing.T) {
	h := newHandler(t, &Handler{Name: t.Name(), Circuit: &breaker.CircuitConfig{MinRequests: 3, ErrorRatio: 0.5}})
	fail := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		return caddyhttp.Error(http.StatusBadGateway, errors.New("dial tcp: connection refused"))
	})
	canceled, cancel := context.WithCancel(context.WithValue(context.Background(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
	cancel()
	for range 5 {
		r := httptest.NewRequest(http.MethodGet, "/", nil).WithContext(canceled)
		_ = h.ServeHTTP(httptest.NewRecorder(), r, fail)
	}
	if st := h.t.Status(time.Now()).Circuit; st.Failures != 0 || st.State != breaker.Closed {
		t.Fatalf("client cancellations counted as failures: %+v", st)
	}
	for range 3 {
		err := h.ServeHTTP(httptest.NewRecorder(), request("", caddy.NewReplacer()), fail)
		if statusOf(err) != http.StatusBadGateway {
			t.Fatalf("the handler error was not passed on: %v", err)
		}
	}
	if st := h.t.Status(time.Now()).Circuit; st.State != breaker.Open || st.Failures != 3 {
		t.Fatalf("three 502s of eight requests: %+v", st)
	}
	w := httptest.NewRecorder()
	_ = h.ServeHTTP(w, request("high", caddy.NewReplacer()), ok200)
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
		t.Fatalf("open circuit answered %d", w.Code)
	}
}

// caddyReplacer is a replacer as Caddy's HTTP server hands it to handlers:
// the core providers plus the HTTP one, which leaves room for ours.
func caddyReplacer() *caddy.Replacer {
	repl := caddy.NewReplacer()
	repl.Map(func(string) (any, bool) { return nil, false })
	return repl
}

// The healthy request path allocates nothing, placeholders included. Each
// request gets a fresh replacer, as in Caddy.
func TestServeHTTPDoesNotAllocate(t *testing.T) {
	h := newHandler(t, &Handler{Name: t.Name()})
	const runs = 100
	reqs := make([]*http.Request, runs+1)
	for i := range reqs {
		reqs[i] = request("medium", caddyReplacer())
	}
	w := &nopWriter{h: http.Header{}}
	i := 0
	if n := testing.AllocsPerRun(runs, func() {
		_ = h.ServeHTTP(w, reqs[i], ok200)
		i++
	}); n != 0 {
		t.Fatalf("ServeHTTP allocates %v times per request", n)
	}
	if d, ok := reqs[0].Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer).Get(phDecision); !ok || d != "pass" {
		t.Fatalf("decision placeholder %v %v", d, ok)
	}
}

// nopWriter is a ResponseWriter that costs nothing, so benchmarks measure
// the handler and not httptest.
type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *nopWriter) WriteHeader(int)             {}

func benchHandler(b *testing.B, shed bool) {
	h := newHandler(b, &Handler{Name: b.Name()})
	h.t.SetLogger(zap.NewNop())
	if shed {
		override(b, h, "shed")
	}
	// The core: classify, decide, next (a no-op), record. No replacer in
	// the context, so the serial and parallel figures compare.
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		w := &nopWriter{h: http.Header{}}
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		r.Header.Set("X-Priority", "low")
		for b.Loop() {
			_ = h.ServeHTTP(w, r, ok200)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			w := &nopWriter{h: http.Header{}}
			r := httptest.NewRequest(http.MethodPost, "/", nil)
			r.Header.Set("X-Priority", "low")
			for pb.Next() {
				_ = h.ServeHTTP(w, r, ok200)
			}
		})
	})
	// With placeholders published into a fresh Caddy-like replacer per
	// request (made outside the timer, in chunks).
	b.Run("serial+placeholders", func(b *testing.B) {
		b.ReportAllocs()
		const chunk = 4096
		reqs := make([]*http.Request, chunk)
		w := &nopWriter{h: http.Header{}}
		for i := 0; i < b.N; i++ {
			if i%chunk == 0 {
				b.StopTimer()
				for j := range reqs {
					reqs[j] = request("low", caddyReplacer())
				}
				b.StartTimer()
			}
			_ = h.ServeHTTP(w, reqs[i%chunk], ok200)
		}
	})
}

// BenchmarkHandlerHealthy is the whole per-request cost when nothing is
// tripped: classify, decide, the next handler (a no-op) and record.
func BenchmarkHandlerHealthy(b *testing.B) { benchHandler(b, false) }

// BenchmarkHandlerShedding is the cost of refusing a low-priority request.
func BenchmarkHandlerShedding(b *testing.B) { benchHandler(b, true) }

// BenchmarkRateLimiterAllow is the yardstick: one golang.org/x/time/rate
// Limiter.Allow, measured in the same run.
func BenchmarkRateLimiterAllow(b *testing.B) {
	lim := rate.NewLimiter(rate.Inf, 1)
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			lim.Allow()
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				lim.Allow()
			}
		})
	})
}

// reverse_proxy aborts a response whose client went away by panicking with
// http.ErrAbortHandler: the reserve slot and the in-flight count must still
// be given back, and the panic must go on up to net/http.
func TestAbortedResponseReleasesItsSlot(t *testing.T) {
	reserve := 1
	h := newHandler(t, &Handler{Name: t.Name(), Priority: &PriorityConfig{Config: priority.Config{HighReserve: &reserve}}})
	override(t, h, "shed")
	abort := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.WriteHeader(http.StatusOK)
		panic(http.ErrAbortHandler)
	})
	func() {
		defer func() {
			if p := recover(); p != http.ErrAbortHandler {
				t.Fatalf("the panic did not go on up: %v", p)
			}
		}()
		_ = h.ServeHTTP(httptest.NewRecorder(), request("high", caddy.NewReplacer()), abort)
	}()
	if st := h.t.Status(time.Now()); st.Priorities.High.InUse != 0 || st.Admission.InFlight != 0 {
		t.Fatalf("after an aborted response: reserve in use %d, in flight %d", st.Priorities.High.InUse, st.Admission.InFlight)
	}
}
