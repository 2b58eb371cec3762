package main

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
)

// Target bars (issue 10), for the adaptive set-up in every scenario.
const (
	goodputBar     = 0.95  // goodput ÷ capacity in the window (÷ what it allows)
	goodputSlack   = 0.03  // …and at most this under the best peer's
	idealSlack     = 0.02  // …or, where sc.IdealKeep is set, under the ideal gateway's
	highBar        = 0.995 // high-priority SLO attainment in the window
	recoverBarSecs = 3.0   // all pass again this soon after the overload ends
)

// evalTargets checks the targets on the adaptive set-up against the peers
// (none, static in-flight, Gradient2) in one scenario, and against the
// ideal gateway cs (ceilingOf) where sc.IdealKeep sets the goodput bar. A
// missed target is a finding, not a failure: the caller reports it.
func evalTargets(sc scenario, outs []outcome, cs []ceiling) []target {
	if len(sc.Pool) > 0 {
		return poolTargets(sc, outs)
	}
	a := find(outs, setupAdaptive)
	if a == nil {
		return nil
	}
	if sc.Storm != nil {
		return stormTargets(sc, *a)
	}
	var ts []target

	// Goodput in the window, against what the window allows.
	unit := "requests"
	if sc.tokens() {
		unit = "tokens"
	}
	bar := goodputBar * sc.GoodputRef
	want := fmt.Sprintf("≥ %.2f", bar)
	if sc.GoodputRef < 1 {
		want = fmt.Sprintf("≥ %.2f (0.95 of the offered %.2f)", bar, sc.GoodputRef)
	}
	measured := true
	if sc.IdealKeep > 0 {
		measured = sc.IdealKeep < len(cs)
		if measured {
			bar = cs[sc.IdealKeep].Goodput - idealSlack
		}
		want = fmt.Sprintf("≥ %.2f (the ideal gateway keeping %s for high − %.2f)", bar, slotsText(sc.IdealKeep), idealSlack)
	}
	t := target{What: "goodput ÷ capacity in the window (" + unit + ")", Want: want,
		Got: fmt.Sprintf("%.2f", a.GoodputRatio)}
	if measured {
		t.Margin, t.Met, t.Measured = fmt.Sprintf("%+.2f", a.GoodputRatio-bar), a.GoodputRatio >= bar, true
	} else {
		t.Want = fmt.Sprintf("the ideal gateway keeping %s for high − %.2f", slotsText(sc.IdealKeep), idealSlack)
	}
	ts = append(ts, t)

	best, bestName := bestPeer(outs, func(o outcome) float64 { return o.GoodputRatio })
	t = target{What: "goodput vs the best peer", Want: fmt.Sprintf("≥ best peer − %.2f", goodputSlack)}
	if bestName != "" {
		t.Got = fmt.Sprintf("%.2f vs %.2f (%s)", a.GoodputRatio, best, setupTitle(bestName, sc))
		t.Margin = fmt.Sprintf("%+.2f", a.GoodputRatio-(best-goodputSlack))
		t.Met, t.Measured = a.GoodputRatio >= best-goodputSlack, true
	}
	ts = append(ts, t)

	high := a.Window.High
	t = target{What: "high priority within the SLO (window)", Want: "≥ " + pct(highBar), Got: "no high-priority request"}
	if high.Sent > 0 {
		t.Got = fmt.Sprintf("%s (%d of %d)", pct(high.SLOAttainment), high.OKWithinSLO, high.Sent)
		t.Margin = points(high.SLOAttainment - highBar)
		t.Met, t.Measured = high.SLOAttainment >= highBar, true
	}
	ts = append(ts, t)

	hm := func(o outcome) float64 { return o.Window.HighMedium.SLOAttainment }
	best, bestName = bestPeer(outs, hm)
	t = target{What: "high+medium within the SLO vs the best peer (window)", Want: "≥ best peer's"}
	if bestName != "" && a.Window.HighMedium.Sent > 0 {
		t.Got = fmt.Sprintf("%s vs %s (%s)", pct(hm(*a)), pct(best), setupTitle(bestName, sc))
		t.Margin = points(hm(*a) - best)
		t.Met, t.Measured = hm(*a) >= best, true
	}
	ts = append(ts, t)

	t = target{What: "upstream OOMs (llmsim's counter, whole run)", Want: "0", Got: "never polled"}
	if a.UpstreamOOMs >= 0 {
		t.Got, t.Margin = fmt.Sprint(a.UpstreamOOMs), fmt.Sprint(-a.UpstreamOOMs)
		t.Met, t.Measured = a.UpstreamOOMs == 0, true
	}
	ts = append(ts, t)

	if sc.CalmTo > 0 {
		t = target{What: fmt.Sprintf("no refusal while the offered load ≤ 0.9× capacity (0–%.1f s)", sc.CalmTo.Seconds()),
			Want: "0 refused", Got: fmt.Sprint(a.CalmRefusals), Margin: fmt.Sprint(-a.CalmRefusals),
			Met: a.CalmRefusals == 0, Measured: true}
		if a.CalmFirstS != nil {
			t.Got += fmt.Sprintf(" (first at %.1f s)", *a.CalmFirstS)
		}
		ts = append(ts, t)
	}

	if sc.OverloadEnds {
		t = target{What: fmt.Sprintf("all pass again after the overload ends (%.1f s)", sc.WindowTo.Seconds()),
			Want: fmt.Sprintf("≤ %.0f s", recoverBarSecs)}
		if a.RecoverS != nil {
			t.Measured = true
			if a.RecoverNever {
				t.Got = fmt.Sprintf("never: still refusing %.1f s after, at the end of the run", *a.RecoverS)
				t.Margin = "–"
			} else {
				t.Got = fmt.Sprintf("%.1f s", *a.RecoverS)
				t.Margin = fmt.Sprintf("%+.1f s", recoverBarSecs-*a.RecoverS)
				t.Met = *a.RecoverS <= recoverBarSecs
			}
		}
		ts = append(ts, t)
	}
	return ts
}

