package tests

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddytest"

	_ "github.com/ai-guardian/adaptivethrottle"
	"github.com/ai-guardian/adaptivethrottle/internal/llmsim"
	"github.com/ai-guardian/adaptivethrottle/throttle"
)

func init() {
	caddy.RegisterModule(eventRecorder{})
}

// eventRecorder is an events handler for tests: it keeps what it receives.
type eventRecorder struct{}

var received struct {
	sync.Mutex
	events []caddy.Event
}

func (eventRecorder) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "events.handlers.test_recorder", New: func() caddy.Module { return new(eventRecorder) }}
}

func (eventRecorder) Handle(_ context.Context, e caddy.Event) error {
	received.Lock()
	received.events = append(received.events, e)
	received.Unlock()
	return nil
}

func eventsNamed(name, instance string) []caddy.Event {
	received.Lock()
	defer received.Unlock()
	var out []caddy.Event
	for _, e := range received.events {
		if e.Name() == name && e.Data["name"] == instance {
			out = append(out, e)
		}
	}
	return out
}

func caddyJSON(t *testing.T, cfg string) *caddytest.Tester {
	t.Helper()
	tc := caddytest.NewTester(t).WithDefaultOverrides(caddytest.Config{TestRequestTimeout: 20 * time.Second})
	tc.InitServer(cfg, "json")
	if t.Failed() {
		t.FailNow()
	}
	loaded.Add(1)
	return tc
}

// A handler subscribed through Caddy's events app receives the trip and the
// recovery of a level, with its values, and circuit changes.
func TestEventsReachSubscribers(t *testing.T) {
	sim, addr := upstream(t, llmsim.Config{})
	tc := caddyJSON(t, fmt.Sprintf(`{
	"admin": {"listen": "localhost:2999"},
	"logging": {"logs": {"default": {"level": "ERROR"}}},
	"apps": {
		"events": {"subscriptions": [{
			"events": [%q, %q, %q],
			"handlers": [{"handler": "test_recorder"}]
		}]},
		"pki": {"certificate_authorities": {"local": {"install_trust": false}}},
		"http": {"http_port": 9080, "https_port": 9443, "servers": {"srv0": {
			"listen": [":9080"],
			"automatic_https": {"disable": true},
			"routes": [{"handle": [
				{"handler": "adaptive_throttle", "name": "events", "gpu": {"source": "off"},
				 "latency": {"window": "1s", "ceiling": "150ms"},
				 "circuit": {"min_requests": 2, "open_for": "1m"}},
				{"handler": "reverse_proxy", "upstreams": [{"dial": %q}]}
			]}]
		}}}
	}
}`, throttle.EventTripped, throttle.EventRecovered, throttle.EventCircuit, addr))

	sim.SetFault(llmsim.Fault{Delay: 300 * time.Millisecond})
	drain(t, chat(t, tc, "high", false))
	eventually(t, 5*time.Second, "a trip event", func() bool { return len(eventsNamed(throttle.EventTripped, "events")) > 0 })
	e := eventsNamed(throttle.EventTripped, "events")[0]
	if e.Data["level"] != "latency" || e.Data["value"].(float64) < 0.3 || e.Data["reason"] == "" {
		t.Fatalf("trip event data: %v", e.Data)
	}
	if e.Origin() == nil || e.Origin().CaddyModule().ID != "http.handlers.adaptive_throttle" {
		t.Fatalf("trip event origin: %v", e.Origin())
	}

	sim.SetFault(llmsim.Fault{})
	stop := lightTraffic(t, tc.Client, 5)
	eventually(t, 10*time.Second, "a recovery event", func() bool { return len(eventsNamed(throttle.EventRecovered, "events")) > 0 })
	stop()
	if e := eventsNamed(throttle.EventRecovered, "events")[0]; e.Data["level"] != "latency" {
		t.Fatalf("recovery event data: %v", e.Data)
	}

	sim.SetFault(llmsim.Fault{Status: 500})
	for range 2 {
		drain(t, chat(t, tc, "high", false))
	}
	eventually(t, 5*time.Second, "a circuit event", func() bool { return len(eventsNamed(throttle.EventCircuit, "events")) > 0 })
	if e := eventsNamed(throttle.EventCircuit, "events")[0]; e.Data["from"] != "closed" || e.Data["to"] != "open" {
		t.Fatalf("circuit event data: %v", e.Data)
	}
}
