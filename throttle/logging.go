package throttle

import (
	"net/http"
	"sync/atomic"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/time/rate"
)

// shedLogger writes per-request shed lines at debug, at most a few a
// second: a flood of sheds must not become a flood of logs. Lines it drops
// are counted in the next one it writes.
type shedLogger struct {
	lim        *rate.Limiter
	suppressed atomic.Uint64
}

func newShedLogger() *shedLogger { return &shedLogger{lim: rate.NewLimiter(5, 10)} }

// LogRefusal writes a refused request's line at debug, rate-limited (the
// lines it drops are counted in the next one). r may be nil.
func (t *Throttle) LogRefusal(r *http.Request, d Decision) {
	ce := t.logger.Load().Check(zapcore.DebugLevel, "request shed")
	if ce == nil {
		return
	}
	if !t.shedLog.lim.Allow() {
		t.shedLog.suppressed.Add(1)
		return
	}
	ce.Write(zap.String("name", t.name), zap.String("level", d.Cause()), zap.String("priority", d.Priority().String()),
		zap.Int("status", d.Status()), zap.Int("retry_after", d.RetryAfter()), zap.String("trace_id", traceID(r)),
		zap.Uint64("suppressed_since_last", t.shedLog.suppressed.Swap(0)))
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
