package adaptivethrottle

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/levels"
	"github.com/ai-guardian/adaptivethrottle/priority"
	"github.com/ai-guardian/adaptivethrottle/throttle"
)

// The Prometheus metrics, all prefixed caddy_adaptive_throttle_. Labels are
// bounded: throttle (the instance's name, from the config), level,
// cause, priority, decision, state, sensor, upstream (an address of a
// pool the config names, pool.MaxMembers at most) — never a client, path
// or key. The
// instance's name is the label throttle, not instance: Prometheus gives
// every scraped series its target's instance label, and with honor_labels
// false (the default) it renames a clashing one to exported_instance.
//
// Gauges carry their base unit in the name (requests_per_second, ratio,
// seconds), one metric per unit: each level's value and threshold is its
// own metric, not one level_value mixing req/s, fractions and seconds. A
// learned figure (a threshold, the QPS baseline, the latency history) has
// no sample until it is learned, so a graph shows a gap, not a line at 0.
//
// One collector, created once, reads the live instances at scrape time: the
// request path pays nothing for metrics, the numbers come from the pooled
// instances so they stay continuous across config reloads, and registering
// the same collector into every new config's registry needs no bookkeeping.
const metricsPrefix = "caddy_adaptive_throttle_"

// MetricNames lists every metric the module exports (the dashboard test
// checks its queries against it).
var MetricNames []string

// nameLabel is the label naming the throttle on every metric: its name, as
// the Caddyfile writes it. (Not instance: Prometheus sets that on every
// series to the scraped target, and renames a clashing one.)
const nameLabel = "name"

func desc(name, help string, labels ...string) *prometheus.Desc {
	MetricNames = append(MetricNames, metricsPrefix+name)
	return prometheus.NewDesc(metricsPrefix+name, help, append([]string{nameLabel}, labels...), nil)
}

