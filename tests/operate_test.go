package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/internal/llmsim"
)

// adminDo sends one admin API request and returns status and body.
func adminDo(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, adminURL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, drain(t, resp)
}

func TestAdminOverrideAndReset(t *testing.T) {
	sim, addr := upstream(t, llmsim.Config{})
	tc := start(t, `http://localhost:9080 {
	header >X-Throttle "{http.adaptive_throttle.decision}/{http.adaptive_throttle.level}/{http.adaptive_throttle.priority}"
	adaptive_throttle {
		name ops
		gpu off
		circuit {
			min_requests 2
			open_for 1m
		}
	}
	reverse_proxy `+addr+`
}`)
	code, body := adminDo(t, "POST", "/throttle/override", `{"name":"ops","state":"shed","for":"1m"}`)
	if code != 200 || !strings.Contains(body, `"state":"shed"`) {
		t.Fatalf("override: %d %s", code, body)
	}
	st := status(t, "ops")
	if st.Override == nil || st.Override.State != "shed" || st.Override.ExpiresInS < 50 || !st.Shedding {
		t.Fatalf("status after override: %+v", st.Override)
	}
	resp := chat(t, tc, "low", false)
	if h := resp.Header.Get("X-Throttle"); h != "shed/override/low" {
		t.Fatalf("placeholders on a refusal: %q", h)
	}
	assertShed(t, resp, 429, "override", "low", 5)
	// shed grades, it does not drain: high passes.
	if resp := chat(t, tc, "high", false); resp.StatusCode != 200 {
		t.Fatalf("high under shed: %d %s", resp.StatusCode, drain(t, resp))
	} else {
		drain(t, resp)
	}

	adminDo(t, "POST", "/throttle/override", `{"name":"ops","state":"auto"}`)
	if resp := chat(t, tc, "low", false); resp.StatusCode != 200 {
		t.Fatalf("after auto: %d", resp.StatusCode)
	} else {
		drain(t, resp)
	}

	// An override with an expiry ends by itself.
	adminDo(t, "POST", "/throttle/override", `{"name":"ops","state":"shed","for":"300ms"}`)
	eventually(t, 5*time.Second, "the override to expire", func() bool { return status(t, "ops").Override == nil })
	if resp := chat(t, tc, "low", false); resp.StatusCode != 200 {
		t.Fatalf("after expiry: %d", resp.StatusCode)
	} else {
		drain(t, resp)
	}

	// Open the circuit, then close it through the admin API.
	sim.SetFault(llmsim.Fault{Status: 502})
	for i := 0; status(t, "ops").Circuit.State != breaker.Open; i++ {
		if i == 10 {
			t.Fatalf("the circuit did not open: %+v", status(t, "ops").Circuit)
		}
		drain(t, chat(t, tc, "high", false))
	}
	sim.SetFault(llmsim.Fault{})
	assertShed(t, chat(t, tc, "high", false), 503, "circuit", "high", 5)
	// Everything is refused: status and the metric say shedding.
	if st := status(t, "ops"); st.Circuit.State != breaker.Open || !st.Shedding {
		t.Fatalf("open circuit: shedding %v, %+v", st.Shedding, st.Circuit)
	}
	if m := scrape(t); m[`caddy_adaptive_throttle_shedding{name="ops"}`] != 1 ||
		m[`caddy_adaptive_throttle_requests_total{decision="shed_circuit",name="ops",priority="high"}`] < 1 {
		t.Fatalf("open circuit: shedding %v, shed_circuit %v on /metrics", m[`caddy_adaptive_throttle_shedding{name="ops"}`],
			m[`caddy_adaptive_throttle_requests_total{decision="shed_circuit",name="ops",priority="high"}`])
	}
	code, body = adminDo(t, "POST", "/throttle/reset", `{"name":"ops","what":"circuit"}`)
	if st := status(t, "ops"); code != 200 || st.Circuit.State != breaker.Closed || st.Shedding {
		t.Fatalf("reset circuit: %d %s (shedding %v)", code, body, st.Shedding)
	}
	if resp := chat(t, tc, "high", false); resp.StatusCode != 200 {
		t.Fatalf("after closing: %d", resp.StatusCode)
	} else {
		drain(t, resp)
	}
}

