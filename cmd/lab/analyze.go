package main

import (
	"math"
	"net/http"
	"slices"
	"time"

	"github.com/ai-guardian/adaptivethrottle/internal/loadgen"
)

// outcome is one set-up's run of a scenario, summed up for the tables.
type outcome struct {
	Setup string          `json:"setup"`
	Res   *loadgen.Result `json:"result"`

	// Over the scenario's window (requests planned in it), by priority.
	Window struct {
		Overall, High, Medium, Low loadgen.Stats
		HighMedium                 loadgen.Stats
	} `json:"window"`
	// GoodputWindow is OK-within-SLO answers completed inside the window,
	// per second of it: what the upstream usefully delivered there;
	// GoodTokensWindow the same in completion tokens per second.
	GoodputWindow    float64 `json:"goodput_window_rps"`
	GoodTokensWindow float64 `json:"goodput_window_tokens_per_s"`
	// GoodputRatio is goodput ÷ capacity in the window: in tokens when the
	// scenario mixes answer lengths, else in requests.
	GoodputRatio float64 `json:"goodput_ratio"`
	// ServedRatio is GoodputRatio with every complete answer counted,
	// however late: the work the upstream did in the window. Without
	// protection its batch is full the whole overload, so there it is
	// what the upstream can do on this machine, the ceiling goodput is
	// measured against.
	ServedRatio float64 `json:"served_ratio"`
	HighMedium  loadgen.Stats

	// UpstreamOOMs is llmsim's own count at the last poll (-1: unknown).
	UpstreamOOMs int64 `json:"upstream_ooms"`
	// FirstShedS is the planned send time of the first refusal at or after
	// the window opens, minus its opening; nil when none.
	FirstShedS *float64 `json:"first_shed_s,omitempty"`
	// RecoverS is, when the overload ends (OverloadEnds), the planned send
	// time of the last refusal after its end minus the end: from then on
	// every request passes; 0 when nothing was refused after it.
	// RecoverNever: refusals went on to the end of the run.
	RecoverS     *float64 `json:"recover_s,omitempty"`
	RecoverNever bool     `json:"recover_never,omitempty"`
	// CalmRefusals counts refusals sent while the offered load was at
	// most 0.9× capacity (before CalmTo); CalmFirstS is the first's time.
	CalmRefusals int      `json:"calm_refusals"`
	CalmFirstS   *float64 `json:"calm_first_refusal_s,omitempty"`
	// Transitions per level over the run, from /throttle/status counters
	// (adaptive only), and on/off flips of "shedding" in the 1 s polls.
	Transitions   map[string]uint64 `json:"transitions,omitempty"`
	SheddingFlips int               `json:"shedding_flips"`
	// Peer is the lab's limiter once a second (peers only).
	Peer []peerSample `json:"peer,omitempty"`

	// UpstreamRefusals counts the upstream's own 503s that reached a
	// client (its body, not the module's refusal), over the whole run;
	// UpstreamRefusalShare is that of the requests sent.
	UpstreamRefusals     int     `json:"upstream_refusals"`
	UpstreamRefusalShare float64 `json:"upstream_refusal_share"`
	// CircuitNotClosedS counts the 1 s polls that found the circuit not
	// closed; LimitSettled is the median limit polled in the window's
	// second half (adaptive only).
	CircuitNotClosedS int      `json:"circuit_not_closed_s"`
	LimitSettled      *float64 `json:"limit_settled,omitempty"`

	// Pool is a pool scenario's upstreams over the run (nil otherwise).
	Pool *poolRun `json:"pool,omitempty"`
	// Failed counts, over the whole run, the requests that neither got
	// their answer nor a refusal: timeouts, 5xx other than a refusal,
	// network errors, streams cut short.
	Failed int `json:"failed"`
}

// peerSample is a peer's snapshot at T seconds from the load's start.
type peerSample struct {
	T float64 `json:"t"`
	peerSnap
}

// tokensIn is the share of r's tokens streamed within [from, to) (ms):
// its answer streams from its first byte to its end at an even pace. An
// answer's tokens counted whole when it ends would lose, at the window's
// end, every answer still streaming (with 13 s answers in 8 slots, about
// 5% of the window's capacity) and gain those streaming at its start.
func tokensIn(r loadgen.Record, from, to float64) float64 {
	first, done := r.SentMS+r.TTFBMS, r.DoneMS()
	if done <= first {
		if done >= from && done < to {
			return float64(r.Tokens)
		}
		return 0
	}
	overlap := math.Min(done, to) - math.Max(first, from)
	return float64(r.Tokens) * math.Max(0, overlap) / (done - first)
}

