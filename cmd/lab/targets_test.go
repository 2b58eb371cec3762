package main

import (
	"strings"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/internal/loadgen"
)

// okRec is an answer within the SLO, sent at atMS and done 100 ms later.
func okRec(atMS float64, p loadgen.Priority, tokens int) loadgen.Record {
	return loadgen.Record{AtMS: atMS, SentMS: atMS, Priority: p, Class: loadgen.ClassOK, TTFBMS: 50, TotalMS: 100,
		WithinSLO: true, MaxTokens: tokens, Tokens: tokens}
}

func shedRec(atMS float64, p loadgen.Priority) loadgen.Record {
	return loadgen.Record{AtMS: atMS, SentMS: atMS, Priority: p, Class: loadgen.ClassShed429, RetryAfter: true, Status: 429}
}

// TestAnalyzeWindowAndRecovery checks the arithmetic on a made-up run: a
// 10 s overload window from 10 s to 20 s of a 30 s run, calm before it.
func TestAnalyzeWindowAndRecovery(t *testing.T) {
	sc := scenario{Capacity: 10, WindowCapacity: 10, Profile: loadgen.Profile{Kind: loadgen.Step, Duration: 30 * time.Second},
		WindowFrom: 10 * time.Second, WindowTo: 20 * time.Second, OverloadEnds: true, CalmTo: 10 * time.Second, GoodputRef: 1}
	var recs []loadgen.Record
	for i := range 95 { // 95 good answers completing inside the window, all high
		recs = append(recs, okRec(10000+float64(i)*100, loadgen.High, 24))
	}
	recs = append(recs,
		okRec(19950, loadgen.Medium, 24), // sent in the window, done after it: not goodput
		shedRec(11500, loadgen.Low),      // first refusal, 1.5 s after the window opens
		shedRec(5000, loadgen.Low),       // while calm
		shedRec(24000, loadgen.Low),      // the last, 4 s after the overload ends
		loadgen.Record{AtMS: 12000, SentMS: 12000, Priority: loadgen.Medium, Class: loadgen.ClassOOM},
	)
	th := func(shed bool, qps, lat uint64) *loadgen.ThrottleState {
		s := &loadgen.ThrottleState{Shedding: shed}
		s.Levels.QPS.Transitions, s.Levels.Latency.Transitions = qps, lat
		return s
	}
	res := &loadgen.Result{DurationS: 30, Records: recs, Polls: []loadgen.Poll{
		{T: 0, Throttle: th(false, 4, 0), Upstream: &loadgen.UpstreamState{}},
		{T: 11, Throttle: th(true, 5, 0)},
		{T: 25, Throttle: th(false, 6, 2), Upstream: &loadgen.UpstreamState{OOMs: 1}},
	}}
	o := analyze(sc, setupAdaptive, res)
	if o.GoodputWindow != 9.5 || o.GoodputRatio != 0.95 || o.GoodTokensWindow != 9.5*24 {
		t.Errorf("goodput %g req/s, ratio %g, %g tokens/s; want 9.5, 0.95, 228", o.GoodputWindow, o.GoodputRatio, o.GoodTokensWindow)
	}
	if o.FirstShedS == nil || *o.FirstShedS != 1.5 || o.RecoverS == nil || *o.RecoverS != 4 || o.RecoverNever {
		t.Errorf("first shed %v, recover %v (never %v); want 1.5 and 4", o.FirstShedS, o.RecoverS, o.RecoverNever)
	}
	if o.CalmRefusals != 1 || o.CalmFirstS == nil || *o.CalmFirstS != 5 {
		t.Errorf("calm refusals %d, first %v; want 1 at 5 s", o.CalmRefusals, o.CalmFirstS)
	}
	if o.UpstreamOOMs != 1 || o.SheddingFlips != 2 || o.Transitions["qps"] != 2 || o.Transitions["latency"] != 2 {
		t.Errorf("OOMs %d, flips %d, transitions %v", o.UpstreamOOMs, o.SheddingFlips, o.Transitions)
	}
	if w := o.Window; w.High.Sent != 95 || w.Medium.OOM != 1 || w.Medium.Sent != 2 || w.Low.Sent != 1 || w.HighMedium.Sent != 97 {
		t.Errorf("window stats: %+v", w)
	}

	// Refusals to the end of the run: never recovered.
	res.Records = append(res.Records, shedRec(29500, loadgen.Low))
	if o := analyze(sc, setupAdaptive, res); !o.RecoverNever || *o.RecoverS != 9.5 {
		t.Errorf("refusing at 29.5 s of 30: never %v, recover %v", o.RecoverNever, *o.RecoverS)
	}
}

