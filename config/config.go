// Package config holds what every block of the adaptive_throttle config
// shares: a duration that reads from JSON as Caddy's do, and the checks whose
// messages name the key the user wrote.
//
// Each block's own type lives with the code it configures (levels/qps,
// levels/latency, levels/gpu, breaker, priority); its JSON tags are the
// Caddyfile's key names, and its Validate names those keys.
package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration that reads from JSON as an integer number of
// nanoseconds or as a string such as "10s", "1.5h" or "2d" (days), the way
// Caddy's own durations do, and writes as nanoseconds.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return fmt.Errorf("empty duration")
	}
	if b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		v, err := ParseDuration(s)
		if err != nil {
			return err
		}
		*d = Duration(v)
		return nil
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return fmt.Errorf("a duration is a string such as \"10s\" or an integer of nanoseconds, got %s", b)
	}
	*d = Duration(n)
	return nil
}

// ParseDuration reads a duration as time.ParseDuration does, and also
// accepts a whole number of days ("2d") as Caddy does.
func ParseDuration(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseFloat(days, 64)
		if err == nil && !math.IsNaN(n) && !math.IsInf(n, 0) && math.Abs(n) < 100000 {
			return time.Duration(n * float64(24*time.Hour)), nil
		}
	}
	return time.ParseDuration(s)
}

// Finite reports an error, naming key, when v is NaN or ±Inf: JSON cannot
// encode them and no setting means anything at infinity.
func Finite(block, key string, v float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return Errorf(block, key, "must be a finite number, got %v", v)
	}
	return nil
}

// Errorf is the one shape of a config error: "block: key message".
func Errorf(block, key, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if block == "" {
		return fmt.Errorf("%s %s", key, msg)
	}
	return fmt.Errorf("%s: %s %s", block, key, msg)
}
