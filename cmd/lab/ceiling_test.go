package main

import (
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/internal/llmsim"
	"github.com/ai-guardian/adaptivethrottle/internal/loadgen"
)

// One slot, 40 ms prefill, 30 ms a token at a full batch: an answer of
// 100 tokens holds it 3.04 s, and a request may wait 2 − 0.04 − 0.03 =
// 1.93 s and still start within the 2 s SLO.
func ceilingScenario(tokens bool) (llmsim.Config, scenario) {
	cfg := llmsim.Config{Slots: 1, PrefillTime: 40 * time.Millisecond, TokenTime: 15 * time.Millisecond, TokenSlowdown: 2}
	sc := scenario{Slots: 1, SLO: loadgen.SLO{TTFB: 2 * time.Second}, WindowFrom: 0, WindowTo: 10 * time.Second}
	if tokens {
		sc.Sizes = loadgen.Sizes{{MaxTokens: 100, Share: 1}}
		sc.TokenCapacity = cfg.CapacityFor(100) * 100
	} else {
		sc.WindowCapacity = cfg.CapacityFor(100)
	}
	return cfg, sc
}

func rec(atS float64, p loadgen.Priority, tokens int) loadgen.Record {
	return loadgen.Record{AtMS: atS * 1000, Priority: p, MaxTokens: tokens}
}

// A lull: the slot serves one answer and then idles with nobody waiting.
func TestCeilingIdleInALull(t *testing.T) {
	cfg, sc := ceilingScenario(true)
	c := simulateCeiling(cfg, sc, []loadgen.Record{rec(0, loadgen.Low, 100)}, 0)
	if want := (10 - 3.04) / 10; !near(c.Idle, want, 0.005) || !near(c.IdleEmpty, want, 0.005) {
		t.Errorf("idle %.4f (nobody waiting %.4f), want %.4f", c.Idle, c.IdleEmpty, want)
	}
	if want := 100 / 10 / sc.TokenCapacity; !near(c.Goodput, want, 0.001) {
		t.Errorf("goodput %.4f, want %.4f (100 tokens in 10 s)", c.Goodput, want)
	}
}

// The freed slot goes to the highest priority waiting, then the oldest;
// a request that cannot start within the SLO any more is refused.
func TestCeilingAdmitsInPriorityOrderWithinTheSLO(t *testing.T) {
	cfg, sc := ceilingScenario(true)
	recs := []loadgen.Record{
		rec(0, loadgen.Low, 100),      // holds the slot until 3.04 s
		rec(0.5, loadgen.Low, 100),    // would start 2.54 s late: refused
		rec(1.2, loadgen.Medium, 100), // older than high, but high goes first; then 6.15 s: refused
		rec(1.5, loadgen.High, 100),   // starts at 3.04 s, first token 3.11 s: within the SLO
	}
	c := simulateCeiling(cfg, sc, recs, 0)
	if c.High != 1 || c.HighMet != 1 {
		t.Errorf("high %d of %d within the SLO, want 1 of 1", c.HighMet, c.High)
	}
	// Two answers: the first low and the high, 200 tokens in 10 s.
	if want := 200 / 10 / sc.TokenCapacity; !near(c.Goodput, want, 0.001) {
		t.Errorf("goodput %.4f, want %.4f (two answers)", c.Goodput, want)
	}
	if want := (10 - 2*3.04) / 10; !near(c.Idle, want, 0.005) {
		t.Errorf("idle %.4f, want %.4f", c.Idle, want)
	}
}

// Without token accounting, answers completed in the window count.
func TestCeilingCountsAnswers(t *testing.T) {
	cfg, sc := ceilingScenario(false)
	recs := []loadgen.Record{rec(0, loadgen.Medium, 100), rec(3, loadgen.Medium, 100), rec(7, loadgen.Medium, 100)}
	c := simulateCeiling(cfg, sc, recs, 0)
	// 0–3.04, 3.04–6.08 and 7–10.04: the third ends after the window.
	if want := 2.0 / 10 / sc.WindowCapacity; !near(c.Goodput, want, 0.001) {
		t.Errorf("goodput %.4f, want %.4f (two answers in the window)", c.Goodput, want)
	}
}

