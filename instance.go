package adaptivethrottle

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/priority"
	"github.com/ai-guardian/adaptivethrottle/sensors"
	"github.com/ai-guardian/adaptivethrottle/sensors/gpu"
)

// The three levels, in the order a refusal names them when several are
// tripped: the most physical cause first.
const (
	levelGPU = iota
	levelLatency
	levelQPS
	numLevels
)

var levelNames = [numLevels]string{"gpu", "latency", "qps"}

// tickEvery is the sampler period: QPS rates, the latency short period and
// the medium lane's controller all run once a second.
const tickEvery = time.Second

// burstEvery is the period of the burst check between ticks: a surge far
// above the QPS threshold is caught within a quarter of a second instead of
// a whole one, before the upstream's queue grows long enough to break the
// high lane's latency.
const burstEvery = tickEvery / 4

// instance is one named throttle: what it has learned, its samplers and the
// atomics the request path reads. It lives in a caddy.UsagePool keyed by
// name, so it outlives config reloads; handlers come and go around it.
type instance struct {
	name string

	// Read or bumped by the request path.
	qps      *sensors.QPS
	latency  *sensors.Latency
	levels   [numLevels]*breaker.Level
	circuit  *breaker.Circuit
	lanes    priority.Lanes
	tripped  atomic.Uint32 // bit i set: levels[i] tripped
	shedAt   atomic.Int64  // unix ns when the current shedding is expected to end
	override atomic.Pointer[override]
	finished *sensors.Counter                                  // ... and back
	verdicts [priority.Count][numVerdicts + 1]*sensors.Counter // last: refused by the circuit
	shedBy   [numShedCauses]atomic.Uint64
	shedLog  *shedLogger

	// Sampler side.
	mu         sync.Mutex // cfg, gpu sensor, lastFinished
	cfg        settings
	gpuSensor  *gpu.Sensor
	gpuSource  gpu.Source
	gpuWarning string
	gpuStop    context.CancelFunc
	gpuDone    chan struct{}
	// gpuShed is on_error shed, read by the GPU sensor's goroutine without
	// mu: a reload or a cleanup holds mu while it waits for that goroutine
	// to stop, so the goroutine must never wait for mu.
	gpuShed      atomic.Bool
	lastFinish   uint64
	lastHigh     uint64 // high-priority admissions at the last tick
	lastTick     time.Time
	lastBurst    time.Time     // burst check: when it last looked
	lastArrivals uint64        // and the arrivals it saw then
	lastShort    time.Duration // the last period's median TTFB (sampler only)
	fastBad      int           // seconds in a row the median TTFB was far above its threshold
	logger       atomic.Pointer[zap.Logger]
	stop         context.CancelFunc
	done         chan struct{}
	eventsState
	emitStop chan struct{}
	emitDone chan struct{}
	slow     slowest
}

// override is an operator's decision that beats the levels until it expires.
type override struct {
	State string    // "shed" or "pass"
	Until time.Time // zero: until cleared
	Set   time.Time
}

const (
	numVerdicts    = int(priority.ShedLow) + 1
	verdictCircuit = numVerdicts // refused by an open circuit, before any lane
)

// Refusal causes, for shed counts: the levels, the circuit, an override.
const (
	causeCircuit = numLevels + iota
	causeOverride
	numShedCauses
)

func causeName(c int) string {
	switch {
	case c < numLevels:
		return levelNames[c]
	case c == causeCircuit:
		return "circuit"
	}
	return "override"
}

// newInstance builds an instance from settings, opens its GPU source and
// starts its samplers.
func newInstance(name string, s settings, logger *zap.Logger) (*instance, error) {
	in := buildInstance(name, s, logger)
	if err := in.openGPU(s.gpu); err != nil {
		return nil, err
	}
	startClock()
	ctx, cancel := context.WithCancel(context.Background())
	in.stop, in.done = cancel, make(chan struct{})
	in.emitStop, in.emitDone = make(chan struct{}), make(chan struct{})
	go in.run(ctx)
	go in.emitLoop(in.emitStop, in.emitDone)
	return in, nil
}

// buildInstance makes the state with nothing started: tests drive its
// tick and onGPU by hand with synthetic times.
func buildInstance(name string, s settings, logger *zap.Logger) *instance {
	in := &instance{
		name:     name,
		qps:      nil, // below: it reads the verdict counters
		latency:  sensors.NewLatency(s.latency),
		circuit:  breaker.NewCircuit(s.circuit),
		lanes:    priority.Lanes{Reserve: priority.NewReserve(s.reserve), Bucket: priority.NewBucket(s.bucket)},
		finished: sensors.NewCounter(),
		shedLog:  newShedLogger(),
		cfg:      s,
	}
	for p := range in.verdicts {
		for v := range in.verdicts[p] {
			in.verdicts[p][v] = sensors.NewCounter()
		}
	}
	in.qps = sensors.NewQPSFrom(s.qps, in.seen) // every request counts one verdict
	for i := range in.levels {
		in.levels[i] = breaker.NewLevel(levelNames[i], levelConfig(i, s))
	}
	in.logger.Store(logger)
	in.gpuShed.Store(s.gpu.OnError == "shed")
	in.events = make(chan event, eventQueue)
	return in
}

