package breaker

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/ai-guardian/adaptivethrottle/config"
)

// State is the Circuit's state.
type State int32

const (
	Closed   State = iota // requests flow; failures are counted
	Open                  // requests are rejected until openUntil
	HalfOpen              // only probes are admitted
)

func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case Open:
		return "open"
	case HalfOpen:
		return "half-open"
	}
	return fmt.Sprintf("State(%d)", int32(s))
}

// MarshalText makes State read as its name in JSON.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// CircuitConfig is the `circuit` block: Closed/Open/Half-Open on upstream
// failures. Its JSON keys are the Caddyfile's; zero fields take the
// defaults (Defaults), a zero the user wrote (Zeros) is refused, and
// Validate names the key of a bad value and the bound of one too large.
type CircuitConfig struct {
	// Open at failures/total >= this (default 0.5).
	ErrorRatio float64 `json:"error_ratio,omitempty"`
	// No opening below this many requests in the window (default 20).
	MinRequests int `json:"min_requests,omitempty"`
	// The failure-counting window, in 10 buckets (default 30s).
	Window config.Duration `json:"window,omitempty"`
	// The first time Open before Half-Open; doubles on each re-open (default 60s).
	OpenFor config.Duration `json:"open_for,omitempty"`
	// The cap of the doubling (default 16 × open_for).
	MaxOpenFor config.Duration `json:"max_open_for,omitempty"`
	// Half-Open probes in flight, and successes needed to close (default 1).
	Probes int `json:"probes,omitempty"`
	// A probe holding its slot longer than this frees it for another (default 30s).
	ProbeTimeout config.Duration `json:"probe_timeout,omitempty"`

	config.Zeros // the keys written as 0
}

// Circuit defaults.
const (
	DefaultErrorRatio   = 0.5
	DefaultMinRequests  = 20
	DefaultWindow       = 30 * time.Second
	DefaultOpenFor      = 60 * time.Second
	DefaultProbes       = 1
	DefaultProbeTimeout = 30 * time.Second
	// MaxProbes bounds Probes: each Half-Open episode allocates a slot per probe.
	MaxProbes = 1024
	// minWindow keeps the window's buckets at least 100 ms wide.
	minWindow = time.Second
	// Bounds of the durations and of min_requests.
	MaxWindow       = time.Hour
	MaxOpenFor      = 24 * time.Hour // open_for and max_open_for
	MaxProbeTimeout = time.Hour
	MaxMinRequests  = 1_000_000
)

// Validate reports, naming the key, a value NewCircuit would have to
// correct. Zero values are fine: they take the defaults.
func (c CircuitConfig) Validate() error {
	const b = "circuit"
	if err := config.Finite(b, "error_ratio", c.ErrorRatio); err != nil {
		return err
	}
	given := func(key string, v int64) bool { return c.Given(key, float64(v)) }
	var errs []error
	if c.Given("error_ratio", c.ErrorRatio) && !(c.ErrorRatio > 0 && c.ErrorRatio <= 1) {
		errs = append(errs, config.Errorf(b, "error_ratio", "must be within (0, 1], got %v", c.ErrorRatio))
	}
	if given("min_requests", int64(c.MinRequests)) && c.MinRequests < 1 {
		errs = append(errs, config.Errorf(b, "min_requests", "must be a whole number ≥ 1, got %d", c.MinRequests))
	}
	if given("window", int64(c.Window)) && c.Window.D() < minWindow {
		errs = append(errs, config.Errorf(b, "window", "must be at least %v, got %v", minWindow, c.Window.D()))
	}
	if given("open_for", int64(c.OpenFor)) && c.OpenFor <= 0 {
		errs = append(errs, config.Errorf(b, "open_for", "must be positive, got %v", c.OpenFor.D()))
	}
	if given("max_open_for", int64(c.MaxOpenFor)) && c.MaxOpenFor <= 0 {
		errs = append(errs, config.Errorf(b, "max_open_for", "must be positive, got %v", c.MaxOpenFor.D()))
	} else if openFor := cmp.Or(c.OpenFor.D(), DefaultOpenFor); c.MaxOpenFor > 0 && c.MaxOpenFor.D() < openFor {
		errs = append(errs, config.Errorf(b, "max_open_for", "(%v) must be at least open_for (%v)", c.MaxOpenFor.D(), openFor))
	}
	if given("probes", int64(c.Probes)) && (c.Probes < 1 || c.Probes > MaxProbes) {
		errs = append(errs, config.Errorf(b, "probes", "must be within 1..%d, got %d", MaxProbes, c.Probes))
	}
	if given("probe_timeout", int64(c.ProbeTimeout)) && c.ProbeTimeout <= 0 {
		errs = append(errs, config.Errorf(b, "probe_timeout", "must be positive, got %v", c.ProbeTimeout.D()))
	}
	return errors.Join(append(errs,
		config.AtMost(b, "min_requests", float64(c.MinRequests), MaxMinRequests),
		config.DurationAtMost(b, "window", c.Window, MaxWindow),
		config.DurationAtMost(b, "open_for", c.OpenFor, MaxOpenFor),
		config.DurationAtMost(b, "max_open_for", c.MaxOpenFor, MaxOpenFor),
		config.DurationAtMost(b, "probe_timeout", c.ProbeTimeout, MaxProbeTimeout),
	)...)
}

