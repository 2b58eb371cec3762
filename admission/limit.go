package admission

import (
	"fmt"
	"math"
	"sync"
	"time"
)

// Limit learns how many requests in flight the upstream takes before a
// queue builds inside it: rules 1 to 8 of the package doc, in the family
// of Netflix's Gradient2 and Envoy's adaptive concurrency. It sees time to
// first byte, never the whole response: an answer's length is not
// congestion. Its methods may be called from any goroutine.
type Limit struct {
	mu        sync.Mutex
	cfg       Config
	off       Rules // rules turned off (SetRulesOff): the lab's, to measure them
	limit     float64
	long      float64 // ns: long-run average time to first byte
	short     float64 // ns: the last step's average
	gradient  float64
	slowStart bool
	// floor is half the limit when the current pressure began: pressure
	// cuts no further (0: no pressure now).
	floor float64
	// carried between steps until enough first bytes were seen
	sum   time.Duration
	count uint64
	since time.Time
	// the first bytes seen before long is set: it is set from minSamples
	// of them at least, so that one quick answer (a health check) does
	// not become the norm
	seedSum   time.Duration
	seedCount uint64
	why       string
	// known is what the upstream served when requests last got stuck, or
	// the most served at once since: its measured capacity. No probing
	// above it before knownUntil.
	known      float64
	knownUntil time.Time
	hold       time.Duration // probes are held off this long after requests get stuck
	// moreSince: since when more than known have been served at once, the
	// fewest of them moreLow (zero: not now).
	moreSince time.Time
	moreLow   float64
	wasStuck  bool // the last step saw requests stuck
	wasFull   bool // the last step saw an answer that the upstream is full
	// marks: Signal.Started at the last markSteps steps, the newest at
	// marks[(head-1) % markSteps]
	marks [markSteps]mark
	head  int
}

// mark is the running total of slots taken at a step.
type mark struct {
	at      time.Time
	started uint64
}

// Tuning of the learner.
const (
	// tolerance: first bytes may come this many times slower than the
	// long-run average before the limit shrinks.
	tolerance = 2.0
	// longSteps: the long-run average's memory, in steps (10 s at four
	// steps a second).
	longSteps = 40
	// smoothing: the weight of a step's new limit.
	smoothing = 0.2
	// minSamples: first bytes a step needs to be judged; fewer are carried
	// to the next step, for at most a second.
	minSamples = 4
	// pressureCut: the cut per step under pressure.
	pressureCut = 0.9
	// slowStartGrowth: the slow start's growth a step. Each step past the
	// upstream's slots admits up to (growth − 1) × slots requests that
	// wait in its queue until answers end: by half, not double, that
	// overshoot drains in half the time, at one step more to a cold
	// start's limit.
	slowStartGrowth = 1.5
	// probeHold: how long the upstream's measured capacity (what it
	// served when requests got stuck) holds probes off; doubled after
	// each probe that finds no more room, up to maxProbeHold, and back to
	// probeHold once more is served.
	probeHold    = 15 * time.Second
	maxProbeHold = 2 * time.Minute
	// markSteps: how many steps back the slots taken are remembered, to
	// tell how long requests have waited for a first byte (8 s at four
	// steps a second; with a long-run first byte over 4 s, nothing is
	// judged stuck).
	markSteps = 32
)

// Signal is what the sampler saw over one step.
type Signal struct {
	Now time.Time
	// TTFB and Count: the sum of the times to first byte of the successful
	// answers that started in the step, and how many there were.
	TTFB  time.Duration
	Count uint64
	// InFlight is the slots taken now; Waiting: a request found every
	// slot of the limit taken since the last step, or requests wait while
	// every slot is (not: they wait for the reserve, or low was refused
	// while shedding: the limit did not bind then).
	InFlight int64
	Waiting  bool
	// Started and Answered are running totals: the slots ever taken, and
	// the requests whose wait for a first byte is over (a first byte came,
	// or the request ended without one). Started − Answered hold a slot
	// and wait for a first byte. Read Started before Answered, so that a
	// gap is never overstated.
	Started, Answered uint64
	// Pressure: a level that says the upstream is hurting (GPU) is
	// tripped, or the circuit is not closed.
	Pressure bool
	// Full: the upstream's answers that it is full (503, 429, 529) in the
	// step; FullInFlight: the fewest other requests in flight at one of
	// them, what the upstream took then.
	Full         uint64
	FullInFlight int64
}