// An override drain, as the README documents it: every new request, high
// included, gets 503 with Retry-After and level override, while the
// request in flight finishes with its answer; status, /metrics and the
// requests that follow say so, and auto hands back.
func TestAdminOverrideDrain(t *testing.T) {
	_, addr := upstream(t, llmsim.Config{TokenTime: 100 * time.Millisecond, DefaultMaxTokens: 10})
	tc := start(t, `http://localhost:9080 {
	adaptive_throttle {
		name drain
		gpu off
	}
	reverse_proxy `+addr+`
}`)
	type answer struct {
		code int
		body string
		err  error
	}
	inFlight := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, siteURL+"/v1/chat/completions",
			strings.NewReader(`{"model":"demo-llm","messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("X-Priority", "low")
		resp, err := tc.Client.Do(req)
		if err != nil {
			inFlight <- answer{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		inFlight <- answer{resp.StatusCode, string(b), err}
	}()
	eventually(t, 5*time.Second, "a request in flight", func() bool { return status(t, "drain").Admission.InFlight == 1 })

	code, body := adminDo(t, "POST", "/throttle/override", `{"name":"drain","state":"drain","for":"1m"}`)
	if code != 200 || !strings.Contains(body, `"state":"drain"`) {
		t.Fatalf("override drain: %d %s", code, body)
	}
	for _, prio := range []string{"high", "medium", "low"} {
		b := assertShed(t, chat(t, tc, prio, false), 503, "override", prio, 5)
		if b.RetryAfter > 72 { // the minute left, with its jitter
			t.Errorf("%s: Retry-After %d beyond the override's end", prio, b.RetryAfter)
		}
	}
	st := status(t, "drain")
	if st.Override == nil || st.Override.State != "drain" || !st.Shedding || st.Admission.InFlight != 1 || st.Shed["override"] != 3 {
		t.Fatalf("status under drain: override %+v, shedding %v, in flight %d, shed %v", st.Override, st.Shedding, st.Admission.InFlight, st.Shed)
	}
	m := scrape(t)
	for k, want := range map[string]float64{
		`caddy_adaptive_throttle_shedding{name="drain"}`:                                             1,
		`caddy_adaptive_throttle_override{name="drain",state="drain"}`:                               1,
		`caddy_adaptive_throttle_override{name="drain",state="shed"}`:                                0,
		`caddy_adaptive_throttle_requests_total{decision="shed_drain",name="drain",priority="high"}`: 1,
		`caddy_adaptive_throttle_shed_total{cause="override",name="drain"}`:                          3,
	} {
		if got, ok := m[k]; !ok || got != want {
			t.Errorf("%s = %v (exported %v), want %v", k, got, ok, want)
		}
	}

	select {
	case a := <-inFlight:
		if a.err != nil || a.code != 200 || !strings.Contains(a.body, "choices") {
			t.Fatalf("the request in flight when the drain began: %d %v %.200s", a.code, a.err, a.body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the request in flight never finished")
	}
	if st := status(t, "drain"); st.Admission.InFlight != 0 || st.Priorities.Low.Passed != 1 {
		t.Fatalf("after the drain: in flight %d, low passed %d", st.Admission.InFlight, st.Priorities.Low.Passed)
	}

	adminDo(t, "POST", "/throttle/override", `{"name":"drain","state":"auto"}`)
	if resp := chat(t, tc, "low", false); resp.StatusCode != 200 {
		t.Fatalf("after auto: %d %s", resp.StatusCode, drain(t, resp))
	} else {
		drain(t, resp)
	}
	if st := status(t, "drain"); st.Shedding || st.Override != nil {
		t.Fatalf("after auto: shedding %v, override %+v", st.Shedding, st.Override)
	}
}

// Every bad admin request is refused with the documented code and a
// one-line reason in Caddy's {"error": …} form, and changes nothing.
func TestAdminRefusesBadRequests(t *testing.T) {
	_, addr := upstream(t, llmsim.Config{})
	start(t, `http://localhost:9080 {
	adaptive_throttle {
		name strict
		gpu off
	}
	reverse_proxy `+addr+`
}`)
	before := status(t, "strict")
	cases := []struct {
		method, path, body string
		code               int
		reason             string
	}{
		{"POST", "/throttle/override", `{"name":"strict","state":`, 400, "not valid JSON"},
		{"POST", "/throttle/override", `{"name":"strict","state":"shed","until":"later"}`, 400, "unknown field"},
		{"POST", "/throttle/override", `{"name":"strict","state":"maybe"}`, 400, "state"},
		{"POST", "/throttle/override", `{"name":"strict","state":"shed","for":"-5s"}`, 400, "positive duration"},
		{"POST", "/throttle/override", `{"name":"strict","state":"auto","for":"5s"}`, 400, "does not apply"},
		{"POST", "/throttle/override", `{"name":"strict","state":7}`, 400, "wrong type"},
		{"POST", "/throttle/override", ``, 400, "empty body"},
		{"POST", "/throttle/override", `{"name":"strict","state":"shed"} {}`, 400, "after the JSON"},
		{"POST", "/throttle/override", `{"name":"nope","state":"shed"}`, 404, "unknown name"},
		{"POST", "/throttle/reset", `{"name":"strict","what":"everything"}`, 400, "what"},
		{"POST", "/throttle/reset", `{"name":"strict"}`, 400, `"what" is required`},
		{"POST", "/throttle/override", `[]`, 400, "body must be a JSON object"},
		{"POST", "/throttle/reset", `null`, 400, "body must be a JSON object"},
		{"POST", "/throttle/reset", `{"name":"nope","what":"all"}`, 404, "unknown name"},
		{"GET", "/throttle/override", ``, 405, "method not allowed"},
		{"DELETE", "/throttle/reset", ``, 405, "method not allowed"},
		{"POST", "/throttle/status", `{}`, 405, "method not allowed"},
		{"GET", "/throttle/status?name=nope", ``, 404, "unknown name"},
		{"POST", "/throttle/override", `{"name":"strict","state":"shed","x":"` + strings.Repeat("a", 70000) + `"}`, 400, "larger than"},
	}
	for _, c := range cases {
		code, body := adminDo(t, c.method, c.path, c.body)
		var e struct{ Error string }
		if code != c.code || json.Unmarshal([]byte(body), &e) != nil || !strings.Contains(e.Error, c.reason) {
			t.Errorf("%s %s %.60q: %d %s, want %d with %q", c.method, c.path, c.body, code, body, c.code, c.reason)
		}
		if strings.Contains(body, "aaaa") || strings.Contains(body, "maybe") || strings.Contains(body, "nope") {
			t.Errorf("%s %s echoed request data: %s", c.method, c.path, body)
		}
	}
	after := status(t, "strict")
	if after.Override != nil || after.Circuit.State != before.Circuit.State || after.Shedding {
		t.Fatalf("a refused request changed the state: %+v", after)
	}
}

// A threshold changed through Caddy's /config API applies at once and the
// learned baseline survives the reload; a new window forgets it.
func TestReloadKeepsLearnedState(t *testing.T) {
	_, addr := upstream(t, llmsim.Config{})
	cfg := fmt.Sprintf(`{
	"admin": {"listen": "localhost:2999"},
	"logging": {"logs": {"default": {"level": "ERROR"}}},
	"apps": {
		"pki": {"certificate_authorities": {"local": {"install_trust": false}}},
		"http": {"http_port": 9080, "https_port": 9443, "servers": {"srv0": {
			"listen": [":9080"],
			"automatic_https": {"disable": true},
			"routes": [{"handle": [
				{"@id": "throttle", "handler": "adaptive_throttle", "name": "reload",
				 "qps": {"window": "20s", "warmup": 3, "trip_factor": 1.5}, "gpu": {"source": "off"}},
				{"handler": "reverse_proxy", "upstreams": [{"dial": %q}]}
			]}]
		}}}
	}
}`, addr)
	tc := caddyJSON(t, cfg)
	stop := lightTraffic(t, tc.Client, 10)
	defer stop()
	eventually(t, 15*time.Second, "a learned baseline", func() bool {
		q := status(t, "reload").Levels.QPS
		return q.LearnedS >= 4 && q.Baseline > 0 && q.Threshold > 0
	})
	before := status(t, "reload").Levels.QPS

	code, body := adminDo(t, "PATCH", "/id/throttle/qps/trip_factor", `3`)
	if code != 200 {
		t.Fatalf("PATCH: %d %s", code, body)
	}
	after := status(t, "reload").Levels.QPS
	if after.LearnedS < before.LearnedS || after.Baseline == 0 {
		t.Fatalf("the reload lost the baseline: before %+v after %+v", before, after)
	}
	// The new factor applies from the next sample: threshold = baseline × 3
	// (status rounds both to four decimals).
	eventually(t, 5*time.Second, "the new trip factor", func() bool {
		q := status(t, "reload").Levels.QPS
		return q.Baseline > 0 && abs(q.Threshold-3*q.Baseline) < 1e-3
	})

	code, body = adminDo(t, "PATCH", "/id/throttle/qps/window", `"30s"`)
	if code != 200 {
		t.Fatalf("PATCH window: %d %s", code, body)
	}
	if q := status(t, "reload").Levels.QPS; q.LearnedS > 2 {
		t.Fatalf("a new window kept %d s of a baseline of the old length", q.LearnedS)
	}
}

// lightTraffic sends rps low-priority requests a second until stopped.
func lightTraffic(t *testing.T, tc interface {
	Do(*http.Request) (*http.Response, error)
}, rps int) (stop func()) {
	return paced(time.Second/time.Duration(rps), func() {
		req, _ := http.NewRequest("POST", siteURL+"/v1/chat/completions",
			strings.NewReader(`{"messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("X-Priority", "low")
		if resp, err := tc.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}

// paced calls send every period, open loop: each send runs on its own
// goroutine, so a slow answer does not slow the arrivals, up to
// maxPacedInFlight sends at once (a tick that finds them all busy is
// skipped, so a stalled server cannot pile up goroutines). It runs until
// stop is called; stop waits for the sends in progress.
func paced(period time.Duration, send func()) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	slots := make(chan struct{}, maxPacedInFlight)
	wg.Go(func() {
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				select {
				case slots <- struct{}{}:
					wg.Go(func() {
						defer func() { <-slots }()
						send()
					})
				default:
				}
			}
		}
	})
	return func() { cancel(); wg.Wait() }
}

