// Package throttle is adaptive_throttle's engine, free of Caddy: per-name
// state, the sampler, and the request path's Admit and Finish. The Caddy
// module (the repository's root package) is one user of it; Middleware
// serves any net/http server.
//
// A request is admitted, served and finished:
//
//	d := t.Admit(ctx, p, throttle.Now()) // lock-free when a slot is free
//	if !d.Admitted() { ... refuse: d.Status(), d.RetryAfter() ... }
//	err := t.Serve(w, r, d, next)      // next, then Finish on every path
//
// Serve times the first byte and calls Finish, on a normal return and when
// next panics alike. A caller that is not an HTTP handler calls Finish
// itself, exactly once per admitted Decision.
//
// Data flows one way. The request path only counts and records (verdicts,
// time to first byte, the circuit's window). Four times a second the
// sampler hands every level (levels/qps, levels/latency, levels/gpu) what
// was counted; the levels judge, and the sampler alone publishes the
// shedding state the request path reads. GPU sensors only publish
// readings. Every time-dependent method takes the time from its caller, as
// golang.org/x/time/rate does.
package throttle

import (
	"context"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ai-guardian/adaptivethrottle/admission"
	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/internal/shard"
	"github.com/ai-guardian/adaptivethrottle/levels"
	"github.com/ai-guardian/adaptivethrottle/levels/gpu"
	"github.com/ai-guardian/adaptivethrottle/levels/latency"
	"github.com/ai-guardian/adaptivethrottle/levels/qps"
	"github.com/ai-guardian/adaptivethrottle/pool"
	"github.com/ai-guardian/adaptivethrottle/priority"
)

// The levels, in the order a refusal names them when several are tripped:
// the most physical cause first.
const (
	levelGPU = iota
	levelLatency
	levelQPS
	numLevels
)

// Refusal causes beyond the levels, for shed counts and refusals.
const (
	causeCircuit = numLevels + iota
	causeOverride
	causeLimit    // no slot within the wait, nothing tripped
	causeUpstream // the upstream answered that it is full (503, 429, 529)
	numCauses
)

// Causes is the number of refusal causes: the levels, the circuit, an
// override, the concurrency limit and the upstream's own answer that it is
// full.
const Causes = numCauses

var causeNames = [numCauses]string{"gpu", "latency", "qps", "circuit", "override", "concurrency", "upstream"}

// CauseName names refusal cause c (0 ≤ c < Causes): gpu, latency, qps,
// circuit, override, concurrency or upstream.
func CauseName(c int) string { return causeNames[c] }

// Throttle is one named throttle: what it has learned, its sampler and the
// atomics the request path reads.
//
// Invariants: the request path (Admit, Serve, Finish) takes a free slot
// with atomic operations and no allocation; it locks only one shard of the
// latency histograms (Finish), and the gate's mutex when a request waits or
// a freed slot goes to a waiter. The sampler is the one
// writer of tripped and shedUntil. Every admitted Decision is finished
// exactly once, so in flight = admitted − finished ≥ 0.
type Throttle struct {
	name string

	// The levels: the sampler loops over all; the request path records
	// into latency.
	qps     *qps.Level
	latency *latency.Level
	gpu     *gpu.Level
	levels  [numLevels]levels.Level

	circuit *breaker.Circuit

	// Admission: the slots and their queues (request path), and the
	// learned limit (sampler).
	gate       *admission.Gate
	limit      *admission.Limit
	pool       *pool.Pool                   // the upstreams of a load balancer, when its selection policy is this throttle's
	firstBytes firstBytes                   // successful first bytes since start: the limit's signal
	highIn     atomic.Int64                 // high-priority requests in flight
	weigher    weigher                      // tells short requests from long ones
	held       atomic.Int64                 // bytes of bodies read while their requests wait (holdBody)
	maxWait    [priority.Count]atomic.Int64 // ns: each priority's max_wait
	slo        atomic.Int64                 // ns: latency slo, 0 when none is stated
	highWait   atomic.Int64                 // ns: how long high may wait for a slot (setHighWait)
	service    *service                     // service times per class: the wait's budget under an slo
	off        admission.Rules              // rules turned off (WithRulesOff); set before the sampler starts

	// Read by the request path, written by the sampler (and an override).
	tripped   atomic.Uint32 // bit i set: levels[i] tripped
	shedUntil atomic.Int64  // unix ns when the current shedding is expected to end
	override  atomic.Pointer[override]
	restored  atomic.Pointer[RestoredStatus] // what Restore took; nil: nothing
	def       atomic.Uint32                  // priority.Priority of a request that claims none
	retry     atomic.Int64                   // Retry-After floor, ns
	retryMax  atomic.Int64                   // Retry-After ceiling, ns

	// Counted by the request path.
	verdicts [priority.Count][priority.Verdicts]*shard.Counter
	finished *shard.Counter
	turnover *admission.Turnover // how long slots are held: whether high can count on one freeing
	reserve  *admission.Reserve  // sampler only: sizes high's reserve
	shedBy   [numCauses]atomic.Uint64
	full     fullUpstream // the upstream's answers that it is full

	// refuser answers a request whose upstream answer that it is full was
	// held back (Serve); nil: LogRefusal and WriteRefusal.
	refuser func(http.ResponseWriter, *http.Request, Decision) error

	errStatus func(error) int // the status of an error next returned unanswered; nil: 500

	logger  atomic.Pointer[zap.Logger]
	shedLog *shedLogger
	events  eventQueue

	// Sampler side.
	mu        sync.Mutex // cfg, and serialises Apply with itself
	cfg       Config
	steps     int           // sampler only
	lastFirst [2]uint64     // sampler only: firstBytes (sum, count) at the last step
	lastFulls uint64        // sampler only: the gate's fulls at the last step
	lastFin   uint64        // sampler only: finished at the last second
	lastSec   time.Time     // sampler only
	drain     atomic.Uint64 // float64 bits: completions per second, smoothed (sampler)
	gpuNote   uint64        // sampler only: the GPU level's note last logged (gpu.Level.Note)
	stop      context.CancelFunc
	done      chan struct{}
}

