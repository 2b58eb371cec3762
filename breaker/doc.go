// Package breaker holds the trip/recover state of adaptive_throttle: a Level
// per pressure signal (QPS, GPU, latency) with hysteresis, and a Circuit that
// goes Closed → Open → Half-Open on upstream failures.
//
// Like golang.org/x/time/rate, every time-dependent method takes an explicit
// now argument, so callers (and tests) own the clock. The request path only
// reads atomics: Level.Tripped, Circuit.Allow and Circuit.Done's common case
// take no lock and allocate nothing.
package breaker
