package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/ai-guardian/adaptivethrottle/internal/llmsim"
	"github.com/ai-guardian/adaptivethrottle/internal/loadgen"
)

// writeMarkdown writes the scenario's tables: the comparison in the
// window with the ideal gateway's figures (cs, when not nil), the whole
// run, by priority, and the targets.
func writeMarkdown(w io.Writer, sc scenario, outs []outcome, cs []ceiling, machine string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "## %s\n\n", sc.Title)
	p := sc.Profile
	if len(sc.Pool) > 0 {
		fmt.Fprintf(&b, "Upstreams: %d llmsim, defaults but slots and speed (-slots, -prefill and -token-time divided by the speed): %s. Pool capacity (Config.Capacity, summed) %.2f req/s at the start, %.2f on average in the window; what the pool can serve there (moment by moment the offered load or the capacity, whichever is less) %.2f req/s",
			len(sc.Pool), poolText(sc.Pool), sc.Capacity, sc.WindowCapacity, sc.WindowServable)
	} else {
		slots := fmt.Sprintf("defaults (%d slots)", sc.Slots)
		if sc.Slots != llmsim.DefaultSlots {
			slots = fmt.Sprintf("defaults but %d slots (-slots %d)", sc.Slots, sc.Slots)
		}
		fmt.Fprintf(&b, "Upstream: llmsim %s, capacity %.2f req/s (Config.Capacity%s), %.2f req/s in the window",
			slots, sc.Capacity, capacityNote(sc), sc.WindowCapacity)
	}
	if sc.tokens() {
		fmt.Fprintf(&b, ", %.0f tokens/s", sc.TokenCapacity)
	}
	fmt.Fprintf(&b, ". Load: %s, %v, uniform arrivals, X-Priority mix %s", p.Kind, p.Duration, sc.Mix)
	if sc.tokens() {
		fmt.Fprintf(&b, ", max_tokens mix %s (mean %.0f)", sc.Sizes, sc.Sizes.Mean())
	}
	if sc.MaxTokens > 0 {
		fmt.Fprintf(&b, ", max_tokens %d", sc.MaxTokens)
	}
	fmt.Fprintf(&b, ", seed 1, streaming. SLO: 200 with a complete stream and %s. Client timeout %v. ", sloText(sc.SLO), sc.Timeout)
	if sc.Latency != "" {
		fmt.Fprintf(&b, "The module is told the SLO: latency { %s }. ", strings.ReplaceAll(sc.Latency, "\n", "; "))
	}
	fmt.Fprintf(&b, "Window: %.1f–%.1f s (mean offered %.2f× capacity)", sc.WindowFrom.Seconds(), sc.WindowTo.Seconds(),
		offeredMean(p, sc.WindowFrom, sc.WindowTo)/sc.WindowCapacity)
	if sc.CalmTo > 0 {
		fmt.Fprintf(&b, "; offered ≤ 0.9× capacity until %.1f s", sc.CalmTo.Seconds())
	}
	fmt.Fprintf(&b, ". %s\n\n", machine)

	goodCol := "goodput ÷ capacity"
	if len(sc.Pool) > 0 {
		goodCol = "goodput ÷ what the pool can serve"
	}
	if sc.tokens() {
		goodCol = "goodput ÷ capacity (tokens)"
	}
	fmt.Fprintf(&b, "In the window: SLO attainment by priority, goodput (answers within the SLO completed in the window), what was served however late (every complete answer: without protection, the upstream's batch full, what it can do on this machine), p99 TTFB of the answers sent in it, the first refusal after it opens, and when every request passes again after the overload ends.\n\n")
	fmt.Fprintf(&b, "| set-up | high | medium | low | high+medium | %s | served ÷ capacity | upstream OOMs | p99 TTFB | first refusal | all pass again |\n", goodCol)
	fmt.Fprintln(&b, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, o := range outs {
		wd := o.Window
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %.2f | %.2f | %s | %s | %s | %s |\n", setupTitle(o.Setup, sc),
			pct(wd.High.SLOAttainment), pct(wd.Medium.SLOAttainment), pct(wd.Low.SLOAttainment), pct(wd.HighMedium.SLOAttainment),
			o.GoodputRatio, o.ServedRatio, oomText(o), secs(wd.Overall.TTFBP99), firstRefusal(o), recoverText(sc, o))
	}

	if cs != nil {
		fmt.Fprintf(&b, "\nWithin the SLO, an ideal gateway reaches %.2f of capacity on this run's arrivals (high %d of %d within the SLO)", cs[0].Goodput, cs[0].HighMet, cs[0].High)
		for keep, c := range cs[1:] {
			sep := ", keeping"
			if keep == 0 {
				sep = "; keeping"
			}
			fmt.Fprintf(&b, "%s %s from medium and low requests with long answers %.2f (high %d of %d)",
				sep, slotsText(keep+1), c.Goodput, c.HighMet, c.High)
		}
		fmt.Fprintf(&b, ". Simulated on llmsim's model (cmd/lab/ceiling.go), it admits in the module's order (the highest priority first, then the oldest), never lets the upstream queue, and lets each request wait as long as it can and still start within the SLO. Keeping no slot, it leaves %.2f slots idle on average in the window, %.2f of them with nobody waiting: work that has not arrived cannot be started. What the upstream on this machine streams at a full batch is *served ÷ capacity* where a set-up kept it full.\n",
			cs[0].Idle, cs[0].IdleEmpty)
	}

	fmt.Fprintln(&b, "\nWhole run (429+RA = with Retry-After):")
	fmt.Fprintln(&b)
	fmt.Fprintln(&b, "| set-up | sent | OK ≤ SLO | SLO all | goodput in window | shed 429/503 (with Retry-After) | refused while ≤ 0.9× | timeouts | other errors | TTFB p50 / p99 (OK) | level transitions |")
	fmt.Fprintln(&b, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")
	for _, o := range outs {
		s := o.Res.Overall
		good := fmt.Sprintf("%.2f req/s", o.GoodputWindow)
		if sc.tokens() {
			good += fmt.Sprintf(", %.0f tokens/s", o.GoodTokensWindow)
		}
		calm := "–"
		if sc.CalmTo > 0 {
			calm = fmt.Sprint(o.CalmRefusals)
		}
		tr := "–"
		if o.Transitions != nil {
			tr = fmt.Sprintf("%s; shedding on/off %d", fmtTransitions(o.Transitions), o.SheddingFlips)
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %s | %s | %d/%d (%d) | %s | %d | %d | %s / %s | %s |\n",
			setupTitle(o.Setup, sc), s.Sent, s.OKWithinSLO, pct(s.SLOAttainment), good,
			s.Shed429RA+s.Shed429, s.Shed503RA+s.Shed503, s.Shed429RA+s.Shed503RA, calm,
			s.Timeouts, s.Upstream5xx+s.OtherStatus+s.NetErrors+s.Broken+s.Overflow,
			secs(s.TTFBP50), secs(s.TTFBP99), tr)
	}

	fmt.Fprintln(&b, "\nWhole run, per priority (counts; 429+RA = 429 with Retry-After):")
	fmt.Fprintln(&b)
	fmt.Fprintln(&b, "| set-up | priority | sent | OK | OK ≤ SLO | 429+RA | 429 | 503+RA | 503 | OOM | 5xx | timeout | error | tokens ≤ SLO | TTFB p50 | TTFB p99 | total p50 | total p99 |")
	fmt.Fprintln(&b, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, o := range outs {
		for _, pr := range loadgen.Priorities {
			s := o.Res.ByPriority(pr)
			fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %d | %d | %d | %d | %d | %d | %d | %d | %d | %s | %s | %s | %s |\n",
				o.Setup, pr, s.Sent, s.OK, s.OKWithinSLO, s.Shed429RA, s.Shed429, s.Shed503RA, s.Shed503, s.OOM,
				s.Upstream5xx+s.OtherStatus, s.Timeouts, s.NetErrors+s.Broken+s.Overflow, s.TokensWithinSLO,
				secs(s.TTFBP50), secs(s.TTFBP99), secs(s.TotalP50), secs(s.TotalP99))
		}
	}

	if sc.Storm != nil {
		fmt.Fprintln(&b, "\nThe upstream's answers that it is full: its own 503 \"server busy\" reaching a client (whole run), 1 s polls that found the circuit not closed, and the limit the set-up settled at (median of the window's second half: the module's concurrency limit, a peer's limit):")
		fmt.Fprintln(&b)
		fmt.Fprintln(&b, "| set-up | upstream's 503 seen by clients | circuit not closed | limit settled |")
		fmt.Fprintln(&b, "|---|--:|--:|--:|")
		for _, o := range outs {
			circuit, limit := "–", "–"
			if o.Transitions != nil {
				circuit = fmt.Sprintf("%d s (opens %d)", o.CircuitNotClosedS, o.Transitions["circuit"])
			}
			if o.LimitSettled != nil {
				limit = fmt.Sprintf("%g", *o.LimitSettled)
			} else if v, ok := peerSettled(sc, o); ok {
				limit = fmt.Sprintf("%g", v)
			}
			fmt.Fprintf(&b, "| %s | %d (%s) | %s | %s |\n", setupTitle(o.Setup, sc), o.UpstreamRefusals, pct(o.UpstreamRefusalShare), circuit, limit)
		}
	}

	if len(sc.Pool) > 0 {
		writePoolTable(&b, sc, outs)
	}

	if ts := evalTargets(sc, outs, cs); len(ts) > 0 {
		who := "adaptive set-up"
		if len(sc.Pool) > 0 {
			who = "the policy's set-up (" + setupTitle(setupPolicy, sc) + ")"
		}
		fmt.Fprintf(&b, "\nTargets, %s (a missed target is a finding, not a failed run):\n", who)
		fmt.Fprintln(&b)
		fmt.Fprintln(&b, "| target | want | got | margin | |")
		fmt.Fprintln(&b, "|---|---|---|--:|---|")
		for _, t := range ts {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", t.What, t.Want, t.Got, t.Margin, t.mark())
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

func capacityNote(sc scenario) string {
	if sc.tokens() {
		return fmt.Sprintf("For(%.0f), the mean answer", sc.Sizes.Mean())
	}
	if sc.MaxTokens > 0 {
		return fmt.Sprintf("For(%d), every answer", sc.MaxTokens)
	}
	return "()"
}

func oomText(o outcome) string {
	if o.UpstreamOOMs < 0 {
		return fmt.Sprintf("? (client saw %d)", o.Res.Overall.OOM)
	}
	return fmt.Sprint(o.UpstreamOOMs)
}

func firstRefusal(o outcome) string {
	if o.FirstShedS == nil {
		return "none"
	}
	return fmt.Sprintf("%.2f s", *o.FirstShedS)
}

func recoverText(sc scenario, o outcome) string {
	switch {
	case !sc.OverloadEnds || o.RecoverS == nil:
		return "–"
	case o.RecoverNever:
		return "never (to the end)"
	}
	return fmt.Sprintf("%.1f s", *o.RecoverS)
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
func writeOutcomesJSON(path string, sc scenario, outs []outcome, cs []ceiling) error {
	type slim struct {
		Scenario scenario  `json:"scenario"`
		Outcomes []outcome `json:"outcomes"`
		Ceiling  []ceiling `json:"ceiling,omitempty"` // keeping no slot, one, two (see ceilingOf)
	}
	cp := make([]outcome, len(outs))
	for i, o := range outs {
		r := *o.Res
		r.Records, r.Polls = nil, nil
		o.Res = &r
		cp[i] = o
	}
	b, err := json.MarshalIndent(slim{sc, cp, cs}, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// sloText is the objective in words: TTFB, end to end, or both.
func sloText(s loadgen.SLO) string {
	var parts []string
	if s.TTFB > 0 {
		parts = append(parts, fmt.Sprintf("TTFB ≤ %v", s.TTFB))
	}
	if s.Total > 0 {
		parts = append(parts, fmt.Sprintf("the whole answer ≤ %v end to end", s.Total))
	}
	return strings.Join(parts, " and ")
}

// peerSettled is a peer's median limit in the window's second half.
func peerSettled(sc scenario, o outcome) (float64, bool) {
	from, to := (sc.WindowFrom+sc.WindowTo).Seconds()/2, sc.WindowTo.Seconds()
	var v []float64
	for _, p := range o.Peer {
		if p.T >= from && p.T < to {
			v = append(v, float64(p.Limit))
		}
	}
	if len(v) == 0 {
		return 0, false
	}
	slices.Sort(v)
	return v[len(v)/2], true
}

// writePoolTable is a pool scenario's table of what became of the
// upstreams: requests failed (neither answered nor refused) against what
// was in flight on an upstream when it died, refusals while the offered
// load was at most 0.9× the pool, the upstreams' OOMs, and each upstream's
// mean requests in flight (running and waiting) in the window.
func writePoolTable(b *strings.Builder, sc scenario, outs []outcome) {
	fmt.Fprintln(b, "\nThe pool, whole run: requests that failed (neither answered nor refused: timeouts, 502s, cut streams), what was running or waiting on an upstream when it was killed, refusals while the offered load was ≤ 0.9× the pool, and each upstream's mean load in the window (running + waiting, 1 s looks at /admin/state):")
	fmt.Fprintln(b)
	fmt.Fprintln(b, "| set-up | failed | in flight at deaths | refused while ≤ 0.9× | upstream OOMs | mean running + waiting per upstream (window) |")
	fmt.Fprintln(b, "|---|--:|--:|--:|--:|---|")
	for _, o := range outs {
		dead, loads := "–", "–"
		if o.Pool != nil {
			if len(poolDeaths(sc.Pool)) > 0 {
				dead = fmt.Sprint(o.Pool.DeadInFlight)
			}
			loads = meanUpstreamLoads(sc, *o.Pool)
		}
		fmt.Fprintf(b, "| %s | %d | %s | %d | %s | %s |\n", setupTitle(o.Setup, sc), o.Failed, dead, o.CalmRefusals, oomText(o), loads)
	}
}

// meanUpstreamLoads is each upstream's mean running + waiting over the
// window's looks, "#1 4.2 · #2 1.0" (a look it did not answer counts 0).
func meanUpstreamLoads(sc scenario, r poolRun) string {
	from, to := sc.WindowFrom.Seconds(), sc.WindowTo.Seconds()
	sums := make([]float64, len(sc.Pool))
	n := 0
	for _, s := range r.Samples {
		if s.T < from || s.T >= to || len(s.Upstreams) != len(sums) {
			continue
		}
		n++
		for i, u := range s.Upstreams {
			sums[i] += float64(u.Running + u.Waiting)
		}
	}
	if n == 0 {
		return "–"
	}
	parts := make([]string, len(sums))
	for i, v := range sums {
		parts[i] = fmt.Sprintf("#%d %.1f", i+1, v/float64(n))
	}
	return strings.Join(parts, " · ")
}

// slotsText is "one slot", "two slots", or "n slots".
func slotsText(n int) string {
	switch n {
	case 1:
		return "one slot"
	case 2:
		return "two slots"
	}
	return fmt.Sprintf("%d slots", n)
}
