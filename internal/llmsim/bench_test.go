package llmsim

import (
	"net/http/httptest"
	"testing"
	"time"
)

// The scheduler sits on every request of an overload lab; its cost per
// request must stay far below the simulated times.
func BenchmarkSchedulerCycle(b *testing.B) {
	s := newScheduler(Config{Slots: 8}.withDefaults())
	b.ReportAllocs()
	for b.Loop() {
		q, err := s.enqueue(100, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		<-q.admitted
		s.addToken(q)
		s.leave(q, true)
	}
}

// /metrics is scraped every second or two by the shedder under test.
func BenchmarkMetrics(b *testing.B) {
	s := New(Config{})
	defer s.Close()
	b.ReportAllocs()
	for b.Loop() {
		s.handleMetrics(httptest.NewRecorder())
	}
}