// maxPacedInFlight bounds one paced sender's concurrent requests.
const maxPacedInFlight = 32

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}

// /metrics on the admin endpoint shows the collectors with the right values,
// and they continue across a reload.
func TestMetricsAcrossReload(t *testing.T) {
	_, addr := upstream(t, llmsim.Config{})
	site := func(threshold string) string {
		return `http://localhost:9080 {
	adaptive_throttle {
		name metrics
		gpu off
		latency {
			ceiling ` + threshold + `
		}
	}
	reverse_proxy ` + addr + `
}`
	}
	tc := start(t, site("8s"))
	for range 3 {
		drain(t, chat(t, tc, "low", false))
	}
	drain(t, chat(t, tc, "high", false))
	m := scrape(t)
	if got := m[`caddy_adaptive_throttle_requests_total{decision="pass",name="metrics",priority="low"}`]; got != 3 {
		t.Fatalf("low passes: %v", got)
	}
	if got := m[`caddy_adaptive_throttle_requests_total{decision="pass",name="metrics",priority="high"}`]; got != 1 {
		t.Fatalf("high passes: %v", got)
	}
	for _, k := range []string{`caddy_adaptive_throttle_level_tripped{level="latency",name="metrics"}`,
		`caddy_adaptive_throttle_circuit_state{name="metrics",state="closed"}`,
		`caddy_adaptive_throttle_reserve_capacity{name="metrics"}`, `caddy_adaptive_throttle_medium_rate_requests_per_second{name="metrics"}`} {
		if _, ok := m[k]; !ok {
			t.Fatalf("%s missing from /metrics", k)
		}
	}
	if m[`caddy_adaptive_throttle_circuit_state{name="metrics",state="closed"}`] != 1 || m[`caddy_adaptive_throttle_reserve_capacity{name="metrics"}`] != 1 {
		t.Fatalf("circuit or reserve gauge wrong (the reserve: 20%% of the initial limit of 4, rounded)")
	}

	start(t, site("9s")) // a reload with a changed threshold
	drain(t, chat(t, tc, "low", false))
	m = scrape(t)
	if got := m[`caddy_adaptive_throttle_requests_total{decision="pass",name="metrics",priority="low"}`]; got != 4 {
		t.Fatalf("low passes after a reload: %v, want the count to continue at 4", got)
	}
}

