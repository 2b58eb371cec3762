package main

import (
	"fmt"
	"time"

	"github.com/ai-guardian/adaptivethrottle/internal/loadgen"
)

// scenario is one load pattern, played against every set-up.
type scenario struct {
	Name  string // file names: results/<Name>.md, .png, .json
	Title string
	// Capacity is the upstream's nominal capacity (req/s) at the start;
	// WindowCapacity is what it is during the window (half, after a drop
	// to half the slots).
	Capacity, WindowCapacity float64
	Profile                  loadgen.Profile
	DropTo                   int // capacity-drop: slots after the cut
	Mix                      loadgen.Mix
	SLO                      loadgen.SLO
	Timeout                  time.Duration // client timeout (and drain)
	// Window is the stretch the targets are about: the overload for the
	// step, the time after the cut for the capacity drop.
	WindowFrom, WindowTo time.Duration
}

// Set-ups, in table order.
const (
	setupNone     = "none"
	setupStatic   = "static"
	setupAdaptive = "adaptive"
)

var setupNames = []string{setupNone, setupStatic, setupAdaptive}

func setupTitle(s string, capacity float64) string {
	switch s {
	case setupNone:
		return "no protection"
	case setupStatic:
		return fmt.Sprintf("static limiter %.1f req/s", capacity)
	case setupAdaptive:
		return "adaptive_throttle (defaults)"
	}
	return s
}

// scenarios are the lab's two: a step to 3× capacity after a warm-up long
// enough for the QPS baseline (30 s of warm-up in the module), and a
// capacity drop under steady load. smoke shrinks every duration so that
// the whole lab runs in well under a minute; its figures mean nothing.
// Capacity scales with the slots (llmsim.Config.Capacity), so the drop to
// half the slots halves it.
func scenarios(capacity float64, slots int, smoke bool) []scenario {
	warm, peak, tail := 40*time.Second, 60*time.Second, 45*time.Second
	dropRun := 120 * time.Second
	timeout := 30 * time.Second
	if smoke {
		warm, peak, tail = 4*time.Second, 5*time.Second, 4*time.Second
		dropRun = 10 * time.Second
		timeout = 5 * time.Second
	}
	step := scenario{
		Name:     "step",
		Title:    fmt.Sprintf("Step overload: %.1f → %.1f req/s (3× capacity) for %v, then back", capacity/2, 3*capacity, peak),
		Capacity: capacity, WindowCapacity: capacity,
		Profile: loadgen.Profile{Kind: loadgen.Step, Base: round1(capacity / 2), Peak: round1(3 * capacity),
			Duration: warm + peak + tail, StepAt: warm, StepFor: peak},
		Mix: loadgen.DefaultMix, SLO: loadgen.DefaultSLO, Timeout: timeout,
		WindowFrom: warm, WindowTo: warm + peak,
	}
	drop := scenario{
		Name:     "drop",
		Title:    fmt.Sprintf("Capacity drop: constant %.1f req/s (0.9× capacity), slots %d → %d half-way", 0.9*capacity, slots, slots/2),
		Capacity: capacity, WindowCapacity: capacity * float64(slots/2) / float64(slots),
		Profile: loadgen.Profile{Kind: loadgen.CapacityDrop, Base: round1(0.9 * capacity),
			Duration: dropRun, DropAt: dropRun / 2},
		DropTo: slots / 2,
		Mix:    loadgen.DefaultMix, SLO: loadgen.DefaultSLO, Timeout: timeout,
		WindowFrom: dropRun / 2, WindowTo: dropRun,
	}
	return []scenario{step, drop}
}

func round1(x float64) float64 { return float64(int(x*10+0.5)) / 10 }

// loadConfig is the generator's configuration for sc against one set-up.
func loadConfig(sc scenario, e env) loadgen.Config {
	return loadgen.Config{
		Target: e.Target, Profile: sc.Profile, Mix: sc.Mix, Seed: 1, SLO: sc.SLO,
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
	if cfg.Upstream != "" {
		args = append(args, "-upstream", cfg.Upstream)
	}
	if cfg.ThrottleStatus != "" {
		args = append(args, "-throttle-status", cfg.ThrottleStatus)
	}
	return args
}
