package loadgen

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
)

// Priority is the X-Priority a request carries.
type Priority int

// The priorities, in the order tables show them.
const (
	High Priority = iota
	Medium
	Low
	numPriorities
)

// Priorities lists them in table order.
var Priorities = []Priority{High, Medium, Low}

func (p Priority) String() string {
	switch p {
	case High:
		return "high"
	case Medium:
		return "medium"
	case Low:
		return "low"
	}
	return "priority(" + strconv.Itoa(int(p)) + ")"
}

// MarshalText writes the name.
func (p Priority) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText reads a name written by MarshalText.
func (p *Priority) UnmarshalText(b []byte) error {
	v, err := ParsePriority(string(b))
	if err == nil {
		*p = v
	}
	return err
}

// ParsePriority reads "high", "medium" or "low".
func ParsePriority(s string) (Priority, error) {
	for _, p := range Priorities {
		if strings.EqualFold(s, p.String()) {
			return p, nil
		}
	}
	return 0, fmt.Errorf("loadgen: unknown priority %q (want high, medium or low)", s)
}

// Mix is the share of each priority; shares need not sum to 1 (they are
// normalised), but must not all be 0.
type Mix struct {
	High   float64 `json:"high"`
	Medium float64 `json:"medium"`
	Low    float64 `json:"low"`
}

// DefaultMix is the mix: a few interactive users, many batch jobs.
var DefaultMix = Mix{High: 0.1, Medium: 0.3, Low: 0.6}

// ParseMix reads "high=0.1,medium=0.3,low=0.6" (missing names are 0) or
// the short form "0.1/0.3/0.6" (high/medium/low).
func ParseMix(s string) (Mix, error) {
	var m Mix
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") && !strings.Contains(s, "=") {
		parts := strings.Split(s, "/")
		if len(parts) != 3 {
			return m, fmt.Errorf("loadgen: mix %q: want high/medium/low, e.g. 0.1/0.3/0.6", s)
		}
		vals := [3]*float64{&m.High, &m.Medium, &m.Low}
		for i, part := range parts {
			v, err := strconv.ParseFloat(strings.TrimSpace(part), 64)
			if err != nil {
				return m, fmt.Errorf("loadgen: mix %q: %v", s, err)
			}
			*vals[i] = v
		}
		return m, m.Validate()
	}
	for _, kv := range strings.Split(s, ",") {
		name, val, ok := strings.Cut(kv, "=")
		if !ok {
			return m, fmt.Errorf("loadgen: mix %q: want name=share pairs, e.g. high=0.1,medium=0.3,low=0.6", s)
		}
		p, err := ParsePriority(strings.TrimSpace(name))
		if err != nil {
			return m, err
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			return m, fmt.Errorf("loadgen: mix %q: %v", s, err)
		}
		*m.share(p) = v
	}
	return m, m.Validate()
}

func (m *Mix) share(p Priority) *float64 {
	switch p {
	case High:
		return &m.High
	case Medium:
		return &m.Medium
	}
	return &m.Low
}

// Validate refuses negative, infinite or all-zero shares.
func (m Mix) Validate() error {
	sum := 0.0
	for _, v := range []float64{m.High, m.Medium, m.Low} {
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("loadgen: mix %s: shares must be finite and ≥ 0", m)
		}
		sum += v
	}
	if sum <= 0 {
		return fmt.Errorf("loadgen: mix %s: at least one share must be > 0", m)
	}
	return nil
}

func (m Mix) String() string {
	return fmt.Sprintf("high=%g,medium=%g,low=%g", m.High, m.Medium, m.Low)
}

// picker draws priorities from a seeded stream: the same seed, the same
// sequence. The mix must be valid.
func (m Mix) picker(seed uint64) func() Priority {
	rng := rand.New(rand.NewPCG(seed, 0x5851f42d4c957f2d))
	shares := [numPriorities]float64{m.High, m.Medium, m.Low}
	sum := m.High + m.Medium + m.Low
	last := Low // the last priority with a share catches rounding at 1
	for last > High && shares[last] == 0 {
		last--
	}
	return func() Priority {
		u := rng.Float64() * sum
		for _, p := range Priorities[:last] {
			if u < shares[p] {
				return p
			}
			u -= shares[p]
		}
		return last
	}
}

// Size is one answer length of a size mix: requests ask for MaxTokens
// (max_tokens) with weight Share.
type Size struct {
	MaxTokens int     `json:"max_tokens"`
	Share     float64 `json:"share"`
}

// Sizes is a mix of answer lengths, drawn per request from a seeded stream
// of its own (the priorities do not change when sizes are added). Empty:
// every request asks for Config.MaxTokens.
type Sizes []Size

// ParseSizes reads "16=0.75,512=0.25": max_tokens=share pairs.
func ParseSizes(s string) (Sizes, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var out Sizes
	for _, kv := range strings.Split(s, ",") {
		tok, share, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("loadgen: sizes %q: want max_tokens=share pairs, e.g. 16=0.75,512=0.25", s)
		}
		n, err := strconv.Atoi(strings.TrimSpace(tok))
		if err != nil {
			return nil, fmt.Errorf("loadgen: sizes %q: %v", s, err)
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(share), 64)
		if err != nil {
			return nil, fmt.Errorf("loadgen: sizes %q: %v", s, err)
		}
		out = append(out, Size{MaxTokens: n, Share: v})
	}
	return out, out.Validate()
}

// Validate refuses sizes below 1, shares that are negative or not finite,
// and a non-empty mix whose shares are all 0.
func (z Sizes) Validate() error {
	if len(z) == 0 {
		return nil
	}
	sum := 0.0
	for _, s := range z {
		if s.MaxTokens < 1 {
			return fmt.Errorf("loadgen: sizes %s: max_tokens must be ≥ 1", z)
		}
		if s.Share < 0 || math.IsNaN(s.Share) || math.IsInf(s.Share, 0) {
			return fmt.Errorf("loadgen: sizes %s: shares must be finite and ≥ 0", z)
		}
		sum += s.Share
	}
	if sum <= 0 {
		return fmt.Errorf("loadgen: sizes %s: at least one share must be > 0", z)
	}
	return nil
}

func (z Sizes) String() string {
	parts := make([]string, len(z))
	for i, s := range z {
		parts[i] = fmt.Sprintf("%d=%g", s.MaxTokens, s.Share)
	}
	return strings.Join(parts, ",")
}

// Mean is the share-weighted mean of max_tokens (0 for no sizes).
func (z Sizes) Mean() float64 {
	var sum, w float64
	for _, s := range z {
		sum += float64(s.MaxTokens) * s.Share
		w += s.Share
	}
	if w <= 0 {
		return 0
	}
	return sum / w
}

// picker draws sizes from a seeded stream, independent of the priorities'.
// The sizes must be valid and not empty.
func (z Sizes) picker(seed uint64) func() int {
	rng := rand.New(rand.NewPCG(seed, 0x2545f4914f6cdd1d))
	sum := 0.0
	last := 0 // the last size with a share catches rounding at 1
	for i, s := range z {
		sum += s.Share
		if s.Share > 0 {
			last = i
		}
	}
	return func() int {
		u := rng.Float64() * sum
		for _, s := range z[:last] {
			if u < s.Share {
				return s.MaxTokens
			}
			u -= s.Share
		}
		return z[last].MaxTokens
	}
}
