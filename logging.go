package adaptivethrottle

import (
	"net/http"
	"strings"
	"sync/atomic"

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

// traceID returns the trace id of a W3C traceparent header
// ("00-<32 hex trace id>-<16 hex parent id>-<flags>"), or "".
func traceID(r *http.Request) string {
	if r == nil {
		return ""
	}
	tp := r.Header.Get("Traceparent")
	parts := strings.Split(tp, "-")
	if len(parts) < 4 || len(parts[1]) != 32 || strings.Trim(parts[1], "0") == "" {
		return ""
	}
	for _, c := range parts[1] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return ""
		}
	}
	return parts[1]
}