// TestTokenAccounting: with mixed answer lengths goodput is the completion
// tokens of answers within the SLO streamed in the window, over the token
// capacity; a short answer and a long one weigh what they carry, and one
// that streams across an edge of the window counts its share inside.
func TestTokenAccounting(t *testing.T) {
	sc := scenario{Capacity: 2, WindowCapacity: 2, TokenCapacity: 280,
		Sizes:   loadgen.Sizes{{MaxTokens: 16, Share: 0.75}, {MaxTokens: 512, Share: 0.25}},
		Profile: loadgen.Profile{Kind: loadgen.Step, Duration: 20 * time.Second}, WindowFrom: 5 * time.Second, WindowTo: 15 * time.Second, GoodputRef: 1}
	recs := []loadgen.Record{
		okRec(5000, loadgen.High, 512), okRec(6000, loadgen.Low, 16), okRec(7000, loadgen.Medium, 512),
		okRec(1000, loadgen.Low, 512), // done before the window
		{AtMS: 8000, SentMS: 8000, Priority: loadgen.Low, Class: loadgen.ClassOK, TTFBMS: 3000, TotalMS: 4000, MaxTokens: 512, Tokens: 512}, // served, late: not goodput
		// streams from 14 s to 18 s: a quarter of it in the window
		{AtMS: 13900, SentMS: 13900, Priority: loadgen.High, Class: loadgen.ClassOK, TTFBMS: 100, TotalMS: 4100, WithinSLO: true, MaxTokens: 512, Tokens: 512},
	}
	res := &loadgen.Result{DurationS: 20, Records: recs}
	o := analyze(sc, setupNone, res)
	if want := float64(512+16+512+128) / 10; o.GoodTokensWindow != want || o.GoodputRatio != want/280 {
		t.Errorf("good tokens/s %g, ratio %g; want %g, %g", o.GoodTokensWindow, o.GoodputRatio, want, want/280)
	}
	// Served counts the late answer too, however late: the upstream's work.
	if want := float64(512+16+512+128+512) / 10 / 280; o.ServedRatio != want {
		t.Errorf("served ratio %g, want %g", o.ServedRatio, want)
	}
	if o.GoodputWindow != 0.3 {
		t.Errorf("goodput %g req/s, want 0.3", o.GoodputWindow)
	}
	s := loadgen.Summarize(recs, 20)
	if s.Tokens != 512*4+16+512 || s.TokensWithinSLO != 512*3+16+512 {
		t.Errorf("tokens %d, within the SLO %d", s.Tokens, s.TokensWithinSLO)
	}
	ser := loadgen.BuildSeries(recs, nil, 20)
	if ser[5].AskedTokens != 512 || ser[5].GoodTokens != 512 || ser[12].ServedTokens != 512 || ser[12].GoodTokens != 0 {
		t.Errorf("series: %+v, %+v", ser[5], ser[12])
	}
}

// made-up outcomes for the targets: goodput ratio, window high and
// high+medium attainment, OOMs, calm refusals, recovery.
func madeUp(setup string, ratio, high, hm float64, ooms int64, calm int, recover float64) outcome {
	o := outcome{Setup: setup, GoodputRatio: ratio, UpstreamOOMs: ooms, CalmRefusals: calm, RecoverS: &recover}
	o.Window.High = loadgen.Stats{Sent: 1000, OKWithinSLO: int(high * 1000), SLOAttainment: high}
	o.Window.HighMedium = loadgen.Stats{Sent: 4000, SLOAttainment: hm}
	return o
}

