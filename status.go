package adaptivethrottle

import (
	"math"
	"time"

	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/priority"
	"github.com/ai-guardian/adaptivethrottle/sensors/gpu"
)

// Status is one instance as GET /throttle/status shows it. Durations are in
// seconds (fields ending _s); latency values and thresholds too.
type Status struct {
	Instance string          `json:"instance"`
	Shedding bool            `json:"shedding"`
	Override *OverrideStatus `json:"override"`
	InFlight int64           `json:"in_flight"`
	Levels   LevelsStatus    `json:"levels"`
	Circuit  CircuitStatus   `json:"circuit"`
	Lanes    LanesStatus     `json:"lanes"`
	// Refusals so far by cause: gpu, latency, qps, circuit, override.
	Shed map[string]uint64 `json:"shed"`
}

// OverrideStatus is an operator's override in force.
type OverrideStatus struct {
	State      string     `json:"state"`
	Set        time.Time  `json:"set"`
	Until      *time.Time `json:"until"`
	ExpiresInS float64    `json:"expires_in_s,omitempty"`
}

// LevelStatus is the part every level shares.
type LevelStatus struct {
	Value       float64    `json:"value"`
	Threshold   float64    `json:"threshold"` // 0: none yet
	Tripped     bool       `json:"tripped"`
	Since       *time.Time `json:"since"` // last transition; null if none
	LastReason  string     `json:"last_reason"`
	RecoverInS  float64    `json:"recover_in_s"`
	Transitions uint64     `json:"transitions"`
	// MinTrippedS is this episode's minimum time tripped: doubled each time
	// the level trips again soon after recovering, so a persistent overload
	// does not make it flap.
	MinTrippedS float64 `json:"min_tripped_s"`
}

// LevelsStatus holds the three levels.
type LevelsStatus struct {
	QPS     QPSStatus     `json:"qps"`
	GPU     GPUStatus     `json:"gpu"`
	Latency LatencyStatus `json:"latency"`
}

// QPSStatus: value and threshold in req/s.
type QPSStatus struct {
	LevelStatus
	Baseline float64 `json:"baseline"`  // 0 while warming up
	LearnedS int     `json:"learned_s"` // seconds of history in the baseline
	Learning bool    `json:"learning"`  // false while shedding: the baseline is frozen
	Limit    float64 `json:"limit,omitempty"`
}

// GPUStatus: value and threshold as fractions of memory (or the gauge).
type GPUStatus struct {
	LevelStatus
	Source     string         `json:"source"` // nvml, nvidia-smi, prometheus, or off
	Available  bool           `json:"available"`
	Reason     string         `json:"reason,omitempty"` // why unavailable or off
	OnError    string         `json:"on_error"`
	SampleAgeS *float64       `json:"sample_age_s"` // since the last good sample; null if none
	Errors     uint64         `json:"errors"`
	Hung       uint64         `json:"hung"`
	Devices    []DeviceStatus `json:"devices"`
}

// DeviceStatus is one GPU or gauge series.
type DeviceStatus struct {
	ID    string  `json:"id"`
	UUID  string  `json:"uuid,omitempty"`
	Used  float64 `json:"used"`
	Total float64 `json:"total"`
	Ratio float64 `json:"ratio"`
}

// LatencyStatus: value and threshold in seconds.
type LatencyStatus struct {
	LevelStatus
	Percentile   float64 `json:"percentile"`
	Measure      string  `json:"measure"`
	HistoryMeanS float64 `json:"history_mean_s"` // 0 before the first healthy window
	// FloorS is the fastest one-second median of the last 10 minutes: the
	// upstream unloaded. Before any history, twice it is the reference.
	FloorS      float64 `json:"floor_s"`
	LastSecondS float64 `json:"last_second_s"` // the percentile over the last second
	WindowCount int64   `json:"window_count"`
	CeilingS    float64 `json:"ceiling_s"`
}

// CircuitStatus is the breaker on upstream failures.
type CircuitStatus struct {
	State          string     `json:"state"` // closed, open, half-open
	Since          *time.Time `json:"since"`
	Opens          uint64     `json:"opens"`
	OpenForS       float64    `json:"open_for_s"` // the current (doubled) open period
	RetryInS       float64    `json:"retry_in_s"` // Open: time to Half-Open
	Requests       uint64     `json:"window_requests"`
	Failures       uint64     `json:"window_failures"`
	Ratio          float64    `json:"window_ratio"`
	ProbesInFlight int        `json:"probes_in_flight"`
	LastReason     string     `json:"last_reason"`
}

// LanesStatus is occupancy and counts per priority since start.
type LanesStatus struct {
	High   HighLane   `json:"high"`
	Medium MediumLane `json:"medium"`
	Low    LowLane    `json:"low"`
}

type HighLane struct {
	Reserve int    `json:"reserve"`
	InUse   int    `json:"in_use"`
	Passed  uint64 `json:"passed"`
	Shed    uint64 `json:"shed"`
}

type MediumLane struct {
	Rate float64 `json:"rate"` // req/s the bucket admits while shedding
	// What the controller has learned of the upstream: the rate it serves
	// when saturated (0 until seen) and how many it runs without queueing.
	UpstreamCapacity    float64 `json:"upstream_capacity"`
	UpstreamConcurrency float64 `json:"upstream_concurrency"`
	Passed              uint64  `json:"passed"`
	Shed                uint64  `json:"shed"`
}

