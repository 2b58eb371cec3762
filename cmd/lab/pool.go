package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/ai-guardian/adaptivethrottle/internal/llmsim"
	"github.com/ai-guardian/adaptivethrottle/internal/loadgen"
)

// A pool scenario puts several llmsim upstreams behind one gateway, each
// with its own slots and speed, and changes them over time: a server that
// loses most of its slots, one that dies and comes back. Its capacity is
// the sum of the upstreams' capacities at each moment, and its targets
// (poolTargets) are judged against what the pool can serve then.

// poolUpstream is one llmsim of a pool scenario.
type poolUpstream struct {
	Slots int `json:"slots"` // batch slots at the start
	// Speed scales llmsim's default step times: 1 is its defaults, 0.5 a
	// server whose prefill and tokens take twice as long.
	Speed float64 `json:"speed"`
	// Changes, in time order, from the load's start.
	Changes []poolChange `json:"changes,omitempty"`
	// Outside is traffic other clients send straight to the upstream,
	// past the gateway: what it serves of it is not the gateway's to use.
	Outside []outsideLoad `json:"outside,omitempty"`
}

// outsideLoad is Rate req/s (Poisson arrivals of llmsim's default answer)
// sent straight to an upstream from From to To.
type outsideLoad struct {
	From time.Duration `json:"from"`
	To   time.Duration `json:"to"`
	Rate float64       `json:"rate"`
}

// outsideAt is the outside traffic on u at offset t, req/s.
func (u poolUpstream) outsideAt(t time.Duration) float64 {
	r := 0.0
	for _, o := range u.Outside {
		if t >= o.From && t < o.To {
			r += o.Rate
		}
	}
	return r
}

// poolChange is what happens to an upstream at At: it runs Slots slots
// from then on, or it dies (SIGKILL: what was in flight on it is lost, new
// connections are refused). A change after a death restarts it.
type poolChange struct {
	At    time.Duration `json:"at"`
	Slots int           `json:"slots,omitempty"`
	Dead  bool          `json:"dead,omitempty"`
}

func (c poolChange) String() string {
	if c.Dead {
		return "dies"
	}
	return fmt.Sprintf("runs %d slots", c.Slots)
}

// config is llmsim's configuration for u at slots slots.
func (u poolUpstream) config(slots int) llmsim.Config {
	speed := u.speed()
	return llmsim.Config{Slots: slots,
		PrefillTime: time.Duration(float64(llmsim.DefaultPrefillTime) / speed),
		TokenTime:   time.Duration(float64(llmsim.DefaultTokenTime) / speed)}
}

func (u poolUpstream) speed() float64 {
	if u.Speed <= 0 {
		return 1
	}
	return u.Speed
}

// args are llmsim's flags for u at slots slots, beyond -listen.
func (u poolUpstream) args(slots int) []string {
	c := u.config(slots)
	return []string{"-slots", fmt.Sprint(slots), "-prefill", c.PrefillTime.String(), "-token-time", c.TokenTime.String()}
}

// capacity is u's capacity (req/s at a full batch, llmsim's default answer
// length) at slots slots; 0 slots serve nothing.
func (u poolUpstream) capacity(slots int) float64 {
	if slots <= 0 {
		return 0
	}
	return u.config(slots).Capacity()
}

// stateAt is u's slots at offset t and whether it is dead then.
func (u poolUpstream) stateAt(t time.Duration) (slots int, dead bool) {
	slots = u.Slots
	for _, c := range u.Changes {
		if c.At > t {
			break
		}
		if dead = c.Dead; !dead {
			slots = c.Slots
		}
	}
	return slots, dead
}

// capacityAt is u's capacity at offset t left to the gateway: none while
// dead, less the outside traffic it serves.
func (u poolUpstream) capacityAt(t time.Duration) float64 {
	slots, dead := u.stateAt(t)
	if dead {
		return 0
	}
	return math.Max(0, u.capacity(slots)-u.outsideAt(t))
}

// poolCapacityAt is the pool's capacity (req/s) at offset t.
func poolCapacityAt(pool []poolUpstream, t time.Duration) float64 {
	sum := 0.0
	for _, u := range pool {
		sum += u.capacityAt(t)
	}
	return sum
}

// servableMean is what the pool can serve, on average over [from, to):
// at each moment the offered load or the capacity, whichever is less.
func servableMean(sc scenario, from, to time.Duration) float64 {
	if to <= from {
		return 0
	}
	sum, n := 0.0, 0
	for t := from; t < to; t += scanStep {
		sum += math.Min(sc.Profile.RateAt(t), sc.capacityAt(t))
		n++
	}
	return sum / float64(n)
}

