// Package breaker holds the trip/recover state of adaptive_throttle: a
// Hysteresis that each level (levels/qps, levels/latency, levels/gpu) feeds
// its judgements into, and a Circuit that goes Closed → Open → Half-Open on
// upstream failures.
//
// Like golang.org/x/time/rate, every time-dependent method takes the time
// from its caller, so callers and tests own the clock: the Hysteresis,
// fed by the sampler, a time.Time; the Circuit, on the request path, a
// Mono. What the request path calls, Hysteresis.Tripped, Circuit.Allow and
// Circuit.Done, takes no lock; their common case is a few atomic
// operations and allocates nothing.
package breaker