// bestPeer is the highest f among the peers present, and which one it is.
func bestPeer(outs []outcome, f func(outcome) float64) (float64, string) {
	return bestOf(peers, outs, f)
}

// bestOf is the highest f among the set-ups named that are present.
func bestOf(names []string, outs []outcome, f func(outcome) float64) (float64, string) {
	best, name := 0.0, ""
	for _, p := range names {
		if o := find(outs, p); o != nil && (name == "" || f(*o) > best) {
			best, name = f(*o), p
		}
	}
	return best, name
}

// mark is a target's verdict as the tables print it.
func (t target) mark() string {
	switch {
	case !t.Measured:
		return "not measured"
	case !t.Met:
		return "**missed**"
	}
	return "met"
}

// printTargets writes one line per target (met or missed, with the
// margin) for the lab's console.
func printTargets(w io.Writer, sc scenario, ts []target) {
	for _, t := range ts {
		margin := ""
		if t.Margin != "" {
			margin = ", margin " + t.Margin
		}
		fmt.Fprintf(w, "lab: %s target %s %s: %s%s — %s\n", sc.Name, t.What, t.Want, t.Got, margin, strings.Trim(t.mark(), "*"))
	}
}

func fmtTransitions(m map[string]uint64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		name := k
		if k == "circuit" {
			name = "circuit opens"
		}
		parts = append(parts, fmt.Sprintf("%s %d", name, m[k]))
	}
	return strings.Join(parts, ", ")
}

func pct(f float64) string { return fmt.Sprintf("%.1f%%", 100*f) }

// points prints a difference of shares in percentage points.
func points(d float64) string { return fmt.Sprintf("%+.1f pts", 100*d) }

// Storm bars: an upstream that answers when full is saturated, not broken.
const (
	stormGoodputBar = 0.9  // goodput ÷ capacity in the window
	stormRefusalBar = 0.02 // the upstream's own refusals reaching clients, of all sent
)