func TestEvalTargets(t *testing.T) {
	sc := scenario{Name: "step", InflightN: 12, WindowTo: 100 * time.Second, OverloadEnds: true, CalmTo: 40 * time.Second, GoodputRef: 1}
	peersOut := []outcome{
		madeUp(setupNone, 0.06, 0.02, 0.02, 900, 0, 0),
		madeUp(setupInflight, 0.97, 0.40, 0.41, 0, 0, 0),
		madeUp(setupGradient2, 0.93, 0.38, 0.39, 0, 0, 0),
	}
	verdicts := func(outs []outcome) map[string]target {
		m := map[string]target{}
		for _, tg := range evalTargets(sc, outs, nil) {
			m[strings.SplitN(tg.What, " (", 2)[0]] = tg
		}
		return m
	}

	// Met: every bar passed, some by a hair.
	met := verdicts(append(peersOut, madeUp(setupAdaptive, 0.95, 0.995, 0.80, 0, 0, 2.5)))
	if len(met) != 7 {
		t.Fatalf("want 7 targets, got %v", met)
	}
	for k, tg := range met {
		if !tg.Met || !tg.Measured {
			t.Errorf("%q: %+v, want met", k, tg)
		}
	}
	if g := met["goodput vs the best peer"]; g.Margin != "+0.01" || !strings.Contains(g.Got, "static in-flight limit 12") {
		t.Errorf("goodput vs best peer: %+v", g)
	}
	if g := met["all pass again after the overload ends"]; g.Margin != "+0.5 s" {
		t.Errorf("recovery margin %q", g.Margin)
	}

	// Missed: each bar failed once.
	missed := verdicts(append(peersOut, madeUp(setupAdaptive, 0.90, 0.99, 0.40, 3, 2, 20)))
	for _, k := range []string{"goodput ÷ capacity in the window", "goodput vs the best peer", "high priority within the SLO",
		"high+medium within the SLO vs the best peer", "upstream OOMs", "no refusal while the offered load ≤ 0.9× capacity",
		"all pass again after the overload ends"} {
		tg, ok := missed[k]
		if !ok || tg.Met || !tg.Measured || tg.mark() != "**missed**" {
			t.Errorf("%q: %+v (present %v), want missed", k, tg, ok)
		}
	}
	if m := missed["goodput ÷ capacity in the window"].Margin; m != "-0.05" {
		t.Errorf("goodput margin %q, want -0.05", m)
	}
	if m := missed["high priority within the SLO"].Margin; m != "-0.5 pts" {
		t.Errorf("high margin %q", m)
	}
	if m := missed["high+medium within the SLO vs the best peer"].Margin; m != "-1.0 pts" {
		t.Errorf("high+medium margin %q", m)
	}

	// Never recovered, and a scenario without a calm stretch or an end of
	// overload (the capacity drop): those targets are absent.
	never := madeUp(setupAdaptive, 0.99, 1, 0.9, 0, 0, 30)
	never.RecoverNever = true
	if tg := verdicts(append(peersOut, never))["all pass again after the overload ends"]; tg.Met || !strings.HasPrefix(tg.Got, "never") {
		t.Errorf("never recovered: %+v", tg)
	}
	drop := scenario{Name: "drop", GoodputRef: 1}
	if n := len(evalTargets(drop, append(peersOut, never), nil)); n != 5 {
		t.Errorf("drop: %d targets, want 5", n)
	}
	// steady09: the goodput bar is 0.95 of the offered 0.9.
	steady := scenario{Name: "steady09", GoodputRef: 0.9, CalmTo: 90 * time.Second}
	g := evalTargets(steady, append(peersOut, madeUp(setupAdaptive, 0.86, 1, 1, 0, 0, 0)), nil)[0]
	if !g.Met || !strings.Contains(g.Want, "0.95 of the offered 0.90") {
		t.Errorf("steady09 goodput: %+v", g)
	}
	// hetero: the bar is the ideal gateway's keeping two slots, less 0.02;
	// without the simulation it is not measured.
	het := scenario{Name: "hetero", GoodputRef: 1, IdealKeep: 2}
	cs := []ceiling{{Goodput: 0.961}, {Goodput: 0.962}, {Goodput: 0.937}}
	for _, c := range []struct {
		ratio float64
		met   bool
	}{{0.92, true}, {0.91, false}} {
		g := evalTargets(het, append(peersOut, madeUp(setupAdaptive, c.ratio, 1, 1, 0, 0, 0)), cs)[0]
		if g.Met != c.met || !g.Measured || !strings.Contains(g.Want, "≥ 0.92 (the ideal gateway keeping two slots") {
			t.Errorf("hetero goodput %.2f: %+v, want met %v", c.ratio, g, c.met)
		}
	}
	if g := evalTargets(het, append(peersOut, madeUp(setupAdaptive, 0.99, 1, 1, 0, 0, 0)), nil)[0]; g.Measured || g.Met {
		t.Errorf("hetero goodput without the ideal gateway: %+v, want not measured", g)
	}
	// No adaptive outcome: nothing to judge; no peer: not measured.
	if ts := evalTargets(sc, peersOut, nil); ts != nil {
		t.Errorf("targets without the adaptive set-up: %v", ts)
	}
	alone := verdicts([]outcome{madeUp(setupAdaptive, 0.99, 1, 0.9, 0, 0, 0)})
	if tg := alone["goodput vs the best peer"]; tg.Measured {
		t.Errorf("no peer, yet measured: %+v", tg)
	}
}