// Defaults fills the zero fields. It never replaces a value the user gave,
// so Validate still sees a bad one.
func (c *CircuitConfig) Defaults() {
	if c.ErrorRatio == 0 {
		c.ErrorRatio = DefaultErrorRatio
	}
	if c.MinRequests == 0 {
		c.MinRequests = DefaultMinRequests
	}
	if c.Window == 0 {
		c.Window = config.Duration(DefaultWindow)
	}
	if c.OpenFor == 0 {
		c.OpenFor = config.Duration(DefaultOpenFor)
	}
	if c.MaxOpenFor == 0 {
		c.MaxOpenFor = 16 * c.OpenFor
		if c.MaxOpenFor/16 != c.OpenFor { // overflow
			c.MaxOpenFor = math.MaxInt64
		}
	}
	if c.Probes == 0 {
		c.Probes = DefaultProbes
	}
	if c.ProbeTimeout == 0 {
		c.ProbeTimeout = config.Duration(DefaultProbeTimeout)
	}
}

// normalize fills the defaults and replaces what Validate rejects, so a
// Circuit never misbehaves on bad input.
func (c CircuitConfig) normalize() CircuitConfig {
	if !(c.ErrorRatio > 0 && c.ErrorRatio <= 1) {
		c.ErrorRatio = DefaultErrorRatio
	}
	if c.MinRequests < 0 {
		c.MinRequests = 0
	}
	if c.Window.D() < minWindow {
		c.Window = 0
	}
	if c.OpenFor < 0 {
		c.OpenFor = 0
	}
	if c.MaxOpenFor < 0 {
		c.MaxOpenFor = 0
	}
	if c.Probes < 0 || c.Probes > MaxProbes {
		c.Probes = 0
	}
	if c.ProbeTimeout < 0 {
		c.ProbeTimeout = 0
	}
	c.Defaults()
	c.MaxOpenFor = max(c.MaxOpenFor, c.OpenFor)
	return c
}

// Ticket is what Allow hands out and Done takes back. It is a small value
// with no pointers. The zero Ticket is not valid; Done ignores it.
type Ticket struct {
	slot    int32  // probe slot, -1 for a normal request
	episode uint32 // probe: the Half-Open episode that granted it
	lease   int64  // probe: the lease's expiry (mono ns) when granted, > 0
}

// Probe reports whether the ticket is a Half-Open probe.
func (t Ticket) Probe() bool { return t.slot >= 0 && t.lease > 0 }

