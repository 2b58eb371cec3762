package loadgen

import (
	"bytes"
	"fmt"
	"net/http"
	"time"
)

// Class is what became of one request.
type Class int

const (
	ClassOK          Class = iota // 200 and, when streaming, the stream reached [DONE]
	ClassShed429                  // 429 from whatever sheds (the module, a limiter)
	ClassShed503                  // 503 whose body is the module's {"error":"overloaded",…}
	ClassOOM                      // 503 "CUDA out of memory" from the upstream itself
	ClassUpstream5xx              // any other 5xx (502 from the proxy, a server closing, …)
	ClassOtherStatus              // any other status
	ClassTimeout                  // no complete answer within the client timeout
	ClassNetError                 // connection refused or reset, …
	ClassBroken                   // 200 but the stream ended before [DONE]
	ClassOverflow                 // never sent: the generator's in-flight cap was full
	numClasses
)

var classNames = [numClasses]string{"ok", "shed_429", "shed_503", "oom", "upstream_5xx", "other_status", "timeout", "net_error", "broken_stream", "client_overflow"}

func (c Class) String() string {
	if c >= 0 && c < numClasses {
		return classNames[c]
	}
	return fmt.Sprintf("class(%d)", int(c))
}

// MarshalText writes the name, so JSON records read well.
func (c Class) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText reads a name written by MarshalText.
func (c *Class) UnmarshalText(b []byte) error {
	for i, n := range classNames {
		if n == string(b) {
			*c = Class(i)
			return nil
		}
	}
	return fmt.Errorf("loadgen: unknown class %q", b)
}

// Shed reports a deliberate refusal: someone in front of the GPU said no.
func (c Class) Shed() bool { return c == ClassShed429 || c == ClassShed503 }

// Markers that tell the two kinds of 503 apart. The module answers
// {"error":"overloaded","level":…}; llmsim's simulated OOM says "CUDA out of
// memory (simulated)", passed through unchanged by the proxy.
var (
	markOverloaded = []byte(`"error":"overloaded"`)
	markOOM        = []byte("CUDA out of memory")
)

// ClassifyStatus classifies a non-200 answer from its status and (the start
// of) its body.
func ClassifyStatus(status int, body []byte) Class {
	switch {
	case status == http.StatusOK:
		return ClassOK
	case status == http.StatusTooManyRequests:
		return ClassShed429
	case status == http.StatusServiceUnavailable && bytes.Contains(body, markOOM):
		return ClassOOM
	case status == http.StatusServiceUnavailable && bytes.Contains(body, markOverloaded):
		return ClassShed503
	case status >= 500:
		return ClassUpstream5xx
	}
	return ClassOtherStatus
}

// SLO is what counts as "served well enough". A zero field is no limit.
type SLO struct {
	TTFB  time.Duration `json:"ttfb"`
	Total time.Duration `json:"total"`
}

// DefaultSLO suits llmsim's defaults, where a healthy answer starts in about
// 0.1 s (prefill 40 ms plus one token) and ends within about 1 s (24 tokens
// at up to 30 ms each at a full batch): 2 s to the first token is 20× the
// healthy wait, enough for a short queue, and far below the tens of seconds
// an unbounded queue reaches. Total time is left free: it is set by the
// answer's length, which the caller chose.
var DefaultSLO = SLO{TTFB: 2 * time.Second}

// Met reports whether an OK answer with these times is within the SLO.
func (s SLO) Met(c Class, ttfb, total time.Duration) bool {
	return c == ClassOK && (s.TTFB <= 0 || ttfb <= s.TTFB) && (s.Total <= 0 || total <= s.Total)
}