// TestStormTargets checks a storm run's figures and targets on a made-up
// run: the upstream's own 503s counted (not the module's, not a 502), the
// circuit polled, the limit's median in the window's second half.
func TestStormTargets(t *testing.T) {
	sc := scenario{Capacity: 10, WindowCapacity: 10, Slots: 8, Storm: &storm{Queue: 2},
		Profile:    loadgen.Profile{Kind: loadgen.Step, Duration: 30 * time.Second},
		WindowFrom: 10 * time.Second, WindowTo: 20 * time.Second, OverloadEnds: true, GoodputRef: 1}
	var recs []loadgen.Record
	for i := range 95 {
		recs = append(recs, okRec(10000+float64(i)*100, loadgen.Medium, 24))
	}
	recs = append(recs,
		loadgen.Record{AtMS: 12000, Priority: loadgen.Low, Class: loadgen.ClassUpstream5xx, Status: 503}, // the upstream's own
		loadgen.Record{AtMS: 12000, Priority: loadgen.Low, Class: loadgen.ClassUpstream5xx, Status: 502}, // a proxy error
		loadgen.Record{AtMS: 12000, Priority: loadgen.Low, Class: loadgen.ClassShed503, Status: 503},     // the module's
		shedRec(13000, loadgen.Low),
	)
	th := func(circuit string, limit int) *loadgen.ThrottleState {
		s := &loadgen.ThrottleState{}
		s.Circuit.State, s.Admission.Limit = circuit, limit
		return s
	}
	res := &loadgen.Result{DurationS: 30, Records: recs, Polls: []loadgen.Poll{
		{T: 1, Throttle: th("closed", 4)}, {T: 12, Throttle: th("closed", 14)},
		{T: 15, Throttle: th("closed", 11)}, {T: 16, Throttle: th("closed", 9)}, {T: 18, Throttle: th("closed", 10)},
		{T: 25, Throttle: th("closed", 10)},
	}}
	o := analyze(sc, setupAdaptive, res)
	if o.UpstreamRefusals != 1 || o.CircuitNotClosedS != 0 || o.LimitSettled == nil || *o.LimitSettled != 10 {
		t.Fatalf("upstream refusals %d, circuit not closed %d s, limit settled %v; want 1, 0, 10", o.UpstreamRefusals, o.CircuitNotClosedS, o.LimitSettled)
	}
	met := func(ts []target) (n int) {
		for _, t := range ts {
			if t.Met {
				n++
			}
		}
		return n
	}
	if ts := evalTargets(sc, []outcome{o}, nil); len(ts) != 4 || met(ts) != 4 {
		t.Fatalf("targets %+v, want 4, all met", ts)
	}
	// The circuit half-open for a poll, the limit at 14, 3% of requests
	// seeing the upstream's 503, goodput 0.5: every target missed.
	res.Polls[3].Throttle.Circuit.State = "half-open"
	for i := 2; i <= 4; i++ {
		res.Polls[i].Throttle.Admission.Limit = 14
	}
	res.Records = append(res.Records[50:], loadgen.Record{AtMS: 12000, Class: loadgen.ClassUpstream5xx, Status: 503},
		loadgen.Record{AtMS: 12000, Class: loadgen.ClassUpstream5xx, Status: 503})
	o = analyze(sc, setupAdaptive, res)
	if ts := evalTargets(sc, []outcome{o}, nil); met(ts) != 0 {
		t.Fatalf("targets %+v, want none met", ts)
	}
}