var normalTicket = Ticket{slot: -1}

// A probe slot holds one int64:
//   - v <= 0: free; -v is the last lease stamp issued on it (0: never);
//   - v == slotClosing: held by a probe that is reporting (never expires);
//   - otherwise held, and v is the lease's expiry (mono ns).
//
// A new lease on a slot is stamped with its expiry now+ProbeTimeout, raised
// by a nanosecond only where a stale clock would repeat the slot's last
// stamp. So stamps on one slot strictly increase within an episode, and a
// ticket's (episode, slot, lease) names one lease: Done can tell a probe
// from the one that took its expired slot.
const slotClosing int64 = math.MaxInt64

// free reports whether slot value v is free.
func free(v int64) bool { return v <= 0 }

// phase is one immutable episode of the Circuit's state. Every transition
// installs a new phase by CAS on Circuit.ph, so state, openUntil and backoff
// change together, exactly one of racing transitions wins, and a probe
// result from an earlier episode can never act on a later one.
type phase struct {
	state     State
	since     time.Time
	reason    string
	openUntil int64         // Open: mono when Half-Open is due
	backoff   time.Duration // Open: this open's duration; else the next one's
	ratio     float64       // window failure ratio at the transition

	episode   uint32         // HalfOpen: its number, carried by its tickets
	probes    []atomic.Int64 // HalfOpen: one slot per probe
	successes atomic.Int64   // HalfOpen: probe successes this episode
	announced atomic.Bool    // reported as a Transition (Done, Poll) yet
}

// Circuit is a Closed / Open / Half-Open breaker on upstream failures.
//
// Closed counts outcomes in a sliding window and opens when, on a failure,
// the window holds at least MinRequests requests and failures/total >=
// ErrorRatio. Open rejects until its backoff has elapsed, then the first
// Allow or Poll moves it to Half-Open. Half-Open admits up to Probes probes
// at once, each holding a slot for at most ProbeTimeout; a probe failure
// reopens with the backoff doubled (capped at MaxOpenFor), and Probes
// successes close it, clearing the window and resetting the backoff to
// OpenFor.
//
// Every state change is a compare-and-swap of the current phase; Allow and
// Done take no lock, and Closed + success is a few atomic ops with no
// allocation.
type Circuit struct {
	cfg      atomic.Pointer[CircuitConfig] // replaced whole by SetConfig
	ph       atomic.Pointer[phase]
	win      atomic.Pointer[window] // replaced when the window's length changes
	episodes atomic.Uint32          // Half-Open episodes started; numbers tickets

	opens       atomic.Uint64
	transitions atomic.Uint64
}

// NewCircuit returns a Closed circuit. Invalid config fields are replaced by
// their defaults (see CircuitConfig.Validate for the errors).
func NewCircuit(cfg CircuitConfig) *Circuit {
	cfg = cfg.normalize()
	c := &Circuit{}
	c.cfg.Store(&cfg)
	c.win.Store(newWindow(cfg.Window.D()))
	p := &phase{state: Closed, backoff: cfg.OpenFor.D()}
	p.announced.Store(true)
	c.ph.Store(p)
	return c
}

// Config returns the effective (defaulted) config.
func (c *Circuit) Config() CircuitConfig { return *c.cfg.Load() }

// SetConfig applies a reloaded config and keeps the state. A window of
// another length starts empty (old buckets mean nothing in it); a new probe
// count applies from the next Half-Open.
func (c *Circuit) SetConfig(cfg CircuitConfig) {
	cfg = cfg.normalize()
	if old := c.cfg.Swap(&cfg); old.Window != cfg.Window {
		c.win.Store(newWindow(cfg.Window.D()))
	}
}

// State returns the current state: one atomic load.
func (c *Circuit) State() State { return c.ph.Load().state }

