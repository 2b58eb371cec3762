package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeStatus is /throttle/status as the module writes it (trimmed), for
// call n: the lanes' counters grow by a fixed step per call, and from the
// third call on the gateway sheds with the qps level tripped.
func fakeStatus(n int) string {
	shedding := n >= 3
	learnedS, threshold, baseline := 28+n, 10.6, 7.1
	if n == 1 {
		threshold, baseline = 0, 0 // still warming up
	}
	return fmt.Sprintf(`{"instances":[{"name":"llm-main","shedding":%t,"override":null,"in_flight":3,
	"levels":{"qps":{"value":%g,"threshold":%g,"tripped":%t,"since":null,"last_reason":"","recover_in_s":0,
	               "transitions":0,"min_tripped_s":0,"baseline":%g,"learned_s":%d,"learning":%t},
	          "gpu":{"value":0.2,"threshold":0.75,"tripped":false,"source":"nvidia-smi","available":true},
	          "latency":{"value":0.1,"threshold":0,"tripped":false,"percentile":99}},
	"circuit":{"state":"closed","since":null,"opens":0},
	"priorities":{"high":{"reserve":8,"in_use":0,"passed":%d,"shed":0},
	         "medium":{"rate":4.25,"upstream_capacity":0,"upstream_concurrency":1,"passed":%d,"shed":%d},
	         "low":{"passed":%d,"shed":%d}},
	"shed":{"circuit":0,"gpu":0,"latency":0,"override":0,"qps":0}}]}`,
		shedding, 9.5+float64(n), threshold, shedding, baseline, learnedS, !shedding,
		1*n, 3*n, 2*n, 6*n, 5*n)
}

func TestLiveLineFormat(t *testing.T) {
	var resp struct{ Instances []ThrottleState }
	if err := json.Unmarshal([]byte(fakeStatus(3)), &resp); err != nil {
		t.Fatal(err)
	}
	th := &resp.Instances[0]
	if th.Levels.QPS.LearnedS != 31 || th.Levels.QPS.Threshold != 10.6 || th.Override != nil {
		t.Fatalf("decoded %+v", th.Levels.QPS)
	}
	passed, shed := tally{1, 3, 0}, tally{0, 2, 6}
	q := 2
	l := liveLine{T: 37, Rate: 30, Sent: tally{3, 9, 18}, Passed: &passed, Shed: &shed, Queue: &q, Gateway: gatewayText(th)}
	want := "  37s    30/s      3/9/18         1/3/0       0/2/6       0      2" +
		"  SHEDDING qps · medium ≤ 4.2/s · qps 12.5/s, trips above 10.6/s"
	if got := l.String(); got != want {
		t.Errorf("line\n got %q\nwant %q", got, want)
	}
	// The columns sit under the header's.
	h := liveHeader(true)
	for _, col := range []string{"rate", "sent h/m/l", "passed h/m/l", "shed h/m/l", "failed", "queue"} {
		end := strings.Index(h, col) + len(col)
		if c := want[end-1]; c == ' ' {
			t.Errorf("column %q ends at %d in the header, over a blank in the line:\n%s\n%s", col, end, h, want)
		}
	}
	if got := (liveLine{T: 1, Rate: 5, Sent: tally{0, 2, 3}, Gateway: gatewayText(nil)}).String(); got !=
		"   1s     5/s       0/2/3             -           -       0      -  status: no answer" {
		t.Errorf("line without a throttle answer: %q", got)
	}

	calm := []struct {
		n    int
		want string
	}{
		{1, "passing all · qps 10.5/s, learning its baseline (29 s)"},
		{2, "passing all · qps 11.5/s, trips above 10.6/s"},
	}
	for _, c := range calm {
		var r struct{ Instances []ThrottleState }
		json.Unmarshal([]byte(fakeStatus(c.n)), &r)
		if got := gatewayText(&r.Instances[0]); got != c.want {
			t.Errorf("status %d: %q, want %q", c.n, got, c.want)
		}
	}
	th.Override = &OverrideState{State: "shed"}
	if got := gatewayText(th); !strings.HasPrefix(got, "OVERRIDE shed · medium") {
		t.Errorf("override: %q", got)
	}
	th.Override, th.Circuit.State = nil, "open"
	if got := gatewayText(th); !strings.HasPrefix(got, "SHEDDING qps circuit · ") {
		t.Errorf("open circuit: %q", got)
	}
}

