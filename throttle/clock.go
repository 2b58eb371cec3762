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

// clock is the request path's time: refreshed every clockTick by one
// goroutine while any Throttle is open, so that a request reads an atomic
// instead of the system clock. A request reads the time three times
// (entry, first byte, exit), and time.Now costs about 55 ns on the 2-core
// virtual machine of BENCHMARKS.md: there BenchmarkClock puts a request's
// whole path through Middleware at about 105 ns with the ticker and 275 ns
// with time.Now (145 and 260 ns on both cores), and the healthy hot path
// holds its 150 ns only with the ticker. The ticker's cost is CPU, not
// latency: BenchmarkClockIdle puts its 1,000 wake-ups a second at about
// 23 ms of CPU a second on the same machine, whether or not requests come.
var clock struct {
	now atomic.Int64 // a breaker.Mono; 0 while no Throttle is open

	mu    sync.Mutex
	users int
	stop  chan struct{}
	done  chan struct{}
}

// Now returns the request path's clock, to within clockTick (more if its
// ticker is starved): one atomic load while a Throttle is open, else the
// system clock.
func Now() breaker.Mono {
	if m := clock.now.Load(); m != 0 {
		return breaker.Mono(m)
	}
	return systemNow()
}

// systemNow is Now without the clock running; apart so that Now inlines.
func systemNow() breaker.Mono { return breaker.MonoOf(time.Now()) }

// tick publishes the time it is read, not when the tick fired. A Mono
// read after the package's first time.Now is never 0.
func tick() { clock.now.Store(int64(systemNow())) }

// startClock counts one more user, starting the ticker for the first.
func startClock() {
	clock.mu.Lock()
	defer clock.mu.Unlock()
	clock.users++
	if clock.users > 1 {
		return
	}
	tick()
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
				tick()
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
	clock.now.Store(0)
}