// override is an operator's decision that beats the levels until it expires.
type override struct {
	State string    // "shed" or "pass"
	Until time.Time // zero: until cleared
	Set   time.Time
}

// New returns a running throttle: its sampler, its GPU source and its event
// queue started. Close stops them.
func New(opts ...Option) (*Throttle, error) {
	o := options{logger: zap.NewNop(), name: "default"}
	for _, opt := range opts {
		opt(&o)
	}
	if err := o.cfg.Validate(); err != nil {
		return nil, err
	}
	o.cfg.Defaults()
	t, err := build(o.name, o.cfg, o.logger)
	if err != nil {
		return nil, err
	}
	if o.emit != nil {
		t.SetEmitter(o.emit)
	}
	t.errStatus = o.errStatus
	t.off = o.rulesOff
	t.limit.SetRulesOff(o.rulesOff)
	t.reserve = admission.NewReserve(o.rulesOff)
	t.refuser = o.refuser
	startClock()
	ctx, cancel := context.WithCancel(context.Background())
	t.stop, t.done = cancel, make(chan struct{})
	go t.run(ctx)
	t.events.start()
	return t, nil
}

// build makes a throttle from a validated, defaulted config, with its GPU
// source open but no sampler running: tests step it by hand.
func build(name string, cfg Config, logger *zap.Logger) (*Throttle, error) {
	g, err := gpu.New(cfg.GPU)
	if err != nil {
		return nil, err
	}
	t := &Throttle{
		name:     name,
		qps:      qps.New(cfg.QPS),
		latency:  latency.New(cfg.Latency),
		gpu:      g,
		circuit:  breaker.NewCircuit(cfg.Circuit),
		limit:    admission.NewLimit(cfg.Concurrency),
		pool:     pool.New(cfg.Concurrency, cfg.Circuit, cfg.UpstreamGauge),
		finished: shard.NewCounter(),
		turnover: admission.NewTurnover(),
		reserve:  admission.NewReserve(0),
		service:  newService(),
		shedLog:  newShedLogger(),
		cfg:      cfg,
	}
	t.gate = admission.NewGate(t.limit.Value(), cfg.Concurrency.Queue)
	t.gate.SetReserve(cfg.Priority.Reserve(t.limit.Value()))
	t.firstBytes = newFirstBytes()
	t.full.least.Store(math.MaxInt64)
	t.setMaxWait(cfg.Concurrency.MaxWait)
	t.slo.Store(int64(cfg.Latency.SLO))
	t.weigher.limit.Store(cfg.Concurrency.WeighBody)
	t.levels = [numLevels]levels.Level{levelGPU: t.gpu, levelLatency: t.latency, levelQPS: t.qps}
	for p := range t.verdicts {
		for v := range t.verdicts[p] {
			t.verdicts[p][v] = shard.NewCounter()
		}
	}
	t.def.Store(uint32(cfg.Priority.DefaultPriority()))
	t.retry.Store(int64(cfg.RetryAfter))
	t.retryMax.Store(int64(cfg.RetryAfterMax))
	t.logger.Store(logger)
	t.events.init()
	if w := g.Warning(); w != "" {
		logger.Warn("gpu level off", zap.String("name", name), zap.String("reason", w))
	}
	return t, nil
}

