package loadgen

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// WriteTable prints the run for people: one row per priority and a total.
func (r *Result) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "target %s, profile %s", r.Target, r.Profile.Kind)
	switch r.Profile.Kind {
	case Step, Ramp, Burst:
		fmt.Fprintf(w, " base %g → peak %g req/s at %v for %v", r.Profile.Base, r.Profile.Peak, r.Profile.StepAt, r.Profile.StepFor)
		if r.Profile.Kind == Burst {
			fmt.Fprintf(w, " every %v", r.Profile.Every)
		}
	default:
		fmt.Fprintf(w, " %g req/s", r.Profile.Base)
	}
	fmt.Fprintf(w, ", %v, %s arrivals, mix %s, seed %d\n", r.Profile.Duration, r.Arrivals, r.Mix, r.Seed)
	fmt.Fprintf(w, "SLO: status 200, complete answer, TTFB ≤ %v", r.SLO.TTFB)
	if r.SLO.Total > 0 {
		fmt.Fprintf(w, ", total ≤ %v", r.SLO.Total)
	}
	fmt.Fprintf(w, "; elapsed %.1fs, send lateness p99 %.1f ms, max %.1f ms\n", r.ElapsedS, r.LateP99MS, r.LateMaxMS)
	for _, e := range r.Events {
		fmt.Fprintf(w, "event at %.1fs: %s\n", e.T, e.What)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "priority\tsent\tok\tok≤SLO\tSLO%\t429+RA\t429\t503+RA\t503\tOOM\t5xx\ttimeout\terror\toverflow\tTTFB p50\tTTFB p99\ttotal p50\ttotal p99\tgoodput/s\t")
	row := func(name string, s Stats) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.1f\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%.2f\t\n",
			name, s.Sent, s.OK, s.OKWithinSLO, 100*s.SLOAttainment, s.Shed429RA, s.Shed429, s.Shed503RA, s.Shed503,
			s.OOM, s.Upstream5xx+s.OtherStatus, s.Timeouts, s.NetErrors+s.Broken, s.Overflow,
			fmtMS(s.TTFBP50), fmtMS(s.TTFBP99), fmtMS(s.TotalP50), fmtMS(s.TotalP99), s.GoodputRPS)
	}
	for _, p := range Priorities {
		row(p.String(), r.ByPriority(p))
	}
	row("all", r.Overall)
	if err := tw.Flush(); err != nil {
		return err
	}
	if r.PollErrors > 0 {
		fmt.Fprintf(w, "%d polls failed\n", r.PollErrors)
	}
	return nil
}

// fmtMS prints a latency compactly: ms below 10 s, seconds above.
func fmtMS(v float64) string {
	switch {
	case v == 0:
		return "-"
	case v < 10000:
		return fmt.Sprintf("%.0fms", v)
	}
	return fmt.Sprintf("%.1fs", v/1000)
}
