package loadgen

import "math"

// Second is one second of the run. Counts of fates (Sent … Overflow) and
// TTFBP99 are by the second the request was planned, so that each second's
// load can be followed to its end; Served and Good are by the second the
// answer completed, which is the throughput the upstream delivered. The
// polled fields are the last poll within the second (nil when none).
type Second struct {
	T           int     `json:"t"`
	Sent        int     `json:"sent"`
	OK          int     `json:"ok"`
	OKWithinSLO int     `json:"ok_within_slo"`
	Shed        int     `json:"shed"`
	OOM         int     `json:"oom"`
	Timeouts    int     `json:"timeouts"`
	Errors      int     `json:"errors"` // other statuses, 5xx, network, broken streams
	Overflow    int     `json:"client_overflow"`
	TTFBP99     float64 `json:"ttfb_p99_ms"` // OK answers planned this second
	Served      int     `json:"served"`      // OK answers completed this second
	Good        int     `json:"good"`        // OK within SLO completed this second
	// Tokens: asked (max_tokens) and refused by the second sent; served
	// and served within the SLO (completion tokens) by the second done.
	AskedTokens  int `json:"asked_tokens,omitempty"`
	ShedTokens   int `json:"shed_tokens,omitempty"`
	ServedTokens int `json:"served_tokens,omitempty"`
	GoodTokens   int `json:"good_tokens,omitempty"`

	GPUMemory  *float64 `json:"gpu_memory,omitempty"` // upstream memory used / total
	KVCache    *float64 `json:"kv_cache,omitempty"`
	Waiting    *int     `json:"waiting,omitempty"`
	Shedding   *bool    `json:"shedding,omitempty"`
	Tripped    []string `json:"tripped,omitempty"`
	MediumRate *float64 `json:"medium_rate,omitempty"`
	// The throttle's concurrency limit, requests in flight and high's
	// reserve within the limit, at the second's poll.
	Limit    *int `json:"limit,omitempty"`
	InFlight *int `json:"in_flight,omitempty"`
	Reserve  *int `json:"reserve,omitempty"`
}

// BuildSeries lays records and polls out by second over [0, seconds), plus
// any later seconds in which answers completed.
func BuildSeries(recs []Record, polls []Poll, seconds int) []Second {
	n := max(seconds, 0)
	for _, r := range recs {
		if r.Class != ClassOverflow {
			n = max(n, int(r.DoneMS()/1000)+1)
		}
	}
	out := make([]Second, n)
	ttfb := make([][]float64, n)
	for i := range out {
		out[i].T = i
	}
	at := func(msec float64) int { return min(max(int(math.Floor(msec/1000)), 0), n-1) }
	for _, r := range recs {
		if n == 0 {
			break
		}
		s := &out[at(r.AtMS)]
		s.Sent++
		s.AskedTokens += r.MaxTokens
		switch {
		case r.Class == ClassOK:
			s.OK++
			ttfb[s.T] = append(ttfb[s.T], r.TTFBMS)
			d := &out[at(r.DoneMS())]
			d.Served++
			d.ServedTokens += r.Tokens
			if r.WithinSLO {
				d.Good++
				d.GoodTokens += r.Tokens
			}
		case r.Class.Shed():
			s.Shed++
			s.ShedTokens += r.MaxTokens
		case r.Class == ClassOOM:
			s.OOM++
		case r.Class == ClassTimeout:
			s.Timeouts++
		case r.Class == ClassOverflow:
			s.Overflow++
		default:
			s.Errors++
		}
		if r.WithinSLO {
			s.OKWithinSLO++
		}
	}
	for i := range out {
		out[i].TTFBP99 = Percentile(ttfb[i], 99)
	}
	for _, p := range polls {
		if n == 0 || p.T < 0 {
			continue
		}
		s := &out[at(p.T*1000)]
		if u := p.Upstream; u != nil {
			mem, kv, w := u.MemoryRatio(), u.KVCacheUsage, u.Waiting
			s.GPUMemory, s.KVCache, s.Waiting = &mem, &kv, &w
		}
		if t := p.Throttle; t != nil {
			shed, rate := t.Shedding, t.Priorities.Medium.Rate
			s.Shedding, s.Tripped, s.MediumRate = &shed, t.Tripped(), &rate
			limit, inflight, reserve := t.Admission.Limit, int(t.Admission.InFlight), t.Priorities.High.Reserve
			s.Limit, s.InFlight, s.Reserve = &limit, &inflight, &reserve
		}
	}
	return out
}
