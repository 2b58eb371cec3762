package adaptivethrottle

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/time/rate"

	"github.com/ai-guardian/adaptivethrottle/priority"
)

// shedLogger writes per-request shed lines at debug, at most a few a
// second: a flood of sheds must not become a flood of logs. Lines it drops
// are counted in the next one it writes.
type shedLogger struct {
	lim        *rate.Limiter
	suppressed atomic.Uint64
}

func newShedLogger() *shedLogger { return &shedLogger{lim: rate.NewLimiter(5, 10)} }

func (in *instance) logShed(logger *zap.Logger, r *http.Request, level string, p priority.Priority, status, secs int) {
	ce := logger.Check(zapcore.DebugLevel, "request shed")
	if ce == nil {
		return
	}
	if !in.shedLog.lim.Allow() {
		in.shedLog.suppressed.Add(1)
		return
	}
	ce.Write(zap.String("instance", in.name), zap.String("level", level), zap.String("priority", p.String()),
		zap.Int("status", status), zap.Int("retry_after", secs), zap.String("trace_id", traceID(r)),
		zap.Uint64("suppressed_since_last", in.shedLog.suppressed.Swap(0)))
}

// traceID returns the trace id of the request's W3C traceparent header
// ("00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>"), or "" when it
// has none or a malformed one. It does not allocate.
func traceID(r *http.Request) string {
	if r == nil {
		return ""
	}
	v := r.Header["Traceparent"]
	if len(v) == 0 {
		return ""
	}
	tp := v[0]
	if len(tp) < 55 || tp[2] != '-' || tp[35] != '-' || tp[52] != '-' || tp[:2] == "ff" {
		return ""
	}
	id := tp[3:35]
	zero := true
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return ""
		}
		zero = zero && c == '0'
	}
	if zero {
		return ""
	}
	return id
}

// slowest remembers the trace id of the slowest traced response since it
// was last taken, so that a latency trip can point at an example. The
// request path only compares against an atomic unless it beats the record.
type slowest struct {
	max   atomic.Int64 // ns
	mu    sync.Mutex
	trace string
}

func (s *slowest) note(d time.Duration, r *http.Request) {
	if int64(d) <= s.max.Load() {
		return
	}
	id := traceID(r)
	if id == "" {
		return
	}
	s.mu.Lock()
	if int64(d) > s.max.Load() {
		s.max.Store(int64(d))
		s.trace = id
	}
	s.mu.Unlock()
}

// take returns the recorded trace id and starts over.
func (s *slowest) take() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.trace
	s.trace = ""
	s.max.Store(0)
	return id
}
