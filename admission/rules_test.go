package admission

import (
	"strings"
	"testing"
	"time"
)

func TestParseRulesOff(t *testing.T) {
	s, err := ParseRulesOff(" slowstart, standingqueue ,")
	if err != nil {
		t.Fatal(err)
	}
	if !s.Off(RuleSlowStart) || !s.Off(RuleStandingQueue) || s.Off(RuleStuck) || !s.On(RuleStuck) {
		t.Errorf("ParseRulesOff = %v, want slowstart and standingqueue off only", s)
	}
	if got := s.String(); got != "slowstart,standingqueue" {
		t.Errorf("String = %q", got)
	}
	if s, err := ParseRulesOff(""); err != nil || s != 0 {
		t.Errorf(`ParseRulesOff("") = %v, %v; want none off`, s, err)
	}
	for r := range numRules {
		if s, err := ParseRulesOff(r.String()); err != nil || !s.Off(r) {
			t.Errorf("ParseRulesOff(%q) = %v, %v", r, s, err)
		}
	}
	if _, err := ParseRulesOff("slowstart,nosuch"); err == nil || !strings.Contains(err.Error(), `"nosuch"`) || !strings.Contains(err.Error(), "slowstart") {
		t.Errorf("an unknown rule: err = %v, want it named with the known ones", err)
	}
}

// A rule turned off no longer acts: without slow start the limit probes
// up by √limit × smoothing; without the pressure cut, pressure leaves it.
func TestLimitRulesOff(t *testing.T) {
	busy := Signal{TTFB: 5 * 40 * time.Millisecond, Count: 5, InFlight: 10, Waiting: true}
	for _, tc := range []struct {
		off        Rules
		s          Signal
		want       int
		wantDriver string
	}{
		{0, busy, 15, "slow start"},
		{1 << RuleSlowStart, busy, 11, "probing up"},
	} {
		l := NewLimit(Config{Initial: 10})
		l.SetRulesOff(tc.off)
		now := time.Unix(0, 0)
		if v, d := steps(l, &now, 1, tc.s), l.Status().Driver; v != tc.want || d != tc.wantDriver {
			t.Errorf("off %q: limit %d, driver %q; want %d, %q", tc.off, v, d, tc.want, tc.wantDriver)
		}
	}
	pressed := Signal{TTFB: 5 * 40 * time.Millisecond, Count: 5, InFlight: 100, Pressure: true}
	l := NewLimit(Config{Initial: 100})
	l.SetRulesOff(1 << RulePressureCut)
	now := time.Unix(0, 0)
	if v := steps(l, &now, 5, pressed); v < 100 {
		t.Errorf("pressure cut off: limit %d after 5 steps of pressure, want no cut below 100", v)
	}
}