// analyze sums up one run for sc.
func analyze(sc scenario, setup string, res *loadgen.Result) outcome {
	o := outcome{Setup: setup, Res: res, UpstreamOOMs: -1}
	from, to := ms(sc.WindowFrom), ms(sc.WindowTo)
	calmTo := ms(sc.CalmTo)
	var win [3][]loadgen.Record
	var hm, winHM []loadgen.Record
	good, goodTokens := 0, 0.0
	served, servedTokens := 0, 0.0
	first, last := math.Inf(1), math.Inf(-1)
	for _, r := range res.Records {
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
		if r.WithinSLO {
			goodTokens += tokensIn(r, from, to)
		}
		if r.Class == loadgen.ClassUpstream5xx && r.Status == http.StatusServiceUnavailable {
			o.UpstreamRefusals++
		}
		if failed(r.Class) {
			o.Failed++
		}
		if r.Class == loadgen.ClassOK {
			if done := r.DoneMS(); done >= from && done < to {
				served++
			}
			servedTokens += tokensIn(r, from, to)
		}
		if !r.Class.Shed() {
			continue
		}
		if r.AtMS >= from {
			first = math.Min(first, r.AtMS)
		}
		if r.AtMS >= to {
			last = math.Max(last, r.AtMS)
		}
		if r.AtMS < calmTo {
			o.CalmRefusals++
			if o.CalmFirstS == nil || r.AtMS/1000 < *o.CalmFirstS {
				v := r.AtMS / 1000
				o.CalmFirstS = &v
			}
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
		o.GoodTokensWindow = goodTokens / secs
	}
	switch {
	case secs <= 0:
	case sc.tokens() && sc.TokenCapacity > 0:
		o.GoodputRatio = o.GoodTokensWindow / sc.TokenCapacity
		o.ServedRatio = servedTokens / secs / sc.TokenCapacity
	case sc.WindowServable > 0:
		o.GoodputRatio = o.GoodputWindow / sc.WindowServable
		o.ServedRatio = float64(served) / secs / sc.WindowServable
	case sc.WindowCapacity > 0:
		o.GoodputRatio = o.GoodputWindow / sc.WindowCapacity
		o.ServedRatio = float64(served) / secs / sc.WindowCapacity
	}

	if !math.IsInf(first, 1) {
		v := (first - from) / 1000
		o.FirstShedS = &v
	}
	if sc.OverloadEnds {
		v := 0.0
		if !math.IsInf(last, -1) {
			v = (last - to) / 1000
			tail := sc.Profile.Duration - sc.WindowTo
			o.RecoverNever = last >= ms(sc.Profile.Duration-min(2*time.Second, tail/2))
		}
		o.RecoverS = &v
	}

	if n := len(res.Records); n > 0 {
		o.UpstreamRefusalShare = float64(o.UpstreamRefusals) / float64(n)
	}

	var firstTh, lastTh *loadgen.ThrottleState
	prevShed := false
	var limits []float64
	for _, p := range res.Polls {
		if p.Upstream != nil {
			o.UpstreamOOMs = p.Upstream.OOMs
		}
		if t := p.Throttle; t != nil {
			if t.Circuit.State != "" && t.Circuit.State != "closed" {
				o.CircuitNotClosedS++
			}
			if at := p.T * 1000; at >= (from+to)/2 && at < to {
				limits = append(limits, float64(t.Admission.Limit))
			}
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
	if len(limits) > 0 {
		slices.Sort(limits)
		m := limits[len(limits)/2]
		o.LimitSettled = &m
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

// failed reports a request that got neither its answer nor a refusal.
func failed(c loadgen.Class) bool {
	switch c {
	case loadgen.ClassUpstream5xx, loadgen.ClassOtherStatus, loadgen.ClassTimeout, loadgen.ClassNetError, loadgen.ClassBroken:
		return true
	}
	return false
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// target is one of the targets, checked on a run.
type target struct {
	What     string
	Want     string
	Got      string
	Margin   string // how far above (+) or below (−) the bar
	Met      bool
	Measured bool // false: could not be measured (no data)
}
