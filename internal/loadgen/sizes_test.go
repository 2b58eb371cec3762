package loadgen

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/internal/llmsim"
)

func TestParseSizesAndMean(t *testing.T) {
	z, err := ParseSizes("16=0.75, 512=0.25")
	if err != nil {
		t.Fatal(err)
	}
	if want := (Sizes{{16, 0.75}, {512, 0.25}}); !slices.Equal(z, want) || z.String() != "16=0.75,512=0.25" || z.Mean() != 140 {
		t.Errorf("got %v (%s, mean %g)", z, z, z.Mean())
	}
	if z, err := ParseSizes(""); err != nil || z != nil {
		t.Errorf("empty: %v, %v", z, err)
	}
	for _, bad := range []string{"16", "x=1", "16=x", "0=1", "16=-1", "16=0,32=0"} {
		if _, err := ParseSizes(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestPlanSized: sizes are drawn in proportion, the same for the same
// seed, and leave the priorities as they are without sizes.
func TestPlanSized(t *testing.T) {
	p := Profile{Kind: Constant, Base: 100, Duration: 40 * time.Second}
	z := Sizes{{16, 0.75}, {512, 0.25}}
	a, err := PlanSized(p, Uniform, DefaultMix, z, 7)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := PlanSized(p, Uniform, DefaultMix, z, 7)
	plain, _ := Plan(p, Uniform, DefaultMix, 7)
	long := 0
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("request %d differs between runs of one seed: %+v, %+v", i, a[i], b[i])
		}
		if a[i].Priority != plain[i].Priority || plain[i].MaxTokens != 0 {
			t.Fatalf("request %d: sizes changed the priority or a plain plan has a size", i)
		}
		switch a[i].MaxTokens {
		case 512:
			long++
		case 16:
		default:
			t.Fatalf("request %d: size %d", i, a[i].MaxTokens)
		}
	}
	if share := float64(long) / float64(len(a)); math.Abs(share-0.25) > 0.02 {
		t.Errorf("long share %.3f of %d, want 0.25", share, len(a))
	}
	if _, err := PlanSized(p, Uniform, DefaultMix, Sizes{{0, 1}}, 7); err == nil {
		t.Error("a size of 0 was accepted")
	}
}

func TestPointsProfile(t *testing.T) {
	pts, err := ParsePoints("0s:2, 10s:2, 20s:12, 30s:2")
	if err != nil {
		t.Fatal(err)
	}
	if FormatPoints(pts) != "0s:2,10s:2,20s:12,30s:2" {
		t.Errorf("format %q", FormatPoints(pts))
	}
	p := Profile{Kind: Points, Duration: 35 * time.Second, Points: pts}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		at   time.Duration
		want float64
	}{{0, 2}, {5 * time.Second, 2}, {15 * time.Second, 7}, {20 * time.Second, 12}, {25 * time.Second, 7}, {33 * time.Second, 2}, {35 * time.Second, 0}} {
		if got := p.RateAt(tc.at); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("RateAt(%v) = %g, want %g", tc.at, got, tc.want)
		}
	}
	// The integral: 20 + 70 + 70 + 10 = 170 requests.
	if n := p.expected(); math.Abs(n-170) > 1e-9 {
		t.Errorf("expected %g requests, want 170", n)
	}
	at, err := Schedule(p, Uniform, 0)
	if err != nil || len(at) != 170 {
		t.Errorf("schedule: %d sends, %v", len(at), err)
	}
	// Two points at one time are a jump; a run shorter than the points
	// ends at the rate reached then.
	jump := Profile{Kind: Points, Duration: 15 * time.Second, Points: []Point{{0, 1}, {10 * time.Second, 1}, {10 * time.Second, 5}, {20 * time.Second, 15}}}
	if err := jump.Validate(); err != nil {
		t.Fatal(err)
	}
	if jump.RateAt(9*time.Second) != 1 || jump.RateAt(10*time.Second) != 5 || math.Abs(jump.RateAt(14*time.Second)-9) > 1e-9 {
		t.Errorf("jump: %g %g %g", jump.RateAt(9*time.Second), jump.RateAt(10*time.Second), jump.RateAt(14*time.Second))
	}
	if n := jump.expected(); math.Abs(n-(10+37.5)) > 1e-9 {
		t.Errorf("jump: expected %g, want 47.5", n)
	}
	for _, bad := range []Profile{
		{Kind: Points, Duration: time.Second},
		{Kind: Points, Duration: time.Second, Points: []Point{{time.Second, 1}}},
		{Kind: Points, Duration: time.Second, Points: []Point{{0, 1}, {2 * time.Second, 1}, {time.Second, 1}}},
		{Kind: Points, Duration: time.Second, Points: []Point{{0, -1}}},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("accepted: %+v", bad)
		}
	}
	for _, bad := range []string{"0s", "x:1", "0s:x"} {
		if _, err := ParsePoints(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestRunCountsTokens: each answer carries its completion tokens, counted
// from the streamed chunks against llmsim (which sends no usage in a
// stream), from the usage when a stream or a plain answer has one.
func TestRunCountsTokens(t *testing.T) {
	sim := llmsim.New(llmsim.Config{PrefillTime: time.Millisecond, TokenTime: time.Millisecond})
	ts := httptest.NewServer(sim)
	defer func() { ts.Close(); sim.Close() }()
	for _, stream := range []bool{true, false} {
		res, err := Run(context.Background(), Config{Target: ts.URL, Profile: Profile{Kind: Constant, Base: 40, Duration: 500 * time.Millisecond},
			Sizes: Sizes{{3, 1}, {40, 1}}, Seed: 2, Stream: stream, KeepRecords: true, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		sum := 0
		for _, r := range res.Records {
			if r.Class != ClassOK || r.Tokens != r.MaxTokens || (r.MaxTokens != 3 && r.MaxTokens != 40) {
				t.Fatalf("stream %v: %+v", stream, r)
			}
			sum += r.Tokens
		}
		if res.Overall.Tokens != sum || res.Overall.TokensWithinSLO != sum || !slices.Equal(res.Sizes, Sizes{{3, 1}, {40, 1}}) {
			t.Errorf("stream %v: tokens %d, within the SLO %d, want %d", stream, res.Overall.Tokens, res.Overall.TokensWithinSLO, sum)
		}
	}

	// A usage chunk (vLLM's include_usage) wins over the count.
	us := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		sse(w, `{"choices":[{"delta":{"role":"assistant","content":"a"}}]}`)
		sse(w, `{"choices":[{"delta":{"content":"b"}}]}`)
		sse(w, `{"choices":[{"delta":{},"finish_reason":"length"}]}`)
		sse(w, `{"choices":[],"usage":{"prompt_tokens":64,"completion_tokens":7,"total_tokens":71}}`)
		sse(w, "[DONE]")
	})
	res, err := Run(context.Background(), Config{Target: us.URL, Profile: Profile{Kind: Constant, Base: 4, Duration: 500 * time.Millisecond},
		Stream: true, KeepRecords: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res.Records {
		if r.Tokens != 7 {
			t.Errorf("with a usage chunk: %d tokens, want 7", r.Tokens)
		}
	}
	b, _ := json.Marshal(res.Records[0])
	var back Record
	if json.Unmarshal(b, &back) != nil || back.Tokens != 7 {
		t.Errorf("record JSON %s", b)
	}
}
