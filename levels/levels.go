// Package levels is what the engine's sampler knows of a level: the Level
// interface and the Inputs it hands every level at each step.
//
// A level is one pressure signal, and lives whole in its own folder:
//
//	levels/qps      arrivals against a learned baseline, and a fixed ceiling
//	levels/latency  a percentile of time to first byte against its history
//	levels/gpu      GPU memory or a model server's saturation gauge, read
//	                by package sensors
//
// Each folder holds the level's config block (its JSON tags are the
// Caddyfile's keys; defaults and validation name those keys), its
// statistics, its trip rules and reason strings, its hysteresis settings
// (a breaker.Hysteresis) and its status. To change one level, edit its
// folder; the engine (package throttle) only loops over them.
package levels

import (
	"time"

	"github.com/ai-guardian/adaptivethrottle/breaker"
)

// Level is one pressure signal with hysteresis.
//
// Sample is called by the engine's sampler only, once a step (four times a
// second), so a level's statistics and hysteresis have one writer. The
// request path reads Hysteresis().Tripped(), an atomic.
type Level interface {
	// Name is the level's name in status, metrics, logs and refusals:
	// "qps", "latency" or "gpu".
	Name() string
	// Sample reads what the level watches, judges it and feeds its
	// hysteresis; each trip or recovery is handed to report.
	Sample(now time.Time, in Inputs, report func(breaker.Transition))
	// Hysteresis is the level's tripped state.
	Hysteresis() *breaker.Hysteresis
	// Forget drops what the level has learned, and a trip that came of it
	// (the admin API's reset). A level that learns nothing keeps its state.
	Forget()
}

// Step is the sampler's period: the QPS level's burst check runs every
// step; everything else once a second (Inputs.Second).
const Step = time.Second / 4

// Inputs is what the engine measured for the levels, at one step.
type Inputs struct {
	// Second is set on every fourth step: a whole second has passed since
	// the last one, and the per-second statistics close their period.
	Second bool
	// Learn is false while anything sheds: an overload must never become
	// the new normal, so levels freeze what they learn.
	Learn bool
	// Arrivals is the number of requests decided on so far.
	Arrivals uint64
	// InFlight is the number of admitted requests not yet answered.
	InFlight int64
}
