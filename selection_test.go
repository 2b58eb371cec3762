package adaptivethrottle

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"

	"github.com/ai-guardian/adaptivethrottle/admission"
)

// newSelection is the policy of h's name, tied to h's throttle as a
// config load ties them.
func newSelection(tb testing.TB, h *Handler) *Selection {
	tb.Helper()
	s := &Selection{Name: h.Name}
	if err := s.resolve(h.t); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Cleanup(); err != nil {
			tb.Error(err)
		}
	})
	return s
}

// upstreams are n upstreams as reverse_proxy provisions them: healthy,
// no cap of their own.
func upstreams(n int) reverseproxy.UpstreamPool {
	ups := make(reverseproxy.UpstreamPool, n)
	for i := range ups {
		ups[i] = &reverseproxy.Upstream{Host: new(reverseproxy.Host), Dial: fmt.Sprintf("127.0.0.1:%d", 9001+i)}
	}
	return ups
}

// proxy is reverse_proxy as the policy sees it: it selects an upstream
// with the writer and request it was handed, and answers status.
func proxy(s *Selection, ups reverseproxy.UpstreamPool, status int, picked **reverseproxy.Upstream) caddyhttp.Handler {
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		*picked = s.Select(ups, r, w)
		w.WriteHeader(status)
		return nil
	})
}

// Behind the handler, the policy sends requests where there is room and
// counts them on that upstream until they end; without the handler it
// still picks, and counts nothing.
func TestSelectBindsThePickToTheRequest(t *testing.T) {
	h := newHandler(t, &Handler{Name: t.Name(), Concurrency: &admission.Config{Limit: 2}})
	s := newSelection(t, h)
	ups := upstreams(2)
	var picked *reverseproxy.Upstream
	held := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		picked = s.Select(ups, r, w)
		// While it runs, a second request goes to the other upstream:
		// this one holds a slot of the first.
		var second *reverseproxy.Upstream
		if err := h.ServeHTTP(httptest.NewRecorder(), request("low", nil), proxy(s, ups, http.StatusOK, &second)); err != nil {
			return err
		}
		if second == picked {
			t.Errorf("both requests went to %s while the other had more room", picked)
		}
		w.WriteHeader(http.StatusOK)
		return nil
	})
	if err := h.ServeHTTP(httptest.NewRecorder(), request("low", nil), held); err != nil {
		t.Fatal(err)
	}
	st := h.t.Status(time.Now())
	if len(st.Upstreams) != 2 || st.Upstreams[0].Requests != 1 || st.Upstreams[1].Requests != 1 || st.Upstreams[0].InFlight+st.Upstreams[1].InFlight != 0 {
		t.Fatalf("upstreams %+v, want one request each, none left in flight", st.Upstreams)
	}
	// Without the handler in front: a pick, nothing counted.
	if u := s.Select(ups, httptest.NewRequest("GET", "/", nil), httptest.NewRecorder()); u == nil {
		t.Fatal("no upstream for a request without the handler")
	}
	if st := h.t.Status(time.Now()); st.Upstreams[0].Requests+st.Upstreams[1].Requests != 2 {
		t.Fatalf("a request without the handler was counted: %+v", st.Upstreams)
	}
}

// benchSelect is the handler with the policy's pick among n upstreams as
// its next handler: the whole per-request cost of a pool.
func benchSelect(b *testing.B, n int) {
	h := newHandler(b, &Handler{Name: b.Name()})
	h.t.SetLogger(zap.NewNop())
	s := newSelection(b, h)
	ups := upstreams(n)
	var picked *reverseproxy.Upstream
	next := proxy(s, ups, http.StatusOK, &picked)
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		w := &nopWriter{h: http.Header{}}
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		r.Header.Set("X-Priority", "low")
		for b.Loop() {
			_ = h.ServeHTTP(w, r, next)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			w := &nopWriter{h: http.Header{}}
			r := httptest.NewRequest(http.MethodPost, "/", nil)
			r.Header.Set("X-Priority", "low")
			for pb.Next() {
				_ = h.ServeHTTP(w, r, next)
			}
		})
	})
}

// BenchmarkHandlerHealthyPool8 is BenchmarkHandlerHealthy with the pick
// among 8 upstreams included.
func BenchmarkHandlerHealthyPool8(b *testing.B) { benchSelect(b, 8) }