// NewLimit returns a learner at cfg's initial limit (or its fixed one);
// cfg is defaulted.
func NewLimit(cfg Config) *Limit {
	cfg.Defaults()
	l := &Limit{cfg: cfg}
	l.start()
	return l
}

// start puts the learner where a cold start begins: the initial limit (or
// the fixed one), nothing learned. Caller holds mu, or owns l alone.
func (l *Limit) start() {
	l.limit, l.why = float64(l.cfg.Initial), "initial"
	if l.cfg.Limit > 0 {
		l.limit, l.why = float64(l.cfg.Limit), "fixed"
	}
	l.long, l.short, l.gradient, l.slowStart, l.floor = 0, 0, 1, true, 0
	l.sum, l.count, l.since = 0, 0, time.Time{}
	l.seedSum, l.seedCount = 0, 0
	l.marks, l.head = [markSteps]mark{}, 0
	l.known, l.knownUntil, l.wasStuck, l.wasFull = 0, time.Time{}, false, false
	l.hold, l.moreSince, l.moreLow = probeHold, time.Time{}, 0
}

// SetConfig applies a reloaded config, keeping what was learned (within
// the new bounds).
func (l *Limit) SetConfig(cfg Config) {
	cfg.Defaults()
	l.mu.Lock()
	defer l.mu.Unlock()
	old := l.cfg
	l.cfg = cfg
	switch {
	case cfg.Limit > 0:
		l.limit, l.why = float64(cfg.Limit), "fixed"
	case old.Limit > 0: // fixed before: learn from the initial limit
		l.limit, l.slowStart, l.why = float64(cfg.Initial), true, "initial"
	default:
		l.limit = l.clamp(l.limit)
	}
}

// SetRulesOff turns the rules in off off (and the others on), to
// measure what each buys; a deployment never calls it.
func (l *Limit) SetRulesOff(off Rules) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.off = off
}

// Forget starts learning over.
func (l *Limit) Forget() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.start()
}

// Value is the limit now, in whole slots.
func (l *Limit) Value() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.value()
}

func (l *Limit) value() int { return int(math.Round(l.limit)) }

// Serving is the slots of the limit that serve: the limit, or the
// measured capacity when the limit probes above it (a probe's request
// waits in the upstream's queue and frees nothing).
func (l *Limit) Serving() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if m := int(math.Round(l.known)); m > 0 {
		return min(l.value(), m)
	}
	return l.value()
}