// TestRunLive runs against a fake gateway on 127.0.0.1 whose status answers
// change with each poll: the live view prints a line a second with the
// generator's sends and the gateway's passed and shed in that second.
func TestRunLive(t *testing.T) {
	var calls atomic.Int64
	ts := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/throttle/status" {
			io.WriteString(w, fakeStatus(int(calls.Add(1))))
			return
		}
		if r.Header.Get("X-Priority") == "low" {
			w.Header().Set("Retry-After", "5")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		sse(w, "{}")
		sse(w, "[DONE]")
	})
	var live bytes.Buffer
	res, err := Run(context.Background(), Config{
		Target: ts.URL, Stream: true, ThrottleStatus: ts.URL + "/throttle/status", Live: &live,
		Profile: Profile{Kind: Constant, Base: 10, Duration: 2500 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Overall.Sent != 25 {
		t.Errorf("sent %d, want 25", res.Overall.Sent)
	}
	lines := strings.Split(strings.TrimRight(live.String(), "\n"), "\n")
	if len(lines) < 3 || lines[0] != liveHeader(true) {
		t.Fatalf("live view:\n%s", live.String())
	}
	// Polls 1 (the start), 2 and 3: the first line is poll 2 less poll 1,
	// the second poll 3 less poll 2, when the gateway has begun to shed.
	for i, want := range []struct{ t, passed, shed, gateway string }{
		{"1s", "1/3/6", "0/2/5", "passing all · qps 11.5/s, trips above 10.6/s"},
		{"2s", "1/3/6", "0/2/5", "SHEDDING qps · medium ≤ 4.2/s · qps 12.5/s, trips above 10.6/s"},
	} {
		f := strings.Fields(lines[i+1])
		if len(f) < 8 || f[0] != want.t || f[1] != "10/s" || f[3] != want.passed || f[4] != want.shed ||
			f[5] != "0" || f[6] != "-" || strings.Join(f[7:], " ") != want.gateway {
			t.Errorf("line %d: %q, want t %s, passed %s, shed %s, gateway %q", i+1, lines[i+1], want.t, want.passed, want.shed, want.gateway)
			continue
		}
		var sent tally
		if _, err := fmt.Sscanf(f[2], "%d/%d/%d", &sent[High], &sent[Medium], &sent[Low]); err != nil || sent.sum() < 9 || sent.sum() > 11 {
			t.Errorf("line %d: sent %q, want about 10 in the second", i+1, f[2])
		}
	}
}

// Without the throttle's status, passed and shed are the answers the
// generator got.
func TestRunLiveWithoutStatus(t *testing.T) {
	ts := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Priority") == "low" {
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusBadGateway)
	})
	var live bytes.Buffer
	_, err := Run(context.Background(), Config{
		Target: ts.URL, Live: &live, Mix: Mix{Medium: 1, Low: 1},
		Profile: Profile{Kind: Constant, Base: 10, Duration: 1500 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(live.String(), "\n"), "\n")
	if len(lines) < 2 || lines[0] != liveHeader(false) || strings.Contains(lines[0], "gateway") {
		t.Fatalf("live view:\n%s", live.String())
	}
	f := strings.Fields(lines[1])
	var ok, shed tally
	fmt.Sscanf(f[3], "%d/%d/%d", &ok[High], &ok[Medium], &ok[Low])
	fmt.Sscanf(f[4], "%d/%d/%d", &shed[High], &shed[Medium], &shed[Low])
	var failed int
	fmt.Sscan(f[5], &failed)
	if len(f) != 7 || f[0] != "1s" || ok.sum() != 0 || shed[High]+shed[Medium] != 0 || shed[Low] < 3 || failed < 3 || shed[Low]+int64(failed) < 9 {
		t.Errorf("line %q: want no ok, the lows shed and the mediums failed (502)", lines[1])
	}
}
