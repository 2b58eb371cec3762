package adaptivethrottle

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ai-guardian/adaptivethrottle/breaker"
)

// The circuit's transition is one info line with its values and the trace
// id of the request that tipped it.
func TestTransitionLogCarriesTraceID(t *testing.T) {
	h := newHandler(t, &Handler{Name: t.Name(), Circuit: &breaker.CircuitConfig{MinRequests: 2, ErrorRatio: 0.5}})
	core, logs := observer.New(zap.InfoLevel)
	h.t.SetLogger(zap.New(core))
	fail := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		return caddyhttp.Error(http.StatusBadGateway, errors.New("upstream down"))
	})
	for i, tp := range []string{"", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"} {
		r := request("high", caddy.NewReplacer())
		if tp != "" {
			r.Header.Set("Traceparent", tp)
		}
		_ = h.ServeHTTP(httptest.NewRecorder(), r, fail)
		if i == 0 && logs.Len() != 0 {
			t.Fatalf("logged before the circuit opened: %v", logs.All())
		}
	}
	entries := logs.FilterMessage("circuit open").All()
	if len(entries) != 1 {
		t.Fatalf("want one circuit open line, got %v", logs.All())
	}
	f := entries[0].ContextMap()
	if f["trace_id"] != "4bf92f3577b34da6a3ce929d0e0e4736" || f["from"] != "closed" || f["to"] != "open" || f["value"] != 1.0 {
		t.Fatalf("fields %v", f)
	}
}
