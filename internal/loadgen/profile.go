// Package loadgen is an open-loop load generator for OpenAI-compatible chat
// endpoints. Requests leave on a schedule computed in advance, whatever the
// answers (as real users arrive), so an overloaded server cannot slow the
// generator down and hide its own collapse. It classifies every answer
// (served within the SLO, shed with or without Retry-After, simulated OOM,
// timeout, …) per X-Priority and keeps a per-second series, optionally with
// the upstream's GPU memory and the throttle's tripped levels polled once a
// second.
package loadgen

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Kind names a rate profile.
type Kind string

// The rate profiles.
const (
	Constant     Kind = "constant"      // Base for the whole run
	Step         Kind = "step"          // Base, Peak in [StepAt, StepAt+StepFor), then Base
	Ramp         Kind = "ramp"          // Base, linear rise to Peak over [StepAt, StepAt+StepFor), then Peak
	Burst        Kind = "burst"         // Base, with bursts at Peak of StepFor every Every from StepAt on
	CapacityDrop Kind = "capacity-drop" // Base throughout; the upstream's slots are cut at DropAt
	Points       Kind = "points"        // piecewise linear through Points (two points at one time: a jump)
)

// Kinds lists the profiles in the order the help text shows them.
var Kinds = []Kind{Constant, Step, Ramp, Burst, CapacityDrop, Points}

// Limits that keep a typo from planning millions of requests.
const (
	MaxRate     = 100000.0
	MaxDuration = 24 * time.Hour
	MaxRequests = 2_000_000
	maxBursts   = 100_000
)

// Profile is a request rate over time, in req/s.
type Profile struct {
	Kind     Kind          `json:"kind"`
	Base     float64       `json:"base"`
	Peak     float64       `json:"peak,omitempty"`
	Duration time.Duration `json:"duration"`
	StepAt   time.Duration `json:"step_at,omitempty"`
	StepFor  time.Duration `json:"step_for,omitempty"`
	Every    time.Duration `json:"every,omitempty"`   // burst period
	DropAt   time.Duration `json:"drop_at,omitempty"` // capacity-drop: when the slots are cut
	// Points (points profile): the rate at each time, linear in between;
	// the first is at 0, times never decrease, the last rate holds to the
	// end of the run.
	Points []Point `json:"points,omitempty"`
}

// Point is one corner of a points profile.
type Point struct {
	At   time.Duration `json:"at"`
	Rate float64       `json:"rate"`
}

// ParsePoints reads "0s:3,30s:3,120s:30,165s:3": time:rate pairs.
func ParsePoints(s string) ([]Point, error) {
	var pts []Point
	for _, part := range strings.Split(strings.TrimSpace(s), ",") {
		at, rate, ok := strings.Cut(strings.TrimSpace(part), ":")
		if !ok {
			return nil, fmt.Errorf("loadgen: points %q: want time:rate pairs, e.g. 0s:3,60s:30", s)
		}
		d, err := time.ParseDuration(strings.TrimSpace(at))
		if err != nil {
			return nil, fmt.Errorf("loadgen: points %q: %v", s, err)
		}
		r, err := strconv.ParseFloat(strings.TrimSpace(rate), 64)
		if err != nil {
			return nil, fmt.Errorf("loadgen: points %q: %v", s, err)
		}
		pts = append(pts, Point{At: d, Rate: r})
	}
	return pts, nil
}

// FormatPoints writes points as ParsePoints reads them.
func FormatPoints(pts []Point) string {
	parts := make([]string, len(pts))
	for i, p := range pts {
		parts[i] = p.At.String() + ":" + strconv.FormatFloat(p.Rate, 'g', -1, 64)
	}
	return strings.Join(parts, ",")
}