// Step learns from one step's signal and returns the new limit.
func (l *Limit) Step(s Signal) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cfg.Limit > 0 { // fixed: nothing to learn, but status shows the first bytes
		if s.Count > 0 {
			l.short = float64(s.TTFB) / float64(s.Count)
		}
		return l.cfg.Limit
	}
	if l.since.IsZero() {
		l.since = s.Now
	}
	if !s.Pressure && l.floor != 0 { // the pressure is over: climb back as from a cold start
		l.floor, l.slowStart = 0, true
	}
	l.sum += s.TTFB
	l.count += s.Count
	judged := l.count >= minSamples || (l.count > 0 && s.Now.Sub(l.since) >= time.Second)
	// Within the queue allowance counts as used only below the measured
	// capacity: above it a slot is a probe, and taking one that nobody
	// asked for puts a request in the upstream's queue for nothing.
	near := float64(s.InFlight) >= l.limit-math.Sqrt(l.limit) && (l.known == 0 || l.limit < l.known)
	used := s.Waiting || near || l.off.Off(RuleAppLimited)
	stuck, wait, servedNow := l.stuck(s)

	next := l.limit
	if judged {
		full := l.count >= minSamples
		l.short = float64(l.sum) / float64(l.count)
		if l.long == 0 {
			l.seedSum, l.seedCount = l.seedSum+l.sum, l.seedCount+l.count
		}
		l.sum, l.count, l.since = 0, 0, s.Now
		switch {
		case l.long == 0:
			if l.seedCount >= minSamples {
				l.long = float64(l.seedSum) / float64(l.seedCount)
			}
		case l.long > 2*l.short && full: // the pressure is gone: follow down at once
			l.long = l.short + (l.long-l.short)/2
		case !s.Waiting && stuck == 0 && l.short <= tolerance*l.long:
			// Everyone asking got a slot, and first bytes kept within the
			// tolerance: this is what the load costs. While requests wait
			// the limit is what binds, and the average must not drift up
			// with the queue the limit allows.
			l.long += (l.short - l.long) / longSteps
		}
		// First bytes quicker than the clock's step average 0: no queue
		// to see, and no 0/0 for the gradient.
		l.gradient = 1
		if l.short > 0 && l.long > 0 {
			l.gradient = math.Max(0.5, math.Min(1, tolerance*l.long/l.short))
		}
		switch {
		case l.gradient < 1:
			l.slowStart = false
			next = l.limit*(1-smoothing) + (l.limit*l.gradient+math.Sqrt(l.limit))*smoothing
			l.why = fmt.Sprintf("first byte %v > %g × %v", ms(l.short), tolerance, ms(l.long))
		case !used:
			l.why = "limit unused"
		case l.slowStart && s.Waiting && l.off.On(RuleSlowStart):
			next = slowStartGrowth * l.limit
			l.why = "slow start"
		default:
			next = l.limit + math.Sqrt(l.limit)*smoothing
			l.why = "probing up"
		}
	}
	if stuck > 0 {
		l.slowStart = false
		// In flight less those stuck understates what is served when a
		// stuck request is taking a slot just freed (in flight fell, its
		// first byte is yet to come): within a run of steps with requests
		// stuck, the most served stands.
		served := math.Max(1, float64(s.InFlight-stuck))
		if l.wasStuck || (l.known > 0 && l.limit > l.known) {
			// Within a run of stuck steps the most served stands; and a
			// probe above the measured capacity that got stuck found no
			// more room, not less.
			served = math.Max(served, l.known)
		}
		// The gradient may take it lower (in flight less those stuck
		// overstates what is served: the requests that joined the queue
		// in the newest step are not counted stuck yet), but not below
		// the requests that have their first byte now.
		next = math.Min(math.Min(l.limit, served), math.Max(next, servedNow))
		if !l.wasStuck && l.known > 0 && l.limit > l.known && served <= l.known && l.off.On(RuleProbeBackoff) {
			// A probe found no more room than measured: each costs a
			// request (and whoever waits behind the cut, high included)
			// a wait in the upstream's queue, so probe half as often.
			l.hold = min(2*l.hold, maxProbeHold)
		}
		l.known, l.knownUntil = served, s.Now.Add(l.hold)
		l.why = fmt.Sprintf("%d waited over %v for a first byte: a queue in the upstream", stuck, ms(float64(wait)))
	} else if s.Full == 0 && l.off.On(RuleProbeHold) && s.Now.Before(l.knownUntil) {
		switch {
		case next > l.limit && next > l.known:
			next = math.Max(l.limit, l.known)
			l.why = fmt.Sprintf("probing held at %d for %v: the upstream served %d when requests got stuck",
				int(math.Round(next)), l.knownUntil.Sub(s.Now).Round(time.Second), int(l.known))
		case next < l.limit && next < servedNow:
			// The first bytes of requests that were stuck come in late,
			// after the limit already came down for them: a cut below
			// the requests being served would count that queue twice,
			// and leave more in flight than the limit, so that nothing,
			// high priority included, is admitted until answers many
			// seconds long end.
			next = math.Min(l.limit, servedNow)
			l.why = fmt.Sprintf("held at %d, the requests served now: the first bytes of those that were stuck come late",
				int(math.Round(next)))
		}
	}
	if s.Full > 0 {
		// The upstream said it is full: it took FullInFlight and no more.
		// Down to that at once, and no probing above it for a hold, as
		// for requests stuck (a refusal comes fast, so first bytes never
		// say so). Requests on their way to the upstream count in
		// FullInFlight too, so while the answers go on each step takes
		// the limit at least one lower.
		took := math.Max(1, float64(s.FullInFlight))
		l.slowStart = false
		next = math.Min(math.Min(next, l.limit), took)
		if stuck == 0 {
			if !l.wasFull && l.known > 0 && l.limit > l.known && took <= l.known && l.off.On(RuleProbeBackoff) {
				l.hold = min(2*l.hold, maxProbeHold) // a probe found no more room: probe half as often
			}
			l.known, l.knownUntil = took, s.Now.Add(l.hold)
		}
		l.why = fmt.Sprintf("the upstream answered full (503/429/529) %d× with %d others in flight", s.Full, int(took))
	}
	l.wasStuck, l.wasFull = stuck > 0, s.Full > 0
	// More served at once than measured, a second running: capacity came
	// back. One step's count can run over the upstream's slots (an answer
	// the upstream has finished counts until its last bytes pass the
	// gateway, while its slot already serves the next), and a measured
	// capacity above the slots opens slots that are not there to anyone.
	if stuck == 0 && l.known > 0 && servedNow > l.known {
		if l.moreSince.IsZero() {
			l.moreSince, l.moreLow = s.Now, servedNow
		}
		l.moreLow = math.Min(l.moreLow, servedNow)
		if s.Now.Sub(l.moreSince) >= time.Second || l.off.Off(RuleCapacityRise) {
			l.known, l.hold, l.moreSince = l.moreLow, probeHold, time.Time{}
		}
	} else {
		l.moreSince = time.Time{}
	}
	if s.Pressure && l.off.On(RulePressureCut) {
		if l.floor == 0 {
			l.floor = l.limit / 2
		}
		l.slowStart = false
		next = math.Max(math.Min(next, l.limit*pressureCut), math.Min(l.floor, l.limit))
		l.why = "pressure from the GPU or the circuit"
	}
	l.limit = l.clamp(next)
	return l.value()
}

