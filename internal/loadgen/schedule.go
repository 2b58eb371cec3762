package loadgen

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// Arrivals is how send times follow the rate.
type Arrivals string

const (
	// Uniform spaces requests evenly: the n-th leaves when the profile's
	// integral reaches n, so a rate step shows as a clean step.
	Uniform Arrivals = "uniform"
	// Poisson draws exponential gaps (seeded), time-warped by the rate.
	Poisson Arrivals = "poisson"
)

// Planned is one request of the plan.
type Planned struct {
	At        time.Duration // offset from the start of the run
	Priority  Priority
	MaxTokens int // from the size mix; 0: the run's Config.MaxTokens
}

// Schedule computes the send offsets of p: request n leaves at the t where
// the rate's integral over [0, t) equals n (uniform), or equals the n-th
// point of a unit-rate Poisson process seeded by seed (poisson). Offsets are
// sorted and all below p.Duration.
func Schedule(p Profile, arr Arrivals, seed uint64) ([]time.Duration, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	var next func() float64
	switch arr {
	case Uniform, "":
		n := -1.0
		next = func() float64 { n++; return n }
	case Poisson:
		rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
		n := 0.0
		next = func() float64 { n += rng.ExpFloat64(); return n }
	default:
		return nil, fmt.Errorf("loadgen: unknown arrivals %q (want uniform or poisson)", arr)
	}
	out := make([]time.Duration, 0, int(p.expected())+1)
	target := next()
	cum := 0.0 // integral up to the start of the current segment
	for _, s := range p.segments() {
		length := (s.to - s.from).Seconds()
		k := (s.r1 - s.r0) / length // rate slope, req/s²
		area := (s.r0 + s.r1) / 2 * length
		for target < cum+area {
			// Solve cum + r0·x + k·x²/2 = target for x ≥ 0 in the stable
			// form, which also covers k = 0 and r0 = 0.
			need := max(0, target-cum) // < 0 only by rounding at a segment edge
			x := 0.0
			if need > 0 {
				den := s.r0 + math.Sqrt(s.r0*s.r0+2*k*need)
				if den <= 0 {
					break
				}
				x = 2 * need / den
			}
			at := s.from + time.Duration(math.Round(x*1e9))
			if at >= s.to { // rounding at the edge: it belongs to the next segment
				break
			}
			out = append(out, at)
			if len(out) > MaxRequests {
				return nil, fmt.Errorf("loadgen: more than %d requests planned", MaxRequests)
			}
			target = next()
		}
		cum += area
	}
	return out, nil
}

// Plan is Schedule with a priority drawn from mix for each request. The mix
// uses its own seeded stream, so the same seed gives the same priorities
// whatever the arrivals.
func Plan(p Profile, arr Arrivals, mix Mix, seed uint64) ([]Planned, error) {
	return PlanSized(p, arr, mix, nil, seed)
}

// PlanSized is Plan with an answer length drawn from sizes for each
// request (none when sizes is empty), from a seeded stream of its own: the
// same seed gives the same priorities with or without sizes.
func PlanSized(p Profile, arr Arrivals, mix Mix, sizes Sizes, seed uint64) ([]Planned, error) {
	if err := mix.Validate(); err != nil {
		return nil, err
	}
	if err := sizes.Validate(); err != nil {
		return nil, err
	}
	at, err := Schedule(p, arr, seed)
	if err != nil {
		return nil, err
	}
	pick := mix.picker(seed)
	size := func() int { return 0 }
	if len(sizes) > 0 {
		size = sizes.picker(seed)
	}
	plan := make([]Planned, len(at))
	for i, t := range at {
		plan[i] = Planned{At: t, Priority: pick(), MaxTokens: size()}
	}
	return plan, nil
}
