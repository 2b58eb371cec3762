package latency

import (
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/ai-guardian/adaptivethrottle/internal/shard"
)

// Histogram range: 1 µs to one hour at two significant digits (1% error),
// about 26 KiB per histogram.
const (
	histLowest  = 1
	histHighest = int64(time.Hour / time.Microsecond)
	histDigits  = 2
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histLowest, histHighest, histDigits) }

// historySample is one sampler period's result. The short-period fields are
// filled every call and steer the medium lane; the window fields only when
// a window closed, and feed the latency level.
type historySample struct {
	Short       time.Duration // percentile over the period just ended
	ShortMedian time.Duration // its median: a queue moves it, a lone slow answer does not
	ShortCount  int64
	Mean        time.Duration // history: EWMA of healthy windows; 0 before the first
	// Floor is the lowest one-second median of the last floorMinutes: what
	// the upstream answers in when nothing queues. Reference is what the
	// short-period judgements compare against: Mean, or before any history
	// is learned, 2 × Floor — so an overload that starts with the gateway
	// (a restart at peak) is judged against the upstream at its best,
	// never against itself.
	Floor, Reference time.Duration
	// Limit is what the last seconds are judged against without slo: the
	// Reference × Factor, never below MinThreshold. Recovery and the
	// medium lane read it.
	Limit time.Duration
	// Recent is the percentile over the last recentSeconds, never above
	// their third-slowest answer (so one or two slow answers cannot set
	// it); RecentCount how many answers it is over.
	Recent      time.Duration
	RecentCount int64

	Closed      bool          // a window ended with this call
	Value       time.Duration // the window's percentile
	Count       int64         // responses in the window
	Threshold   time.Duration // Mean × Factor, at least MinThreshold; 0 while nothing is learned
	OverCeiling bool          // Value > Ceiling: trips at once
	Stuck       bool          // requests were in flight but none answered all window, for longer than whole answers take
	Learning    bool          // the window was healthy and taught the history

	// WholeSlowest is the slowest whole answer (not streamed, see
	// recordWhole) of the last floorMinutes, as it took.
	WholeSlowest time.Duration
}

// recentSeconds is the span the per-second judgements (slo, recovery) take
// their percentile over: long enough to hold more than a handful of answers,
// short enough to let go within seconds of an overload's end.
const recentSeconds = 2

// recentMinOver is how many answers must be at least as slow as Recent: it is
// never set by fewer, so a lone outlier cannot trip the slo.
const recentMinOver = 3

// floorMinutes is how long the fastest minute is remembered: long enough to
// span a surge, short enough that a slower model put in place is accepted.
const floorMinutes = 10

// latShard holds its histogram by value: histograms allocated one after
// the other sit side by side in memory, and two cores recording into
// neighbouring shards would then fight over the line holding their counts'
// totals. The padding keeps each shard's mutex and header to itself.
type latShard struct {
	mu sync.Mutex
	h  hdrhistogram.Histogram
	_  [128]byte
}

// history records response times into sharded HDR histograms and judges
// them per window against their own history.
//
// record may be called from any goroutine: it locks the shard its caller
// names, so writers on different cores never meet. sample, setConfig and
// reset belong to the sampler; lastSample and historyMean may be called
// from anywhere.
type history struct {
	shards []latShard
	mask   uint32

	mu          sync.Mutex
	cfg         Config
	period      *hdrhistogram.Histogram                // merged shards of the period being closed
	seconds     [recentSeconds]*hdrhistogram.Histogram // the last periods, a ring
	secondAt    int                                    // the ring's next slot
	recent      *hdrhistogram.Histogram                // scratch: the ring merged
	window      *hdrhistogram.Histogram                // periods of the current window
	windowStart time.Time
	startFlight int64 // requests in flight when the window began
	mean        time.Duration
	last        historySample
	floors      [floorMinutes]time.Duration // per-minute lowest one-second median; 0: none
	floorMinute int64                       // the minute floors[floorMinute%floorMinutes] is for

	// The slowest whole answer since the last sample (the request path
	// raises it, sample takes it), and the slowest per minute (as floors).
	wholeMax    atomic.Int64
	wholeSlow   [floorMinutes]time.Duration
	wholeMinute int64
	// quietSince is since when requests have been in flight with no answer.
	quietSince time.Time
}

