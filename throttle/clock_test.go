package throttle

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkClock weighs the request path's clock: the ticker's atomic
// load against the system clock, alone and on the whole path a request
// takes through Middleware (three reads: entry, first byte, exit), serial
// and on every core, in one run.
func BenchmarkClock(b *testing.B) {
	th, err := New(WithName("bench"))
	if err != nil {
		b.Fatal(err)
	}
	defer th.Close()
	h := th.Middleware("", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
	for _, clk := range []string{"ticker", "system"} {
		if clk == "system" {
			stopClock() // Now falls back to time.Now
			defer startClock()
		}
		b.Run(clk+"/now", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = Now()
			}
		})
		b.Run(clk+"/path/serial", func(b *testing.B) {
			w, r := &benchWriter{h: http.Header{}}, httptest.NewRequest(http.MethodPost, "/", nil)
			b.ReportAllocs()
			for b.Loop() {
				h.ServeHTTP(w, r)
			}
		})
		b.Run(clk+"/path/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				w, r := &benchWriter{h: http.Header{}}, httptest.NewRequest(http.MethodPost, "/", nil)
				for pb.Next() {
					h.ServeHTTP(w, r)
				}
			})
		})
	}
}

// benchWriter is a ResponseWriter that keeps nothing.
type benchWriter struct{ h http.Header }

func (w *benchWriter) Header() http.Header         { return w.h }
func (w *benchWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *benchWriter) WriteHeader(int)             {}
