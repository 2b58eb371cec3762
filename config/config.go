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
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
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

// Error is a config error about one key of a block, which it names:
// "block: key message" ("key message" at the top level). The Caddyfile
// parser finds the key's line by its Key.
type Error struct {
	Block, Key, Msg string
}

func (e *Error) Error() string {
	if e.Block == "" {
		return e.Key + " " + e.Msg
	}
	return e.Block + ": " + e.Key + " " + e.Msg
}

// Errorf is the one shape of a config error: "block: key message".
func Errorf(block, key, format string, args ...any) error {
	return &Error{Block: block, Key: key, Msg: fmt.Sprintf(format, args...)}
}

// Zeros is the set of a block's keys that the user wrote as zero (0, 0s).
// A plain numeric field cannot tell a written 0 from a key left out, which
// takes the default; with Zeros, Defaults honours a written 0 where it
// means something (sigma 0: the baseline is the mean) and Validate refuses
// it where it does not (trip_factor 0), and a written 0 is never replaced
// by the default. JSON (UnmarshalBlock) and the Caddyfile fill it; in Go, a
// zero field without its key here is the default.
type Zeros struct {
	keys string // " key1 key2 ": comparable, so a block stays comparable
}

// Add records key as written zero.
func (z *Zeros) Add(key string) {
	if !z.Has(key) {
		z.keys = cmp.Or(z.keys, " ") + key + " "
	}
}

// Has reports whether key was written as zero.
func (z Zeros) Has(key string) bool { return strings.Contains(z.keys, " "+key+" ") }

// Keys lists the keys written as zero.
func (z Zeros) Keys() []string { return strings.Fields(z.keys) }

// Given reports whether a numeric value v of key counts as given: non-zero,
// or zero and written so.
func (z Zeros) Given(key string, v float64) bool { return v != 0 || z.Has(key) }

// MarshalBlock writes v (a block's config, as a type without its
// MarshalJSON) as JSON, with each key of z written as 0: omitempty leaves
// zeros out, and a written zero must survive the trip from the Caddyfile
// through JSON.
func MarshalBlock(v any, z Zeros) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil || z.keys == "" {
		return b, err
	}
	out := bytes.TrimSuffix(b, []byte("}"))
	for _, k := range z.Keys() {
		if len(out) > 1 {
			out = append(out, ',')
		}
		out = append(strconv.AppendQuote(out, k), ":0"...)
	}
	return append(out, '}'), nil
}

// Renamed refuses the JSON object b when it has the key old, naming the
// key current that replaced it: "block: old is now current".
func Renamed(b []byte, block, old, current string) error {
	var raw map[string]json.RawMessage
	if json.Unmarshal(b, &raw) != nil {
		return nil // not an object: the decoder says why
	}
	if _, ok := raw[old]; ok {
		return Errorf(block, old, "is now %s", current)
	}
	return nil
}

// UnmarshalBlock reads the JSON object b into v (a pointer to a block's
// config, as a type without its UnmarshalJSON), refusing unknown keys as
// Caddy does, and returns the numeric keys b gives as zero.
func UnmarshalBlock(b []byte, v any) (Zeros, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return Zeros{}, err
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return Zeros{}, err
	}
	var z Zeros
	rv := reflect.ValueOf(v).Elem()
	for _, sf := range reflect.VisibleFields(rv.Type()) {
		name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		msg, ok := raw[name]
		if !sf.IsExported() || sf.Anonymous || !ok || string(bytes.TrimSpace(msg)) == "null" {
			continue
		}
		switch f := rv.FieldByIndex(sf.Index); f.Kind() {
		case reflect.Int, reflect.Int64, reflect.Float64:
			if f.IsZero() {
				z.Add(name)
			}
		}
	}
	return z, nil
}

// Bounds shared by several blocks: no setting may make the server hold,
// allocate or wait in proportion to a number nobody checked.
const (
	// MaxSlots bounds every count of requests: a concurrency limit, its
	// min, max and initial, a queue, high's reserve.
	MaxSlots = 100_000
	// MaxRate bounds every rate in requests per second.
	MaxRate = 1_000_000
)

// AtMost reports an error, naming key and the bound, when v exceeds it.
func AtMost(block, key string, v, bound float64) error {
	if v > bound {
		f := func(x float64) string { // 1000000, not 1e+06; 1e+308 in full is no help
			if math.Abs(x) < 1e15 {
				return strconv.FormatFloat(x, 'f', -1, 64)
			}
			return strconv.FormatFloat(x, 'g', -1, 64)
		}
		return Errorf(block, key, "must be at most %s, got %s", f(bound), f(v))
	}
	return nil
}

// DurationAtMost reports an error, naming key and the bound, when d
// exceeds it.
func DurationAtMost(block, key string, d Duration, bound time.Duration) error {
	if d.D() > bound {
		return Errorf(block, key, "must be at most %s, got %s", Format(bound), Format(d.D()))
	}
	return nil
}

// Format writes d as time.Duration does, without the zero units a round
// bound ends with: 24h, not 24h0m0s.
func Format(d time.Duration) string {
	s := d.String()
	if t, ok := strings.CutSuffix(s, "m0s"); ok {
		s = t + "m"
	}
	if t, ok := strings.CutSuffix(s, "h0m"); ok {
		s = t + "h"
	}
	return s
}
