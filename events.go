package adaptivethrottle

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"go.uber.org/zap"

	"github.com/ai-guardian/adaptivethrottle/throttle"
)

// setEmitter points t's events (throttle.EventTripped, EventRecovered,
// EventCircuit) at the config being provisioned, as Caddy events. A bare
// context with no config behind it (unit tests) has no events app: Caddy
// panics on the lookup, and the throttle then emits nothing.
func setEmitter(ctx caddy.Context, t *throttle.Throttle, logger *zap.Logger) {
	defer func() {
		if r := recover(); r != nil {
			logger.Debug("no events app: events off", zap.Any("reason", r))
		}
	}()
	app, err := ctx.App("events")
	if err != nil {
		logger.Warn("no events app: events off", zap.Error(err))
		return
	}
	ev := app.(*caddyevents.App)
	t.SetEmitter(func(name string, data map[string]any) { ev.Emit(ctx, name, data) })
}