type LowLane struct {
	Passed uint64 `json:"passed"`
	Shed   uint64 `json:"shed"`
}

// status takes a snapshot of the instance.
func (in *instance) status(now time.Time) Status {
	in.mu.Lock()
	cfg, sensor, warning := in.cfg, in.gpuSensor, in.gpuWarning
	in.mu.Unlock()

	st := Status{Instance: in.name, Shedding: in.shedding(now), InFlight: in.inflight(), Shed: map[string]uint64{}}
	if o := in.override.Load(); o != nil && in.overrideAt(now) != "" {
		st.Override = &OverrideStatus{State: o.State, Set: o.Set}
		if !o.Until.IsZero() {
			until := o.Until
			st.Override.Until = &until
			st.Override.ExpiresInS = finite(until.Sub(now).Seconds())
		}
	}

	q := in.qps.Last()
	st.Levels.QPS = QPSStatus{LevelStatus: levelStatus(in.levels[levelQPS].Status(now)),
		Baseline: finite(q.Baseline), LearnedS: in.qps.Learned(), Learning: q.Learning, Limit: cfg.qps.Limit}

	l := in.latency.Last()
	st.Levels.Latency = LatencyStatus{LevelStatus: levelStatus(in.levels[levelLatency].Status(now)),
		Percentile: cfg.latency.Percentile, Measure: cfg.latency.Measure, HistoryMeanS: finite(in.latency.Mean().Seconds()),
		LastSecondS: finite(l.Short.Seconds()), FloorS: finite(l.Floor.Seconds()), WindowCount: l.Count, CeilingS: cfg.latency.Ceiling.Seconds()}

	g := GPUStatus{LevelStatus: levelStatus(in.levels[levelGPU].Status(now)), Source: "off", Reason: warning,
		OnError: cfg.gpu.OnError, Devices: []DeviceStatus{}}
	if sensor != nil {
		r := sensor.Latest()
		g.Source, g.Available, g.Reason, g.Errors, g.Hung = r.Source, r.Available, r.Reason, r.Errors, r.Hung
		if !r.LastGood.IsZero() {
			age := finite(now.Sub(r.LastGood).Seconds())
			g.SampleAgeS = &age
		}
		g.Devices = devicesStatus(r.Devices)
	}
	g.Threshold = cfg.gpu.Threshold
	st.Levels.GPU = g

	c := in.circuit.Status(now)
	st.Circuit = CircuitStatus{State: c.State.String(), Since: timePtr(c.Since), Opens: c.Opens,
		OpenForS: c.OpenFor.Seconds(), RetryInS: finite(c.RetryIn.Seconds()), Requests: c.Requests, Failures: c.Failures,
		Ratio: finite(c.Ratio), ProbesInFlight: c.ProbesInFlight, LastReason: c.LastReason}

	passed := func(p priority.Priority) uint64 {
		var n uint64
		for v := priority.Pass; v <= priority.PassBucket; v++ {
			n += in.verdicts[p][v].Load()
		}
		return n
	}
	shed := func(p priority.Priority) uint64 {
		var n uint64
		for v := int(priority.ShedReserveFull); v <= verdictCircuit; v++ {
			n += in.verdicts[p][v].Load()
		}
		return n
	}
	st.Lanes = LanesStatus{
		High: HighLane{Reserve: in.lanes.Reserve.Cap(), InUse: in.lanes.Reserve.InUse(), Passed: passed(priority.High), Shed: shed(priority.High)},
		Medium: MediumLane{Rate: finite(in.lanes.Bucket.Limit()), UpstreamCapacity: finite(in.lanes.Bucket.Capacity()),
			UpstreamConcurrency: finite(in.lanes.Bucket.Concurrency()), Passed: passed(priority.Medium), Shed: shed(priority.Medium)},
		Low: LowLane{Passed: passed(priority.Low), Shed: shed(priority.Low)},
	}
	for c := range numShedCauses {
		st.Shed[causeName(c)] = in.shedBy[c].Load()
	}
	return st
}

func levelStatus(s breaker.LevelStatus) LevelStatus {
	return LevelStatus{Value: finite(s.Value), Threshold: finite(s.Threshold), Tripped: s.Tripped, Since: timePtr(s.Since),
		LastReason: s.LastReason, RecoverInS: finite(s.RecoverIn.Seconds()), Transitions: s.Transitions, MinTrippedS: finite(s.MinTripped.Seconds())}
}

func devicesStatus(devs []gpu.Device) []DeviceStatus {
	out := make([]DeviceStatus, 0, len(devs))
	for _, d := range devs {
		out = append(out, DeviceStatus{ID: d.ID, UUID: d.UUID, Used: d.Used, Total: d.Total, Ratio: finite(d.Ratio())})
	}
	return out
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// finite keeps NaN and ±Inf out of JSON, which cannot encode them, and
// rounds to four decimals (0.1 ms, 0.01% of memory) so that status reads
// 2 req/s rather than 2.0000002220000246.
func finite(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return math.Round(f*1e4) / 1e4
}
