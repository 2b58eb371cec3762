package admission

import (
	"math"
	"time"

	"github.com/ai-guardian/adaptivethrottle/internal/shard"
)

// Turnover learns how the slots turn over and says whether a request that
// waits up to w for a slot can count on one to free in time: then high
// needs no slot kept for it (the next freed slot is its before anyone's),
// and a kept slot is capacity thrown away.
//
// What matters is the requests that hold a slot longer than w: short ones
// free their slots within any wait, but they get slots only as slots
// free, so once long ones hold every slot, nothing frees but a long one
// ending. If they can hold every slot, the wait is judged as if they did:
// the slots end at the rate slots ÷ the mean hold of a long request, and
// a wait w passes with none ended with probability e^(−slots·w ÷ mean
// hold) if they end at random: the bar is one wait in 200, the 99.5% high
// is promised. They can hold every slot unless they hold under one slot on
// average: the slot-seconds beyond the first w of each hold, out of the
// slots held (the in-flight count the sampler sees, long answers still
// running included).
//
// A mean completion rate would not do: 30 answers of 15 s and a stream of
// short ones complete several a second on average, but only while the
// short ones get slots.
//
// The mean hold is the longer of the holds that ended and what the slots
// held beyond w imply (Little's law: slots held ÷ the rate long requests
// end, plus w): at a surge the holds that ended were learned at a lighter
// load, before the slots filled.
//
// Done is the request path's (sharded adds); Step, Second and Slow are
// the sampler's.
type Turnover struct {
	early       *shard.Counter // ns: Σ min(T, w) over finished requests
	long, longN *shard.Counter // ns and count: the holds over w

	// Sampler only: decayed by a tenth a second (10 s of memory), in
	// seconds: the slots held, Σ min(T, w), Σ T over w and how many; the
	// in-flight samples of the current second; the running totals at the
	// last second.
	held, first, longSum, longCount float64
	acc                             float64
	samples                         int
	last                            [3]uint64
}

// turnoverBar is −ln of the chance of a wait with no slot freed that
// Slow accepts: 1 in 200.
var turnoverBar = math.Log(200)

// turnoverAlpha: the weight of a second in the sums (10 s of memory).
const turnoverAlpha = 0.1

// NewTurnover returns a learner that knows nothing yet.
func NewTurnover() *Turnover {
	return &Turnover{early: shard.NewCounter(), long: shard.NewCounter(), longN: shard.NewCounter()}
}

// Done records, on shard sh, a slot given back after hold, for a wait of w.
func (t *Turnover) Done(sh uint32, hold, w time.Duration) {
	hold, w = max(0, hold), max(0, w)
	t.early.AddN(sh, uint64(min(hold, w)))
	if hold > w {
		t.long.AddN(sh, uint64(hold))
		t.longN.Add(sh)
	}
}

// Step takes one sample of the slots taken.
func (t *Turnover) Step(inFlight int64) {
	t.acc += float64(max(0, inFlight))
	t.samples++
}

// Second closes a second: the slots held on average over its samples,
// and the holds that ended in it.
func (t *Turnover) Second() {
	held := 0.0
	if t.samples > 0 {
		held = t.acc / float64(t.samples)
	}
	now := [3]uint64{t.early.Load(), t.long.Load(), t.longN.Load()}
	decay := func(sum *float64, v float64) { *sum = *sum*(1-turnoverAlpha) + v }
	decay(&t.held, held)
	decay(&t.first, float64(now[0]-t.last[0])/float64(time.Second))
	decay(&t.longSum, float64(now[1]-t.last[1])/float64(time.Second))
	decay(&t.longCount, float64(now[2]-t.last[2]))
	t.acc, t.samples, t.last = 0, 0, now
}

// Slow reports whether a wait w (the w of Done) on slots slots may pass
// with no slot freed more often than once in 200; true while nothing was
// held yet, and while long requests hold slots and none has ended.
func (t *Turnover) Slow(slots int, w time.Duration) bool {
	if t.held <= 0 {
		return true
	}
	beyond := math.Max(0, t.held-t.first) / t.held // the share of the slots held beyond w
	if beyond*float64(slots) < 1 {
		return false // the long requests cannot hold every slot
	}
	if t.longCount <= 0 {
		return true // they hold slots, and none has ended yet
	}
	// The holds that ended are those of requests that began a hold ago.
	// When long requests take the slots faster than they end (a surge),
	// the slots they hold ÷ the rate they end at (Little's law) is the
	// longer, and the truer: the ones just begun end later (a batch slows
	// down as it fills: llmsim's answers of 512 tokens hold 11.5 s at half
	// a batch, 15.4 s at a full one), and together.
	hold := max(t.longSum, t.held-t.first+w.Seconds()*t.longCount) / t.longCount
	return float64(slots)*w.Seconds()/hold < turnoverBar
}
