package loadgen

import (
	"fmt"
	"io"
	"math"
	"strings"
	"sync/atomic"
	"time"
)

// The live view (Config.Live): one line a second while the run goes on, the
// way a person watches a gateway shed. Each line covers the second just
// ended:
//
//	    t    rate  sent h/m/l  passed h/m/l  shed h/m/l  failed  queue  gateway
//	  34s     5/s       0/3/2         0/3/2       0/0/0       0      0  passing all · qps 5.0/s, trips above 7.5/s
//	  37s    30/s      5/8/17         5/5/0      0/3/17       0      3  SHEDDING qps · qps 30.0/s, trips above 7.5/s
//
// sent is what this generator sent, by priority; passed and shed are the
// gateway's own lane counters from /throttle/status (the difference since
// the previous poll), or, when the throttle is not polled, the answers the
// generator got in that second (ok, shed); failed counts answers that were
// neither served nor shed (OOM, 5xx, timeouts, client overflow); queue is the
// upstream's waiting requests when it is polled; gateway says whether the
// throttle sheds, which levels are tripped, the medium lane's rate and the
// QPS level's baseline (or that it is still learning it).

// liveCounts are the generator's own counts, kept as the run goes.
type liveCounts struct {
	sent, ok, shed, failed [numPriorities]atomic.Int64
}

// answered counts one answer (or a request never sent: overflow).
func (c *liveCounts) answered(p Priority, cl Class) {
	switch {
	case cl == ClassOK:
		c.ok[p].Add(1)
	case cl.Shed():
		c.shed[p].Add(1)
	default:
		c.failed[p].Add(1)
	}
}

// tally is a count per priority.
type tally [numPriorities]int64

func (t tally) sum() int64 {
	var n int64
	for _, v := range t {
		n += v
	}
	return n
}

func (t tally) minus(o tally) tally {
	for i := range t {
		t[i] -= o[i]
	}
	return t
}

// String writes high/medium/low.
func (t tally) String() string { return fmt.Sprintf("%d/%d/%d", t[High], t[Medium], t[Low]) }

type liveSnap struct{ sent, ok, shed, failed tally }

func (c *liveCounts) snap() liveSnap {
	var s liveSnap
	for p := range numPriorities {
		s.sent[p], s.ok[p] = c.sent[p].Load(), c.ok[p].Load()
		s.shed[p], s.failed[p] = c.shed[p].Load(), c.failed[p].Load()
	}
	return s
}

// liveLine is one line of the live view.
type liveLine struct {
	T            int     // seconds since the start
	Rate         float64 // planned rate in that second
	Sent         tally
	Passed, Shed *tally // nil: unknown (the throttle did not answer)
	Failed       int64
	Queue        *int   // the upstream's waiting requests; nil: not polled
	Gateway      string // the throttle's state; "" when not polled
}

// liveHeader is the line above the first; gateway says whether passed and
// shed are the gateway's counters or the generator's answers.
func liveHeader(gateway bool) string {
	passed := "ok h/m/l"
	if gateway {
		passed = "passed h/m/l"
	}
	h := fmt.Sprintf("%5s  %6s  %10s  %12s  %10s  %6s  %5s", "t", "rate", "sent h/m/l", passed, "shed h/m/l", "failed", "queue")
	if gateway {
		h += "  gateway"
	}
	return h
}

// String formats the line under liveHeader's columns.
func (l liveLine) String() string {
	opt := func(t *tally) string {
		if t == nil {
			return "-"
		}
		return t.String()
	}
	queue := "-"
	if l.Queue != nil {
		queue = fmt.Sprint(*l.Queue)
	}
	s := fmt.Sprintf("%4ds  %6s  %10s  %12s  %10s  %6d  %5s", l.T, fmt.Sprintf("%g/s", l.Rate),
		l.Sent, opt(l.Passed), opt(l.Shed), l.Failed, queue)
	if l.Gateway != "" {
		s += "  " + l.Gateway
	}
	return s
}

