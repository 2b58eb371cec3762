package tests

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/ai-guardian/adaptivethrottle/internal/llmsim"
	"github.com/ai-guardian/adaptivethrottle/pool"
)

// A policy whose name no adaptive_throttle handler has, or a policy with
// no handler at all, is refused when the config loads, naming the
// Caddyfile line of the lb_policy; so is an upstream_gauge block with no
// pool to read. (The admin API answers the error as
// JSON: its quotes come escaped.)
func TestPoolPolicyWithoutItsHandlerIsRefused(t *testing.T) {
	caddytest.AssertLoadError(t, caddyfile(`http://localhost:9080 {
	adaptive_throttle {
		name pool
	}
	reverse_proxy 127.0.0.1:9001 127.0.0.1:9002 {
		lb_policy adaptive_throttle nosuch
	}
}`), "caddyfile", `Caddyfile:18: lb_policy adaptive_throttle: no adaptive_throttle handler is named \"nosuch\"`)
	caddytest.AssertLoadError(t, caddyfile(`http://localhost:9080 {
	reverse_proxy 127.0.0.1:9001 127.0.0.1:9002 {
		lb_policy adaptive_throttle
	}
}`), "caddyfile", `Caddyfile:15: lb_policy adaptive_throttle: no adaptive_throttle handler is named \"default\"`)
	caddytest.AssertLoadError(t, caddyfile(`http://localhost:9080 {
	adaptive_throttle {
		name lone
		upstream_gauge {
			metric vllm:num_requests_waiting max 8
		}
	}
	reverse_proxy 127.0.0.1:9001 127.0.0.1:9002
}`), "caddyfile", "adaptive_throttle \\\"lone\\\": upstream_gauge reads the upstreams of a pool, and no reverse_proxy of this config has `lb_policy adaptive_throttle lone`")
	loaded.Add(1)
}

// poolSite is a site with the handler named name in front of a
// reverse_proxy to addrs whose policy is that handler's.
func poolSite(name string, addrs ...string) string {
	return `http://localhost:9080 {
	adaptive_throttle {
		name ` + name + `
	}
	reverse_proxy ` + strings.Join(addrs, " ") + ` {
		lb_policy adaptive_throttle ` + name + `
	}
}`
}

// load runs workers closed-loop clients through Caddy for d and returns
// the statuses they got.
func load(t *testing.T, workers int, d time.Duration) map[int]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	client := &http.Client{Timeout: 10 * time.Second}
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				req, _ := http.NewRequest("POST", siteURL+"/v1/chat/completions",
					strings.NewReader(`{"messages":[{"role":"user","content":"hi"}],"max_tokens":20}`))
				req.Header.Set("X-Priority", "high")
				resp, err := client.Do(req)
				code := 0
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					code = resp.StatusCode
				}
				mu.Lock()
				codes[code]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return codes
}

// members returns the upstreams of the pool of name by address.
func members(t *testing.T, name string) map[string]pool.MemberStatus {
	t.Helper()
	out := map[string]pool.MemberStatus{}
	for _, m := range status(t, name).Upstreams {
		out[m.Upstream] = m
	}
	return out
}

// Two llmsim upstreams of 4 slots behind the policy: both serve. Then one
// loses 3 of its slots: from then on it gets fewer requests than the
// other, and its limit falls below the other's, which holds.
func TestPoolSendsLessToASlowUpstream(t *testing.T) {
	cfg := llmsim.Config{Slots: 4, PrefillTime: 20 * time.Millisecond, TokenTime: 5 * time.Millisecond}
	_, fast := upstream(t, cfg)
	slowSim, slow := upstream(t, cfg)
	start(t, poolSite("pool-slow", fast, slow))

	codes := load(t, 8, 4*time.Second)
	before := members(t, "pool-slow")
	if len(before) != 2 || before[fast].Requests == 0 || before[slow].Requests == 0 || codes[200] == 0 {
		t.Fatalf("before the drop: answers %v, upstreams %+v: want both serving", codes, before)
	}
	slowSim.SetSlots(1)
	codes = load(t, 8, 6*time.Second)
	after := members(t, "pool-slow")
	toFast := after[fast].Requests - before[fast].Requests
	toSlow := after[slow].Requests - before[slow].Requests
	t.Logf("answers %v; after the drop: %d requests to the fast upstream, %d to the slow one; limits %d → %d (fast), %d → %d (slow)",
		codes, toFast, toSlow, before[fast].Limit, after[fast].Limit, before[slow].Limit, after[slow].Limit)
	if toSlow*2 > toFast {
		t.Errorf("the slow upstream got %d requests, the fast one %d: want under half", toSlow, toFast)
	}
	if after[slow].Limit >= after[fast].Limit || after[slow].Limit > before[slow].Limit {
		t.Errorf("limits: slow %d → %d, fast %d → %d: want the slow one's fallen below the fast one's",
			before[slow].Limit, after[slow].Limit, before[fast].Limit, after[fast].Limit)
	}
	if after[fast].Limit < before[fast].Limit*3/4 {
		t.Errorf("the fast upstream's limit went %d → %d: want it held", before[fast].Limit, after[fast].Limit)
	}
}