var sampleLine = regexp.MustCompile(`^(caddy_adaptive_throttle_[a-z_]+\{[^}]*\}) (\S+)$`)

// scrape reads the module's samples from the admin endpoint's /metrics.
func scrape(t *testing.T) map[string]float64 {
	t.Helper()
	resp, err := http.Get(adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body := drain(t, resp)
	out := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if m := sampleLine.FindStringSubmatch(line); m != nil {
			v, _ := strconv.ParseFloat(m[2], 64)
			out[m[1]] = v
		}
	}
	if len(out) == 0 {
		t.Fatalf("no caddy_adaptive_throttle_ samples on /metrics:\n%.2000s", body)
	}
	return out
}

// The placeholders reach a response header, on passes and on refusals; a
// handle_errors route sends shed requests to a cheaper model.
func TestPlaceholdersAndFallback(t *testing.T) {
	_, big := upstream(t, llmsim.Config{ModelName: "big-llm"})
	_, small := upstream(t, llmsim.Config{ModelName: "small-llm"})
	tc := start(t, `http://localhost:9080 {
	header >X-Throttle "{http.adaptive_throttle.decision}/{http.adaptive_throttle.level}/{http.adaptive_throttle.priority}"
	adaptive_throttle {
		name fallback
		gpu off
	}
	reverse_proxy `+big+`
	handle_errors 429 503 {
		@shed vars {http.adaptive_throttle.decision} shed
		handle @shed {
			header -Retry-After
			header X-Fallback "{http.adaptive_throttle.level}, retry after {http.adaptive_throttle.retry_after}s"
			reverse_proxy `+small+`
		}
	}
}`)
	resp := chat(t, tc, "medium", false)
	body := drain(t, resp)
	if resp.StatusCode != 200 || resp.Header.Get("X-Throttle") != "pass//medium" || !strings.Contains(body, "big-llm") {
		t.Fatalf("pass: %d %q %s", resp.StatusCode, resp.Header.Get("X-Throttle"), body)
	}

	adminDo(t, "POST", "/throttle/override", `{"name":"fallback","state":"shed"}`)
	resp = chat(t, tc, "low", false)
	body = drain(t, resp)
	if resp.StatusCode != 200 || !strings.Contains(body, "small-llm") {
		t.Fatalf("a shed request was not answered by the fallback model: %d %s", resp.StatusCode, body)
	}
	if fb := resp.Header.Get("X-Fallback"); !regexp.MustCompile(`^override, retry after \d+s$`).MatchString(fb) {
		t.Fatalf("X-Fallback %q", fb)
	}
	if resp.Header.Get("Retry-After") != "" {
		t.Fatalf("the fallback's answer kept Retry-After")
	}
	st := status(t, "fallback")
	if st.Priorities.Low.Shed != 1 {
		t.Fatalf("the fallback answer is still a shed for the module: %+v", st.Priorities.Low)
	}
}

