package admission

import (
	"fmt"
	"os"
	"strings"
)

// Rule names one admission rule, so that the lab can turn it off and
// measure what it buys. It is not configuration: a deployment runs every
// rule.
type Rule uint8

// The rules that can be turned off, in the order the package doc lists
// them.
const (
	RuleSlowStart     Rule = iota // Limit: grow by half a step while requests wait, from a cold start
	RuleAppLimited                // Limit: grow only while the limit binds
	RuleStuck                     // Limit: requests waiting too long for a first byte cut it to what is served
	RuleProbeHold                 // Limit: no probe above the measured capacity for a hold
	RuleProbeBackoff              // Limit: a probe that finds no room doubles the hold
	RuleCapacityRise              // Limit: the measured capacity rises after a second of more served
	RulePressureCut               // Limit: GPU pressure or a circuit not closed cut it a tenth a step
	RuleTurnover                  // reserve: kept only while slots turn over too slowly for high's wait
	RuleWeigher                   // reserve: lent to requests known to be short
	RuleGuard                     // reserve: held while not shedding when high or short requests are about
	RuleWaitBudget                // waits: under an slo, no longer than the answer can still be on time
	RuleHighBudget                // waits: under an slo, high's budget leaves room for its class's mean answer, not a spread above it
	RuleStandingQueue             // waits: a standing queue is served newest first, with shorter waits
	numRules
)

var ruleNames = [numRules]string{
	RuleSlowStart: "slowstart", RuleAppLimited: "applimited", RuleStuck: "stuck", RuleProbeHold: "probehold",
	RuleProbeBackoff: "probebackoff", RuleCapacityRise: "capacityrise",
	RulePressureCut: "pressurecut", RuleTurnover: "turnover", RuleWeigher: "weigher", RuleGuard: "guard", RuleWaitBudget: "waitbudget", RuleHighBudget: "highbudget", RuleStandingQueue: "standingqueue",
}

func (r Rule) String() string {
	if r < numRules {
		return ruleNames[r]
	}
	return fmt.Sprintf("rule(%d)", r)
}

// Rules is a set of rules turned off; the zero value turns none off.
type Rules uint32

// Off reports whether rule r is turned off.
func (s Rules) Off(r Rule) bool { return s&(1<<r) != 0 }

// On reports whether rule r applies.
func (s Rules) On(r Rule) bool { return !s.Off(r) }

// String lists the rules turned off, comma-separated; "" for none.
func (s Rules) String() string {
	var names []string
	for r := range numRules {
		if s.Off(r) {
			names = append(names, r.String())
		}
	}
	return strings.Join(names, ",")
}

// RulesOffEnv is the environment variable the Caddy module reads once,
// when it provisions a throttle, for the rules to turn off (ParseRulesOff).
// The lab sets it for one set-up to measure a rule; a deployment leaves
// it unset.
const RulesOffEnv = "ADAPTIVE_THROTTLE_RULES_OFF"

// ParseRulesOff reads a comma-separated list of rule names ("" for
// none); an unknown name is an error that lists the known ones.
func ParseRulesOff(list string) (Rules, error) {
	var s Rules
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		r := Rule(0)
		for r < numRules && ruleNames[r] != name {
			r++
		}
		if r == numRules {
			return 0, fmt.Errorf("%s: unknown admission rule %q (known: %s)", RulesOffEnv, name, strings.Join(ruleNames[:], ", "))
		}
		s |= 1 << r
	}
	return s, nil
}

// RulesOffFromEnv is ParseRulesOff of RulesOffEnv.
func RulesOffFromEnv() (Rules, error) { return ParseRulesOff(os.Getenv(RulesOffEnv)) }