// capacityMean is the mean capacity over [from, to).
func capacityMean(sc scenario, from, to time.Duration) float64 {
	if to <= from {
		return 0
	}
	sum, n := 0.0, 0
	for t := from; t < to; t += scanStep {
		sum += sc.capacityAt(t)
		n++
	}
	return sum / float64(n)
}

// poolText describes the upstreams for a table's header.
func poolText(pool []poolUpstream) string {
	parts := make([]string, len(pool))
	for i, u := range pool {
		s := fmt.Sprintf("#%d: %d slots", i+1, u.Slots)
		if u.speed() != 1 {
			s += fmt.Sprintf(" at %g× speed", u.speed())
		}
		s += fmt.Sprintf(" (%.2f req/s)", u.capacity(u.Slots))
		for _, c := range u.Changes {
			s += fmt.Sprintf(", at %v %s", c.At, c)
		}
		for _, o := range u.Outside {
			s += fmt.Sprintf(", %.1f req/s from outside %v–%v", o.Rate, o.From, o.To)
		}
		parts[i] = s
	}
	return strings.Join(parts, "; ")
}

// poolDeaths is every death in the pool: upstream index and offset.
func poolDeaths(pool []poolUpstream) (deaths []struct {
	Upstream int
	At       time.Duration
}) {
	for i, u := range pool {
		for _, c := range u.Changes {
			if c.Dead {
				deaths = append(deaths, struct {
					Upstream int
					At       time.Duration
				}{i, c.At})
			}
		}
	}
	return deaths
}

// Pool scenario names.
const (
	scPoolDrop   = "pool-drop"
	scPoolSlow   = "pool-slow"
	scPoolDeath  = "pool-death"
	scPoolShared = "pool-shared"
)

var poolScenarioNames = []string{scPoolDrop, scPoolSlow, scPoolDeath, scPoolShared}

// poolSlots is the slots of each upstream in the pool scenarios: a small
// server, so that one losing four fifths of them is a large share of the
// pool.
const poolSlots = 5

// poolScenarios are the four pool scenarios; base makes a scenario with
// the lab's common fields, pick shortens durations for -smoke.
//
//   - pool-drop: two upstreams of 5 slots under a constant 0.8× the pool;
//     half-way one drops to a fifth of its slots (1), so the pool can then
//     serve 0.6 of what it could, and the load is 1.33× that.
//   - pool-slow: four upstreams of 5 slots at 1×, 1×, 0.5× and 0.25×
//     llmsim's speed: 0.5× the pool for a warm-up, 1.5× for a minute, back.
//   - pool-death: three upstreams of 5 slots under a constant 0.58× the
//     pool; the third dies a third of the way in and comes back at two
//     thirds. The two left carry 0.87× of theirs: nothing need be refused,
//     and only what was in flight on the dead one need be lost.
//   - pool-shared: two upstreams of 5 slots under a constant 0.44× the
//     pool; for the middle third other clients send the second one its
//     whole capacity straight, past the gateway. The first alone can
//     serve the gateway's load (0.88× its own), if the gateway sees that
//     the second is full before its answers come late. The policy's
//     set-up reads each upstream's own queue (upstream_gauge, poolGauge).
func poolScenarios(base func(name, title string, p loadgen.Profile) scenario, pick func(full, short time.Duration) time.Duration) []scenario {
	finish := func(sc scenario) scenario {
		sc.Capacity = poolCapacityAt(sc.Pool, 0)
		sc.Slots = 0
		for _, u := range sc.Pool {
			sc.Slots += u.Slots
		}
		sc.WindowCapacity = capacityMean(sc, sc.WindowFrom, sc.WindowTo)
		sc.WindowServable = servableMean(sc, sc.WindowFrom, sc.WindowTo)
		sc.GoodputRef = 1
		return sc
	}

	run := pick(120*time.Second, 8*time.Second)
	two := []poolUpstream{{Slots: poolSlots, Speed: 1}, {Slots: poolSlots, Speed: 1,
		Changes: []poolChange{{At: run / 2, Slots: poolSlots / 5}}}}
	rate := round1(0.8 * poolCapacityAt(two, 0))
	drop := base(scPoolDrop, fmt.Sprintf("Pool of 2: constant %.1f req/s (0.8× the pool), one upstream %d → %d slots half-way", rate, poolSlots, poolSlots/5),
		loadgen.Profile{Kind: loadgen.Constant, Base: rate, Duration: run})
	drop.Pool = two
	drop.WindowFrom, drop.WindowTo = run/2, run
	drop = finish(drop)

	warm, peak, tail := pick(20*time.Second, 2*time.Second), pick(60*time.Second, 4*time.Second), pick(20*time.Second, 2*time.Second)
	four := []poolUpstream{{Slots: poolSlots, Speed: 1}, {Slots: poolSlots, Speed: 1}, {Slots: poolSlots, Speed: 0.5}, {Slots: poolSlots, Speed: 0.25}}
	pcap := poolCapacityAt(four, 0)
	slow := base(scPoolSlow, fmt.Sprintf("Pool of 4 at 1×, 1×, 0.5×, 0.25× speed: %.1f → %.1f req/s (1.5× the pool) for %v, then back", round1(pcap/2), round1(1.5*pcap), peak),
		loadgen.Profile{Kind: loadgen.Step, Base: round1(pcap / 2), Peak: round1(1.5 * pcap), Duration: warm + peak + tail, StepAt: warm, StepFor: peak})
	slow.Pool = four
	slow.WindowFrom, slow.WindowTo, slow.OverloadEnds = warm, warm+peak, true
	slow = finish(slow)

	run = pick(90*time.Second, 9*time.Second)
	three := []poolUpstream{{Slots: poolSlots, Speed: 1}, {Slots: poolSlots, Speed: 1}, {Slots: poolSlots, Speed: 1,
		Changes: []poolChange{{At: run / 3, Dead: true}, {At: 2 * run / 3, Slots: poolSlots}}}}
	rate = round1(0.58 * poolCapacityAt(three, 0))
	death := base(scPoolDeath, fmt.Sprintf("Pool of 3: constant %.1f req/s (0.58× the pool), one upstream dies at %v and comes back at %v", rate, run/3, 2*run/3),
		loadgen.Profile{Kind: loadgen.Constant, Base: rate, Duration: run})
	death.Pool = three
	death.WindowFrom, death.WindowTo = run/3, run
	death = finish(death)

	run = pick(90*time.Second, 9*time.Second)
	shared := []poolUpstream{{Slots: poolSlots, Speed: 1}, {Slots: poolSlots, Speed: 1}}
	shared[1].Outside = []outsideLoad{{From: run / 3, To: 2 * run / 3, Rate: shared[1].capacity(poolSlots)}}
	rate = round1(0.44 * poolCapacityAt(shared, 0))
	share := base(scPoolShared, fmt.Sprintf("Pool of 2: constant %.1f req/s (0.44× the pool); other clients send one upstream its whole capacity straight from %v to %v", rate, run/3, 2*run/3),
		loadgen.Profile{Kind: loadgen.Constant, Base: rate, Duration: run})
	share.Pool, share.PoolGauge = shared, poolGauge
	share.WindowFrom, share.WindowTo = run/3, 2*run/3
	share = finish(share)

	return []scenario{drop, slow, death, share}
}