// gatewayText sums up one /throttle/status instance for the live view.
func gatewayText(th *ThrottleState) string {
	if th == nil {
		return "status: no answer"
	}
	var parts []string
	tripped := strings.Join(th.Tripped(), " ")
	switch {
	case th.Override != nil && th.Override.State != "" && th.Override.State != "auto":
		parts = append(parts, "OVERRIDE "+th.Override.State)
	case th.Shedding && tripped == "":
		parts = append(parts, "SHEDDING")
	case th.Shedding:
		parts = append(parts, "SHEDDING "+tripped)
	default:
		parts = append(parts, "passing all")
	}
	q := th.Levels.QPS
	switch {
	case q.Threshold == 0:
		parts = append(parts, fmt.Sprintf("qps %.1f/s, learning its baseline (%d s)", q.Value, q.LearnedS))
	default:
		parts = append(parts, fmt.Sprintf("qps %.1f/s, trips above %.1f/s", q.Value, q.Threshold))
	}
	return strings.Join(parts, " · ")
}

// lanes reads the gateway's cumulative passed and shed counters.
func lanes(th *ThrottleState) (passed, shed tally) {
	passed = tally{int64(th.Priorities.High.Passed), int64(th.Priorities.Medium.Passed), int64(th.Priorities.Low.Passed)}
	shed = tally{int64(th.Priorities.High.Shed), int64(th.Priorities.Medium.Shed), int64(th.Priorities.Low.Shed)}
	return passed, shed
}

// liveView turns each poll round into a line. Only the poller calls
// observe.
type liveView struct {
	w        io.Writer
	prof     Profile
	counts   *liveCounts
	gateway  bool // the throttle is polled
	upstream bool // the upstream is polled

	started              bool
	prev                 liveSnap
	prevTh               *ThrottleState // the last throttle poll that answered
	prevPassed, prevShed tally
}

func newLiveView(w io.Writer, cfg Config, counts *liveCounts) *liveView {
	return &liveView{w: w, prof: cfg.Profile, counts: counts, gateway: cfg.ThrottleStatus != "", upstream: cfg.Upstream != ""}
}

// observe takes one poll round (at most one a second): the first, at the
// start, only sets the counts to compare with; each later one prints the
// second since the previous.
func (v *liveView) observe(p Poll) {
	now := v.counts.snap()
	if !v.started {
		v.started = true
		v.prev = now
		if p.Throttle != nil {
			v.prevTh = p.Throttle
			v.prevPassed, v.prevShed = lanes(p.Throttle)
		}
		fmt.Fprintln(v.w, liveHeader(v.gateway))
		return
	}
	l := liveLine{
		T:    int(math.Round(p.T)),
		Rate: v.prof.RateAt(time.Duration((p.T - 0.5) * float64(time.Second))),
		Sent: now.sent.minus(v.prev.sent),
	}
	failed := now.failed.minus(v.prev.failed)
	l.Failed = failed.sum()
	if v.upstream && p.Upstream != nil {
		w := p.Upstream.Waiting
		l.Queue = &w
	}
	if v.gateway {
		l.Gateway = gatewayText(p.Throttle)
		if th := p.Throttle; th != nil {
			passed, shed := lanes(th)
			if v.prevTh != nil {
				dp, ds := passed.minus(v.prevPassed), shed.minus(v.prevShed)
				if dp.min() >= 0 && ds.min() >= 0 { // not across a reset or a restart
					l.Passed, l.Shed = &dp, &ds
				}
			}
			v.prevTh, v.prevPassed, v.prevShed = th, passed, shed
		}
	} else {
		ok, shed := now.ok.minus(v.prev.ok), now.shed.minus(v.prev.shed)
		l.Passed, l.Shed = &ok, &shed
	}
	v.prev = now
	fmt.Fprintln(v.w, l)
}

func (t tally) min() int64 {
	m := t[0]
	for _, v := range t[1:] {
		m = min(m, v)
	}
	return m
}