// levelConfig is each level's hysteresis. QPS needs two bad seconds in a
// row (one busy second is noise); latency the configured number of bad
// windows; GPU memory trips on one reading, since an OOM does not wait.
func levelConfig(i int, s settings) breaker.LevelConfig {
	switch i {
	case levelQPS:
		return breaker.LevelConfig{TripAfter: 2, RecoverAfter: 3, MinTripped: 5 * time.Second, Period: tickEvery}
	case levelLatency:
		return breaker.LevelConfig{TripAfter: s.latency.Consecutive, RecoverAfter: 1, MinTripped: s.latency.Window, Period: s.latency.Window}
	}
	return breaker.LevelConfig{TripAfter: 1, RecoverAfter: 2, MinTripped: 5 * time.Second, Period: s.gpu.Interval}
}

// Destruct stops the samplers when the last handler using this instance is
// cleaned up (caddy.Destructor, called by the UsagePool).
func (in *instance) Destruct() error {
	if in.stop != nil { // nil: built but never started (tests)
		in.stop()
		<-in.done
		close(in.emitStop)
		<-in.emitDone
		stopClock()
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	in.closeGPU()
	return nil
}

// apply takes a reloaded config without losing what was learned. Only a
// change that makes old state meaningless resets that part, and says so.
func (in *instance) apply(s settings, logger *zap.Logger) error {
	in.logger.Store(logger)
	in.mu.Lock()
	defer in.mu.Unlock()
	old := in.cfg
	in.cfg = s
	if in.qps.SetConfig(s.qps) {
		logger.Info("qps window changed: learned baseline forgotten",
			zap.String("instance", in.name), zap.Duration("old", old.qps.Window), zap.Duration("new", s.qps.Window))
	}
	in.latency.SetConfig(s.latency)
	for i := range in.levels {
		if levelConfig(i, old) != levelConfig(i, s) {
			in.levels[i].SetConfig(levelConfig(i, s))
		}
	}
	if old.circuit != s.circuit {
		in.circuit.SetConfig(s.circuit)
	}
	in.lanes.Reserve.SetCap(s.reserve)
	in.lanes.Bucket.SetConfig(time.Now(), s.bucket)
	in.gpuShed.Store(s.gpu.OnError == "shed")
	if !gpuConfigEqual(old.gpu, s.gpu) {
		in.closeGPU()
		if err := in.openGPU(s.gpu); err != nil {
			return err
		}
		logger.Info("gpu source reopened for the new config", zap.String("instance", in.name),
			zap.String("source", s.gpu.Source))
	}
	return nil
}

// openGPU opens the configured source and starts its sampler. Called with
// mu held, or before the instance is shared.
func (in *instance) openGPU(c gpu.Config) error {
	src, warning, err := gpu.Open(c)
	if err != nil {
		return fmt.Errorf("gpu: %w", err)
	}
	in.gpuSource, in.gpuWarning = src, warning
	if warning != "" {
		in.logger.Load().Warn("gpu level off", zap.String("instance", in.name), zap.String("reason", warning))
	}
	if src == nil {
		in.levels[levelGPU].Reset()
		return nil
	}
	in.gpuSensor = gpu.NewSensor(src, c, in.onGPU)
	ctx, cancel := context.WithCancel(context.Background())
	in.gpuStop, in.gpuDone = cancel, make(chan struct{})
	go func(s *gpu.Sensor, done chan struct{}) {
		defer close(done)
		s.SampleOnce(ctx, time.Now())
		s.Run(ctx)
	}(in.gpuSensor, in.gpuDone)
	return nil
}

func (in *instance) closeGPU() {
	if in.gpuStop != nil {
		in.gpuStop()
		<-in.gpuDone
		in.gpuStop = nil
	}
	if in.gpuSource != nil {
		_ = in.gpuSource.Close()
	}
	in.gpuSensor, in.gpuSource = nil, nil
}

func gpuConfigEqual(a, b gpu.Config) bool {
	return fmt.Sprint(a) == fmt.Sprint(b)
}

// run is the one-second sampler.
func (in *instance) run(ctx context.Context) {
	defer close(in.done)
	t := time.NewTicker(burstEvery)
	defer t.Stop()
	in.tick(time.Now())
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			now := time.Now()
			if n%int(tickEvery/burstEvery) == 0 {
				in.tick(now)
			} else {
				in.burst(now)
			}
		}
	}
}

