package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/ai-guardian/adaptivethrottle/admission"

	"github.com/ai-guardian/adaptivethrottle/internal/llmsim"
	"github.com/ai-guardian/adaptivethrottle/internal/loadgen"
)

// scenario is one load pattern, played against every set-up.
type scenario struct {
	Name  string // file names: results/<Name>.md, .png, .json
	Title string
	// Capacity is the upstream's capacity (req/s) at the start, for the
	// scenario's answer lengths; WindowCapacity is what it is during the
	// window (half, after a drop to half the slots).
	Capacity, WindowCapacity float64
	Slots                    int // llmsim's batch slots at the start
	Profile                  loadgen.Profile
	DropTo                   int // capacity-drop: slots after the cut
	Mix                      loadgen.Mix
	// Sizes, when not empty, draws max_tokens per request; goodput is then
	// counted in tokens, against TokenCapacity (tokens/s in the window).
	Sizes         loadgen.Sizes
	TokenCapacity float64
	// MaxTokens, when not 0, is the max_tokens every request asks for
	// (without Sizes); Capacity is then for that length.
	MaxTokens int
	SLO       loadgen.SLO
	// Latency, when not empty, is the adaptive set-up's latency block
	// (one directive a line): the SLO stated to the module.
	Latency string
	Timeout time.Duration // client timeout (and drain)
	// Window is the stretch the targets are about: the overload, the time
	// after the capacity drop, or the whole run for steady09.
	WindowFrom, WindowTo time.Duration
	// OverloadEnds: the load falls below capacity at WindowTo, so "all
	// pass again" is measured from there.
	OverloadEnds bool
	// CalmTo: until then the offered load is at most 0.9× capacity, and
	// nothing should be refused (0: no such stretch).
	CalmTo time.Duration
	// GoodputRef is the best goodput ÷ capacity the window allows: 1 in an
	// overload, the offered share below capacity (steady09: 0.9).
	GoodputRef float64
	// IdealKeep, when set, makes the goodput bar the ideal gateway's
	// (ceilingOf) keeping this many slots for high, less idealSlack,
	// instead of goodputBar: where the arrivals cannot give 0.95 and high's
	// promise at once (hetero: 8 slots of answers 15 s long).
	IdealKeep int
	InflightN int // the static in-flight limit's N
	// Storm, when not nil: llmsim refuses as Ollama does (503 "server
	// busy") once its slots and its queue are full, and the scenario's
	// targets are the storm's (stormTargets).
	Storm *storm `json:",omitempty"`
	// Pool, when not empty, is a pool scenario's upstreams (pool.go):
	// Capacity is then the pool's at the start, Slots the sum of its
	// slots, WindowCapacity its mean capacity in the window, and
	// WindowServable what it can serve there (the offered load or the
	// capacity, whichever is less, moment by moment), the goodput ratio's
	// denominator.
	Pool []poolUpstream `json:",omitempty"`
	// PoolGauge, when set, is the body of the upstream_gauge block the
	// policy's set-up reads each upstream's own gauge with; the policy
	// then also runs without it (setupPolicyNoGauge).
	PoolGauge      string  `json:",omitempty"`
	WindowServable float64 `json:",omitempty"`
}

// storm is an upstream that answers when full, as Ollama at
// OLLAMA_MAX_QUEUE: Queue requests may wait for a slot (0: none).
type storm struct {
	Queue int
}

// simArgs are llmsim's flags for the scenario, beyond -listen and -slots.
func (sc scenario) simArgs() []string {
	switch {
	case sc.Storm == nil:
		return nil
	case sc.Storm.Queue == 0:
		return []string{"-full-answer", "ollama", "-no-queue"}
	}
	return []string{"-full-answer", "ollama", "-queue-limit", fmt.Sprint(sc.Storm.Queue)}
}

// tokens reports whether goodput is counted in tokens.
func (sc scenario) tokens() bool { return len(sc.Sizes) > 0 }

