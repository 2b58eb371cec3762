package loadgen

import (
	"encoding/json"
	"testing"
	"time"
)

func TestClassifyStatus(t *testing.T) {
	for _, tc := range []struct {
		status int
		body   string
		want   Class
	}{
		{200, "", ClassOK},
		{429, `{"error":"overloaded","level":"qps","priority":"low","retry_after":5}`, ClassShed429},
		{429, "rate limited", ClassShed429},
		{503, `{"error":"overloaded","level":"gpu","priority":"medium","retry_after":7}` + "\n", ClassShed503},
		{503, `{"error":{"message":"CUDA out of memory (simulated)","type":"server_error","code":503}}`, ClassOOM},
		{503, `{"error":{"message":"server is shutting down","type":"server_error","code":503}}`, ClassUpstream5xx},
		{502, "", ClassUpstream5xx},
		{504, "", ClassUpstream5xx},
		{400, `{"error":"overloaded"}`, ClassOtherStatus},
		{404, "", ClassOtherStatus},
	} {
		if got := ClassifyStatus(tc.status, []byte(tc.body)); got != tc.want {
			t.Errorf("ClassifyStatus(%d, %q) = %v, want %v", tc.status, tc.body, got, tc.want)
		}
	}
}

func TestSLOMet(t *testing.T) {
	s := SLO{TTFB: 2 * time.Second, Total: 5 * time.Second}
	for _, tc := range []struct {
		c           Class
		ttfb, total time.Duration
		want        bool
	}{
		{ClassOK, 2 * time.Second, 5 * time.Second, true},
		{ClassOK, 2*time.Second + 1, time.Second, false},
		{ClassOK, time.Second, 5*time.Second + 1, false},
		{ClassShed429, time.Millisecond, time.Millisecond, false},
		{ClassBroken, time.Millisecond, time.Millisecond, false},
	} {
		if got := s.Met(tc.c, tc.ttfb, tc.total); got != tc.want {
			t.Errorf("Met(%v, %v, %v) = %v, want %v", tc.c, tc.ttfb, tc.total, got, tc.want)
		}
	}
	if !(SLO{}).Met(ClassOK, time.Hour, time.Hour) {
		t.Error("the zero SLO must accept any OK answer")
	}
}

func TestPercentileNearestRank(t *testing.T) {
	xs := make([]float64, 0, 100)
	for i := 100; i >= 1; i-- {
		xs = append(xs, float64(i))
	}
	for _, tc := range []struct{ p, want float64 }{{50, 50}, {99, 99}, {100, 100}, {1, 1}, {0, 1}, {99.5, 100}} {
		if got := Percentile(xs, tc.p); got != tc.want {
			t.Errorf("p%g = %g, want %g", tc.p, got, tc.want)
		}
	}
	if got := Percentile([]float64{3, 1, 2}, 50); got != 2 {
		t.Errorf("p50 of 3 = %g, want 2", got)
	}
	if Percentile(nil, 99) != 0 {
		t.Error("p99 of nothing must be 0")
	}
}

func TestSummarize(t *testing.T) {
	recs := []Record{
		{Class: ClassOK, TTFBMS: 100, TotalMS: 900, WithinSLO: true},
		{Class: ClassOK, TTFBMS: 3000, TotalMS: 4000}, // served, but late
		{Class: ClassShed429, RetryAfter: true},
		{Class: ClassShed429},
		{Class: ClassShed503, RetryAfter: true},
		{Class: ClassShed503},
		{Class: ClassOOM},
		{Class: ClassUpstream5xx},
		{Class: ClassOtherStatus},
		{Class: ClassTimeout},
		{Class: ClassNetError},
		{Class: ClassBroken},
		{Class: ClassOverflow},
	}
	s := Summarize(recs, 2)
	want := Stats{Sent: 13, OK: 2, OKWithinSLO: 1, Shed429RA: 1, Shed429: 1, Shed503RA: 1, Shed503: 1, OOM: 1,
		Upstream5xx: 1, OtherStatus: 1, Timeouts: 1, NetErrors: 1, Broken: 1, Overflow: 1,
		TTFBP50: 100, TTFBP99: 3000, TotalP50: 900, TotalP99: 4000, SLOAttainment: 1.0 / 13, GoodputRPS: 0.5}
	if s != want {
		t.Fatalf("got  %+v\nwant %+v", s, want)
	}
	if s.Shed() != 4 {
		t.Errorf("Shed() = %d, want 4", s.Shed())
	}
	if z := Summarize(nil, 0); z != (Stats{}) {
		t.Errorf("empty summary = %+v", z)
	}
}