// The routes inherit Caddy's admin checks: a foreign Host or Origin (DNS
// rebinding, a browser page elsewhere) is refused before they run.
func TestAdminChecksHostAndOrigin(t *testing.T) {
	_, addr := upstream(t, llmsim.Config{})
	start(t, `http://localhost:9080 {
	adaptive_throttle {
		name guarded
		gpu off
	}
	reverse_proxy `+addr+`
}`)
	for _, hdr := range []struct{ name, value string }{{"Host", "evil.example"}, {"Origin", "http://evil.example"}} {
		for _, c := range []struct{ method, path, body string }{
			{"GET", "/throttle/status", ""},
			{"POST", "/throttle/override", `{"name":"guarded","state":"shed"}`},
		} {
			req, _ := http.NewRequest(c.method, adminURL+c.path, strings.NewReader(c.body))
			if hdr.name == "Host" {
				req.Host = hdr.value
			} else {
				req.Header.Set(hdr.name, hdr.value)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body := drain(t, resp)
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("%s %s with %s %s: %d %s", c.method, c.path, hdr.name, hdr.value, resp.StatusCode, body)
			}
		}
	}
	if st := status(t, "guarded"); st.Override != nil {
		t.Fatalf("a refused request set an override: %+v", st.Override)
	}
}
