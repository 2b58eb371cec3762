package loadgen

import (
	"math"
	"slices"
)

// Stats sums up a set of requests. Latency percentiles are over OK answers
// (a refusal's speed says nothing about service), in milliseconds.
type Stats struct {
	Sent        int `json:"sent"` // planned, overflow included
	OK          int `json:"ok"`
	OKWithinSLO int `json:"ok_within_slo"`
	Shed429RA   int `json:"shed_429_retry_after"`
	Shed429     int `json:"shed_429_no_retry_after"`
	Shed503RA   int `json:"shed_503_retry_after"`
	Shed503     int `json:"shed_503_no_retry_after"`
	OOM         int `json:"upstream_oom"`
	Upstream5xx int `json:"upstream_5xx"`
	OtherStatus int `json:"other_status"`
	Timeouts    int `json:"timeouts"`
	NetErrors   int `json:"net_errors"`
	Broken      int `json:"broken_streams"`
	Overflow    int `json:"client_overflow"`
	// Tokens is the completion tokens of OK answers; TokensWithinSLO of
	// those within the SLO (goodput in tokens).
	Tokens          int `json:"tokens"`
	TokensWithinSLO int `json:"tokens_within_slo"`

	TTFBP50  float64 `json:"ttfb_p50_ms"`
	TTFBP99  float64 `json:"ttfb_p99_ms"`
	TotalP50 float64 `json:"total_p50_ms"`
	TotalP99 float64 `json:"total_p99_ms"`

	// SLOAttainment is OKWithinSLO / Sent (0 when nothing was sent).
	SLOAttainment float64 `json:"slo_attainment"`
	// GoodputRPS is OKWithinSLO per second of the period summed up.
	GoodputRPS float64 `json:"goodput_rps"`
}

// Shed is every deliberate refusal, 429 and 503, with or without Retry-After.
func (s Stats) Shed() int { return s.Shed429RA + s.Shed429 + s.Shed503RA + s.Shed503 }

// Summarize sums up recs over a period of seconds (for goodput).
func Summarize(recs []Record, seconds float64) Stats {
	var s Stats
	ttfb := make([]float64, 0, len(recs))
	total := make([]float64, 0, len(recs))
	for _, r := range recs {
		s.Sent++
		switch r.Class {
		case ClassOK:
			s.OK++
			s.Tokens += r.Tokens
			ttfb = append(ttfb, r.TTFBMS)
			total = append(total, r.TotalMS)
		case ClassShed429:
			if r.RetryAfter {
				s.Shed429RA++
			} else {
				s.Shed429++
			}
		case ClassShed503:
			if r.RetryAfter {
				s.Shed503RA++
			} else {
				s.Shed503++
			}
		case ClassOOM:
			s.OOM++
		case ClassUpstream5xx:
			s.Upstream5xx++
		case ClassOtherStatus:
			s.OtherStatus++
		case ClassTimeout:
			s.Timeouts++
		case ClassNetError:
			s.NetErrors++
		case ClassBroken:
			s.Broken++
		case ClassOverflow:
			s.Overflow++
		}
		if r.WithinSLO {
			s.OKWithinSLO++
			s.TokensWithinSLO += r.Tokens
		}
	}
	s.TTFBP50, s.TTFBP99 = Percentile(ttfb, 50), Percentile(ttfb, 99)
	s.TotalP50, s.TotalP99 = Percentile(total, 50), Percentile(total, 99)
	if s.Sent > 0 {
		s.SLOAttainment = float64(s.OKWithinSLO) / float64(s.Sent)
	}
	if seconds > 0 {
		s.GoodputRPS = float64(s.OKWithinSLO) / seconds
	}
	return s
}

// Percentile is the nearest-rank p-th percentile of xs (0 for none). It
// sorts xs in place.
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	rank := int(math.Ceil(p / 100 * float64(len(xs))))
	return xs[min(max(rank, 1), len(xs))-1]
}