// burst trips the QPS level at once when arrivals since the last check run
// at more than twice its threshold: the same rule as a full tick's, on a
// shorter period. It learns nothing.
func (in *instance) burst(now time.Time) {
	in.mu.Lock()
	total, dt := in.qps.Arrivals(), now.Sub(in.lastBurst)
	seen := total - in.lastArrivals
	in.lastArrivals, in.lastBurst = total, now
	in.mu.Unlock()
	th := in.qps.Last().Threshold
	if th <= 0 || dt <= 0 || dt > tickEvery || in.levels[levelQPS].Tripped() {
		return
	}
	if rate := float64(seen) / dt.Seconds(); rate > 2*th {
		in.observe(now, levelQPS, breaker.Observation{Value: rate, Threshold: th, Hard: true,
			Reason: fmt.Sprintf("burst: %.1f req/s over %v > 2 × %.1f", rate, dt.Round(time.Millisecond), th)}, "")
		in.refresh(now)
	}
}

// shedding reports whether any level is tripped or an override sheds.
func (in *instance) shedding(now time.Time) bool {
	return in.tripped.Load() != 0 || in.overrideAt(now) == "shed"
}

// overrideAt returns the operator's override in force at now, or "".
func (in *instance) overrideAt(now time.Time) string {
	o := in.override.Load()
	if o == nil || (!o.Until.IsZero() && !now.Before(o.Until)) {
		return ""
	}
	return o.State
}

// tick runs one sampler period: QPS, latency, the circuit's timer and the
// medium lane's controller.
func (in *instance) tick(now time.Time) {
	in.mu.Lock()
	cfg := in.cfg
	dt := now.Sub(in.lastTick)
	in.lastTick = now
	fin := in.finished.Load()
	high := in.verdicts[priority.High][priority.Pass].Load() + in.verdicts[priority.High][priority.PassReserved].Load()
	served, reserved := 0.0, 0.0
	if dt > 0 && dt < time.Minute {
		served = float64(fin-in.lastFinish) / dt.Seconds()
		reserved = float64(high-in.lastHigh) / dt.Seconds()
	}
	in.lastFinish, in.lastHigh = fin, high
	in.lastArrivals, in.lastBurst = in.qps.Arrivals(), now
	in.mu.Unlock()

	in.expireOverride(now)
	learn := !in.shedding(now)

	q := in.qps.Sample(now, learn)
	// Two busy seconds in a row trip the QPS level; one second at more
	// than twice the threshold is no noise and trips it at once.
	in.observe(now, levelQPS, breaker.Observation{Value: q.Rate, Threshold: q.Threshold, Hard: q.Threshold > 0 && q.Rate > 2*q.Threshold,
		Reason: fmt.Sprintf("%.1f req/s > %.1f (baseline %.1f × %.2g)", q.Rate, q.Threshold, q.Baseline, cfg.qps.TripFactor)}, "")

	l := in.latency.Sample(now, learn, in.inflight())
	in.latencyFastPath(now, l, cfg)
	if l.Closed {
		reason := fmt.Sprintf("p%g %v > %.2g × history %v", cfg.latency.Percentile, l.Value.Round(time.Millisecond),
			cfg.latency.Factor, l.Mean.Round(time.Millisecond))
		// A window more than twice over its threshold is no noise: like one
		// over the ceiling, it trips at once instead of after `consecutive`.
		farAbove := l.Threshold > 0 && l.Value > 2*l.Threshold
		switch {
		case l.Stuck:
			reason = fmt.Sprintf("no response for %v with requests in flight", l.Value.Round(time.Millisecond))
		case l.OverCeiling:
			reason = fmt.Sprintf("p%g %v > ceiling %v", cfg.latency.Percentile, l.Value.Round(time.Millisecond), cfg.latency.Ceiling)
		case farAbove:
			reason += ", more than twice the threshold"
		}
		in.observe(now, levelLatency, breaker.Observation{Value: l.Value.Seconds(), Threshold: l.Threshold.Seconds(),
			Hard: l.OverCeiling || farAbove, Reason: reason}, in.slow.take())
	}

	if tr, ok := in.circuit.Poll(now); ok {
		in.transition(tr, "")
	}

	// The medium lane follows the upstream's health, never the arrival
	// rate: a short-period TTFB above its history, GPU pressure or a
	// circuit that is not closed mean the upstream stopped keeping up.
	// A queue at the upstream moves the median time to first byte; over a
	// single second the high percentile is one unlucky answer.
	slow := l.ShortCount > 0 && l.Reference > 0 && float64(l.ShortMedian) > float64(l.Reference)*cfg.latency.Factor
	congested := slow || in.levels[levelGPU].Tripped() || in.circuit.State() != breaker.Closed
	draining := l.ShortCount > 0 && in.lastShort > 0 && float64(l.ShortMedian) < 0.9*float64(in.lastShort)
	if l.ShortCount > 0 {
		in.lastShort = l.ShortMedian
	}
	in.lanes.Bucket.Tune(now, priority.Health{Shedding: in.shedding(now), Served: served, Reserved: reserved,
		InFlight: float64(in.inflight()), Congested: congested, Draining: draining})
	in.refresh(now)
}