func TestBuildSeries(t *testing.T) {
	recs := []Record{
		{AtMS: 100, SentMS: 100, Class: ClassOK, TTFBMS: 50, TotalMS: 1500, WithinSLO: true}, // done at 1.6 s
		{AtMS: 200, SentMS: 200, Class: ClassOK, TTFBMS: 3000, TotalMS: 3500},                // done at 3.7 s
		{AtMS: 1100, SentMS: 1100, Class: ClassShed429, RetryAfter: true, TotalMS: 1},
		{AtMS: 1200, SentMS: 1200, Class: ClassOOM, TotalMS: 1},
		{AtMS: 1300, SentMS: 1300, Class: ClassTimeout, TotalMS: 30000},
		{AtMS: 1400, SentMS: 1400, Class: ClassOverflow},
		{AtMS: 1500, SentMS: 1500, Class: ClassUpstream5xx, TotalMS: 1},
	}
	mem := UpstreamState{MemoryUsed: 20, MemoryTotal: 80, Waiting: 3}
	th := &ThrottleState{Shedding: true}
	th.Levels.QPS.Tripped = true
	th.Circuit.State = "open"
	th.Priorities.Medium.Rate = 4.5
	th.Admission.InFlight, th.Admission.Limit, th.Priorities.High.Reserve = 9, 10, 2
	polls := []Poll{{T: 0.2, Upstream: &mem}, {T: 1.1, Throttle: th}}
	s := BuildSeries(recs, polls, 2)
	if len(s) != 32 { // the timeout sent at 1.3 s ends at 31.3 s
		t.Fatalf("%d seconds, want 32", len(s))
	}
	if s[0].Sent != 2 || s[0].OK != 2 || s[0].OKWithinSLO != 1 || s[0].TTFBP99 != 3000 {
		t.Errorf("second 0 = %+v", s[0])
	}
	if s[1].Sent != 5 || s[1].Shed != 1 || s[1].OOM != 1 || s[1].Timeouts != 1 || s[1].Overflow != 1 || s[1].Errors != 1 {
		t.Errorf("second 1 = %+v", s[1])
	}
	if s[1].Served != 1 || s[1].Good != 1 || s[3].Served != 1 || s[3].Good != 0 {
		t.Errorf("served by completion: s1 %+v, s3 %+v", s[1], s[3])
	}
	if s[0].GPUMemory == nil || *s[0].GPUMemory != 0.25 || *s[0].Waiting != 3 {
		t.Errorf("second 0 poll = %+v", s[0])
	}
	if s[1].Shedding == nil || !*s[1].Shedding || len(s[1].Tripped) != 2 || s[1].Tripped[0] != "qps" || s[1].Tripped[1] != "circuit" || *s[1].MediumRate != 4.5 {
		t.Errorf("second 1 throttle = %+v", s[1])
	}
	if s[1].Limit == nil || *s[1].Limit != 10 || *s[1].InFlight != 9 || *s[1].Reserve != 2 {
		t.Errorf("second 1 admission = %+v", s[1])
	}
	if s[0].Shedding != nil || s[0].Limit != nil || s[1].GPUMemory != nil {
		t.Error("seconds without a poll must leave the polled fields nil")
	}
}

func TestRecordJSONRoundTrip(t *testing.T) {
	in := Record{AtMS: 1, SentMS: 2, Priority: Medium, Class: ClassShed503, Status: 503, RetryAfter: true, TTFBMS: 3, TotalMS: 4}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out Record
	if err := json.Unmarshal(b, &out); err != nil || out != in {
		t.Fatalf("round trip: %+v, %v (json %s)", out, err, b)
	}
	if err := json.Unmarshal([]byte(`{"class":"nope"}`), &out); err == nil {
		t.Fatal("unknown class accepted")
	}
}
