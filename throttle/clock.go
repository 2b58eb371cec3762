package throttle

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/ai-guardian/adaptivethrottle/breaker"
)

// clockTick is the resolution of the request path's clock. LLM requests
// take tens of milliseconds at least, so a millisecond loses nothing.
const clockTick = time.Millisecond

// Instant is one reading of the request path's clock: the time, and the
// same instant as breaker.Mono nanoseconds, so that a request measures its
// duration and feeds the circuit by integer subtraction, immune to
// wall-clock steps.
type Instant struct {
	Time time.Time
	Mono int64
}

// InstantOf is t as an Instant (tests pass synthetic times this way).
func InstantOf(t time.Time) Instant { return Instant{Time: t, Mono: breaker.Mono(t)} }

// clock is the request path's time: refreshed every clockTick by one
// goroutine while any Throttle is open, so that a request reads an atomic
// instead of the system clock. On some virtual machines time.Now costs
// about 60 ns, and a request needs the time twice (entry and first byte).
var clock struct {
	now atomic.Pointer[Instant] // never modified once published

	mu    sync.Mutex
	users int
	stop  chan struct{}
	done  chan struct{}
}

// Now returns the request path's clock, to within clockTick (more if its
// ticker is starved): one atomic load while a Throttle is open, else the
// system clock.
func Now() Instant {
	if i := clock.now.Load(); i != nil {
		return *i
	}
	return systemNow()
}

// systemNow is Now without the clock running; apart so that Now inlines.
func systemNow() Instant { return InstantOf(time.Now()) }

// startClock counts one more user, starting the ticker for the first.
func startClock() {
	clock.mu.Lock()
	defer clock.mu.Unlock()
	clock.users++
	if clock.users > 1 {
		return
	}
	now := InstantOf(time.Now())
	clock.now.Store(&now)
	clock.stop, clock.done = make(chan struct{}), make(chan struct{})
	go func(stop, done chan struct{}) {
		defer close(done)
		tk := time.NewTicker(clockTick)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				now := InstantOf(time.Now()) // the time it is read, not when the tick fired
				clock.now.Store(&now)
			}
		}
	}(clock.stop, clock.done)
}

// stopClock counts one user less, stopping the ticker after the last.
func stopClock() {
	clock.mu.Lock()
	defer clock.mu.Unlock()
	clock.users--
	if clock.users > 0 {
		return
	}
	close(clock.stop)
	<-clock.done
	clock.now.Store(nil)
}