// stuck counts the requests that hold a slot and have waited more than
// tolerance × long for a first byte (a lower bound: the slots taken
// before the newest step at least that old, less every wait that is
// over), and returns it with that wait and the requests in flight that
// have their first byte (served); 0 stuck when nothing is learned yet or
// the upstream does not stream. It notes s.Started for the steps to come.
func (l *Limit) stuck(s Signal) (n int64, wait time.Duration, served float64) {
	wait = time.Duration(tolerance * l.long)
	pending := int64(s.Started) - int64(s.Answered)
	inFlightServed := s.InFlight - pending // in flight with a first byte
	served = float64(max(0, inFlightServed))
	// Nothing learned, nobody waiting for a first byte, or answers sent
	// whole (a wait for a first byte is then the answer's length).
	if l.long > 0 && pending > 0 && inFlightServed >= max(1, s.InFlight/4) && l.off.On(RuleStuck) {
		for i := 1; i <= min(l.head, markSteps); i++ {
			if m := l.marks[(l.head-i)%markSteps]; s.Now.Sub(m.at) >= wait {
				n = max(0, int64(m.started)-int64(s.Answered))
				break
			}
		}
	}
	l.marks[l.head%markSteps] = mark{at: s.Now, started: s.Started}
	l.head++
	return n, wait, served
}

func (l *Limit) clamp(v float64) float64 {
	return math.Max(float64(l.cfg.Min), math.Min(float64(l.cfg.Max), v))
}

// LimitStatus is what the learner shows in status.
type LimitStatus struct {
	Limit    int     `json:"limit"`
	Min      int     `json:"min"`
	Max      int     `json:"max"`
	Fixed    bool    `json:"fixed"`
	ShortS   float64 `json:"ttfb_short_s"` // the last judged step's average time to first byte
	LongS    float64 `json:"ttfb_long_s"`  // its long-run average
	Gradient float64 `json:"gradient"`
	Driver   string  `json:"driver"` // what moved the limit last
	// Measured is the upstream's measured capacity, 0 until requests
	// first got stuck: what it served when requests last got stuck, or
	// more, if it has served more at once for a second since. Slots of
	// the limit above it are probes (see Serving).
	Measured int `json:"measured_capacity"`
}

// Status returns the learner's state.
func (l *Limit) Status() LimitStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	return LimitStatus{Limit: l.value(), Min: l.cfg.Min, Max: l.cfg.Max, Fixed: l.cfg.Limit > 0,
		ShortS: round(l.short / 1e9), LongS: round(l.long / 1e9), Gradient: round(l.gradient), Driver: l.why,
		Measured: int(math.Round(l.known))}
}

func ms(ns float64) time.Duration { return time.Duration(ns).Round(time.Millisecond) }

func round(v float64) float64 { return math.Round(v*1e4) / 1e4 }
