package adaptivethrottle

import (
	"sync"
	"sync/atomic"
	"time"
)

// clockTick is the resolution of the request path's clock. LLM requests
// take tens of milliseconds at least, so a millisecond loses nothing.
const clockTick = time.Millisecond

// clock is the request path's time: refreshed every clockTick by one
// goroutine while any instance exists, so that a request reads an atomic
// instead of the system clock. On some virtual machines time.Now costs
// about 60 ns, and a request needs the time twice (entry and first byte).
// The stored time.Time keeps its monotonic reading, so durations between
// two reads are immune to wall-clock steps.
var clock struct {
	now atomic.Pointer[time.Time]

	mu    sync.Mutex
	users int
	stop  chan struct{}
	done  chan struct{}
}

// now returns the time, to within clockTick (more if the ticker is starved).
func now() time.Time {
	if t := clock.now.Load(); t != nil {
		return *t
	}
	return time.Now()
}

// startClock counts one more user, starting the ticker for the first.
func startClock() {
	clock.mu.Lock()
	defer clock.mu.Unlock()
	clock.users++
	if clock.users > 1 {
		return
	}
	t := time.Now()
	clock.now.Store(&t)
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
				t := time.Now() // the time it is read, not when the tick fired
				clock.now.Store(&t)
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
