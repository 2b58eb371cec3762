package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/ai-guardian/adaptivethrottle/internal/llmsim"
)

// queueSite is a site with a fixed concurrency limit, so that what waits
// is known; retry sets retry_after, to make a reload change something.
func queueSite(name, addr string, limit int, maxWait, retry string) string {
	return fmt.Sprintf(`http://localhost:9080 {
	adaptive_throttle {
		name %s
		gpu off
		concurrency {
			limit %d
			max_wait %s
		}
		retry_after %s
	}
	reverse_proxy %s
}`, name, limit, maxWait, retry, addr)
}

// send is chat in a goroutine: its status code arrives on the channel (0
// when the request failed).
func send(t *testing.T, tc *caddytest.Tester, ctx context.Context, prio string) <-chan int {
	out := make(chan int, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, siteURL+"/v1/chat/completions",
			strings.NewReader(`{"model":"demo-llm","messages":[{"role":"user","content":"hello"}]}`))
		req.Header.Set("X-Priority", prio)
		resp, err := tc.Client.Do(req)
		if err != nil {
			out <- 0
			return
		}
		resp.Body.Close()
		out <- resp.StatusCode
	}()
	return out
}

func queued(t *testing.T, name string) int {
	q := status(t, name).Admission.Queued
	return q["high"] + q["medium"] + q["low"]
}

// A request that finds every slot taken waits, and is answered as soon as
// the slot frees: the completion hands it over, highest priority first.
func TestWaitingRequestIsHandedTheFreedSlot(t *testing.T) {
	_, addr := upstream(t, llmsim.Config{Slots: 1, TokenTime: 100 * time.Millisecond, DefaultMaxTokens: 5})
	tc := start(t, queueSite("handoff", addr, 1, "10s", "5s"))
	ctx := context.Background()
	first := send(t, tc, ctx, "low")
	eventually(t, 5*time.Second, "the first request in flight", func() bool { return status(t, "handoff").Admission.InFlight == 1 })
	low := send(t, tc, ctx, "low")
	eventually(t, 5*time.Second, "low to wait", func() bool { return queued(t, "handoff") == 1 })
	high := send(t, tc, ctx, "high")
	eventually(t, 5*time.Second, "high to wait", func() bool { return status(t, "handoff").Admission.Queued["high"] == 1 })
	if st := status(t, "handoff").Admission; st.OldestWaitS <= 0 || st.Limit != 1 || !st.Fixed {
		t.Fatalf("admission while waiting: %+v", st)
	}
	if c := <-first; c != 200 {
		t.Fatalf("first: %d", c)
	}
	// high was queued second but goes first: low is still waiting.
	if c := <-high; c != 200 {
		t.Fatalf("high: %d", c)
	}
	select {
	case c := <-low:
		t.Fatalf("low answered (%d) with high: it must wait for the slot high held", c)
	default:
	}
	if c := <-low; c != 200 {
		t.Fatalf("low: %d", c)
	}
	if st := status(t, "handoff"); st.Admission.InFlight != 0 || queued(t, "handoff") != 0 || st.Priorities.High.Passed != 1 || st.Priorities.Low.Passed != 2 {
		t.Fatalf("after: in flight %d, priorities %+v", st.Admission.InFlight, st.Priorities)
	}
}

// A client that goes away while it waits leaves the queue at once, is
// counted shed_gone, and holds no slot: the next request passes as soon as
// the busy one ends. A chat request has a body, which nothing has read
// while it waits: over HTTP/1.1 the server sees the connection close only
// once the body was read, over HTTP/2 from the stream's reset.
func TestCancelledWaiterLeavesNoSlot(t *testing.T) {
	for _, proto := range []string{"HTTP/1.1", "h2c"} {
		t.Run(proto, func(t *testing.T) {
			name := "cancel" + strings.NewReplacer("/", "", ".", "").Replace(proto)
			// The busy request holds the slot for 3 s: the waiter can only
			// leave by itself.
			_, addr := upstream(t, llmsim.Config{Slots: 1, TokenTime: 100 * time.Millisecond, DefaultMaxTokens: 30})
			tc := startWith(t, "servers {\n\t\tprotocols h1 h2c\n\t}", queueSite(name, addr, 1, "1m", "5s"))
			if proto == "h2c" {
				p := new(http.Protocols)
				p.SetUnencryptedHTTP2(true)
				tc.Client.Transport = &http.Transport{Protocols: p}
			}
			first := send(t, tc, context.Background(), "medium")
			eventually(t, 5*time.Second, "the first request in flight", func() bool { return status(t, name).Admission.InFlight == 1 })
			ctx, cancel := context.WithCancel(context.Background())
			gone := send(t, tc, ctx, "medium")
			eventually(t, 5*time.Second, "the second to wait", func() bool { return queued(t, name) == 1 })
			cancel()
			if c := <-gone; c != 0 {
				t.Fatalf("a cancelled request got %d", c)
			}
			shedGone := `caddy_adaptive_throttle_requests_total{decision="shed_gone",name="` + name + `",priority="medium"}`
			eventually(t, time.Second, "the waiter to leave the queue, counted shed_gone, while the slot is held", func() bool {
				return queued(t, name) == 0 && scrape(t)[shedGone] == 1
			})
			if st := status(t, name); st.Admission.InFlight != 1 {
				t.Fatalf("in flight %d after the waiter left: want the busy request alone", st.Admission.InFlight)
			}
			if c := <-first; c != 200 {
				t.Fatalf("first: %d", c)
			}
			eventually(t, 5*time.Second, "no request in flight", func() bool { return status(t, name).Admission.InFlight == 0 })
			resp := chat(t, tc, "low", false)
			major := 1
			if proto == "h2c" {
				major = 2
			}
			if body := drain(t, resp); resp.StatusCode != 200 || resp.ProtoMajor != major {
				t.Fatalf("after the cancel: %s %d %s", resp.Proto, resp.StatusCode, body)
			}
		})
	}
}