// Name is the throttle's name in status, metrics, logs and events.
func (t *Throttle) Name() string { return t.name }

// Config returns the config in force, defaults filled.
func (t *Throttle) Config() Config {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cfg
}

// DefaultPriority is the priority of a request that claims none.
func (t *Throttle) DefaultPriority() priority.Priority { return priority.Priority(t.def.Load()) }

// SetLogger points the throttle's logs at l (a reload brings a new one).
func (t *Throttle) SetLogger(l *zap.Logger) { t.logger.Store(l) }

// Close stops the sampler, the event queue and the GPU source. Requests
// still in flight may finish afterwards.
func (t *Throttle) Close() error {
	if t.stop != nil { // nil: built but never started (tests)
		t.stop()
		<-t.done
		t.events.close()
		stopClock()
		t.stop = nil
	}
	t.pool.Shut()
	return t.gpu.Close()
}

// Apply takes a reloaded config without losing what was learned: only a
// change that makes old state meaningless resets that part, and says so.
// The config is validated first, and the one step that can fail (opening a
// new GPU source) comes before any other change: a rejected config leaves
// the throttle exactly as it was.
func (t *Throttle) Apply(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg.Defaults()
	t.mu.Lock()
	defer t.mu.Unlock()
	logger := t.logger.Load()
	reopened, err := t.gpu.SetConfig(cfg.GPU)
	if err != nil {
		return err
	}
	if reopened {
		logger.Info("gpu source reopened for the new config", zap.String("name", t.name), zap.String("source", cfg.GPU.Source))
		if w := t.gpu.Warning(); w != "" {
			logger.Warn("gpu level off", zap.String("name", t.name), zap.String("reason", w))
		}
	}
	old := t.cfg
	t.cfg = cfg
	if t.qps.SetConfig(cfg.QPS) {
		logger.Info("qps window changed: learned baseline forgotten",
			zap.String("name", t.name), zap.Duration("old", old.QPS.Window.D()), zap.Duration("new", cfg.QPS.Window.D()))
	}
	t.latency.SetConfig(cfg.Latency)
	if old.Circuit != cfg.Circuit {
		t.circuit.SetConfig(cfg.Circuit)
	}
	t.limit.SetConfig(cfg.Concurrency)
	if err := t.pool.SetConfig(cfg.Concurrency, cfg.Circuit, cfg.UpstreamGauge); err != nil {
		logger.Warn("upstream gauge not opened: the upstream's status says why", zap.String("name", t.name), zap.Error(err))
	}
	t.resetGate(cfg.Priority)
	t.gate.SetMaxQueue(cfg.Concurrency.Queue)
	t.setMaxWait(cfg.Concurrency.MaxWait)
	t.slo.Store(int64(cfg.Latency.SLO))
	t.weigher.limit.Store(cfg.Concurrency.WeighBody)
	t.def.Store(uint32(cfg.Priority.DefaultPriority()))
	t.retry.Store(int64(cfg.RetryAfter))
	t.retryMax.Store(int64(cfg.RetryAfterMax))
	return nil
}

// resetGate gives the gate the limit's value, with pc's share of it as the
// reserve, together (Gate.Set) and the guard as it is: after a reload, a
// restore or a reset changed the limit outside the sampler, until its
// next step sizes the reserve to what uses it.
func (t *Throttle) resetGate(pc priority.Config) {
	n := t.limit.Value()
	if pn, ok := t.pool.Limit(); ok {
		n = pn
	}
	t.gate.Set(n, pc.Reserve(n), t.gate.Guarding())
}

func (t *Throttle) setMaxWait(m admission.MaxWait) {
	for p := range t.maxWait {
		t.maxWait[p].Store(int64(m.Of(priority.Priority(p))))
	}
	t.setHighWait()
}