// Allow decides for one request at now. Closed admits. Open rejects with
// retryIn = time left until Half-Open, or, when that is due, moves to
// Half-Open and proceeds as Half-Open. Half-Open grants a probe when a slot
// is free or its lease expired, else rejects with retryIn = time until the
// earliest lease expires. An Open → Half-Open move made here is not returned
// (the request path stays lean) but shows in Status and in the next Poll.
func (c *Circuit) Allow(now time.Time) (t Ticket, ok bool, retryIn time.Duration) {
	if c.ph.Load().state == Closed { // the common case: no clock arithmetic
		return normalTicket, true, 0
	}
	m := mono(now)
	for {
		p := c.ph.Load()
		switch p.state {
		case Closed:
			return normalTicket, true, 0
		case Open:
			if m < p.openUntil {
				return normalTicket, false, time.Duration(p.openUntil - m)
			}
			c.toHalfOpen(p, now, false) // win or lose, look again
		default:
			t, ok, retryIn, again := c.probe(p, m)
			if !again {
				return t, ok, retryIn
			}
		}
	}
}

// probe tries to take a Half-Open slot of phase p. again asks the caller to
// re-read the phase: it changed while a slot was being taken.
func (c *Circuit) probe(p *phase, m int64) (t Ticket, ok bool, retryIn time.Duration, again bool) {
	earliest := int64(math.MaxInt64)
	for i := range p.probes {
		s := &p.probes[i]
		v := s.Load()
		if free(v) || (v != slotClosing && v <= m) {
			stamp := c.stamp(m, v)
			if s.CompareAndSwap(v, stamp) {
				if c.ph.Load() != p {
					// The episode ended meanwhile: give the slot back and
					// decide again under the new state.
					s.CompareAndSwap(stamp, -stamp)
					return Ticket{}, false, 0, true
				}
				return Ticket{slot: int32(i), episode: p.episode, lease: stamp}, true, 0, false
			}
			v = s.Load() // lost the race; account for the winner's lease
		}
		switch {
		case free(v):
			earliest = min(earliest, m) // freed meanwhile: retry at once
		case v != slotClosing:
			earliest = min(earliest, v)
		}
	}
	if earliest == math.MaxInt64 {
		// Every slot is reporting: the state is about to change.
		return normalTicket, false, 0, false
	}
	return normalTicket, false, time.Duration(max(earliest-m, 0)), false
}

// stamp returns the lease stamp for a slot taken at m from value v: the
// lease's expiry m+ProbeTimeout, raised past the slot's last stamp when a
// stale m would repeat it, and kept clear of the sentinels (> 0, <
// slotClosing).
func (c *Circuit) stamp(m, v int64) int64 {
	last := v
	if free(v) {
		last = -v
	}
	want := m + int64(c.cfg.Load().ProbeTimeout)
	if want < m { // overflow
		want = slotClosing - 1
	}
	return min(max(want, last+1, 1), slotClosing-1)
}

// Cancel gives back an admitted request's ticket without an outcome: the
// client went away, which says nothing about the upstream. A probe's slot
// is freed at once for the next probe; a normal ticket needs nothing.
func (c *Circuit) Cancel(t Ticket) {
	if !t.Probe() {
		return
	}
	p := c.ph.Load()
	if p.state == HalfOpen && p.episode == t.episode && int(t.slot) < len(p.probes) {
		p.probes[t.slot].CompareAndSwap(t.lease, -t.lease)
	}
}

// Done reports an admitted request's outcome; end is when it ended, as
// Mono, and the caller decides what failed means (5xx, dial error,
// timeout). shard picks the window's shard: a caller on one core passing
// the same one keeps that shard's cache lines in its cache. It returns the
// transition the outcome caused, nil in the common case, so that a success
// copies no Transition and costs no clock arithmetic.
//
// A normal ticket counts into the window; a failure while Closed opens the
// circuit when the window holds at least MinRequests requests and the failure
// ratio reaches ErrorRatio. A probe ticket counts only while its slot still
// holds its lease (else the lease expired and the slot went to another probe,
// or the episode ended: the late result is ignored).
func (c *Circuit) Done(end int64, t Ticket, failed bool, shard uint32) *Transition {
	if t.slot < 0 && !failed { // small enough to inline: the request path's case
		c.win.Load().record(end, false, shard)
		return nil
	}
	return c.doneSlow(end, t, failed, shard)
}