// A reload while requests wait for a slot loses none of them: the learned
// state (and its queues) is the same throttle, and each waiter is answered.
func TestReloadWhileRequestsWait(t *testing.T) {
	_, addr := upstream(t, llmsim.Config{Slots: 1, TokenTime: 40 * time.Millisecond, DefaultMaxTokens: 4})
	tc := start(t, queueSite("reloadwait", addr, 1, "10s", "5s"))
	ctx := context.Background()
	var outs []<-chan int
	outs = append(outs, send(t, tc, ctx, "medium"))
	eventually(t, 5*time.Second, "the first request in flight", func() bool { return status(t, "reloadwait").Admission.InFlight == 1 })
	for i, p := range []string{"low", "medium", "high"} {
		outs = append(outs, send(t, tc, ctx, p))
		eventually(t, 5*time.Second, "a waiter", func() bool { return queued(t, "reloadwait") == i+1 })
	}
	start(t, queueSite("reloadwait", addr, 1, "10s", "6s")) // the reload
	var wg sync.WaitGroup
	codes := make([]int, len(outs))
	for i, o := range outs {
		wg.Go(func() { codes[i] = <-o })
	}
	wg.Wait()
	for i, c := range codes {
		if c != 200 {
			t.Fatalf("request %d across the reload: %d (all: %v)", i, c, codes)
		}
	}
	if st := status(t, "reloadwait"); st.Admission.InFlight != 0 || queued(t, "reloadwait") != 0 {
		t.Fatalf("after the reload: in flight %d, queued %v", st.Admission.InFlight, st.Admission.Queued)
	}
}

// A request that waits while the reserve is held is weighed: its body is
// read for the answer length it asks, and reaches the upstream byte for
// byte (llmsim answers exactly the max_tokens it reads, and refuses a
// body it cannot parse).
func TestWeighedRequestReachesTheUpstreamWhole(t *testing.T) {
	_, addr := upstream(t, llmsim.Config{Slots: 2, TokenTime: 100 * time.Millisecond, DefaultMaxTokens: 10})
	tc := start(t, fmt.Sprintf(`http://localhost:9080 {
	adaptive_throttle {
		name weigh
		gpu off
		priority {
			high_reserve 1
		}
		concurrency {
			limit 2
			max_wait 10s
		}
	}
	reverse_proxy %s
}`, addr))
	ctx := context.Background()
	busy := []<-chan int{send(t, tc, ctx, "low"), send(t, tc, ctx, "low")} // 1 s each
	eventually(t, 5*time.Second, "both slots taken", func() bool { return status(t, "weigh").Admission.InFlight == 2 })
	prompt := strings.Repeat("lorem ipsum ", 500) // a body of some 6 KB, read whole
	body := `{"model":"demo-llm","messages":[{"role":"user","content":"` + prompt + `"}],"max_tokens":7}`
	req, _ := http.NewRequest(http.MethodPost, siteURL+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Priority", "low")
	resp, err := tc.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var answer struct {
		Usage struct {
			PromptTokens     int `json:"prompt_tokens"`
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	raw := drain(t, resp)
	if err := json.Unmarshal([]byte(raw), &answer); resp.StatusCode != 200 || err != nil {
		t.Fatalf("the weighed request: %d %s", resp.StatusCode, raw)
	}
	if answer.Usage.CompletionTokens != 7 || answer.Usage.PromptTokens < 1000 {
		t.Fatalf("usage %+v: the upstream did not get the body as sent (7 tokens asked, a prompt of 6000 characters)", answer.Usage)
	}
	for _, c := range busy {
		if s := <-c; s != 200 {
			t.Fatalf("a busy request: %d", s)
		}
	}
	if sh := status(t, "weigh").Admission.Short; sh.Weighed != 1 {
		t.Fatalf("short status %+v: want the one waiting request weighed", sh)
	}
}
