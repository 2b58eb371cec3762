package breaker

import (
	"math"
	"time"
)

// Transition is one change of a level's or the Circuit's state, for logs,
// events and metrics.
type Transition struct {
	Name      string    `json:"name"`      // level name, or "circuit"
	Tripped   bool      `json:"tripped"`   // new state: shedding (a Hysteresis tripped, the Circuit not Closed)
	From      State     `json:"from"`      // Circuit only; Closed for Levels
	To        State     `json:"to"`        // Circuit only; Closed for Levels
	Reason    string    `json:"reason"`    // human text
	Value     float64   `json:"value"`     // Hysteresis: the sample; Circuit: window failure ratio
	Threshold float64   `json:"threshold"` // Hysteresis: the sample's threshold; Circuit: ErrorRatio
	At        time.Time `json:"at"`
	// TraceID is the W3C trace id of a request that shows the cause: the
	// one whose failure opened the circuit, the slowest traced answer of a
	// latency window. Empty when none is known.
	TraceID string `json:"trace_id,omitempty"`
}

// finite maps NaN and ±Inf to 0 so that values stay JSON-encodable
// (encoding/json rejects non-finite floats). 0 also reads as "no threshold".
func finite(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}
