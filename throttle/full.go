package throttle

import (
	"math"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ai-guardian/adaptivethrottle/priority"
)

// fullUpstream is what the request path counts of the upstream's answers
// that it is full (FullStatus), and what the sampler makes of them. A full
// queue means saturated, not broken: such an answer lowers the
// concurrency limit (admission.Signal.Full) and never counts toward
// opening the circuit; the client gets the module's own refusal.
type fullUpstream struct {
	answers atomic.Uint64 // since start
	// least is the fewest other requests in flight at one of them since
	// the sampler's last step (math.MaxInt64: none).
	least atomic.Int64
	// onlySince: unix ns since when the upstream has answered nothing but
	// that it is full (0: it serves). Written by the sampler once a second.
	onlySince atomic.Int64

	lastAnswers uint64 // sampler: answers at the last step
	secAnswers  uint64 // sampler: answers at the last second
	secServed   uint64 // sampler: successful first bytes at the last second
}

// note counts one full answer that came while inflight requests, itself
// included, held a slot.
func (f *fullUpstream) note(inflight int64) {
	others := max(0, inflight-1)
	for {
		v := f.least.Load()
		if others >= v || f.least.CompareAndSwap(v, others) {
			break
		}
	}
	f.answers.Add(1)
}

// step returns the full answers since the last step and the fewest other
// requests in flight at one of them.
func (f *fullUpstream) step() (n uint64, least int64) {
	total := f.answers.Load()
	least = f.least.Swap(math.MaxInt64)
	n, f.lastAnswers = total-f.lastAnswers, total
	if n == 0 {
		least = 0
	}
	return n, least
}

// onlyFullAfter is how long the upstream must answer nothing but that it
// is full before the log says so.
const onlyFullAfter = 10 * time.Second

// second judges, once a second, whether the upstream answered nothing but
// that it is full (served: its successful first bytes so far). It
// returns whether that has just lasted onlyFullAfter, or has just ended
// after it had.
func (f *fullUpstream) second(now time.Time, served uint64) (began, ended bool, since time.Time) {
	total := f.answers.Load()
	full, ok := total-f.secAnswers, served-f.secServed
	f.secAnswers, f.secServed = total, served
	s := f.onlySince.Load()
	switch {
	case ok > 0 && s != 0:
		f.onlySince.Store(0)
		since = time.Unix(0, s)
		return false, now.Sub(since) >= onlyFullAfter+time.Second, since
	case full > 0 && ok == 0 && s == 0:
		f.onlySince.Store(now.Add(-time.Second).UnixNano())
	case s != 0:
		since = time.Unix(0, s)
		d := now.Sub(since)
		return d >= onlyFullAfter && d < onlyFullAfter+time.Second, false, since
	}
	return false, false, since
}

// fullSecond is the sampler's once-a-second look at full answers: it logs
// when the upstream has answered nothing else for onlyFullAfter, and when
// it serves again.
func (t *Throttle) fullSecond(now time.Time) {
	began, ended, since := t.full.second(now, t.firstBytes.count.Load())
	switch {
	case began:
		t.logger.Load().Warn("the upstream answers only that it is full (503, 429 or 529): saturated, not broken; the circuit stays closed",
			zap.String("name", t.name), zap.Duration("for", now.Sub(since).Round(time.Second)),
			zap.Int("limit", t.limit.Value()))
	case ended:
		t.logger.Load().Info("the upstream serves again after answering only that it was full",
			zap.String("name", t.name), zap.Duration("for", now.Sub(since).Round(time.Second)))
	}
}

// UpstreamStatus is what status shows of the upstream's answers that it
// is full (503, 429, 529).
type UpstreamStatus struct {
	// FullAnswers counts them since start; each was replaced by the
	// module's own refusal (shed level "upstream").
	FullAnswers uint64 `json:"full_answers"`
	// OnlyFullS: for how long the upstream has answered nothing but that
	// it is full, since OnlyFullSince (0 and null: it serves).
	OnlyFullS     float64    `json:"only_full_s"`
	OnlyFullSince *time.Time `json:"only_full_since"`
}

func (t *Throttle) upstreamStatus(now time.Time) UpstreamStatus {
	st := UpstreamStatus{FullAnswers: t.full.answers.Load()}
	if s := t.full.onlySince.Load(); s != 0 {
		since := time.Unix(0, s)
		st.OnlyFullSince = &since
		st.OnlyFullS = math.Round(max(0, now.Sub(since).Seconds())*1e4) / 1e4
	}
	return st
}

// upstreamFramingHeaders describe the body of an answer held back; the
// module's refusal has its own.
var upstreamFramingHeaders = []string{"Content-Length", "Content-Encoding", "Transfer-Encoding", "Content-Range",
	"Trailer", "Etag", "Last-Modified", "Retry-After"}

// refuseFull answers, in place of the upstream's answer that it is full
// (held back by the recorder), with the module's own refusal of priority
// p: status and body as any refusal's (level "upstream"), and
// Retry-After when a slot is expected, or the upstream's own (upstream,
// its header's value) when that is later. The upstream's headers that
// describe its body are dropped.
func (t *Throttle) refuseFull(w http.ResponseWriter, r *http.Request, p priority.Priority, upstream string) error {
	h := w.Header()
	for _, k := range upstreamFramingHeaders {
		h.Del(k)
	}
	ceiling := time.Duration(t.retryMax.Load())
	retry := priority.RetryAfter(t.drainIn(), time.Duration(t.retry.Load()), ceiling, retryJitter)
	if s, ok := parseRetryAfter(upstream, time.Now()); ok && s > retry {
		retry = max(retry, min(s, int(ceiling/time.Second))) // retry_after_max holds for it too
	}
	t.shedBy[causeUpstream].Add(1)
	d := Decision{info: decision(p, priority.ShedQueue, causeUpstream, retry)}
	if t.refuser != nil {
		return t.refuser(w, r, d)
	}
	t.LogRefusal(r, d)
	WriteRefusal(w, d)
	return nil
}

// maxRetryAfter bounds an upstream's Retry-After that the module passes
// on: a day.
const maxRetryAfter = 86400

// parseRetryAfter reads a Retry-After value, delay-seconds or an
// HTTP-date (RFC 9110, 10.2.3), as whole seconds from now, rounded up
// and at most maxRetryAfter; ok is false when there is none or it cannot
// be read.
func parseRetryAfter(v string, now time.Time) (int, bool) {
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		return int(min(n, maxRetryAfter)), true
	}
	at, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	d := at.Sub(now)
	if d <= 0 {
		return 0, true
	}
	return int(min(math.Ceil(d.Seconds()), maxRetryAfter)), true
}
