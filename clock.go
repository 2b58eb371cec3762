package adaptivethrottle

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/ai-guardian/adaptivethrottle/breaker"
)

// clockTick is the resolution of the request path's clock. LLM requests
// take tens of milliseconds at least, so a millisecond loses nothing.
const clockTick = time.Millisecond

// clock is the request path's time: refreshed every clockTick by one
// goroutine while any instance exists, so that a request reads an atomic
// instead of the system clock. On some virtual machines time.Now costs
// about 60 ns, and a request needs the time twice (entry and first byte).
// Each reading carries the time and the same instant as monotonic
// nanoseconds (breaker.Mono), so that the request path measures durations
// and feeds the circuit by integer subtraction, immune to wall-clock steps.
var clock struct {
	now atomic.Pointer[instant]

	mu    sync.Mutex
	users int
	stop  chan struct{}
	done  chan struct{}
}

// instant is one reading of the clock; never modified once published.
type instant struct {
	t time.Time
	m int64 // breaker.Mono(t)
}

func instantOf(t time.Time) *instant { return &instant{t: t, m: breaker.Mono(t)} }

// tick returns the clock's reading, to within clockTick (more if the ticker
// is starved): one atomic load while the clock runs.
func tick() *instant {
	if i := clock.now.Load(); i != nil {
		return i
	}
	return instantOf(time.Now())
}

// startClock counts one more user, starting the ticker for the first.
func startClock() {
	clock.mu.Lock()
	defer clock.mu.Unlock()
	clock.users++
	if clock.users > 1 {
		return
	}
	clock.now.Store(instantOf(time.Now()))
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
				clock.now.Store(instantOf(time.Now())) // the time it is read, not when the tick fired
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