// A reload that adds an upstream keeps what the pool learned of the
// others.
func TestPoolReloadKeepsTheOthersLimits(t *testing.T) {
	cfg := llmsim.Config{Slots: 16, PrefillTime: 10 * time.Millisecond, TokenTime: 2 * time.Millisecond}
	_, a := upstream(t, cfg)
	_, b := upstream(t, cfg)
	_, c := upstream(t, cfg)
	tc := start(t, poolSite("pool-reload", a, b))
	load(t, 24, 3*time.Second)
	before := members(t, "pool-reload")
	if before[a].Limit <= 4 || before[b].Limit <= 4 {
		t.Fatalf("limits %d and %d after the load: want both grown past the initial 4", before[a].Limit, before[b].Limit)
	}
	tc.InitServer(caddyfile(poolSite("pool-reload", a, b, c)), "caddyfile")
	loaded.Add(1)
	drain(t, chat(t, tc, "high", false))
	after := members(t, "pool-reload")
	if len(after) != 3 {
		t.Fatalf("upstreams after the reload: %+v, want 3", after)
	}
	for _, k := range []string{a, b} {
		if after[k].Limit < before[k].Limit*3/4 || after[k].Requests < before[k].Requests {
			t.Errorf("%s: limit %d, %d requests before the reload; %d, %d after: want what it learned kept",
				k, before[k].Limit, before[k].Requests, after[k].Limit, after[k].Requests)
		}
	}
	if after[c].Limit != 4 {
		t.Errorf("the new upstream starts at limit %d, want the initial 4", after[c].Limit)
	}
}

// With upstream_gauge, each upstream's own /metrics is read: an upstream
// whose waiting queue is over the threshold (other clients filled it,
// straight past this gateway) has its limit cut below the other's, and
// the other, with more room, serves every request. Status names the gauge
// of each.
func TestPoolGaugeSendsAwayFromASaturatedUpstream(t *testing.T) {
	cfg := llmsim.Config{Slots: 1, PrefillTime: 10 * time.Millisecond, TokenTime: 5 * time.Millisecond}
	_, busy := upstream(t, cfg)
	_, free := upstream(t, cfg)
	tc := start(t, `http://localhost:9080 {
	adaptive_throttle {
		name pool-gauge
		upstream_gauge {
			metric vllm:num_requests_waiting max 4
			threshold 50%
			interval 200ms
		}
	}
	reverse_proxy `+busy+` `+free+` {
		lb_policy adaptive_throttle pool-gauge
	}
}`)
	drain(t, chat(t, tc, "low", false)) // the policy meets its upstreams
	// Four clients straight at busy: one runs, three wait (75% of 4).
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+busy+"/v1/chat/completions",
					strings.NewReader(`{"messages":[{"role":"user","content":"hi"}],"max_tokens":200}`))
				if resp, err := http.DefaultClient.Do(req); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		})
	}
	eventually(t, 10*time.Second, "busy's gauge to trip and its limit to fall below free's", func() bool {
		ms := members(t, "pool-gauge")
		g := ms[busy].Gauge
		return g != nil && g.Tripped && ms[busy].Limit < ms[free].Limit
	})
	before := members(t, "pool-gauge")
	if g := before[free].Gauge; g == nil || g.Tripped || !g.Available {
		t.Fatalf("free's gauge %+v, want read and clear", g)
	}
	for range 10 {
		if resp := chat(t, tc, "low", false); resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d through the pool", resp.StatusCode)
		} else {
			drain(t, resp)
		}
	}
	after := members(t, "pool-gauge")
	if sent := after[busy].Requests - before[busy].Requests; sent != 0 || after[busy].Gauge == nil || !after[busy].Gauge.Tripped {
		t.Fatalf("%d requests sent to the upstream whose gauge is tripped (%+v), want none while the other has more room", sent, after[busy].Gauge)
	}
	if sent := after[free].Requests - before[free].Requests; sent != 10 {
		t.Fatalf("%d requests sent to the clear upstream, want all 10", sent)
	}
}