// Validate reports the first inconsistent field.
func (p Profile) Validate() error {
	switch {
	case p.Duration <= 0 || p.Duration > MaxDuration:
		return fmt.Errorf("loadgen: duration %v: must be in (0, %v]", p.Duration, MaxDuration)
	case p.Base < 0 || p.Base > MaxRate || math.IsNaN(p.Base):
		return fmt.Errorf("loadgen: base rate %g: must be in [0, %g] req/s", p.Base, MaxRate)
	case p.Peak < 0 || p.Peak > MaxRate || math.IsNaN(p.Peak):
		return fmt.Errorf("loadgen: peak rate %g: must be in [0, %g] req/s", p.Peak, MaxRate)
	case p.StepAt < 0 || p.StepFor < 0 || p.Every < 0 || p.DropAt < 0:
		return errors.New("loadgen: step-at, step-for, every and drop-at must be ≥ 0")
	}
	switch p.Kind {
	case Constant:
	case Step, Ramp:
		if p.StepFor <= 0 {
			return fmt.Errorf("loadgen: %s profile needs step-for > 0", p.Kind)
		}
		if p.StepAt >= p.Duration {
			return fmt.Errorf("loadgen: step-at %v is not inside the %v run", p.StepAt, p.Duration)
		}
	case Burst:
		if p.StepFor <= 0 || p.Every < p.StepFor {
			return fmt.Errorf("loadgen: burst profile needs 0 < step-for (%v) ≤ every (%v)", p.StepFor, p.Every)
		}
		if p.Duration/p.Every > maxBursts {
			return fmt.Errorf("loadgen: burst every %v makes over %d bursts in %v", p.Every, maxBursts, p.Duration)
		}
	case CapacityDrop:
		if p.DropAt <= 0 || p.DropAt >= p.Duration {
			return fmt.Errorf("loadgen: capacity-drop needs drop-at inside the run, got %v of %v", p.DropAt, p.Duration)
		}
	case Points:
		if len(p.Points) == 0 || p.Points[0].At != 0 {
			return errors.New("loadgen: points profile needs points, the first at 0s")
		}
		for i, pt := range p.Points {
			if pt.Rate < 0 || pt.Rate > MaxRate || math.IsNaN(pt.Rate) {
				return fmt.Errorf("loadgen: point %d: rate %g must be in [0, %g] req/s", i, pt.Rate, MaxRate)
			}
			if i > 0 && pt.At < p.Points[i-1].At {
				return fmt.Errorf("loadgen: point %d at %v comes before the one at %v", i, pt.At, p.Points[i-1].At)
			}
		}
	default:
		return fmt.Errorf("loadgen: unknown profile %q (want one of %v)", p.Kind, Kinds)
	}
	if n := p.expected(); n > MaxRequests {
		return fmt.Errorf("loadgen: the profile plans about %.0f requests, over the limit of %d", n, MaxRequests)
	}
	return nil
}

// segment is a stretch of linearly changing rate: r0 at from, r1 at to.
type segment struct {
	from, to time.Duration
	r0, r1   float64
}

// segments cuts the profile into linear pieces covering [0, Duration).
// The profile must be valid.
func (p Profile) segments() []segment {
	d := p.Duration
	var segs []segment
	add := func(from, to time.Duration, r0, r1 float64) {
		from, to = min(from, d), min(to, d)
		if to > from {
			segs = append(segs, segment{from, to, r0, r1})
		}
	}
	switch p.Kind {
	case Step:
		add(0, p.StepAt, p.Base, p.Base)
		add(p.StepAt, p.StepAt+p.StepFor, p.Peak, p.Peak)
		add(p.StepAt+p.StepFor, d, p.Base, p.Base)
	case Ramp:
		add(0, p.StepAt, p.Base, p.Base)
		end := min(p.StepAt+p.StepFor, d)
		frac := float64(end-p.StepAt) / float64(p.StepFor)
		add(p.StepAt, end, p.Base, p.Base+(p.Peak-p.Base)*frac)
		add(end, d, p.Peak, p.Peak)
	case Burst:
		t := time.Duration(0)
		for s := p.StepAt; s < d; s += p.Every {
			add(t, s, p.Base, p.Base)
			add(s, s+p.StepFor, p.Peak, p.Peak)
			t = s + p.StepFor
		}
		add(t, d, p.Base, p.Base)
	case Points:
		for i, pt := range p.Points {
			if i+1 < len(p.Points) {
				next := p.Points[i+1]
				r1 := next.Rate
				if next.At > d && next.At > pt.At { // cut at the run's end: the rate there
					r1 = pt.Rate + (next.Rate-pt.Rate)*float64(d-pt.At)/float64(next.At-pt.At)
				}
				add(pt.At, next.At, pt.Rate, r1)
			} else {
				add(pt.At, d, pt.Rate, pt.Rate)
			}
		}
	default: // Constant, CapacityDrop
		add(0, d, p.Base, p.Base)
	}
	return segs
}

// RateAt is the planned rate at offset t (0 outside the run).
func (p Profile) RateAt(t time.Duration) float64 {
	for _, s := range p.segments() {
		if t >= s.from && t < s.to {
			return s.r0 + (s.r1-s.r0)*float64(t-s.from)/float64(s.to-s.from)
		}
	}
	return 0
}

// expected is the number of requests the profile plans (its integral).
func (p Profile) expected() float64 {
	var n float64
	for _, s := range p.segments() {
		n += (s.r0 + s.r1) / 2 * (s.to - s.from).Seconds()
	}
	return n
}
