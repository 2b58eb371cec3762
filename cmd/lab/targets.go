package main

import (
	"fmt"
	"sort"
	"strings"
)

// stepTargets checks the step-overload targets on the adaptive
// set-up's outcome.
func stepTargets(sc scenario, o outcome) []target {
	var ts []target
	high := o.Res.High
	ts = append(ts, target{What: "high-priority SLO attainment (whole run)", Want: "≥ 99%",
		Got: pct(high.SLOAttainment), Met: high.SLOAttainment >= 0.99, Measured: high.Sent > 0})
	ts = append(ts, target{What: "upstream OOMs (llmsim's counter)", Want: "0",
		Got: fmt.Sprint(o.UpstreamOOMs), Met: o.UpstreamOOMs == 0, Measured: o.UpstreamOOMs >= 0})
	ratio := o.GoodputWindow / sc.WindowCapacity
	ts = append(ts, target{What: "goodput during the overload ÷ capacity", Want: "≥ 0.90",
		Got: fmt.Sprintf("%.2f (%.2f of %.1f req/s)", ratio, o.GoodputWindow, sc.WindowCapacity), Met: ratio >= 0.9, Measured: true})
	t := target{What: "first shed after the onset", Want: fmt.Sprintf("≤ 2 sample periods (%.0f s)", 2*samplePeriod), Got: "none"}
	if o.FirstShedS != nil {
		t.Got = fmt.Sprintf("%.2f s = %.1f periods", *o.FirstShedS, *o.FirstShedS/samplePeriod)
		t.Met, t.Measured = *o.FirstShedS <= 2*samplePeriod, true
	}
	ts = append(ts, t)
	t = target{What: "all passes again after the load drops", Want: "≤ 30 s"}
	if o.RecoverS != nil {
		t.Got = fmt.Sprintf("%.1f s (last refusal after the drop)", *o.RecoverS)
		t.Met, t.Measured = *o.RecoverS <= 30, true
	}
	ts = append(ts, t)
	t = target{What: "trip/recover transitions in the episode", Want: "≤ 2 per level, shedding on/off ≤ 2"}
	if o.Transitions != nil {
		t.Got = fmt.Sprintf("%s; shedding flips %d", fmtTransitions(o.Transitions), o.SheddingFlips)
		t.Met, t.Measured = o.maxLevelTransitions() <= 2 && o.SheddingFlips <= 2, true
	}
	ts = append(ts, t)
	return ts
}

// dropTargets compares the adaptive set-up with the static limiter after
// the capacity drop, and over the whole run.
func dropTargets(adaptive, static outcome) []target {
	a, s := adaptive.Window.HighMedium, static.Window.HighMedium
	aw, sw := adaptive.HighMedium, static.HighMedium
	return []target{
		{What: "high+medium SLO attainment after the drop: adaptive vs static", Want: "adaptive > static",
			Got: fmt.Sprintf("%s vs %s", pct(a.SLOAttainment), pct(s.SLOAttainment)),
			Met: a.SLOAttainment > s.SLOAttainment, Measured: a.Sent > 0 && s.Sent > 0},
		{What: "high+medium SLO attainment, whole run: adaptive vs static", Want: "adaptive > static",
			Got: fmt.Sprintf("%s vs %s", pct(aw.SLOAttainment), pct(sw.SLOAttainment)),
			Met: aw.SLOAttainment > sw.SLOAttainment, Measured: aw.Sent > 0 && sw.Sent > 0},
		{What: "upstream OOMs: adaptive (static)", Want: "0",
			Got: fmt.Sprintf("%d (%d)", adaptive.UpstreamOOMs, static.UpstreamOOMs),
			Met: adaptive.UpstreamOOMs == 0, Measured: adaptive.UpstreamOOMs >= 0},
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