// newHistory returns a history with nothing learned; cfg is defaulted.
func newHistory(cfg Config) *history {
	cfg.Defaults()
	n := shard.Count()
	l := &history{shards: make([]latShard, n), mask: uint32(n - 1), cfg: cfg, period: newHist(), window: newHist(), recent: newHist()}
	for i := range l.seconds {
		l.seconds[i] = newHist()
	}
	for i := range l.shards {
		l.shards[i].h = *newHist()
	}
	return l
}

// record adds one response time on the shard that shard selects (see
// shard.Counter.Add). It does not allocate.
func (l *history) record(d time.Duration, shard uint32) {
	us := min(max(int64(d/time.Microsecond), histLowest), histHighest)
	s := &l.shards[shard&l.mask]
	s.mu.Lock()
	_ = s.h.RecordValue(us) // in range by construction
	s.mu.Unlock()
}

// recordWhole notes how long a whole answer took (one that was not
// streamed, whose first byte is its end; record takes what it is judged
// as): twice the slowest of the last floorMinutes is how long requests may
// be in flight with no answer before that is a hang.
func (l *history) recordWhole(d time.Duration) {
	for m := l.wholeMax.Load(); int64(d) > m && !l.wholeMax.CompareAndSwap(m, int64(d)); m = l.wholeMax.Load() {
	}
}

// setConfig applies a reloaded config. The history mean stays: it is a
// property of the upstream, not of the thresholds.
func (l *history) setConfig(cfg Config) {
	cfg.Defaults()
	l.mu.Lock()
	l.cfg = cfg
	l.mu.Unlock()
}

// sample closes the period that ends at now and, when Window has passed
// since the window began, the window too. learn=false keeps the window out
// of the history (the caller does so while shedding). inflight is the number
// of requests still waiting for an answer: a window in which requests were
// waiting but none answered is judged as lasting the whole window, so a hung
// upstream cannot look healthy for lack of samples.
func (l *history) sample(now time.Time, learn bool, inflight int64) historySample {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		l.period.Merge(&s.h)
		s.h.Reset()
		s.mu.Unlock()
	}
	q := l.cfg.Percentile
	out := historySample{ShortCount: l.period.TotalCount(), Mean: l.mean}
	if out.ShortCount > 0 {
		out.Short = us(l.period.ValueAtPercentile(q))
		out.ShortMedian = us(l.period.ValueAtPercentile(50))
		if out.ShortCount >= 3 {
			l.noteFloor(now, out.ShortMedian)
		}
	}
	l.window.Merge(l.period)
	l.noteRecent(&out)
	l.noteWhole(now, &out)
	l.period.Reset()

	if l.windowStart.IsZero() {
		l.windowStart, l.startFlight = now, inflight
	}
	if out.ShortCount > 0 || inflight == 0 || l.quietSince.IsZero() {
		l.quietSince = now
	}
	// Half a period of slack so ticker jitter cannot postpone a window by a
	// whole period.
	if elapsed := now.Sub(l.windowStart); elapsed >= l.cfg.Window.D()-500*time.Millisecond {
		l.closeWindow(&out, now.Sub(l.quietSince), learn, inflight)
		l.windowStart, l.startFlight = now, inflight
	}
	out.Floor = l.floor()
	out.Reference = l.mean
	if out.Reference == 0 {
		out.Reference = 2 * out.Floor
	}
	out.Limit = max(time.Duration(float64(out.Reference)*l.cfg.Factor), l.cfg.MinThreshold.D())
	l.last = out
	return out
}

