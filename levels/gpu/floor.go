package gpu

import (
	"fmt"
	"time"
)

// The memory floor: what a server holds whatever its load. vLLM, TGI and
// SGLang reserve most of the GPU's memory at start and Ollama its KV cache
// when the model loads; memory then stays flat under any load, so its ratio
// says nothing about load, and a fixed threshold under it would refuse at
// every load. The level learns that floor and, at the default threshold,
// judges only growth above it (README, "Memory a server reserves").
const (
	// settleFor: memory that holds within flatBand of total for this long,
	// while the requests in flight at least halved or doubled (or none was
	// in flight), is held whatever the load.
	settleFor = 30 * time.Second
	flatBand  = 0.02
	// growthShare: at the default threshold the level trips when memory
	// grows above the floor by this share of the headroom left above it
	// (held at 90%: trips above 94%), or above the threshold if that is
	// higher.
	growthShare = 0.4
)

// ownGauges names the servers' own load gauges, for a level that finds the
// memory ratio cannot judge load.
const ownGauges = "vllm:kv_cache_usage_perc (vLLM), sglang:token_usage (SGLang), tgi_queue_size (TGI), with source prometheus (README, Recipes)"

// floor is the level's learned memory floor. Invariant: once set, value is
// at most every reading since the last raise, and a raise comes only from a
// run of readings that held within flatBand for settleFor while the load
// varied. Sampler only.
type floor struct {
	set     bool
	value   float64   // fraction of memory
	since   time.Time // since when memory has held at value
	atStart bool      // value came from the first reading and has not moved by more than flatBand since

	// The run: the latest readings within flatBand of each other, and the
	// requests in flight seen at every step since it began.
	runStart     time.Time
	runLo, runHi float64
	inLo, inHi   int64
	inNow        int64
}

// reset forgets the floor: the next reading sets it.
func (f *floor) reset() { *f = floor{} }

// load records the requests in flight at one sampler step.
func (f *floor) load(inflight int64) {
	f.inNow = inflight
	if f.runStart.IsZero() {
		return
	}
	f.inLo, f.inHi = min(f.inLo, inflight), max(f.inHi, inflight)
}

// observe takes one reading v (a fraction of memory) taken at now, and
// reports whether the floor moved by more than flatBand (or was set).
func (f *floor) observe(v float64, now time.Time) (moved bool) {
	if !f.set {
		f.set, f.value, f.since, f.atStart = true, v, now, true
		f.startRun(v, now)
		return true
	}
	if v < f.value { // memory freed: the floor is at most what is held now
		if v < f.value-flatBand {
			f.since, f.atStart, moved = now, false, true
		}
		f.value = v
	}
	if max(f.runHi, v)-min(f.runLo, v) > flatBand {
		f.startRun(v, now)
		return moved
	}
	f.runLo, f.runHi = min(f.runLo, v), max(f.runHi, v)
	// Memory that did not move while the load halved or doubled is not
	// held by the load. (No load at all is 0 ≤ 0.)
	if f.runLo > f.value && now.Sub(f.runStart) >= settleFor && 2*f.inLo <= f.inHi {
		if f.runLo > f.value+flatBand {
			f.since, f.atStart, moved = f.runStart, false, true
		}
		f.value = f.runLo
	}
	return moved
}

func (f *floor) startRun(v float64, now time.Time) {
	f.runStart, f.runLo, f.runHi, f.inLo, f.inHi = now, v, v, f.inNow, f.inNow
}

// limit is where memory readings trip at the default threshold: the
// threshold, or growth above the floor by growthShare of the headroom when
// that is higher.
func (f *floor) limit(threshold float64) float64 {
	if !f.set {
		return threshold
	}
	return max(threshold, f.value+growthShare*(1-f.value))
}

// held says since when memory has held at the floor, in a note's words.
func (f *floor) held() string {
	if f.atStart {
		return "since start"
	}
	return "since " + f.since.UTC().Format(time.TimeOnly) + " UTC"
}

// note says what memory readings can and cannot judge here, or "" when a
// fixed threshold over them is meaningful. explicit: the user wrote the
// threshold.
func (f *floor) note(source string, threshold float64, explicit bool) string {
	if !f.set {
		return ""
	}
	switch lim := f.limit(threshold); {
	case explicit && f.value > threshold:
		return fmt.Sprintf("%s: memory held at %.1f%% %s, above the threshold %.1f%% that the config sets: a server that reserves memory at start holds it whatever its load, so the threshold is crossed at any load; leave threshold unset to judge only growth above the floor, or read the server's own gauge: %s",
			source, 100*f.value, f.held(), 100*threshold, ownGauges)
	case !explicit && lim > threshold:
		return fmt.Sprintf("%s: memory flat at %.1f%% %s: a server that reserves memory at start; the memory ratio cannot judge its load, only growth above it (trips above %.1f%%) — read its own gauge: %s",
			source, 100*f.value, f.held(), 100*lim, ownGauges)
	}
	return ""
}