// stormTargets are a storm scenario's targets for the adaptive set-up a:
// the circuit stays closed, the limit settles at what the server takes
// (its slots, plus its queue), few clients see the upstream's own
// refusal, and goodput holds.
func stormTargets(sc scenario, a outcome) []target {
	var ts []target
	t := target{What: "circuit stays closed (1 s polls not closed; opens)", Want: "0; 0", Got: "never polled"}
	if a.Transitions != nil {
		opens := a.Transitions["circuit"]
		t.Got = fmt.Sprintf("%d s; %d", a.CircuitNotClosedS, opens)
		t.Margin = fmt.Sprint(-a.CircuitNotClosedS)
		t.Met, t.Measured = a.CircuitNotClosedS == 0 && opens == 0, true
	}
	ts = append(ts, t)

	takes := sc.Slots + sc.Storm.Queue
	lo, hi := float64(sc.Slots-1), float64(takes+1)
	t = target{What: "limit settles at what the server takes (median, window's second half)",
		Want: fmt.Sprintf("%g–%g (%d slots + a queue of %d, ±1)", lo, hi, sc.Slots, sc.Storm.Queue), Got: "never polled"}
	if a.LimitSettled != nil {
		v := *a.LimitSettled
		t.Got = fmt.Sprintf("%g", v)
		t.Margin = fmt.Sprintf("%+g", math.Min(v-lo, hi-v))
		t.Met, t.Measured = v >= lo && v <= hi, true
	}
	ts = append(ts, t)

	ts = append(ts, target{What: "requests that see the upstream's own refusal (whole run)", Want: "≤ " + pct(stormRefusalBar),
		Got:    fmt.Sprintf("%s (%d of %d)", pct(a.UpstreamRefusalShare), a.UpstreamRefusals, len(a.Res.Records)),
		Margin: points(stormRefusalBar - a.UpstreamRefusalShare), Met: a.UpstreamRefusalShare <= stormRefusalBar, Measured: true})

	ts = append(ts, target{What: "goodput ÷ capacity in the window", Want: fmt.Sprintf("≥ %.2f", stormGoodputBar),
		Got: fmt.Sprintf("%.2f", a.GoodputRatio), Margin: fmt.Sprintf("%+.2f", a.GoodputRatio-stormGoodputBar),
		Met: a.GoodputRatio >= stormGoodputBar, Measured: true})
	return ts
}

// poolTargets are a pool scenario's targets for the policy's set-up, none
// when it did not run: goodput against what the pool can serve moment by
// moment, high's attainment, high+medium against the best other set-up,
// no refusal while the offered load is at most 0.9× the pool, and, where
// an upstream dies, no more failed requests than were in flight on it.
func poolTargets(sc scenario, outs []outcome) []target {
	a := find(outs, setupPolicy)
	if a == nil {
		return nil
	}
	var ts []target
	ts = append(ts, target{What: "goodput ÷ what the pool can serve in the window", Want: fmt.Sprintf("≥ %.2f", goodputBar),
		Got: fmt.Sprintf("%.2f", a.GoodputRatio), Margin: fmt.Sprintf("%+.2f", a.GoodputRatio-goodputBar),
		Met: a.GoodputRatio >= goodputBar, Measured: true})

	high := a.Window.High
	t := target{What: "high priority within the SLO (window)", Want: "≥ " + pct(highBar), Got: "no high-priority request"}
	if high.Sent > 0 {
		t.Got = fmt.Sprintf("%s (%d of %d)", pct(high.SLOAttainment), high.OKWithinSLO, high.Sent)
		t.Margin = points(high.SLOAttainment - highBar)
		t.Met, t.Measured = high.SLOAttainment >= highBar, true
	}
	ts = append(ts, t)

	hm := func(o outcome) float64 { return o.Window.HighMedium.SLOAttainment }
	best, bestName := bestOf(poolPeers, outs, hm)
	t = target{What: "high+medium within the SLO vs the best other set-up (window)", Want: "≥ best other's"}
	if bestName != "" && a.Window.HighMedium.Sent > 0 {
		t.Got = fmt.Sprintf("%s vs %s (%s)", pct(hm(*a)), pct(best), setupTitle(bestName, sc))
		t.Margin = points(hm(*a) - best)
		t.Met, t.Measured = hm(*a) >= best, true
	}
	ts = append(ts, t)

	if sc.CalmTo > 0 {
		t = target{What: fmt.Sprintf("no refusal while the offered load ≤ 0.9× the pool (0–%.1f s)", sc.CalmTo.Seconds()),
			Want: "0 refused", Got: fmt.Sprint(a.CalmRefusals), Margin: fmt.Sprint(-a.CalmRefusals),
			Met: a.CalmRefusals == 0, Measured: true}
		if a.CalmFirstS != nil {
			t.Got += fmt.Sprintf(" (first at %.1f s)", *a.CalmFirstS)
		}
		ts = append(ts, t)
	}

	if len(poolDeaths(sc.Pool)) > 0 {
		t = target{What: "failed requests (whole run) vs in flight on the upstream when it died", Want: "≤ in flight at the death",
			Got: "the death was not seen"}
		if a.Pool != nil {
			t.Got = fmt.Sprintf("%d failed, %d in flight", a.Failed, a.Pool.DeadInFlight)
			t.Margin = fmt.Sprint(a.Pool.DeadInFlight - a.Failed)
			t.Met, t.Measured = a.Failed <= a.Pool.DeadInFlight, true
		}
		ts = append(ts, t)
	}
	return ts
}