// noteRecent puts the period just closed in the ring of the last
// recentSeconds and takes the percentile over them. l.mu is held.
func (l *history) noteRecent(out *historySample) {
	h := l.seconds[l.secondAt]
	l.secondAt = (l.secondAt + 1) % recentSeconds
	h.Reset()
	h.Merge(l.period)
	l.recent.Reset()
	for _, s := range l.seconds {
		l.recent.Merge(s)
	}
	n := l.recent.TotalCount()
	out.RecentCount = n
	if n == 0 {
		return
	}
	// The value at rank n-(recentMinOver-1) is the recentMinOver-th slowest:
	// with fewer answers than that, the fastest one.
	q := 0.0
	if n >= recentMinOver {
		q = min(l.cfg.Percentile, 100*float64(n-(recentMinOver-1))/float64(n))
	}
	out.Recent = us(l.recent.ValueAtPercentile(q))
}

// noteWhole takes the slowest whole answer since the last call, and keeps
// the slowest of each minute. l.mu is held.
func (l *history) noteWhole(now time.Time, out *historySample) {
	slowest := time.Duration(l.wholeMax.Swap(0))
	m := now.Unix() / 60
	if m != l.wholeMinute {
		for k := max(l.wholeMinute+1, m-floorMinutes+1); k <= m; k++ {
			l.wholeSlow[k%floorMinutes] = 0
		}
		l.wholeMinute = m
	}
	if i := m % floorMinutes; slowest > l.wholeSlow[i] {
		l.wholeSlow[i] = slowest
	}
	for _, v := range l.wholeSlow {
		out.WholeSlowest = max(out.WholeSlowest, v)
	}
}

// noteFloor keeps the lowest one-second median of each minute.
func (l *history) noteFloor(now time.Time, median time.Duration) {
	m := now.Unix() / 60
	if m != l.floorMinute {
		for k := max(l.floorMinute+1, m-floorMinutes+1); k <= m; k++ {
			l.floors[k%floorMinutes] = 0
		}
		l.floorMinute = m
	}
	if i := m % floorMinutes; l.floors[i] == 0 || median < l.floors[i] {
		l.floors[i] = median
	}
}

// floor is the lowest one-second median of the last floorMinutes; 0 if none.
func (l *history) floor() time.Duration {
	var f time.Duration
	for _, v := range l.floors {
		if v > 0 && (f == 0 || v < f) {
			f = v
		}
	}
	return f
}

// closeWindow judges the window that just ended. quiet is how long
// requests have been in flight with no answer: when nothing answered all
// window, that is a hang once it is longer than twice the slowest whole
// answer of the last minutes (a long answer sent whole may be on its way),
// and is judged as the window's value.
func (l *history) closeWindow(out *historySample, quiet time.Duration, learn bool, inflight int64) {
	out.Closed = true
	out.Count = l.window.TotalCount()
	switch {
	case out.Count > 0:
		out.Value = us(l.window.ValueAtPercentile(l.cfg.Percentile))
	case inflight > 0 && quiet > 2*out.WholeSlowest:
		out.Value, out.Stuck = quiet, true
	}
	l.window.Reset()
	if l.mean > 0 {
		out.Threshold = max(time.Duration(float64(l.mean)*l.cfg.Factor), l.cfg.MinThreshold.D())
	}
	out.OverCeiling = out.Value > l.cfg.Ceiling.D()
	// A window in which requests piled up at the upstream is no picture
	// of normal, however its percentile compares: during an overload that
	// began before any history, it would teach the overload.
	steady := inflight <= l.startFlight+max(4, l.startFlight/2)
	healthy := steady && !out.OverCeiling && !out.Stuck && (out.Threshold == 0 || out.Value <= out.Threshold)
	if learn && healthy && out.Count >= l.cfg.minSamples {
		if l.mean == 0 {
			l.mean = out.Value
		} else {
			l.mean += time.Duration(l.cfg.alpha * float64(out.Value-l.mean))
		}
		out.Learning = true
	}
	out.Mean = l.mean
}

// lastSample returns the most recent sample.
func (l *history) lastSample() historySample {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

// historyMean returns the learned history mean (0 before the first healthy window).
func (l *history) historyMean() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mean
}

// reset forgets the history and the floor (the admin API's reset).
func (l *history) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mean = 0
	clear(l.floors[:])
	clear(l.wholeSlow[:])
	for _, h := range l.seconds {
		h.Reset()
	}
}

func us(v int64) time.Duration { return time.Duration(v) * time.Microsecond }
