package adaptivethrottle

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ai-guardian/adaptivethrottle/levels"
	"github.com/ai-guardian/adaptivethrottle/priority"
	"github.com/ai-guardian/adaptivethrottle/throttle"
)

// The Prometheus metrics, all prefixed caddy_adaptive_throttle_. Labels are
// bounded: instance (from the config), level, priority, decision, state,
// sensor — never a client, path or key.
//
// One collector, created once, reads the live instances at scrape time: the
// request path pays nothing for metrics, the numbers come from the pooled
// instances so they stay continuous across config reloads, and registering
// the same collector into every new config's registry needs no bookkeeping.
const metricsPrefix = "caddy_adaptive_throttle_"

// MetricNames lists every metric the module exports (the dashboard test
// checks its queries against it).
var MetricNames []string

func desc(name, help string, labels ...string) *prometheus.Desc {
	MetricNames = append(MetricNames, metricsPrefix+name)
	return prometheus.NewDesc(metricsPrefix+name, help, labels, nil)
}

var (
	mRequests        = desc("requests_total", "Requests seen, by priority and decision (pass, pass_queued, pass_reserved, pass_bucket, shed_reserve_full, shed_bucket, shed_low, shed_queue, shed_gone, shed_circuit).", "instance", "priority", "decision")
	mShed            = desc("shed_total", "Requests refused, by the level (or circuit, override) they were refused for.", "instance", "level")
	mLevelValue      = desc("level_value", "Each level's last sample: req/s (qps), fraction of memory (gpu), seconds (latency).", "instance", "level")
	mLevelThreshold  = desc("level_threshold", "Each level's current threshold, in the unit of level_value; 0 while none is learned.", "instance", "level")
	mLevelTripped    = desc("level_tripped", "1 while the level is tripped.", "instance", "level")
	mLevelTrans      = desc("level_transitions_total", "Trips and recoveries of each level.", "instance", "level")
	mShedding        = desc("shedding", "1 while any level is tripped or an override sheds.", "instance")
	mCircuitState    = desc("circuit_state", "1 for the circuit's current state (closed, open, half-open), 0 for the others.", "instance", "state")
	mCircuitOpens    = desc("circuit_opens_total", "Times the circuit opened.", "instance")
	mReserveInUse    = desc("reserve_in_use", "High-priority reserve slots held.", "instance")
	mReserveCap      = desc("reserve_capacity", "High-priority reserve slots configured.", "instance")
	mMediumRate      = desc("medium_rate", "The medium lane's current rate (req/s) while shedding.", "instance")
	mInFlight        = desc("in_flight", "Requests admitted and not yet answered.", "instance")
	mLimit           = desc("concurrency_limit", "The limit on requests in flight at the upstream (learned, or fixed).", "instance")
	mQueued          = desc("queued", "Requests waiting for a slot, by priority.", "instance", "priority")
	mOldestWait      = desc("queue_oldest_wait_seconds", "How long the oldest waiting request has waited.", "instance")
	mQPSBaseline     = desc("qps_baseline", "Learned arrival baseline (req/s); 0 while warming up.", "instance")
	mLatencyHistory  = desc("latency_history_seconds", "History mean of the watched latency percentile.", "instance")
	mSensorErrors    = desc("sensor_errors_total", "Failed reads of a sensor's source.", "instance", "sensor")
	mSensorHung      = desc("sensor_hung_total", "Reads abandoned after their timeout.", "instance", "sensor")
	mSensorAvailable = desc("sensor_available", "1 while the sensor's source can be read and is fresh.", "instance", "sensor")
	mSensorAge       = desc("sensor_sample_age_seconds", "Age of the last good sample.", "instance", "sensor")
)

// levelNames is the level label's values, in the order collect reports them.
var levelNames = [...]string{"qps", "gpu", "latency"}

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
	for _, d := range []*prometheus.Desc{mRequests, mShed, mLevelValue, mLevelThreshold, mLevelTripped, mLevelTrans,
		mShedding, mCircuitState, mCircuitOpens, mReserveInUse, mReserveCap, mMediumRate, mInFlight, mLimit, mQueued, mOldestWait, mQPSBaseline,
		mLatencyHistory, mSensorErrors, mSensorHung, mSensorAvailable, mSensorAge} {
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
			counter(mRequests, float64(counts[p][v]), priority.Priority(p).String(), priority.Verdict(v).String())
		}
	}
	st := t.Status(now)
	for c := range throttle.Causes {
		counter(mShed, float64(st.Shed[throttle.CauseName(c)]), throttle.CauseName(c))
	}
	for i, l := range [len(levelNames)]levels.Common{st.Levels.QPS.Common, st.Levels.GPU.Common, st.Levels.Latency.Common} {
		gauge(mLevelValue, l.Value, levelNames[i])
		gauge(mLevelThreshold, l.Threshold, levelNames[i])
		gauge(mLevelTripped, b2f(l.Tripped), levelNames[i])
		counter(mLevelTrans, float64(l.Transitions), levelNames[i])
	}
	gauge(mShedding, b2f(st.Shedding))
	for _, s := range []string{"closed", "open", "half-open"} {
		gauge(mCircuitState, b2f(st.Circuit.State == s), s)
	}
	counter(mCircuitOpens, float64(st.Circuit.Opens))
	gauge(mReserveInUse, float64(st.Lanes.High.InUse))
	gauge(mReserveCap, float64(st.Lanes.High.Reserve))
	gauge(mMediumRate, st.Lanes.Medium.Rate)
	gauge(mInFlight, float64(st.InFlight))
	gauge(mLimit, float64(st.Admission.Limit))
	for _, p := range []string{"high", "medium", "low"} {
		gauge(mQueued, float64(st.Admission.Queued[p]), p)
	}
	gauge(mOldestWait, st.Admission.OldestWaitS)
	gauge(mQPSBaseline, st.Levels.QPS.Baseline)
	gauge(mLatencyHistory, st.Levels.Latency.HistoryMeanS)
	g := st.Levels.GPU
	if g.Source != "off" {
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