// poolGauge is the upstream_gauge block of the policy's set-up in a
// scenario whose upstreams others share: llmsim's vLLM queue gauge, read
// as a share of 4 waiting, over 2 waiting trips it; every other key at
// its default.
const poolGauge = "metric vllm:num_requests_waiting max 4\n\t\t\tthreshold 50%"

// Set-ups of a pool scenario, in table order: Caddy's least_conn alone,
// with the module, the llm-d-style scorer, and the module's own policy.
const (
	setupPoolPlain  = "least_conn"
	setupPoolModule = "module+least_conn"
	setupLLMD       = "llm-d-scorer"
	setupPolicy     = "policy"
	// setupPolicyNoGauge is the policy without its upstream_gauge, in a
	// scenario whose policy set-up reads one (scenario.PoolGauge).
	setupPolicyNoGauge = "policy-no-gauge"
)

var poolSetupNames = []string{setupPoolPlain, setupPoolModule, setupLLMD, setupPolicy}

// poolPeers are the set-ups the policy's targets compare with.
var poolPeers = []string{setupPoolPlain, setupPoolModule, setupLLMD}

// setups is the set-ups sc is played against: the pool's for a pool
// scenario (without the policy where ./caddy lacks it), else the lab's
// four.
func (sc scenario) setups() []string {
	if len(sc.Pool) == 0 {
		return labSetups
	}
	if !policyAvailable {
		return poolPeers
	}
	if sc.PoolGauge != "" {
		return append(slices.Clone(poolSetupNames), setupPolicyNoGauge)
	}
	return poolSetupNames
}

// policyAvailable: ./caddy has the selection policy (set once the binary
// is found).
var policyAvailable = true

// policyModule is the selection policy's module ID, as list-modules names it.
const policyModule = "http.reverse_proxy.selection_policies.adaptive_throttle"

// moduleSetup reports whether setup runs adaptive_throttle in Caddy (its
// /throttle/status is polled).
func moduleSetup(setup string) bool {
	return isAdaptive(setup) || setup == setupPoolModule || setup == setupPolicy || setup == setupPolicyNoGauge
}
