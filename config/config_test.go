package config

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

type block struct {
	N Duration `json:"n,omitempty"`
	F float64  `json:"f,omitempty"`
	I int      `json:"i,omitempty"`
	S string   `json:"s,omitempty"`
	Zeros
}

// A zero written in JSON is told from a key left out, survives a write
// back, and unknown keys are refused as Caddy refuses them.
func TestZerosRoundTrip(t *testing.T) {
	var b block
	_, err := UnmarshalBlock([]byte(`{"n":"0s","f":0,"i":3,"s":"","x":null}`), &b)
	if err == nil || !strings.Contains(err.Error(), `unknown field "x"`) {
		t.Fatalf("unknown key: %v", err)
	}
	z, err := UnmarshalBlock([]byte(`{"n":"0s","f":0,"i":3,"s":""}`), &b)
	if err != nil {
		t.Fatal(err)
	}
	if !z.Has("n") || !z.Has("f") || z.Has("i") || z.Has("s") || z.Has("absent") {
		t.Fatalf("zeros %q", z.Keys())
	}
	if !z.Given("f", 0) || z.Given("absent", 0) || !z.Given("absent", 1) {
		t.Fatal("Given")
	}
	b.Zeros = z
	type plain block
	out, err := MarshalBlock(plain(b), b.Zeros)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(out, &back); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	if back["n"] != 0.0 || back["f"] != 0.0 || back["i"] != 3.0 || len(back) != 3 {
		t.Fatalf("written back as %s", out)
	}
	if out, _ := MarshalBlock(struct{}{}, b.Zeros); string(out) != `{"n":0,"f":0}` {
		t.Fatalf("zeros alone: %s", out)
	}
}

func TestBoundsNameKeyAndBound(t *testing.T) {
	if err := DurationAtMost("qps", "window", Duration(1000000*time.Hour), 24*time.Hour); err == nil ||
		err.Error() != "qps: window must be at most 24h, got 1000000h" {
		t.Fatalf("%v", err)
	}
	if err := AtMost("", "limit", 1e9, MaxRate); err == nil || err.Error() != "limit must be at most 1000000, got 1000000000" {
		t.Fatalf("%v", err)
	}
	if DurationAtMost("a", "b", Duration(time.Hour), time.Hour) != nil || AtMost("a", "b", 5, 5) != nil {
		t.Fatal("a value at its bound refused")
	}
	for d, want := range map[time.Duration]string{time.Hour: "1h", 90 * time.Minute: "1h30m", 30 * time.Second: "30s", 1500 * time.Millisecond: "1.5s", 61 * time.Second: "1m1s"} {
		if got := Format(d); got != want {
			t.Errorf("Format(%v) = %s, want %s", d, got, want)
		}
	}
}