func (c *Circuit) doneSlow(end int64, t Ticket, failed bool, shard uint32) *Transition {
	if tr, changed := c.done(epoch.Add(time.Duration(end)), t, failed, shard); changed {
		return &tr
	}
	return nil
}

func (c *Circuit) done(now time.Time, t Ticket, failed bool, shard uint32) (tr Transition, changed bool) {
	m := mono(now)
	if t.slot < 0 {
		c.win.Load().record(m, failed, shard)
		if !failed {
			return Transition{}, false
		}
		return c.maybeOpen(now, m)
	}
	if !t.Probe() {
		return Transition{}, false // the zero Ticket
	}
	p := c.ph.Load()
	if p.state != HalfOpen || p.episode != t.episode || int(t.slot) >= len(p.probes) {
		return Transition{}, false
	}
	s := &p.probes[t.slot]
	// Hold the slot while reporting, so no new probe starts on it in an
	// episode this result is about to end.
	if !s.CompareAndSwap(t.lease, slotClosing) {
		return Transition{}, false
	}
	if failed {
		b := p.backoff
		if b > c.cfg.Load().MaxOpenFor.D()/2 {
			b = c.cfg.Load().MaxOpenFor.D()
		} else {
			b *= 2
		}
		reason := fmt.Sprintf("half-open probe failed; open for %v", b)
		return c.swap(p, c.openPhase(now, m, b, reason, 0))
	}
	if p.successes.Add(1) < int64(c.cfg.Load().Probes) {
		s.Store(-t.lease)
		return Transition{}, false
	}
	np := &phase{
		state:   Closed,
		since:   now,
		backoff: c.cfg.Load().OpenFor.D(),
		reason:  fmt.Sprintf("%d half-open probe(s) succeeded", c.cfg.Load().Probes),
	}
	tr, changed = c.swap(p, np)
	if changed {
		c.win.Load().reset()
	}
	return tr, changed
}

// maybeOpen opens a Closed circuit when the window's failure ratio demands.
// Off the success path: it runs on failures only.
func (c *Circuit) maybeOpen(now time.Time, m int64) (Transition, bool) {
	p := c.ph.Load()
	if p.state != Closed {
		return Transition{}, false
	}
	total, failures := c.win.Load().sum(m)
	if total == 0 || total < uint64(c.cfg.Load().MinRequests) {
		return Transition{}, false
	}
	ratio := float64(failures) / float64(total)
	if ratio < c.cfg.Load().ErrorRatio {
		return Transition{}, false
	}
	reason := fmt.Sprintf("%d of %d requests failed (%.0f%% >= %.0f%%) within %v; open for %v",
		failures, total, 100*ratio, 100*c.cfg.Load().ErrorRatio, c.cfg.Load().Window.D(), p.backoff)
	return c.swap(p, c.openPhase(now, m, p.backoff, reason, ratio))
}

func (c *Circuit) openPhase(now time.Time, m int64, backoff time.Duration, reason string, ratio float64) *phase {
	until := m + int64(backoff)
	if until < m { // overflow
		until = math.MaxInt64
	}
	return &phase{state: Open, since: now, reason: reason, openUntil: until, backoff: backoff, ratio: ratio}
}

// toHalfOpen moves an Open phase p whose time is up to Half-Open; announced
// says whether the caller reports the transition itself.
func (c *Circuit) toHalfOpen(p *phase, now time.Time, announced bool) (Transition, bool) {
	np := &phase{
		state:   HalfOpen,
		since:   now,
		backoff: p.backoff,
		reason:  fmt.Sprintf("open for %v elapsed; admitting %d probe(s)", p.backoff, c.cfg.Load().Probes),
		episode: c.episodes.Add(1),
		probes:  make([]atomic.Int64, c.cfg.Load().Probes),
	}
	np.announced.Store(announced)
	return c.swap(p, np)
}

