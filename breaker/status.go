package breaker

import (
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// circuitJSON is CircuitStatus as /throttle/status shows it: durations in
// seconds (_s), figures rounded to four decimals, since null before the
// first transition.
type circuitJSON struct {
	State          string     `json:"state"` // closed, open, half-open
	Since          *time.Time `json:"since"`
	Opens          uint64     `json:"opens"`
	OpenForS       float64    `json:"open_for_s"` // the current (doubled) open period
	RetryInS       float64    `json:"retry_in_s"` // Open: time to Half-Open
	Requests       uint64     `json:"window_requests"`
	Failures       uint64     `json:"window_failures"`
	Ratio          float64    `json:"window_ratio"`
	ProbesInFlight int        `json:"probes_in_flight"`
	LastReason     string     `json:"last_reason"`
}

// MarshalJSON writes the status as /throttle/status shows it.
func (s CircuitStatus) MarshalJSON() ([]byte, error) {
	j := circuitJSON{State: s.State.String(), Opens: s.Opens, OpenForS: round(s.OpenFor.Seconds()),
		RetryInS: round(s.RetryIn.Seconds()), Requests: s.Requests, Failures: s.Failures, Ratio: round(s.Ratio),
		ProbesInFlight: s.ProbesInFlight, LastReason: s.LastReason}
	if !s.Since.IsZero() {
		j.Since = &s.Since
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads what MarshalJSON writes (durations to the
// millisecond and below, as rounded).
func (s *CircuitStatus) UnmarshalJSON(b []byte) error {
	var j circuitJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	state, ok := parseState(j.State)
	if !ok {
		return fmt.Errorf("circuit state %q: want closed, open or half-open", j.State)
	}
	*s = CircuitStatus{State: state, Opens: j.Opens, OpenFor: seconds(j.OpenForS), RetryIn: seconds(j.RetryInS),
		Requests: j.Requests, Failures: j.Failures, Ratio: j.Ratio, ProbesInFlight: j.ProbesInFlight, LastReason: j.LastReason}
	if j.Since != nil {
		s.Since = *j.Since
	}
	return nil
}

func parseState(name string) (State, bool) {
	for _, st := range []State{Closed, Open, HalfOpen} {
		if st.String() == name {
			return st, true
		}
	}
	return 0, false
}

// round keeps four decimals, as every figure of /throttle/status.
func round(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return math.Round(f*1e4) / 1e4
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