// fastSeconds is how many seconds in a row the median time to first byte
// must stay far above the latency threshold to trip the level before its
// window ends.
const fastSeconds = 2

// latencyFastPath trips the latency level between windows when the median
// time to first byte has been more than twice its threshold for
// fastSeconds seconds in a row: a queue building at the upstream (it lost a
// GPU, say) shows there within seconds, and waiting for the window would
// let it grow for up to `window` more. The median ignores a lone slow
// answer; two seconds ignore a lone slow second.
func (in *instance) latencyFastPath(now time.Time, l sensors.LatencySample, cfg settings) {
	threshold := time.Duration(float64(l.Reference) * cfg.latency.Factor)
	if l.Reference == 0 || l.ShortCount == 0 || l.ShortMedian <= 2*threshold {
		in.fastBad = 0
		return
	}
	in.fastBad++
	if in.fastBad < fastSeconds || in.levels[levelLatency].Tripped() {
		return
	}
	in.observe(now, levelLatency, breaker.Observation{Value: l.ShortMedian.Seconds(), Threshold: threshold.Seconds(), Hard: true,
		Reason: fmt.Sprintf("median time to first byte %v > 2 × %v for %d s", l.ShortMedian.Round(time.Millisecond),
			threshold.Round(time.Millisecond), in.fastBad)}, "")
}

// onGPU receives every GPU reading, from the GPU sensor's goroutine, and
// applies on_error to a source that cannot be read.
func (in *instance) onGPU(r gpu.Reading) {
	o := breaker.Observation{Value: r.Value, Threshold: r.Threshold,
		Reason: fmt.Sprintf("gpu %s %.1f%% > %.1f%%", r.Source, 100*r.Value, 100*r.Threshold)}
	if !r.Available {
		if in.gpuShed.Load() {
			o = breaker.Observation{Threshold: r.Threshold, Hard: true, Reason: "gpu source unavailable (on_error shed): " + r.Reason}
		} else {
			// on_error allow: an unreadable source is no evidence of pressure.
			o = breaker.Observation{Threshold: r.Threshold}
		}
	}
	in.observe(r.At, levelGPU, o, "")
	in.refresh(r.At)
}

// observe feeds one level and reports a transition.
func (in *instance) observe(now time.Time, level int, o breaker.Observation, traceID string) {
	if math.IsNaN(o.Value) || math.IsInf(o.Value, 0) {
		o.Value = 0
	}
	if tr, ok := in.levels[level].Observe(now, o); ok {
		in.transition(tr, traceID)
	}
}

// refresh publishes the levels' state to the atomics the request path
// reads: which are tripped, and when shedding is expected to end.
func (in *instance) refresh(now time.Time) {
	var mask uint32
	var until time.Duration
	for i, l := range in.levels {
		if l.Tripped() {
			mask |= 1 << i
			until = max(until, l.RecoverIn(now))
		}
	}
	in.tripped.Store(mask)
	in.shedAt.Store(now.Add(until).UnixNano())
}

func (in *instance) expireOverride(now time.Time) {
	o := in.override.Load()
	if o != nil && !o.Until.IsZero() && !now.Before(o.Until) && in.override.CompareAndSwap(o, nil) {
		in.logger.Load().Info("override expired", zap.String("instance", in.name), zap.String("state", o.State))
	}
}

// seen is the number of requests the instance has decided on: each counts
// exactly one verdict.
func (in *instance) seen() uint64 {
	var n uint64
	for p := range in.verdicts {
		for v := range in.verdicts[p] {
			n += in.verdicts[p][v].Load()
		}
	}
	return n
}

// admitted is the number of requests sent on to the upstream.
func (in *instance) admitted() uint64 {
	var n uint64
	for p := range in.verdicts {
		for v := priority.Pass; v <= priority.PassBucket; v++ {
			n += in.verdicts[p][v].Load()
		}
	}
	return n
}

// inflight is the number of admitted requests not yet answered.
func (in *instance) inflight() int64 {
	f := in.finished.Load() // first, so a racing finish cannot make it negative
	return max(0, int64(in.admitted())-int64(f))
}

// shedCause names the level a refusal is attributed to.
func (in *instance) shedCause() int {
	mask := in.tripped.Load()
	for i := range numLevels {
		if mask&(1<<i) != 0 {
			return i
		}
	}
	return causeOverride
}
