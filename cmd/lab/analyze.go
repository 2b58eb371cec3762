package main

import (
	"math"

	"github.com/ai-guardian/adaptivethrottle/internal/loadgen"
)

// samplePeriod is the QPS level's sampling period, the unit the issue
// counts "first shed within 2 sample periods" in.
const samplePeriod = 1.0 // seconds

// outcome is one set-up's run of a scenario, summed up for the tables.
type outcome struct {
	Setup string          `json:"setup"`
	Res   *loadgen.Result `json:"result"`

	// Over the scenario's window (overload, or after the capacity drop).
	Window struct {
		Overall, High, Medium, Low loadgen.Stats
		HighMedium                 loadgen.Stats
	} `json:"window"`
	// GoodputWindow is OK-within-SLO answers completed inside the window,
	// per second of it: what the upstream usefully delivered there.
	GoodputWindow float64 `json:"goodput_window_rps"`
	HighMedium    loadgen.Stats

	// UpstreamOOMs is llmsim's own count at the last poll (-1: unknown).
	UpstreamOOMs int64 `json:"upstream_ooms"`
	// FirstShedS is the planned send time of the first refusal at or after
	// the onset, minus the onset; nil when none.
	FirstShedS *float64 `json:"first_shed_s,omitempty"`
	// RecoverS is, after the load drops (end of the window), the planned
	// send time of the last refusal minus the drop: 0 when nothing was
	// refused after it. Step scenario only.
	RecoverS *float64 `json:"recover_s,omitempty"`
	// Transitions per level over the run, from /throttle/status counters
	// (adaptive only), and on/off flips of "shedding" in the 1 s polls.
	Transitions   map[string]uint64 `json:"transitions,omitempty"`
	SheddingFlips int               `json:"shedding_flips"`
}

// analyze sums up one run for sc.
func analyze(sc scenario, setup string, res *loadgen.Result) outcome {
	o := outcome{Setup: setup, Res: res, UpstreamOOMs: -1}
	from, to := sc.WindowFrom.Seconds()*1000, sc.WindowTo.Seconds()*1000
	var win [3][]loadgen.Record
	var all, hm, winHM []loadgen.Record
	good := 0
	for _, r := range res.Records {
		all = append(all, r)
		if r.Priority != loadgen.Low {
			hm = append(hm, r)
		}
		if r.AtMS >= from && r.AtMS < to {
			win[r.Priority] = append(win[r.Priority], r)
			if r.Priority != loadgen.Low {
				winHM = append(winHM, r)
			}
		}
		if done := r.DoneMS(); r.WithinSLO && done >= from && done < to {
			good++
		}
	}
	secs := (to - from) / 1000
	o.Window.High = loadgen.Summarize(win[loadgen.High], secs)
	o.Window.Medium = loadgen.Summarize(win[loadgen.Medium], secs)
	o.Window.Low = loadgen.Summarize(win[loadgen.Low], secs)
	o.Window.Overall = loadgen.Summarize(append(append(append([]loadgen.Record{}, win[0]...), win[1]...), win[2]...), secs)
	o.Window.HighMedium = loadgen.Summarize(winHM, secs)
	o.HighMedium = loadgen.Summarize(hm, res.DurationS)
	if secs > 0 {
		o.GoodputWindow = float64(good) / secs
	}

	// First refusal after the onset; last refusal after the load drop.
	first, last := math.Inf(1), math.Inf(-1)
	for _, r := range all {
		if !r.Class.Shed() {
			continue
		}
		if r.AtMS >= from {
			first = math.Min(first, r.AtMS)
		}
		if r.AtMS >= to {
			last = math.Max(last, r.AtMS)
		}
	}
	if !math.IsInf(first, 1) {
		v := (first - from) / 1000
		o.FirstShedS = &v
	}
	if sc.Profile.Kind == loadgen.Step {
		v := 0.0
		if !math.IsInf(last, -1) {
			v = (last - to) / 1000
		}
		o.RecoverS = &v
	}

	var firstTh, lastTh *loadgen.ThrottleState
	prevShed := false
	for _, p := range res.Polls {
		if p.Upstream != nil {
			o.UpstreamOOMs = p.Upstream.OOMs
		}
		if t := p.Throttle; t != nil {
			if firstTh == nil {
				firstTh = t
			}
			lastTh = t
			if t.Shedding != prevShed {
				o.SheddingFlips++
				prevShed = t.Shedding
			}
		}
	}
	if firstTh != nil {
		o.Transitions = map[string]uint64{
			"qps":     lastTh.Levels.QPS.Transitions - firstTh.Levels.QPS.Transitions,
			"gpu":     lastTh.Levels.GPU.Transitions - firstTh.Levels.GPU.Transitions,
			"latency": lastTh.Levels.Latency.Transitions - firstTh.Levels.Latency.Transitions,
			"circuit": lastTh.Circuit.Opens - firstTh.Circuit.Opens,
		}
	}
	return o
}

// maxLevelTransitions is the largest transition count of any one level.
func (o outcome) maxLevelTransitions() uint64 {
	var m uint64
	for k, v := range o.Transitions {
		if k != "circuit" {
			m = max(m, v)
		}
	}
	return m
}

// target is one of the targets, checked on a run.
type target struct {
	What     string
	Want     string
	Got      string
	Met      bool
	Measured bool // false: could not be measured (no data)
}
