package breaker

import (
	"encoding/json"
	"reflect"
	"slices"
	"testing"
	"time"
)

// A circuit's status reads in JSON as /throttle/status shows it — the
// keys the README lists, durations in seconds, since null before any
// transition — and reads back as it was.
func TestCircuitStatusJSONRoundTrip(t *testing.T) {
	since := time.Date(2026, 11, 28, 0, 11, 35, 0, time.UTC)
	for _, st := range []CircuitStatus{
		{State: Closed, OpenFor: time.Minute},
		{State: Open, Since: since, Opens: 2, OpenFor: 2 * time.Minute, RetryIn: 1500 * time.Millisecond,
			Requests: 40, Failures: 30, Ratio: 0.75, ProbesInFlight: 1, LastReason: "ratio 0.75 ≥ 0.5"},
	} {
		b, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		var raw map[string]any
		if err := json.Unmarshal(b, &raw); err != nil {
			t.Fatal(err)
		}
		keys := make([]string, 0, len(raw))
		for k := range raw {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		want := []string{"last_reason", "open_for_s", "opens", "probes_in_flight", "retry_in_s", "since", "state",
			"window_failures", "window_ratio", "window_requests"}
		if !slices.Equal(keys, want) {
			t.Errorf("%s: keys %v, want %v", b, keys, want)
		}
		if raw["state"] != st.State.String() || raw["open_for_s"] != st.OpenFor.Seconds() || raw["retry_in_s"] != st.RetryIn.Seconds() {
			t.Errorf("%s: state or seconds wrong", b)
		}
		if st.Since.IsZero() != (raw["since"] == nil) {
			t.Errorf("%s: since %v", b, raw["since"])
		}
		var back CircuitStatus
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		st.Transitions = 0 // Go only
		if !reflect.DeepEqual(back, st) {
			t.Errorf("round trip:\n got  %+v\n want %+v", back, st)
		}
	}
	var st CircuitStatus
	if err := json.Unmarshal([]byte(`{"state":"ajar"}`), &st); err == nil {
		t.Error(`state "ajar" read without error`)
	}
}