// A request that could only start after the SLO is refused, not served
// late: its slot stays free.
func TestCeilingRefusesWhatWouldStartLate(t *testing.T) {
	cfg, sc := ceilingScenario(true)
	// The medium request waits 2.04 s for the slot, 0.11 s too long.
	c := simulateCeiling(cfg, sc, []loadgen.Record{rec(0, loadgen.Low, 100), rec(1, loadgen.Medium, 100)}, 0)
	if want := (10 - 3.04) / 10; !near(c.IdleEmpty, want, 0.005) {
		t.Errorf("idle with nobody waiting %.4f, want %.4f: the late request was served", c.IdleEmpty, want)
	}
	// Just in time: waiting 1.92 s it starts within the SLO.
	c = simulateCeiling(cfg, sc, []loadgen.Record{rec(0, loadgen.Low, 100), rec(1.12, loadgen.Medium, 100)}, 0)
	if want := 200 / 10 / sc.TokenCapacity; !near(c.Goodput, want, 0.001) {
		t.Errorf("goodput %.4f, want %.4f: the request that could start in time was refused", c.Goodput, want)
	}
}

// Keeping a slot: medium and low requests with long answers leave it to
// short ones and to high.
func TestCeilingKeepsASlotFromLongAnswers(t *testing.T) {
	cfg, sc := ceilingScenario(true)
	cfg.Slots, sc.Slots = 2, 2
	sc.Sizes = loadgen.Sizes{{MaxTokens: 10, Share: 0.5}, {MaxTokens: 100, Share: 0.5}} // short: ≤ 27.5 tokens
	recs := []loadgen.Record{
		rec(0, loadgen.Low, 100),     // takes the first slot
		rec(0.1, loadgen.Low, 100),   // long: not the kept slot; refused at 2.03 s
		rec(0.2, loadgen.Medium, 10), // short: the kept slot
		rec(3.5, loadgen.High, 100),  // high: any slot
	}
	kept := simulateCeiling(cfg, sc, recs, 1)
	none := simulateCeiling(cfg, sc, recs, 0)
	if kept.HighMet != 1 || none.HighMet != 1 {
		t.Fatalf("high within the SLO: %d keeping a slot, %d keeping none; want 1", kept.HighMet, none.HighMet)
	}
	// Keeping none, the second long answer takes the second slot and the
	// short one waits past the SLO: 100 tokens more, 10 fewer.
	extra := (100 - 10) / 10 / sc.TokenCapacity
	if !near(none.Goodput-kept.Goodput, extra, 0.002) {
		t.Errorf("goodput %.4f keeping none, %.4f keeping one: want %.4f between them", none.Goodput, kept.Goodput, extra)
	}
}

// tightslo's goodput bar is the ideal gateway's keeping one slot, because
// on its arrivals keeping none leaves high requests late and keeping one
// costs goodput below 0.95: the two targets cannot both hold.
func TestTightSLOCannotKeepHighsPromiseAt095(t *testing.T) {
	var sc scenario
	for _, s := range scenarios(llmsim.Config{}, 0, false) {
		if s.Name == "tightslo" {
			sc = s
		}
	}
	if sc.IdealKeep != 1 {
		t.Fatalf("tightslo IdealKeep %d, want 1", sc.IdealKeep)
	}
	plan, err := loadgen.PlanSized(sc.Profile, loadgen.Uniform, sc.Mix, sc.Sizes, 1)
	if err != nil {
		t.Fatal(err)
	}
	recs := make([]loadgen.Record, len(plan))
	for i, p := range plan {
		recs[i] = loadgen.Record{AtMS: float64(p.At) / float64(time.Millisecond), Priority: p.Priority, MaxTokens: p.MaxTokens}
	}
	cs := ceilingOf(sc, []outcome{{Res: &loadgen.Result{Records: recs}}})
	if len(cs) != 2 {
		t.Fatalf("%d ceilings, want keeping none and one", len(cs))
	}
	none, one := cs[0], cs[1]
	t.Logf("keeping none: goodput %.3f, high %d of %d; keeping one: %.3f, high %d of %d",
		none.Goodput, none.HighMet, none.High, one.Goodput, one.HighMet, one.High)
	if none.Goodput < 0.95 || float64(none.HighMet) >= 0.995*float64(none.High) {
		t.Errorf("keeping none: goodput %.3f, high %d of %d: want ≥ 0.95 with high's promise broken", none.Goodput, none.HighMet, none.High)
	}
	if one.Goodput >= 0.95 || one.HighMet != one.High {
		t.Errorf("keeping one: goodput %.3f, high %d of %d: want every high on time below 0.95", one.Goodput, one.HighMet, one.High)
	}
}
