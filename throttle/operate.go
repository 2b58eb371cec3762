package throttle

import (
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/ai-guardian/adaptivethrottle/breaker"
)

// SetOverride installs an operator's override at now, until until (zero:
// until cleared): "drain" refuses every new request with 503 while those
// in flight finish; "shed" grades by priority as if a level that says the
// upstream hurts were tripped (high passes, medium waits for a slot, low is
// refused); "pass" admits everything (the levels and the circuit keep
// measuring). "auto" clears it.
func (t *Throttle) SetOverride(state string, now, until time.Time) error {
	switch state {
	case "auto":
		t.override.Store(nil)
	case "drain", "shed", "pass":
		t.override.Store(&override{State: state, Until: until, Set: now})
	default:
		return fmt.Errorf("override state must be drain, shed, pass or auto, got %q", state)
	}
	fields := []zap.Field{zap.String("name", t.name), zap.String("state", state)}
	if !until.IsZero() {
		fields = append(fields, zap.Time("until", until))
	}
	t.logger.Load().Info("override set", fields...)
	t.refresh(now)
	return nil
}

// Reset forgets what was learned ("baselines": the levels' histories and the
// trips they caused, and the concurrency limit, a pool's upstreams'
// too), closes the circuit and a pool's upstreams' ("circuit"), or both
// ("all").
func (t *Throttle) Reset(what string, now time.Time) error {
	switch what {
	case "baselines", "circuit", "all":
	default:
		return fmt.Errorf("reset what must be baselines, circuit or all, got %q", what)
	}
	if what != "circuit" {
		for _, l := range t.levels {
			l.Forget()
		}
		t.limit.Forget()
		t.pool.Forget()
		t.mu.Lock()
		pc := t.cfg.Priority
		t.mu.Unlock()
		t.resetGate(pc)
	}
	if what != "baselines" {
		t.circuit.Reset(breaker.MonoOf(now))
		t.pool.Close(now)
	}
	t.logger.Load().Info("state reset", zap.String("name", t.name), zap.String("what", what))
	t.refresh(now)
	return nil
}