// capacityAt is the capacity (req/s) at offset t.
func (sc scenario) capacityAt(t time.Duration) float64 {
	if len(sc.Pool) > 0 {
		return poolCapacityAt(sc.Pool, t)
	}
	if sc.Profile.Kind == loadgen.CapacityDrop && t >= sc.Profile.DropAt {
		return sc.WindowCapacity
	}
	return sc.Capacity
}

// Set-ups, in table order: no protection, the two peers, the module.
const (
	setupNone      = "none"
	setupInflight  = "inflight"
	setupGradient2 = "gradient2"
	setupAdaptive  = "adaptive"
)

var setupNames = []string{setupNone, setupInflight, setupGradient2, setupAdaptive}

// labSetups are the set-ups this run plays (chooseSetups): setupNames,
// or those -setups names, then one adaptive set-up per -rules-off item.
var labSetups = setupNames

// adaptiveWithout names the adaptive set-up with the rules in off turned
// off (a comma-separated list).
const adaptiveWithout = setupAdaptive + "-no-"

// chooseSetups returns the set-ups of -setups (comma-separated, in table
// order) and an adaptive one without the rules of each space-separated
// item of -rules-off.
func chooseSetups(setups, rulesOff string) ([]string, error) {
	var out []string
	for _, s := range strings.Split(setups, ",") {
		s = strings.TrimSpace(s)
		if !slices.Contains(setupNames, s) {
			return nil, fmt.Errorf("-setups: unknown set-up %q (want %s)", s, strings.Join(setupNames, ", "))
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	for _, item := range strings.Fields(rulesOff) {
		if _, err := admission.ParseRulesOff(item); err != nil {
			return nil, fmt.Errorf("-rules-off: %w", err)
		}
		out = append(out, adaptiveWithout+item)
	}
	return out, nil
}

// poolSetupsFixed refuses set-ups other than the lab's four (-setups,
// -rules-off) for a run with a pool scenario: a pool scenario plays its
// own four set-ups, and would not honour them.
func poolSetupsFixed(scs []scenario, setups []string) error {
	if slices.Equal(setups, setupNames) {
		return nil
	}
	for _, sc := range scs {
		if len(sc.Pool) > 0 {
			return fmt.Errorf("-setups and -rules-off choose the set-ups of the one-upstream scenarios; %s plays its own (%s): run it apart",
				sc.Name, strings.Join(poolSetupNames, ", "))
		}
	}
	return nil
}

// isAdaptive reports whether set-up s runs the module.
func isAdaptive(s string) bool { return s == setupAdaptive || strings.HasPrefix(s, adaptiveWithout) }

// rulesOffOf is the rules set-up s turns off ("" for all on).
func rulesOffOf(s string) string {
	if off, ok := strings.CutPrefix(s, adaptiveWithout); ok {
		return off
	}
	return ""
}

// peers are the set-ups the module's targets compare with.
var peers = []string{setupNone, setupInflight, setupGradient2}

func setupTitle(s string, sc scenario) string {
	switch s {
	case setupNone:
		return "no protection"
	case setupInflight:
		return fmt.Sprintf("static in-flight limit %d", sc.InflightN)
	case setupGradient2:
		return "Gradient2 (published algorithm, lab implementation)"
	case setupAdaptive:
		if sc.Latency != "" {
			return "adaptive_throttle (latency { " + strings.ReplaceAll(sc.Latency, "\n", "; ") + " })"
		}
		if adaptiveConcurrency != "" {
			return "adaptive_throttle (concurrency { " + adaptiveConcurrency + " })"
		}
		return "adaptive_throttle (defaults)"
	case setupPoolPlain:
		return "Caddy lb_policy least_conn, no module"
	case setupPoolModule:
		return "adaptive_throttle + lb_policy least_conn"
	case setupLLMD:
		return "llm-d-style scorer (published algorithm, lab implementation)"
	case setupPolicy:
		if sc.PoolGauge != "" {
			return "adaptive_throttle + lb_policy adaptive_throttle, upstream_gauge"
		}
		return "adaptive_throttle + lb_policy adaptive_throttle"
	case setupPolicyNoGauge:
		return "adaptive_throttle + lb_policy adaptive_throttle, no upstream_gauge"
	}
	if isAdaptive(s) {
		return "adaptive_throttle without " + rulesOffOf(s)
	}
	return s
}

// scenarioNames lists every scenario, in the order the lab runs them.
var scenarioNames = append([]string{"step", "drop", "hetero", "hetero32", "ramp", "cold2x", "steady09", "tightslo", "storm", "storm-q2"}, poolScenarioNames...)

// Tight-SLO scenario: every answer tightTokens long, and an end-to-end
// objective of tightSLO. At a full batch llmsim serves such an answer in
// 0.04 s + 64 × 0.03 s = 1.96 s, so the objective leaves about 0.5 s to
// wait for a slot: less than max_wait's defaults (1 s, high 2 s), as a
// 1 s objective over a 0.57 s answer does on a small Ollama.
const (
	tightTokens = 64
	tightSLO    = 2500 * time.Millisecond
)

// wideSlots is hetero32's batch: a server with four times llmsim's
// default slots (a vLLM card runs tens to hundreds of sequences). With 8
// slots one slot kept for high requests is an eighth of the capacity; the
// same mix on a wider batch shows what a kept slot costs there.
const wideSlots = 32

// heteroSizes is the hetero scenario's answer lengths: three in four
// short (16 tokens, a chat turn), one in four long (512 tokens, llmsim's
// max_tokens limit: a 1024 would be cut to 512 anyway). The long ones
// carry 91% of the tokens and hold a slot 30× longer, which is what makes
// a request count a poor measure of load; one in four rather than one in
// two keeps the request rate (about 3.8 req/s at 2×) high enough for the
// per-priority figures to mean something.
var heteroSizes = loadgen.Sizes{{MaxTokens: 16, Share: 0.75}, {MaxTokens: 512, Share: 0.25}}

// scenarios are the lab's fourteen, against llmsim with sim's configuration
// (the lab's upstreams run its defaults): a step to 3× capacity, a
// capacity drop under steady 0.9× load, heterogeneous answer lengths at 2×
// capacity in tokens (on llmsim's 8 slots, and on 32), a slow ramp to 3×
// and back, a cold start straight into 2×, a steady 0.9× from cold, and
// a step to 3× under a tight objective (tightslo), two upstreams that
// answer 503 when full (storm, storm-q2), and the pool scenarios of
// several upstreams (poolScenarios). smoke shrinks every duration (and
// the long answers) so that the whole lab runs in seconds; its figures
// mean nothing. Capacity scales with the slots (llmsim.Config.Capacity),
// so the drop to half the slots halves it.
func scenarios(sim llmsim.Config, inflightN int, smoke bool) []scenario {
	capacity := sim.Capacity()
	slots := sim.Slots
	if slots == 0 {
		slots = llmsim.DefaultSlots
	}
	scaleN := inflightN <= 0 // -inflight not set: N follows each scenario's slots
	if scaleN {
		inflightN = defaultInflight(slots)
	}
	timeout := 30 * time.Second
	if smoke {
		timeout = 5 * time.Second
	}
	base := func(name, title string, p loadgen.Profile) scenario {
		return scenario{Name: name, Title: title, Capacity: capacity, WindowCapacity: capacity, Slots: slots,
			Profile: p, Mix: loadgen.DefaultMix, SLO: loadgen.DefaultSLO, Timeout: timeout,
			GoodputRef: 1, InflightN: inflightN}
	}
	pick := func(full, short time.Duration) time.Duration {
		if smoke {
			return short
		}
		return full
	}

	// step: 0.5× for 40 s (the module's QPS warm-up is 30 s), 3× for 60 s,
	// 0.5× for 45 s.
	warm, peak, tail := pick(40*time.Second, 3*time.Second), pick(60*time.Second, 4*time.Second), pick(45*time.Second, 3*time.Second)
	step := base("step", fmt.Sprintf("Step overload: %.1f → %.1f req/s (3× capacity) for %v, then back", capacity/2, 3*capacity, peak),
		loadgen.Profile{Kind: loadgen.Step, Base: round1(capacity / 2), Peak: round1(3 * capacity),
			Duration: warm + peak + tail, StepAt: warm, StepFor: peak})
	step.WindowFrom, step.WindowTo, step.OverloadEnds = warm, warm+peak, true

	// drop: constant 0.9× for 120 s, the slots halved at 60 s.
	dropRun := pick(120*time.Second, 8*time.Second)
	drop := base("drop", fmt.Sprintf("Capacity drop: constant %.1f req/s (0.9× capacity), slots %d → %d half-way", 0.9*capacity, slots, slots/2),
		loadgen.Profile{Kind: loadgen.CapacityDrop, Base: 0.9 * capacity, Duration: dropRun, DropAt: dropRun / 2})
	drop.DropTo = slots / 2
	drop.WindowCapacity = capacity * float64(slots/2) / float64(slots)
	drop.WindowFrom, drop.WindowTo = dropRun/2, dropRun

	// hetero: 0.5× for 30 s, 2× (in tokens) for 60 s, 0.5× for 30 s.
	sizes := heteroSizes
	if smoke {
		sizes = loadgen.Sizes{{MaxTokens: 16, Share: 0.75}, {MaxTokens: 64, Share: 0.25}}
	}
	warm, peak, tail = pick(30*time.Second, 2*time.Second), pick(60*time.Second, 4*time.Second), pick(30*time.Second, 2*time.Second)
	// heteroOn builds it on an upstream of n slots (on: the title's words
	// for them); the static limit's N follows n unless -inflight set it.
	heteroOn := func(name, on string, n int) scenario {
		cfg := sim
		cfg.Slots = n
		hcap := cfg.CapacityFor(sizes.Mean())
		sc := base(name, fmt.Sprintf("Heterogeneous answers%s (max_tokens %s): %.2f → %.2f req/s (2× capacity in tokens) for %v, then back",
			on, sizes, hcap/2, 2*hcap, peak),
			loadgen.Profile{Kind: loadgen.Step, Base: round2(hcap / 2), Peak: round2(2 * hcap),
				Duration: warm + peak + tail, StepAt: warm, StepFor: peak})
		sc.Slots = n
		if scaleN {
			sc.InflightN = defaultInflight(n)
		}
		sc.Capacity, sc.WindowCapacity = hcap, hcap
		sc.Sizes, sc.TokenCapacity = sizes, hcap*sizes.Mean()
		sc.WindowFrom, sc.WindowTo, sc.OverloadEnds = warm, warm+peak, true
		return sc
	}
	hetero := heteroOn("hetero", "", slots)
	hetero.IdealKeep = 2
	// hetero32: the same on a batch of 32 slots.
	hetero32 := heteroOn("hetero32", fmt.Sprintf(" on %d slots", wideSlots), wideSlots)

	// ramp: 0.3× for 10 s, linear to 3× over 90 s, back to 0.3× over 45 s,
	// 0.3× for 15 s. The window is where the offered load is over capacity.
	hold, up, down, rest := pick(10*time.Second, time.Second), pick(90*time.Second, 5*time.Second),
		pick(45*time.Second, 3*time.Second), pick(15*time.Second, time.Second)
	lo, hi := round1(0.3*capacity), round1(3*capacity)
	ramp := base("ramp", fmt.Sprintf("Slow ramp: %.1f → %.1f req/s (0.3× → 3× capacity) over %v, back over %v", lo, hi, up, down),
		loadgen.Profile{Kind: loadgen.Points, Duration: hold + up + down + rest, Points: []loadgen.Point{
			{At: 0, Rate: lo}, {At: hold, Rate: lo}, {At: hold + up, Rate: hi}, {At: hold + up + down, Rate: lo}}})
	ramp.WindowFrom, ramp.WindowTo = overRange(ramp.Profile, capacity)
	ramp.OverloadEnds = true

	// cold2x: the gateway starts with the load, 2× for 60 s, then 0.5×
	// for 30 s.
	peak, tail = pick(60*time.Second, 4*time.Second), pick(30*time.Second, 2*time.Second)
	cold := base("cold2x", fmt.Sprintf("Cold start into 2× capacity: %.1f req/s for %v, then %.1f req/s", 2*capacity, peak, capacity/2),
		loadgen.Profile{Kind: loadgen.Step, Base: round1(capacity / 2), Peak: round1(2 * capacity),
			Duration: peak + tail, StepAt: 0, StepFor: peak})
	cold.WindowFrom, cold.WindowTo, cold.OverloadEnds = 0, peak, true

	// steady09: 0.9× from a cold start for 90 s; nothing should be refused.
	run := pick(90*time.Second, 6*time.Second)
	steady := base("steady09", fmt.Sprintf("Steady %.1f req/s (0.9× capacity) from a cold start for %v", 0.9*capacity, run),
		loadgen.Profile{Kind: loadgen.Constant, Base: 0.9 * capacity, Duration: run})
	steady.WindowFrom, steady.WindowTo = 0, run
	steady.GoodputRef = steady.Profile.Base / capacity

	// tightslo: answers of tightTokens, objective tightSLO end to end,
	// stated to the module (latency slo, measure total); 0.5× for 30 s, 3×
	// for 40 s, 0.5× for 30 s.
	tcfg := sim
	tcap := tcfg.CapacityFor(tightTokens)
	warm, peak, tail = pick(30*time.Second, 2*time.Second), pick(40*time.Second, 4*time.Second), pick(30*time.Second, 2*time.Second)
	tight := base("tightslo", fmt.Sprintf("Tight SLO: %d-token answers, %v end to end; %.2f → %.2f req/s (3× capacity) for %v, then back",
		tightTokens, tightSLO, tcap/2, 3*tcap, peak),
		loadgen.Profile{Kind: loadgen.Step, Base: round2(tcap / 2), Peak: round2(3 * tcap),
			Duration: warm + peak + tail, StepAt: warm, StepFor: peak})
	tight.Capacity, tight.WindowCapacity, tight.MaxTokens = tcap, tcap, tightTokens
	tight.SLO = loadgen.SLO{Total: tightSLO}
	tight.Latency = fmt.Sprintf("slo %v\nmeasure total", tightSLO)
	tight.WindowFrom, tight.WindowTo, tight.OverloadEnds = warm, warm+peak, true
	// Every answer takes 1.96 s of a 2.5 s objective: a high request finds
	// every slot held and may wait 0.5 s. On these arrivals the ideal
	// gateway keeping no slot reaches 0.99 with 39 of 50 high on time,
	// keeping one 0.93 with 50 of 50: 0.95 and high's promise cannot both
	// hold, so the goodput bar is the one kept slot's.
	tight.IdealKeep = 1

	// storm, storm-q2: an upstream that answers 503 "server busy" (as
	// Ollama does) once its slots are busy (storm) or two wait (storm-q2):
	// 0.5× for 10 s, 2× for 40 s, 0.5× for 10 s.
	stormOn := func(name string, queue int) scenario {
		warm, peak, tail := pick(10*time.Second, 2*time.Second), pick(40*time.Second, 4*time.Second), pick(10*time.Second, 2*time.Second)
		what := "no queue"
		if queue > 0 {
			what = fmt.Sprintf("a queue of %d", queue)
		}
		sc := base(name, fmt.Sprintf("Upstream 503 storm (%s, Ollama's \"server busy\"): %.1f → %.1f req/s (2× capacity) for %v, then back",
			what, capacity/2, 2*capacity, peak),
			loadgen.Profile{Kind: loadgen.Step, Base: round1(capacity / 2), Peak: round1(2 * capacity),
				Duration: warm + peak + tail, StepAt: warm, StepFor: peak})
		sc.WindowFrom, sc.WindowTo, sc.OverloadEnds = warm, warm+peak, true
		sc.Storm = &storm{Queue: queue}
		return sc
	}
	storm0, storm2 := stormOn("storm", 0), stormOn("storm-q2", 2)

	all := append([]scenario{step, drop, hetero, hetero32, ramp, cold, steady, tight, storm0, storm2}, poolScenarios(base, pick)...)
	for i := range all {
		all[i].CalmTo = calmUntil(all[i])
	}
	return all
}

// scanStep is the resolution at which the lab reads a profile's rate.
const scanStep = 10 * time.Millisecond

// overRange is the stretch in which p offers more than capacity: its
// first and last instants, to scanStep.
func overRange(p loadgen.Profile, capacity float64) (from, to time.Duration) {
	from, to = -1, -1
	for t := time.Duration(0); t < p.Duration; t += scanStep {
		if p.RateAt(t) > capacity*(1+1e-9) {
			if from < 0 {
				from = t
			}
			to = t + scanStep
		}
	}
	if from < 0 {
		return 0, 0
	}
	return from, to
}

// calmUntil is the end of the stretch from the start in which the offered
// load is at most 0.9× capacity (0 when the run starts above it).
func calmUntil(sc scenario) time.Duration {
	for t := time.Duration(0); t < sc.Profile.Duration; t += scanStep {
		if sc.Profile.RateAt(t) > 0.9*sc.capacityAt(t)*(1+1e-6) {
			return t
		}
	}
	return sc.Profile.Duration
}

// offeredMean is the mean offered load (req/s) over [from, to).
func offeredMean(p loadgen.Profile, from, to time.Duration) float64 {
	if to <= from {
		return 0
	}
	sum, n := 0.0, 0
	for t := from; t < to; t += scanStep {
		sum += p.RateAt(t)
		n++
	}
	return sum / float64(n)
}

func round1(x float64) float64 { return math.Round(x*10) / 10 }
func round2(x float64) float64 { return math.Round(x*100) / 100 }

// loadConfig is the generator's configuration for sc against one set-up.
func loadConfig(sc scenario, e env) loadgen.Config {
	return loadgen.Config{
		Target: e.Target, Profile: sc.Profile, Mix: sc.Mix, Sizes: sc.Sizes, MaxTokens: sc.MaxTokens, Seed: 1, SLO: sc.SLO,
		Timeout: sc.Timeout, Drain: sc.Timeout, Stream: true,
		Upstream: e.Upstream, DropTo: sc.DropTo, ThrottleStatus: e.ThrottleStatus,
		KeepRecords: true,
	}
}

// loadArgs is loadConfig as cmd/loadgen flags.
func loadArgs(cfg loadgen.Config, jsonOut string) []string {
	p := cfg.Profile
	args := []string{
		"-target", cfg.Target, "-profile", string(p.Kind),
		"-base", fmt.Sprint(p.Base), "-peak", fmt.Sprint(p.Peak), "-duration", p.Duration.String(),
		"-step-at", p.StepAt.String(), "-step-for", p.StepFor.String(),
		"-burst-every", p.Every.String(), "-drop-at", p.DropAt.String(), "-drop-to", fmt.Sprint(cfg.DropTo),
		"-mix", cfg.Mix.String(), "-seed", fmt.Sprint(cfg.Seed),
		"-slo-ttfb", cfg.SLO.TTFB.String(), "-slo-total", cfg.SLO.Total.String(),
		"-timeout", cfg.Timeout.String(), "-drain", cfg.Drain.String(),
		fmt.Sprintf("-stream=%t", cfg.Stream), "-json", jsonOut, fmt.Sprintf("-records=%t", cfg.KeepRecords),
	}
	if len(p.Points) > 0 {
		args = append(args, "-points", loadgen.FormatPoints(p.Points))
	}
	if len(cfg.Sizes) > 0 {
		args = append(args, "-sizes", cfg.Sizes.String())
	}
	if cfg.MaxTokens > 0 {
		args = append(args, "-max-tokens", fmt.Sprint(cfg.MaxTokens))
	}
	if cfg.Upstream != "" {
		args = append(args, "-upstream", cfg.Upstream)
	}
	if cfg.ThrottleStatus != "" {
		args = append(args, "-throttle-status", cfg.ThrottleStatus)
	}
	return args
}