var (
	mRequests = desc("requests_total", "Requests decided on, by priority and decision: pass; pass_queued (after a wait for a slot); "+
		"pass_reserved (high, while shedding); pass_graded (medium, while shedding); shed_reserve_full (high); shed_graded (medium); "+
		"shed_low (low); shed_queue (no slot within the wait, nothing tripped); shed_gone (the client left while waiting); "+
		"shed_circuit (the circuit refused it); shed_drain (an override drain refused it). Only the pairs admission can give are exported.",
		"priority", "decision")
	mShed = desc("shed_total", "Requests refused, by cause: gpu, latency or qps (the tripped level they were refused for); circuit; "+
		"override (shed or drain); concurrency (no slot within the wait, nothing tripped); upstream (the upstream answered that it is full). A client that left while waiting is not counted.",
		"cause")
	mQPSValue     = desc("qps_requests_per_second", "The QPS level's last sample: arrivals per second.")
	mQPSThreshold = desc("qps_threshold_requests_per_second", "The QPS level's trip threshold (learned baseline × trip_factor, or max_rate when lower); "+
		"no sample while there is none (the baseline warming up and no limit).")
	mQPSBaseline = desc("qps_baseline_requests_per_second", "The learned arrival baseline (mean + sigma × σ); no sample while warming up.")
	mGPUValue    = desc("gpu_ratio", "The GPU level's last reading, 0–1: memory used / total, or the model server's saturation gauge; "+
		"no sample while the level is off or its source has no fresh reading.")
	mGPUThreshold = desc("gpu_threshold_ratio", "The GPU level's trip threshold, 0–1; no sample while the level is off.")
	mLatencyValue = desc("latency_seconds", "The latency level's last sample: the watched percentile of time to first byte "+
		"(or to the end, measure total) over the window; with slo, and while tripped, over the last 2 s.")
	mLatencyThreshold = desc("latency_threshold_seconds", "The latency level's trip threshold: the slo when one is set; "+
		"otherwise the history mean × factor, at least min_threshold; no sample while there is none (no slo, no history learned).")
	mLatencyHistory = desc("latency_history_seconds", "History mean of the watched latency percentile; no sample while none is learned.")
	mLevelTripped   = desc("level_tripped", "1 while the level (qps, gpu, latency) is tripped.", "level")
	mLevelTrans     = desc("level_transitions_total", "Trips and recoveries of each level (qps, gpu, latency).", "level")
	mShedding       = desc("shedding", "1 while requests are refused or graded by priority for anything but the concurrency limit: "+
		"a level tripped, the circuit open or half-open, or an override shed or drain.")
	mOverride         = desc("override", "1 for the operator's override in force (drain, shed, pass), 0 for the others; all 0 under auto.", "state")
	mCircuitState     = desc("circuit_state", "1 for the circuit's current state (closed, open, half-open), 0 for the others.", "state")
	mCircuitOpens     = desc("circuit_opens_total", "Times the circuit opened.")
	mUpstreamFull     = desc("upstream_full_total", "The upstream's answers that it is full (503, 429, 529): each lowered the limit and was replaced by the module's refusal; none counts toward opening the circuit.")
	mUpstreamOnlyFull = desc("upstream_only_full_seconds", "For how long the upstream has answered nothing but that it is full (0 while it serves).")
	mReserveInUse     = desc("reserve_in_use", "High-priority requests in flight, in the reserve's slots or in any other "+
		"(short requests that borrow the reserve are not counted).")
	mReserveCap = desc("reserve_capacity", "Slots of the concurrency limit that medium and low requests not known to be short "+
		"may not take while the reserve is held (while shedding, or while high or short requests are about and slots turn over slowly); "+
		"0 while slots turn over fast enough, at most high_reserve while shedding.")
	mInFlight        = desc("in_flight", "Requests admitted and not yet answered.")
	mLimit           = desc("concurrency_limit", "The limit on requests in flight at the upstream (learned, or fixed).")
	mQueued          = desc("queued", "Requests waiting for a slot, by priority (high, medium, low).", "priority")
	mOldestWait      = desc("queue_oldest_wait_seconds", "How long the oldest waiting request has waited.")
	mSensorErrors    = desc("sensor_errors_total", "Failed reads of a sensor's source (gpu).", "sensor")
	mSensorHung      = desc("sensor_hung_total", "Reads abandoned after their timeout (gpu).", "sensor")
	mSensorAvailable = desc("sensor_available", "1 while the sensor's source (gpu) can be read and is fresh.", "sensor")
	mSensorAge       = desc("sensor_sample_age_seconds", "Age of the last good sample (gpu).", "sensor")

	// A pool's upstreams (lb_policy adaptive_throttle), by address.
	mPoolLimit     = desc("pool_upstream_limit", "The upstream's learned limit on requests in flight (or the fixed one).", "upstream")
	mPoolInFlight  = desc("pool_upstream_in_flight", "Requests sent to the upstream and not yet answered.", "upstream")
	mPoolFirstByte = desc("pool_upstream_first_byte_seconds", "The upstream's average time to first byte over the last judged 250 ms step; "+
		"no sample until one was judged.", "upstream")
	mPoolState = desc("pool_upstream_state", "1 for the state of the upstream's own circuit, 0 for the others: closed (it serves), "+
		"open (it has left the pool until its probe), half-open (its probe is out).", "upstream", "state")
	mPoolRequests = desc("pool_upstream_requests_total", "Requests sent to the upstream (a retry counts again on the upstream it goes to).", "upstream")
	mPoolLoad     = desc("pool_upstream_load_ratio", "The upstream's own saturation gauge (upstream_gauge) as last judged, a fraction; "+
		"no sample while it is unavailable.", "upstream")
	mPoolOverloaded = desc("pool_upstream_overloaded", "1 while the upstream's own gauge is over its threshold: "+
		"its limit is cut until the gauge recovers.", "upstream")
)

// overrideStates is the override label's values, in the order collect
// reports them.
var overrideStates = [...]string{"drain", "shed", "pass"}

// levelNames is the level label's values, in the order collect reports them.
var levelNames = [...]string{"qps", "gpu", "latency"}

// levelGPU is the GPU level's index in levelNames.
const levelGPU = 1

type collector struct{}

var theCollector collector

// registerMetrics adds the collector to a config's registry; a registry
// that already has it (a reload reusing one) is fine.
func registerMetrics(reg *prometheus.Registry) error {
	if reg == nil {
		return nil
	}
	err := reg.Register(theCollector)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		return nil
	}
	return err
}

