package llmsim

import (
	"fmt"
	"net"
	"net/http"
	"time"
)

// Fault makes the server misbehave the way broken upstreams do, so that the
// circuit breaker and latency levels in front of it can be tested. The zero
// Fault is healthy. Hang wins over everything; Delay comes before Reset,
// Status or normal service.
type Fault struct {
	Status int           // answer every request with this status at once (e.g. 500, 502)
	Delay  time.Duration // extra delay before the first byte
	Hang   bool          // never send a first byte; wait until the client leaves
	Reset  bool          // close the connection without a response
}

// applyFault acts out the current fault; it reports whether the request
// should go on to normal service.
func (s *Server) applyFault(w http.ResponseWriter, r *http.Request) bool {
	f := s.currentFault()
	if f.Hang {
		select {
		case <-r.Context().Done():
		case <-s.done:
			s.abandon(r.Context(), w, false)
		}
		return false
	}
	if f.Delay > 0 && !s.sleep(r.Context(), f.Delay) {
		s.abandon(r.Context(), w, false)
		return false
	}
	if f.Reset {
		resetConn(w)
		return false
	}
	if f.Status != 0 {
		writeError(w, f.Status, fmt.Sprintf("simulated fault: HTTP %d", f.Status))
		return false
	}
	return true
}

// resetConn drops the connection with no response: an RST where the
// connection is TCP. Where it cannot be hijacked (HTTP/2), it aborts the
// handler the way net/http documents for exactly this purpose.
func resetConn(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}