// swap installs np if p is still current and describes the change.
func (c *Circuit) swap(p, np *phase) (Transition, bool) {
	if np.state == Closed || np.state == Open {
		np.announced.Store(true)
	}
	if !c.ph.CompareAndSwap(p, np) {
		return Transition{}, false
	}
	if np.state == Open {
		c.opens.Add(1)
	}
	c.transitions.Add(1)
	return c.transition(p.state, np), true
}

func (c *Circuit) transition(from State, np *phase) Transition {
	return Transition{
		Name:      "circuit",
		Tripped:   np.state != Closed,
		From:      from,
		To:        np.state,
		Reason:    np.reason,
		Value:     np.ratio,
		Threshold: c.cfg.Load().ErrorRatio,
		At:        np.since,
	}
}

// Poll is for a periodic timer (about 1 s): it moves an Open circuit whose
// time is up to Half-Open, so logs and events see it even without traffic,
// and reports a move to Half-Open that Allow made since. Each Half-Open
// episode is reported at most once, whoever made it; when Allow and Poll race
// for the move, exactly one wins.
func (c *Circuit) Poll(now time.Time) (Transition, bool) {
	p := c.ph.Load()
	switch {
	case p.state == Open && mono(now) >= p.openUntil:
		if tr, ok := c.toHalfOpen(p, now, true); ok {
			return tr, true
		}
		p = c.ph.Load() // Allow won: report its move below
		if p.state != HalfOpen {
			return Transition{}, false
		}
		fallthrough
	case p.state == HalfOpen:
		if p.announced.Swap(true) {
			return Transition{}, false
		}
		return c.transition(Open, p), true
	}
	return Transition{}, false
}

// CircuitStatus is a Circuit at one moment; its JSON (status.go) is the
// circuit's part of /throttle/status.
type CircuitStatus struct {
	State          State
	Since          time.Time // last transition; zero if none
	Opens          uint64
	Transitions    uint64
	OpenFor        time.Duration // current backoff
	RetryIn        time.Duration // Open: time to Half-Open
	Requests       uint64        // in the window
	Failures       uint64        // in the window
	Ratio          float64       // failures ÷ requests in the window
	ProbesInFlight int
	LastReason     string
}

// Status returns a snapshot of the circuit. Lock-free; its fields are read
// one by one, so under concurrent change they may disagree slightly.
func (c *Circuit) Status(now time.Time) CircuitStatus {
	m := mono(now)
	p := c.ph.Load()
	total, failures := c.win.Load().sum(m)
	st := CircuitStatus{
		State:       p.state,
		Since:       p.since,
		Opens:       c.opens.Load(),
		Transitions: c.transitions.Load(),
		OpenFor:     p.backoff,
		Requests:    total,
		Failures:    failures,
		LastReason:  p.reason,
	}
	if total > 0 {
		st.Ratio = float64(min(failures, total)) / float64(total)
	}
	if p.state == Open && p.openUntil > m {
		st.RetryIn = time.Duration(p.openUntil - m)
	}
	for i := range p.probes {
		if v := p.probes[i].Load(); v == slotClosing || (!free(v) && v > m) {
			st.ProbesInFlight++
		}
	}
	return st
}

// Reset forces the circuit Closed at now: window cleared, backoff back to
// OpenFor, probes in flight forgotten (their results will be ignored).
func (c *Circuit) Reset(now time.Time) {
	np := &phase{state: Closed, since: now, backoff: c.cfg.Load().OpenFor.D(), reason: "reset"}
	np.announced.Store(true)
	if old := c.ph.Swap(np); old.state != Closed {
		c.transitions.Add(1)
	}
	c.win.Load().reset()
}
