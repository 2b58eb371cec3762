package throttle

import (
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/ai-guardian/adaptivethrottle/breaker"
)

// The events a throttle emits on every level trip and recovery and every
// circuit change, with the values in the event's data, for users' own
// handlers (page someone, scale a pool). The Caddy module emits them as
// Caddy events of these names.
const (
	EventTripped   = "adaptive_throttle_tripped"
	EventRecovered = "adaptive_throttle_recovered"
	EventCircuit   = "adaptive_throttle_circuit"
)

// Emitter receives events, on the throttle's own goroutine, one at a time.
type Emitter func(name string, data map[string]any)

// eventQueueLen bounds events waiting for the emitter: an emitter may be
// slow (Caddy runs its handlers synchronously inside Emit), so it runs on
// its own goroutine and can neither stall the sampler nor a request; past
// the bound, events are dropped and counted.
const eventQueueLen = 64

type event struct {
	name string
	data map[string]any
}

// eventQueue hands events to the current emitter.
type eventQueue struct {
	ch      chan event
	emitter atomic.Pointer[Emitter]
	dropped atomic.Uint64
	stop    chan struct{}
	done    chan struct{}
}

func (q *eventQueue) init() { q.ch = make(chan event, eventQueueLen) }

func (q *eventQueue) start() {
	q.stop, q.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(q.done)
		for {
			select {
			case <-q.stop:
				return
			case e := <-q.ch:
				if em := q.emitter.Load(); em != nil {
					(*em)(e.name, e.data)
				}
			}
		}
	}()
}

func (q *eventQueue) close() {
	close(q.stop)
	<-q.done
}

func (q *eventQueue) push(e event) {
	select {
	case q.ch <- e:
	default:
		q.dropped.Add(1)
	}
}

// SetEmitter sends the throttle's events to e from now on (a reload brings
// a new config's subscribers); nil drops them.
func (t *Throttle) SetEmitter(e Emitter) {
	if e == nil {
		t.events.emitter.Store(nil)
		return
	}
	t.events.emitter.Store(&e)
}

// transition logs a level or circuit change at info and queues its event.
func (t *Throttle) transition(tr breaker.Transition) {
	name, msg := EventRecovered, "level recovered"
	switch {
	case tr.Name == "circuit":
		name, msg = EventCircuit, "circuit "+tr.To.String()
	case tr.Tripped:
		name, msg = EventTripped, "level tripped"
	}
	fields := []zap.Field{zap.String("name", t.name), zap.String("level", tr.Name), zap.String("reason", tr.Reason),
		zap.Float64("value", tr.Value), zap.Float64("threshold", tr.Threshold)}
	data := map[string]any{"name": t.name, "level": tr.Name, "reason": tr.Reason, "value": tr.Value,
		"threshold": tr.Threshold, "at": tr.At}
	if tr.Name == "circuit" {
		fields = append(fields, zap.String("from", tr.From.String()), zap.String("to", tr.To.String()))
		data["from"], data["to"] = tr.From.String(), tr.To.String()
	}
	if tr.TraceID != "" {
		fields = append(fields, zap.String("trace_id", tr.TraceID))
		data["trace_id"] = tr.TraceID
	}
	t.logger.Load().Info(msg, fields...)
	t.events.push(event{name, data})
}
