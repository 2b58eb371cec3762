package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/internal/llmsim"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sse writes one server-sent event and flushes it.
func sse(w http.ResponseWriter, data string) {
	fmt.Fprintf(w, "data: %s\n\n", data)
	w.(http.Flusher).Flush()
}

// newServer serves h after reading the request body: until the body is
// read, net/http cannot notice a client leaving, and a handler waiting on
// r.Context() would wait for ever.
func newServer(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(strings.NewReader(string(b)))
		h(w, r)
	}))
	t.Cleanup(ts.Close)
	return ts
}

func TestRunClassifiesAnswersPerPriority(t *testing.T) {
	var mu sync.Mutex
	var bodies []string
	ts := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, r.URL.Path+" "+string(b))
		mu.Unlock()
		switch r.Header.Get("X-Priority") {
		case "high":
			time.Sleep(30 * time.Millisecond)
			w.Header().Set("Content-Type", "text/event-stream")
			sse(w, `{"choices":[{"delta":{"content":"tok0"}}]}`)
			time.Sleep(20 * time.Millisecond)
			sse(w, "[DONE]")
		case "medium":
			w.Header().Set("Retry-After", "3")
			w.WriteHeader(http.StatusTooManyRequests)
			io.WriteString(w, `{"error":"overloaded","level":"qps","priority":"medium","retry_after":3}`)
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"error":{"message":"CUDA out of memory (simulated)","type":"server_error","code":503}}`)
		}
	})
	res, err := Run(context.Background(), Config{
		Target: ts.URL, Stream: true, SLO: SLO{TTFB: time.Second}, Seed: 5, KeepRecords: true,
		Profile: Profile{Kind: Constant, Base: 40, Duration: time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Overall.Sent != 40 || len(res.Records) != 40 {
		t.Fatalf("sent %d, %d records; want 40", res.Overall.Sent, len(res.Records))
	}
	h, m, l := res.High, res.Medium, res.Low
	if h.Sent+m.Sent+l.Sent != 40 || h.Sent == 0 || m.Sent == 0 || l.Sent == 0 {
		t.Fatalf("mix split 40 into %d/%d/%d", h.Sent, m.Sent, l.Sent)
	}
	if h.OK != h.Sent || h.OKWithinSLO != h.Sent || h.TTFBP50 < 30 || h.TotalP50 < 50 || h.TotalP50 < h.TTFBP50+15 {
		t.Errorf("high: %+v", h)
	}
	if m.Shed429RA != m.Sent || m.OK != 0 || m.SLOAttainment != 0 {
		t.Errorf("medium: %+v", m)
	}
	if l.OOM != l.Sent {
		t.Errorf("low: %+v", l)
	}
	if want := float64(h.Sent); res.Overall.GoodputRPS != want {
		t.Errorf("goodput %g req/s over 1 s, want %g", res.Overall.GoodputRPS, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.HasPrefix(bodies[0], "/v1/chat/completions ") || !strings.Contains(bodies[0], `"stream":true`) || !strings.Contains(bodies[0], `"model":"demo-llm"`) {
		t.Errorf("request was %s", bodies[0])
	}
}

func TestRunTimeoutsBrokenStreamsAndOverflow(t *testing.T) {
	release := make(chan struct{})
	ts := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.Header.Get("X-Priority") {
		case "high": // hang until the client gives up
			select {
			case <-r.Context().Done():
			case <-release:
			}
		case "medium": // a stream cut short
			w.Header().Set("Content-Type", "text/event-stream")
			sse(w, `{"choices":[]}`)
		default: // the module's 503 without Retry-After
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"error":"overloaded","level":"circuit"}`)
		}
	})
	defer close(release)

	// All high: 10 requests in 0.5 s, at most 3 in flight, each held past
	// the end: 3 time out, 7 never leave.
	res, err := Run(context.Background(), Config{
		Target: ts.URL, Stream: true, MaxInFlight: 3, Timeout: time.Second, Mix: Mix{High: 1},
		Profile: Profile{Kind: Constant, Base: 20, Duration: 500 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	if s := res.Overall; s.Timeouts != 3 || s.Overflow != 7 || s.Sent != 10 {
		t.Errorf("overall %+v; want 3 timeouts, 7 overflow", s)
	}

	res, err = Run(context.Background(), Config{
		Target: ts.URL, Stream: true, Mix: Mix{Medium: 1, Low: 1},
		Profile: Profile{Kind: Constant, Base: 40, Duration: 500 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	if m := res.Medium; m.Broken != m.Sent || m.OK != 0 {
		t.Errorf("medium %+v: want every stream broken", m)
	}
	if l := res.Low; l.Shed503 != l.Sent || l.Shed503RA != 0 {
		t.Errorf("low %+v: want 503 without Retry-After", l)
	}
}

func TestRunDrainBoundsTheWait(t *testing.T) {
	ts := newServer(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	start := time.Now()
	res, err := Run(context.Background(), Config{
		Target: ts.URL, Timeout: time.Minute, Drain: 200 * time.Millisecond,
		Profile: Profile{Kind: Constant, Base: 10, Duration: 300 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("run took %v with a 200ms drain", el)
	}
	if res.Overall.Timeouts != res.Overall.Sent || res.Overall.Sent != 3 {
		t.Fatalf("%+v: want the 3 requests cut by the drain counted as timeouts", res.Overall)
	}
}

func TestRunInterrupted(t *testing.T) {
	ts := newServer(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	res, err := Run(ctx, Config{Target: ts.URL, Profile: Profile{Kind: Constant, Base: 10, Duration: time.Hour}})
	if !errors.Is(err, context.DeadlineExceeded) || res == nil {
		t.Fatalf("err = %v, res = %v; want the partial result and the context's error", err, res)
	}
	if res.Overall.Sent < 2 || res.Overall.Sent > 5 || res.Overall.NetErrors != res.Overall.Sent {
		t.Fatalf("partial result %+v", res.Overall)
	}
}

// TestRunAgainstLLMSim drives the real simulator: streams complete, the
// capacity drop reaches it, and the polls fill the series.
func TestRunAgainstLLMSim(t *testing.T) {
	sim := llmsim.New(llmsim.Config{Slots: 4, PrefillTime: 5 * time.Millisecond, TokenTime: time.Millisecond, DefaultMaxTokens: 3})
	ts := httptest.NewServer(sim)
	defer ts.Close()
	defer sim.Close()
	throttle := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"instances":[{"name":"other"},{"name":"llm","shedding":true,
			"levels":{"qps":{"tripped":true,"transitions":1},"gpu":{},"latency":{"transitions":2}},
			"circuit":{"state":"closed"},"priorities":{"medium":{"rate":3.5}}}]}`)
	})

	res, err := Run(context.Background(), Config{
		Target: ts.URL, Stream: true, SLO: DefaultSLO, KeepRecords: true,
		Profile:  Profile{Kind: CapacityDrop, Base: 20, Duration: 1500 * time.Millisecond, DropAt: 500 * time.Millisecond},
		Upstream: ts.URL + "/", DropTo: 1, ThrottleStatus: throttle.URL, ThrottleInstance: "llm",
	})
	if err != nil {
		t.Fatal(err)
	}
	if s := res.Overall; s.Sent != 30 || s.OK != 30 || s.OKWithinSLO != 30 {
		t.Fatalf("overall %+v; want 30 served within the SLO", s)
	}
	for _, r := range res.Records {
		if r.TTFBMS < 5 || r.TTFBMS > r.TotalMS {
			t.Fatalf("record %+v: TTFB must include the 5 ms prefill and not exceed the total", r)
		}
	}
	if st := sim.State(); st.Slots != 1 || st.Served != 30 {
		t.Errorf("simulator state %+v; want 1 slot and 30 served", st)
	}
	if len(res.Events) != 1 || !strings.Contains(res.Events[0].What, "slots set to 1") || res.Events[0].T < 0.5 {
		t.Errorf("events %+v", res.Events)
	}
	if len(res.Polls) < 2 || res.Series[0].GPUMemory == nil || *res.Series[0].GPUMemory <= 0 {
		t.Fatalf("polls %d, first second %+v", len(res.Polls), res.Series[0])
	}
	th := res.Polls[0].Throttle
	if th == nil || th.Name != "llm" || th.Transitions() != 3 || res.Series[0].Tripped[0] != "qps" || *res.Series[0].MediumRate != 3.5 {
		t.Errorf("throttle poll %+v", th)
	}
	if _, err := json.Marshal(res); err != nil {
		t.Fatal(err)
	}
}

func TestRunConfigErrors(t *testing.T) {
	good := Profile{Kind: Constant, Base: 1, Duration: time.Second}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no scheme", Config{Target: "localhost:8080", Profile: good}, "http://"},
		{"bad upstream", Config{Target: "http://x", Upstream: "ftp://y", Profile: good}, "http://"},
		{"drop without upstream", Config{Target: "http://x", Profile: Profile{Kind: CapacityDrop, Base: 1, Duration: time.Second, DropAt: time.Millisecond}}, "upstream"},
		{"negative timeout", Config{Target: "http://x", Timeout: -1, Profile: good}, "timeout"},
		{"bad profile", Config{Target: "http://x"}, "duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Run(context.Background(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
	if u, _ := TargetURL("http://h:1/v1/completions"); u != "http://h:1/v1/completions" {
		t.Errorf("a target with a path must be kept, got %s", u)
	}
}