// Describe implements prometheus.Collector.
func (collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{mRequests, mShed, mQPSValue, mQPSThreshold, mQPSBaseline, mGPUValue,
		mGPUThreshold, mLatencyValue, mLatencyThreshold, mLatencyHistory, mLevelTripped, mLevelTrans, mShedding,
		mOverride, mCircuitState, mCircuitOpens, mUpstreamFull, mUpstreamOnlyFull, mReserveInUse, mReserveCap, mInFlight, mLimit, mQueued, mOldestWait, mSensorErrors, mSensorHung,
		mSensorAvailable, mSensorAge, mPoolLimit, mPoolInFlight, mPoolFirstByte, mPoolState, mPoolRequests,
		mPoolLoad, mPoolOverloaded} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (collector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	for _, in := range allInstances() {
		collect(ch, in, now)
	}
}

func collect(ch chan<- prometheus.Metric, t *throttle.Throttle, now time.Time) {
	n := t.Name()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{n}, labels...)...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, append([]string{n}, labels...)...)
	}
	counts := t.Verdicts()
	for p := range priority.Count {
		for v := range priority.Verdicts {
			if priority.Verdict(v).Possible(priority.Priority(p)) {
				counter(mRequests, float64(counts[p][v]), priority.Priority(p).String(), priority.Verdict(v).String())
			}
		}
	}
	st := t.Status(now)
	for c := range throttle.Causes {
		counter(mShed, float64(st.Shed[throttle.CauseName(c)]), throttle.CauseName(c))
	}
	g := st.Levels.GPU
	gpuOn := g.Source != "off"
	// Each level's value and threshold in its own unit; a threshold of 0
	// is none yet (levels.Common), and is left out rather than drawn.
	perLevel := [len(levelNames)]struct {
		common           levels.Common
		value, threshold *prometheus.Desc
	}{
		{st.Levels.QPS.Common, mQPSValue, mQPSThreshold},
		{st.Levels.GPU.Common, mGPUValue, mGPUThreshold},
		{st.Levels.Latency.Common, mLatencyValue, mLatencyThreshold},
	}
	for i, pl := range perLevel {
		l := pl.common
		// The GPU level has a reading only while it is on and its source
		// fresh: a 0 would draw an idle GPU.
		if i != levelGPU || (gpuOn && g.Available) {
			gauge(pl.value, l.Value)
		}
		if l.Threshold > 0 && (i != levelGPU || gpuOn) {
			gauge(pl.threshold, l.Threshold)
		}
		gauge(mLevelTripped, b2f(l.Tripped), levelNames[i])
		counter(mLevelTrans, float64(l.Transitions), levelNames[i])
	}
	gauge(mShedding, b2f(st.Shedding))
	for _, o := range overrideStates {
		gauge(mOverride, b2f(st.Override != nil && st.Override.State == o), o)
	}
	for _, s := range []breaker.State{breaker.Closed, breaker.Open, breaker.HalfOpen} {
		gauge(mCircuitState, b2f(st.Circuit.State == s), s.String())
	}
	counter(mCircuitOpens, float64(st.Circuit.Opens))
	counter(mUpstreamFull, float64(st.Upstream.FullAnswers))
	gauge(mUpstreamOnlyFull, st.Upstream.OnlyFullS)
	gauge(mReserveInUse, float64(st.Priorities.High.InUse))
	gauge(mReserveCap, float64(st.Priorities.High.Reserve))
	gauge(mInFlight, float64(st.Admission.InFlight))
	gauge(mLimit, float64(st.Admission.Limit))
	for _, p := range []string{"high", "medium", "low"} {
		gauge(mQueued, float64(st.Admission.Queued[p]), p)
	}
	gauge(mOldestWait, st.Admission.OldestWaitS)
	if b := st.Levels.QPS.Baseline; b > 0 {
		gauge(mQPSBaseline, b)
	}
	if h := st.Levels.Latency.HistoryMeanS; h > 0 {
		gauge(mLatencyHistory, h)
	}
	for _, u := range st.Upstreams {
		gauge(mPoolLimit, float64(u.Limit), u.Upstream)
		gauge(mPoolInFlight, float64(u.InFlight), u.Upstream)
		if u.ShortS > 0 {
			gauge(mPoolFirstByte, u.ShortS, u.Upstream)
		}
		for _, s := range []string{"closed", "open", "half-open"} {
			gauge(mPoolState, b2f(u.State == s), u.Upstream, s)
		}
		counter(mPoolRequests, float64(u.Requests), u.Upstream)
		if g := u.Gauge; g != nil {
			if g.Available {
				gauge(mPoolLoad, g.Value, u.Upstream)
			}
			gauge(mPoolOverloaded, b2f(g.Tripped), u.Upstream)
		}
	}
	if gpuOn {
		counter(mSensorErrors, float64(g.Errors), "gpu")
		counter(mSensorHung, float64(g.Hung), "gpu")
		gauge(mSensorAvailable, b2f(g.Available), "gpu")
		if g.SampleAgeS != nil {
			gauge(mSensorAge, *g.SampleAgeS, "gpu")
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Interface guard
var _ prometheus.Collector = collector{}
