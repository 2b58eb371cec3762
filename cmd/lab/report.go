package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/ai-guardian/adaptivethrottle/internal/loadgen"
)

// writeMarkdown writes the scenario's tables: by set-up, by priority, and
// the targets where they apply.
func writeMarkdown(w io.Writer, sc scenario, outs []outcome, machine string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "## %s\n\n", sc.Title)
	p := sc.Profile
	fmt.Fprintf(&b, "Upstream: llmsim defaults, capacity %.1f req/s (Config.Capacity()), %.1f req/s in the window. ", sc.Capacity, sc.WindowCapacity)
	fmt.Fprintf(&b, "Load: %s, %v, uniform arrivals, X-Priority mix %s, seed 1, streaming. ", p.Kind, p.Duration, sc.Mix)
	fmt.Fprintf(&b, "SLO: 200 with a complete stream and TTFB ≤ %v. Client timeout %v. ", sc.SLO.TTFB, sc.Timeout)
	fmt.Fprintf(&b, "Window for the targets: %v–%v. %s\n\n", sc.WindowFrom, sc.WindowTo, machine)

	fmt.Fprintln(&b, "| set-up | sent | OK ≤ SLO | SLO all | high | medium | low | goodput in window | ÷ window capacity | shed 429/503 (with Retry-After) | upstream OOMs | timeouts | other errors | TTFB p50 / p99 (OK) |")
	fmt.Fprintln(&b, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, o := range outs {
		r := o.Res
		s := r.Overall
		oom := fmt.Sprint(o.UpstreamOOMs)
		if o.UpstreamOOMs < 0 {
			oom = fmt.Sprintf("? (client saw %d)", s.OOM)
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %s | %s | %s | %s | %.2f req/s | %.2f | %d/%d (%d) | %s | %d | %d | %s / %s |\n",
			setupTitle(o.Setup, sc.Capacity), s.Sent, s.OKWithinSLO, pct(s.SLOAttainment),
			pct(r.High.SLOAttainment), pct(r.Medium.SLOAttainment), pct(r.Low.SLOAttainment),
			o.GoodputWindow, o.GoodputWindow/sc.WindowCapacity,
			s.Shed429RA+s.Shed429, s.Shed503RA+s.Shed503, s.Shed429RA+s.Shed503RA,
			oom, s.Timeouts, s.Upstream5xx+s.OtherStatus+s.NetErrors+s.Broken+s.Overflow,
			secs(s.TTFBP50), secs(s.TTFBP99))
	}

	fmt.Fprintf(&b, "\nIn the window (%v–%v), by priority: SLO attainment, and p99 TTFB of the answers served.\n\n", sc.WindowFrom, sc.WindowTo)
	fmt.Fprintln(&b, "| set-up | high | medium | low | high+medium | first shed after onset | shedding on/off flips | level transitions |")
	fmt.Fprintln(&b, "|---|--:|--:|--:|--:|--:|--:|---|")
	for _, o := range outs {
		w := o.Window
		first := "none"
		if o.FirstShedS != nil {
			first = fmt.Sprintf("%.2f s", *o.FirstShedS)
		}
		tr, flips := "–", "–"
		if o.Transitions != nil {
			tr, flips = fmtTransitions(o.Transitions), fmt.Sprint(o.SheddingFlips)
		}
		fmt.Fprintf(&b, "| %s | %s (%s) | %s (%s) | %s (%s) | %s | %s | %s | %s |\n", setupTitle(o.Setup, sc.Capacity),
			pct(w.High.SLOAttainment), secs(w.High.TTFBP99), pct(w.Medium.SLOAttainment), secs(w.Medium.TTFBP99),
			pct(w.Low.SLOAttainment), secs(w.Low.TTFBP99), pct(w.HighMedium.SLOAttainment), first, flips, tr)
	}

	fmt.Fprintln(&b, "\nWhole run, per priority (counts; 429+RA = 429 with Retry-After):")
	fmt.Fprintln(&b)
	fmt.Fprintln(&b, "| set-up | priority | sent | OK | OK ≤ SLO | 429+RA | 429 | 503+RA | 503 | OOM | 5xx | timeout | error | TTFB p50 | TTFB p99 | total p50 | total p99 |")
	fmt.Fprintln(&b, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, o := range outs {
		for _, pr := range loadgen.Priorities {
			s := o.Res.ByPriority(pr)
			fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %d | %d | %d | %d | %d | %d | %d | %d | %s | %s | %s | %s |\n",
				o.Setup, pr, s.Sent, s.OK, s.OKWithinSLO, s.Shed429RA, s.Shed429, s.Shed503RA, s.Shed503, s.OOM,
				s.Upstream5xx+s.OtherStatus, s.Timeouts, s.NetErrors+s.Broken+s.Overflow,
				secs(s.TTFBP50), secs(s.TTFBP99), secs(s.TotalP50), secs(s.TotalP99))
		}
	}

	var ts []target
	switch sc.Profile.Kind {
	case loadgen.Step:
		if a := find(outs, setupAdaptive); a != nil {
			ts = stepTargets(sc, *a)
		}
	case loadgen.CapacityDrop:
		if a, s := find(outs, setupAdaptive), find(outs, setupStatic); a != nil && s != nil {
			ts = dropTargets(*a, *s)
		}
	}
	if len(ts) > 0 {
		fmt.Fprintln(&b, "\nTargets (issue 4), adaptive set-up:")
		fmt.Fprintln(&b)
		fmt.Fprintln(&b, "| target | want | got | |")
		fmt.Fprintln(&b, "|---|---|---|---|")
		for _, t := range ts {
			mark := "met"
			switch {
			case !t.Measured:
				mark = "not measured"
			case !t.Met:
				mark = "**missed**"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", t.What, t.Want, t.Got, mark)
		}
	}
	for _, o := range outs {
		r := o.Res
		if r.LateMaxMS > 100 || r.PollErrors > 0 {
			fmt.Fprintf(&b, "\nNote (%s): send lateness p99 %.0f ms, max %.0f ms; %d failed polls.\n", o.Setup, r.LateP99MS, r.LateMaxMS, r.PollErrors)
		}
		for _, e := range r.Events {
			fmt.Fprintf(&b, "\nEvent (%s) at %.1f s: %s.\n", o.Setup, e.T, e.What)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func find(outs []outcome, setup string) *outcome {
	for i := range outs {
		if outs[i].Setup == setup {
			return &outs[i]
		}
	}
	return nil
}

// secs prints milliseconds as seconds, "–" for none.
func secs(ms float64) string {
	switch {
	case ms == 0:
		return "–"
	case ms < 1000:
		return fmt.Sprintf("%.3f s", ms/1000)
	}
	return fmt.Sprintf("%.2f s", ms/1000)
}

// writeOutcomesJSON saves the outcomes without per-request records.
func writeOutcomesJSON(path string, sc scenario, outs []outcome) error {
	type slim struct {
		Scenario scenario  `json:"scenario"`
		Outcomes []outcome `json:"outcomes"`
	}
	cp := make([]outcome, len(outs))
	for i, o := range outs {
		r := *o.Res
		r.Records, r.Polls = nil, nil
		o.Res = &r
		cp[i] = o
	}
	b, err := json.MarshalIndent(slim{sc, cp}, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
