package loadgen

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func sec(f float64) time.Duration { return time.Duration(math.Round(f * 1e9)) }

func TestScheduleConstantExact(t *testing.T) {
	got, err := Schedule(Profile{Kind: Constant, Base: 4, Duration: time.Second}, Uniform, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{0, 250 * time.Millisecond, 500 * time.Millisecond, 750 * time.Millisecond}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestScheduleStepExact(t *testing.T) {
	// 2 req/s for 1 s, 10 req/s for 0.5 s, then 2 req/s to 2 s.
	p := Profile{Kind: Step, Base: 2, Peak: 10, Duration: 2 * time.Second, StepAt: time.Second, StepFor: 500 * time.Millisecond}
	got, err := Schedule(p, Uniform, 0)
	if err != nil {
		t.Fatal(err)
	}
	var want []time.Duration
	want = append(want, 0, 500*time.Millisecond)
	for i := range 5 { // peak: requests 2..6 at 1.0, 1.1, … 1.4 s
		want = append(want, time.Second+time.Duration(i)*100*time.Millisecond)
	}
	want = append(want, 1500*time.Millisecond) // integral 7 reached at the step's end
	if !slices.Equal(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
}

func TestScheduleRampExact(t *testing.T) {
	// From 0 to 8 req/s over 2 s: the integral is 2t², so request n leaves
	// at sqrt(n/2); then 8 req/s flat for 1 s (integral 8 at 2 s).
	p := Profile{Kind: Ramp, Base: 0, Peak: 8, Duration: 3 * time.Second, StepFor: 2 * time.Second}
	got, err := Schedule(p, Uniform, 0)
	if err != nil {
		t.Fatal(err)
	}
	var want []time.Duration
	for n := range 8 {
		want = append(want, sec(math.Sqrt(float64(n)/2)))
	}
	for i := range 8 {
		want = append(want, 2*time.Second+time.Duration(i)*125*time.Millisecond)
	}
	if len(got) != len(want) {
		t.Fatalf("got %d sends %v, want %d %v", len(got), got, len(want), want)
	}
	for i := range got {
		if d := got[i] - want[i]; d < -time.Microsecond || d > time.Microsecond {
			t.Fatalf("send %d at %v, want %v", i, got[i], want[i])
		}
	}
}

func TestScheduleBurstExact(t *testing.T) {
	// 1 req/s, with 0.2 s bursts at 10 req/s every second from 0.5 s.
	p := Profile{Kind: Burst, Base: 1, Peak: 10, Duration: 2 * time.Second, StepAt: 500 * time.Millisecond,
		StepFor: 200 * time.Millisecond, Every: time.Second}
	got, err := Schedule(p, Uniform, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Integral: 0.5 by 0.5 s, +2 by 0.7 s (2.5), +0.8 by 1.5 s (3.3),
	// +2 by 1.7 s (5.3), +0.3 by 2 s (5.6).
	want := []time.Duration{0, sec(0.55), sec(0.65), sec(1.2), sec(1.57), sec(1.67)}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
}

func TestScheduleCapacityDropIsConstant(t *testing.T) {
	p := Profile{Kind: CapacityDrop, Base: 10, Duration: 2 * time.Second, DropAt: time.Second}
	got, err := Schedule(p, Uniform, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 20 || got[19] != 1900*time.Millisecond {
		t.Fatalf("got %d sends ending at %v, want 20 ending at 1.9s", len(got), got[len(got)-1])
	}
}

func TestSchedulePoisson(t *testing.T) {
	p := Profile{Kind: Step, Base: 100, Peak: 1000, Duration: 10 * time.Second, StepAt: 5 * time.Second, StepFor: 2 * time.Second}
	a, err := Schedule(p, Poisson, 7)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Schedule(p, Poisson, 7)
	c, _ := Schedule(p, Poisson, 8)
	if !slices.Equal(a, b) {
		t.Fatal("same seed, different schedules")
	}
	if slices.Equal(a, c) {
		t.Fatal("different seeds, same schedule")
	}
	if !slices.IsSorted(a) || a[len(a)-1] >= p.Duration {
		t.Fatal("poisson schedule not sorted or past the end")
	}
	// 500 + 2000 + 300 = 2800 expected; Poisson σ ≈ 53.
	if n := len(a); n < 2600 || n > 3000 {
		t.Fatalf("%d sends, want about 2800", n)
	}
	inPeak := 0
	for _, at := range a {
		if at >= 5*time.Second && at < 7*time.Second {
			inPeak++
		}
	}
	if inPeak < 1850 || inPeak > 2150 {
		t.Fatalf("%d sends in the peak, want about 2000", inPeak)
	}
}

func TestScheduleErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    Profile
		arr  Arrivals
		want string
	}{
		{"no duration", Profile{Kind: Constant, Base: 1}, Uniform, "duration"},
		{"negative rate", Profile{Kind: Constant, Base: -1, Duration: time.Second}, Uniform, "base rate"},
		{"NaN peak", Profile{Kind: Step, Base: 1, Peak: math.NaN(), Duration: time.Second, StepFor: time.Second}, Uniform, "peak rate"},
		{"step without step-for", Profile{Kind: Step, Base: 1, Peak: 2, Duration: time.Second}, Uniform, "step-for"},
		{"step after the end", Profile{Kind: Step, Base: 1, Peak: 2, Duration: time.Second, StepAt: time.Second, StepFor: time.Second}, Uniform, "not inside"},
		{"burst longer than period", Profile{Kind: Burst, Base: 1, Peak: 2, Duration: time.Second, StepFor: 2 * time.Second, Every: time.Second}, Uniform, "burst"},
		{"too many bursts", Profile{Kind: Burst, Base: 1, Peak: 2, Duration: time.Hour, StepFor: time.Nanosecond, Every: time.Nanosecond}, Uniform, "bursts"},
		{"drop outside", Profile{Kind: CapacityDrop, Base: 1, Duration: time.Second, DropAt: 2 * time.Second}, Uniform, "drop-at"},
		{"unknown kind", Profile{Kind: "sine", Base: 1, Duration: time.Second}, Uniform, "unknown profile"},
		{"too many requests", Profile{Kind: Constant, Base: MaxRate, Duration: time.Hour}, Uniform, "limit"},
		{"unknown arrivals", Profile{Kind: Constant, Base: 1, Duration: time.Second}, "bursty", "arrivals"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Schedule(tc.p, tc.arr, 0)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestRateAt(t *testing.T) {
	p := Profile{Kind: Ramp, Base: 2, Peak: 6, Duration: 10 * time.Second, StepAt: 2 * time.Second, StepFor: 4 * time.Second}
	for _, tc := range []struct {
		at   time.Duration
		want float64
	}{{0, 2}, {2 * time.Second, 2}, {4 * time.Second, 4}, {6 * time.Second, 6}, {9 * time.Second, 6}, {10 * time.Second, 0}} {
		if got := p.RateAt(tc.at); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("RateAt(%v) = %g, want %g", tc.at, got, tc.want)
		}
	}
}

func TestPlanMixIndependentOfArrivals(t *testing.T) {
	p := Profile{Kind: Constant, Base: 50, Duration: 2 * time.Second}
	u, err := Plan(p, Uniform, DefaultMix, 3)
	if err != nil {
		t.Fatal(err)
	}
	q, err := Plan(p, Poisson, DefaultMix, 3)
	if err != nil {
		t.Fatal(err)
	}
	n := min(len(u), len(q))
	for i := range n {
		if u[i].Priority != q[i].Priority {
			t.Fatalf("request %d: priority %v uniform, %v poisson", i, u[i].Priority, q[i].Priority)
		}
	}
	if _, err := Plan(p, Uniform, Mix{}, 3); err == nil {
		t.Fatal("an all-zero mix was accepted")
	}
}
