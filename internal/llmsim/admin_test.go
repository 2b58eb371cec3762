package llmsim

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestAdminState(t *testing.T) {
	e := newEnv(t, fastConfig())
	e.call(t, "POST", "/v1/chat/completions", chatBody)
	code, _, b := e.call(t, "GET", "/admin/state", "")
	var st map[string]any
	if err := json.Unmarshal(b, &st); code != 200 || err != nil {
		t.Fatalf("%d %s", code, b)
	}
	for k, want := range map[string]any{
		"model": "demo-llm", "slots": 2.0, "running": 0.0, "waiting": 0.0, "served": 1.0, "ooms": 0.0,
		"memory_used_bytes": float64(DefaultBaseMemory), "memory_total_bytes": float64(DefaultTotalMemory),
		"memory_used_mib": float64(DefaultBaseMemory / MiB),
	} {
		if st[k] != want {
			t.Errorf("state[%q] = %v, want %v", k, st[k], want)
		}
	}
	if f, ok := st["fault"].(map[string]any); !ok || len(f) != 0 {
		t.Errorf("healthy fault %v, want {}", st["fault"])
	}
}

func TestAdminFault(t *testing.T) {
	e := newEnv(t, fastConfig())
	for _, tc := range []struct {
		body string
		want Fault
	}{
		{`{"status":500}`, Fault{Status: 500}},
		{`{"delay":"2s"}`, Fault{Delay: 2 * time.Second}},
		{`{"hang":true}`, Fault{Hang: true}},
		{`{"reset":true}`, Fault{Reset: true}},
		{`{"status":503,"delay":"150ms"}`, Fault{Status: 503, Delay: 150 * time.Millisecond}},
		{`{}`, Fault{}},
	} {
		code, _, b := e.call(t, "POST", "/admin/fault", tc.body)
		if code != 200 {
			t.Fatalf("%s: %d %s", tc.body, code, b)
		}
		if got := e.sim.currentFault(); got != tc.want {
			t.Fatalf("%s: fault %+v, want %+v", tc.body, got, tc.want)
		}
		var st State
		if err := json.Unmarshal(b, &st); err != nil || st.Fault != toFaultJSON(tc.want) {
			t.Fatalf("%s: answered %s", tc.body, b)
		}
	}
	e.sim.SetFault(Fault{Status: 500})
	for _, tc := range []struct{ body, msg string }{
		{`{"status":200}`, "400–599"},
		{`{"status":"500"}`, "invalid JSON"},
		{`{"delay":"soon"}`, "delay"},
		{`{"delay":"-1s"}`, "≥ 0"},
		{`{"hang":true,"typo":1}`, "unknown field"},
		{`{} {}`, "trailing"},
		{``, "invalid JSON"},
	} {
		code, _, b := e.call(t, "POST", "/admin/fault", tc.body)
		if code != 400 || !strings.Contains(string(b), tc.msg) {
			t.Errorf("%q: %d %s, want 400 mentioning %q", tc.body, code, b, tc.msg)
		}
	}
	if got := e.sim.currentFault(); got != (Fault{Status: 500}) {
		t.Fatalf("bad input changed the fault to %+v", got)
	}
	if code, _, _ := e.call(t, "GET", "/admin/fault", ""); code != 405 {
		t.Fatalf("GET /admin/fault: %d", code)
	}
}

func TestAdminSlotsBadInput(t *testing.T) {
	e := newEnv(t, fastConfig())
	for _, tc := range []struct{ body, msg string }{
		{`{}`, "missing"},
		{`{"slots":-1}`, "[0, 4096]"},
		{`{"slots":100000}`, "[0, 4096]"},
		{`{"slots":2.5}`, "invalid JSON"},
		{`{"slot":3}`, "unknown field"},
	} {
		code, _, b := e.call(t, "POST", "/admin/slots", tc.body)
		if code != 400 || !strings.Contains(string(b), tc.msg) {
			t.Errorf("%q: %d %s, want 400 mentioning %q", tc.body, code, b, tc.msg)
		}
	}
	if st := e.sim.State(); st.Slots != 2 {
		t.Fatalf("bad input changed slots to %d", st.Slots)
	}
}
