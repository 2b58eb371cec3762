package adaptivethrottle

import (
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"go.uber.org/zap"

	"github.com/ai-guardian/adaptivethrottle/breaker"
)

// Caddy events emitted on every level trip and recovery and every circuit
// change, with the values in the event's data, for users' own handlers
// (page someone, scale a pool).
const (
	EventTripped   = "adaptive_throttle_tripped"
	EventRecovered = "adaptive_throttle_recovered"
	EventCircuit   = "adaptive_throttle_circuit"
)

// eventQueue bounds events waiting for the emitter: handlers run
// synchronously inside Emit, so the emitter runs on its own goroutine and a
// slow subscriber can neither stall a sampler nor a request; past the bound,
// events are dropped and counted.
const eventQueue = 64

// emitter is the current config's events app and context, swapped on each
// provision so events always go to the live config's subscribers.
type emitter struct {
	app *caddyevents.App
	ctx caddy.Context
}

type event struct {
	name string
	data map[string]any
}

// transition logs a level or circuit change at info and queues its event.
// traceID is the W3C trace id of the request that tipped it, when known.
func (in *instance) transition(tr breaker.Transition, traceID string) {
	name, msg := EventRecovered, "level recovered"
	switch {
	case tr.Name == "circuit":
		name, msg = EventCircuit, "circuit "+tr.To.String()
	case tr.Tripped:
		name, msg = EventTripped, "level tripped"
	}
	fields := []zap.Field{zap.String("instance", in.name), zap.String("level", tr.Name), zap.String("reason", tr.Reason),
		zap.Float64("value", tr.Value), zap.Float64("threshold", tr.Threshold)}
	data := map[string]any{"instance": in.name, "level": tr.Name, "reason": tr.Reason, "value": tr.Value,
		"threshold": tr.Threshold, "at": tr.At}
	if tr.Name == "circuit" {
		fields = append(fields, zap.String("from", tr.From.String()), zap.String("to", tr.To.String()))
		data["from"], data["to"] = tr.From.String(), tr.To.String()
	}
	if traceID != "" {
		fields = append(fields, zap.String("trace_id", traceID))
		data["trace_id"] = traceID
	}
	in.logger.Load().Info(msg, fields...)
	select {
	case in.events <- event{name, data}:
	default:
		in.eventsDropped.Add(1)
	}
}

// emitLoop hands queued events to Caddy's events app until the instance
// stops.
func (in *instance) emitLoop(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	for {
		select {
		case <-stop:
			return
		case e := <-in.events:
			if em := in.emitter.Load(); em != nil {
				em.app.Emit(em.ctx, e.name, e.data)
			}
		}
	}
}

// eventsState is the part of an instance that emits events.
type eventsState struct {
	events        chan event
	emitter       atomic.Pointer[emitter]
	eventsDropped atomic.Uint64
}

// setEmitter points the instance's events at the config being provisioned.
// A bare context with no config behind it (unit tests) has no events app:
// Caddy panics on the lookup, and the instance then emits nothing.
func (in *instance) setEmitter(ctx caddy.Context) (err error) {
	defer func() {
		if r := recover(); r != nil {
			in.logger.Load().Debug("no events app: events off", zap.Any("reason", r))
			err = nil
		}
	}()
	app, err := ctx.App("events")
	if err != nil {
		return err
	}
	in.emitter.Store(&emitter{app: app.(*caddyevents.App), ctx: ctx})
	return nil
}
