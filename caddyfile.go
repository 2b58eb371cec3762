package adaptivethrottle

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"

	"github.com/ai-guardian/adaptivethrottle/admission"
	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/config"
	"github.com/ai-guardian/adaptivethrottle/levels/gpu"
	"github.com/ai-guardian/adaptivethrottle/levels/latency"
	"github.com/ai-guardian/adaptivethrottle/levels/qps"
	"github.com/ai-guardian/adaptivethrottle/priority"
	"github.com/ai-guardian/adaptivethrottle/throttle"
)

func init() {
	httpcaddyfile.RegisterDirective("adaptive_throttle", handlerDirective)
	httpcaddyfile.RegisterDirectiveOrder("adaptive_throttle", httpcaddyfile.Before, "reverse_proxy")
}

// handlerDirective is what httpcaddyfile.RegisterHandlerDirective would
// register, except that a matcher token Caddy cannot resolve (an undefined
// @name) fails naming the file and line: Caddy's own error for it carries
// neither (httpcaddyfile's matcherSetFromMatcherToken, as of v2.11.9).
func handlerDirective(h httpcaddyfile.Helper) ([]httpcaddyfile.ConfigValue, error) {
	if !h.Next() {
		return nil, h.ArgErr()
	}
	matcherSet, err := h.ExtractMatcherSet()
	if err != nil {
		if hasLocation(err, h.File()) {
			return nil, err
		}
		return nil, h.WrapErr(err) // the cursor is on the matcher token
	}
	handler, err := parseCaddyfile(h)
	if err != nil {
		return nil, err
	}
	return h.NewRoute(matcherSet, handler), nil
}

// hasLocation reports whether err already names a line of file, as
// caddyfile.Dispenser.WrapErr writes it (", at file:line"), so that
// wrapping it again would print the location twice. Caddy's errors carry
// no type that says so: some of its matchers' errors name the line, others
// (an unknown matcher module) do not.
func hasLocation(err error, file string) bool { return strings.Contains(err.Error(), ", at "+file+":") }

// stateKey counts the unnamed adaptive_throttle directives in one
// Caddyfile: the n-th is called default-n (the first plain default), so
// adding or removing a named one renames none of them.
const stateKey = "adaptive_throttle_unnamed"

// namesKey maps each name given in one Caddyfile to the settings and the
// place of its first handler.
const namesKey = "adaptive_throttle_names"

type namedAt struct{ settings, at string }

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var file string
	var line int
	if h.Next() { // the directive's own token, for the place a clash names
		file, line = h.File(), h.Line()
		h.Prev()
	}
	t := new(Handler)
	if err := t.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	if t.Name == "" {
		n, _ := h.State[stateKey].(int)
		n++
		h.State[stateKey] = n
		t.Name = defaultName
		if n > 1 {
			t.Name += "-" + strconv.Itoa(n)
		}
	}
	// Handlers of one name share one learned state: with different
	// settings, each provision would apply its own over the other's.
	settings, err := json.Marshal(t)
	if err != nil {
		return nil, err
	}
	names, _ := h.State[namesKey].(map[string]namedAt)
	if names == nil {
		names = map[string]namedAt{}
		h.State[namesKey] = names
	}
	here := fmt.Sprintf("%s:%d", file, line)
	if first, ok := names[t.Name]; ok && first.settings != string(settings) {
		return nil, fmt.Errorf("adaptive_throttle %q is configured at %s with other settings: handlers that share a name share one learned state and must agree; give this one its own name, at %s", t.Name, first.at, here)
	} else if !ok {
		names[t.Name] = namedAt{settings: string(settings), at: here}
	}
	return t, nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax,
// with each default and, after "≤", the largest value taken (README, "The
// directive": bounds and zeros):
//
//	adaptive_throttle [<matcher>] {
//		name        <name>
//		qps {
//			window       <duration>   # 5m; 10s ≤ 24h
//			sigma        <n>          # 2; 0: the mean; ≤ 100
//			trip_factor  <n>          # 1.5; above 1, ≤ 100
//			min_baseline <req/s>      # 5; 0: no floor; ≤ 1000000
//			max_rate     <req/s>      # none: a fixed ceiling besides the learned one; ≤ 1000000
//			warmup       <seconds>    # 30; 0: none; ≤ the window
//		}
//		gpu off
//		gpu {
//			source      auto | nvml | nvidia-smi [<path>] | prometheus <url>... | off
//			metric      <name> [total|free <name> | max <n>]
//			labels      <label>=<value>...
//			aggregate   max | mean
//			threshold   <percent>%|<fraction>   # 75%, and above the memory floor when unset
//			interval    <duration>   # 2s; 100ms ≤ 1h
//			timeout     <duration>   # 80% of interval
//			stale_after <duration>   # 10s; ≤ 24h
//			devices     <index|uuid>...
//			on_error    allow | shed
//		}
//		upstream_gauge {             # with lb_policy adaptive_throttle: each upstream's own gauge
//			path        <path>       # /metrics, on each upstream's dial address
//			metric      <name> [total|free <name> | max <n>]   # vllm:kv_cache_usage_perc
//			labels      <label>=<value>...
//			threshold   <percent>%|<fraction>   # 75%
//			interval    <duration>   # 2s; 100ms ≤ 1h
//			timeout     <duration>   # 80% of interval
//			stale_after <duration>   # 10s; ≤ 24h
//		}
//		latency {
//			percentile  <n>          # 99
//			window      <duration>   # 10s; 1s ≤ 1h
//			factor      <n>          # 1.8; above 1, ≤ 100
//			consecutive <n>          # 3; ≤ 1000
//			ceiling     <duration>   # 8s, or 2 × slo if more; ≤ 1h
//			measure     ttfb | total
//			min_threshold <duration> # 500ms (or the ceiling, if lower): nothing faster is slow
//			slo         <duration>   # none: judge the percentile against this objective instead, and wait for a slot only while an answer can be on time; ≤ 1h
//		}
//		circuit {
//			error_ratio   <n>        # 0.5; in (0,1]
//			min_requests  <n>        # 20; ≤ 1000000
//			window        <duration> # 30s; 1s ≤ 1h
//			open_for      <duration> # 60s; ≤ 24h
//			max_open_for  <duration> # 16 × open_for; ≤ 24h
//			probes        <n>        # 1; ≤ 1024
//			probe_timeout <duration> # 30s; ≤ 1h
//		}
//		priority {
//			from         <placeholder>  # {header.X-Priority}
//			default      high | medium | low
//			high_reserve <n> | <percent>%   # 20% of the concurrency limit; 0 or 0%: none; n ≤ 100000
//			trusted      <matcher...>   # honour claims only from these requests
//		}
//		concurrency {
//			limit    auto | <n>         # auto: learned from time to first byte; ≤ max
//			min      <n>                # 1
//			max      <n>                # 1000, or the fixed limit if more; ≤ 100000
//			initial  <n>                # 4
//			queue    <n>                # 1000 waiting, per priority; ≤ 100000
//			max_wait <duration> | [high <d>] [medium <d>] [low <d>]   # high 2s, medium and low 1s; ≤ 1h
//			weigh_body <size> | off     # 64KiB: read max_tokens from bodies up to this, when it matters; ≤ 16MiB
//		}
//		retry_after <duration>         # 5s: the least Retry-After; ≤ 1h
//		retry_after_max <duration>     # 60s, or retry_after if more: the most; ≤ 1h
//		persist off                    # keep nothing across restarts
//		persist {                      # on by default: what was learned is kept in Caddy's storage
//			max_age <duration>         # 1h: an older stored state is not restored; ≤ 30d
//		}
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]int{} // top-level key → its line
	directiveLine := d.Line()
	for d.NextBlock(0) {
		key := d.Val()
		if _, ok := seen[key]; ok {
			// A second block would silently replace the first.
			return d.Errf("%s given twice in one adaptive_throttle; merge the two", key)
		}
		seen[key] = d.Line()
		var err error
		switch key {
		case "name":
			err = oneArg(d, "", func(v string) error { h.Name = v; return nil })
		case "qps":
			h.QPS = new(qps.Config)
			err = parseBlock(d, func(d *caddyfile.Dispenser) error { return qpsKey(d, h.QPS) }, func() error { return h.QPS.Validate() })
		case "gpu":
			h.GPU = new(gpu.Config)
			if d.NextArg() {
				if d.Val() != "off" || d.NextArg() {
					return d.Errf("gpu takes a block, or the single argument off")
				}
				line := d.Line()
				if d.NextBlock(d.Nesting()) {
					return fmt.Errorf("gpu off takes no block: the GPU level is off, at %s:%d", d.File(), line)
				}
				h.GPU.Source = "off"
				continue
			}
			err = parseBlock(d, func(d *caddyfile.Dispenser) error { return gpuKey(d, h.GPU) }, func() error {
				g := *h.GPU
				g.Defaults() // its settings are checked against each other's defaults
				return g.Validate()
			})
		case "upstream_gauge":
			var path string
			var g gpu.Config
			err = parseBlock(d, func(d *caddyfile.Dispenser) error { return upstreamGaugeKey(d, &path, &g) }, func() error {
				u := gpu.UpstreamOf(path, g)
				h.UpstreamGauge = &u
				return u.Validate()
			})
		case "latency":
			h.Latency = new(latency.Config)
			err = parseBlock(d, func(d *caddyfile.Dispenser) error { return latencyKey(d, h.Latency) }, func() error { return h.Latency.Validate() })
		case "circuit":
			h.Circuit = new(breaker.CircuitConfig)
			err = parseBlock(d, func(d *caddyfile.Dispenser) error { return circuitKey(d, h.Circuit) }, func() error { return h.Circuit.Validate() })
		case "priority":
			h.Priority = new(PriorityConfig)
			err = parseBlock(d, func(d *caddyfile.Dispenser) error { return priorityKey(d, h.Priority) }, func() error { return h.Priority.Validate() })
		case "concurrency":
			h.Concurrency = new(admission.Config)
			err = parseBlock(d, func(d *caddyfile.Dispenser) error { return concurrencyKey(d, h.Concurrency) }, func() error { return h.Concurrency.Validate() })
		case "retry_after":
			err = durationKey(d, "", &h.RetryAfter)
		case "retry_after_max":
			err = durationKey(d, "", &h.RetryAfterMax)
		case "persist":
			h.Persist = new(PersistConfig)
			if d.NextArg() {
				if d.Val() != "off" || d.NextArg() {
					return d.Errf("persist takes a block, or the single argument off")
				}
				line := d.Line()
				if d.NextBlock(d.Nesting()) {
					return fmt.Errorf("persist off takes no block: nothing is kept, at %s:%d", d.File(), line)
				}
				h.Persist.Off = true
				continue
			}
			err = parseBlock(d, func(d *caddyfile.Dispenser) error { return persistKey(d, h.Persist) }, func() error { return h.Persist.Validate() })
		default:
			return unknownKey(d, "")
		}
		if err != nil {
			return err
		}
	}
	// What only the whole can judge: the Retry-After bounds, and the
	// floor against the ceiling.
	top := throttle.Config{RetryAfter: h.RetryAfter, RetryAfterMax: h.RetryAfterMax}
	if err := top.Validate(); err != nil {
		return fmt.Errorf("%w, at %s:%d", err, d.File(), lineOf(err, "", seen, directiveLine))
	}
	return nil
}

// keys lists each block's Caddyfile keys ("" is the directive's own), as
// unknownKey names them; each block's parser below takes exactly these.
var keys = map[string][]string{
	"":                {"name", "qps", "gpu", "upstream_gauge", "latency", "circuit", "priority", "concurrency", "retry_after", "retry_after_max", "persist"},
	"qps":             {"window", "sigma", "trip_factor", "min_baseline", "max_rate", "warmup"},
	"gpu":             {"source", "metric", "labels", "aggregate", "threshold", "interval", "timeout", "stale_after", "devices", "on_error"},
	gpu.UpstreamBlock: {"path", "metric", "labels", "threshold", "interval", "timeout", "stale_after"},
	"latency":         {"percentile", "window", "factor", "consecutive", "ceiling", "measure", "min_threshold", "slo"},
	"circuit":         {"error_ratio", "min_requests", "window", "open_for", "max_open_for", "probes", "probe_timeout"},
	"priority":        {"from", "default", "high_reserve", "trusted"},
	"concurrency":     {"limit", "min", "max", "initial", "queue", "max_wait", "weigh_body"},
	"persist":         {"max_age"},
}

// unknownKey refuses the key on the line, naming the block's keys.
func unknownKey(d *caddyfile.Dispenser, block string) error {
	in := block
	if in == "" {
		in = "adaptive_throttle"
	}
	return keyErr(d, block, d.Val(), "is unknown (%s takes %s)", in, strings.Join(keys[block], ", "))
}

// parseBlock runs sub for each line of a nested block (a block is
// required; a key given twice is an error), then checks the block as a
// whole, so that what only the block can judge (a window against its
// minimum, a timeout against the interval) fails adapt at the line of the
// key it is about.
func parseBlock(d *caddyfile.Dispenser, sub func(*caddyfile.Dispenser) error, check func() error) error {
	name := d.Val()
	if d.NextArg() {
		return d.Errf("%s takes a block, not arguments", name)
	}
	start, blockLine := d.Nesting(), d.Line()
	lines := map[string]int{} // key → the line it is on
	for d.NextBlock(start) {
		if _, ok := lines[d.Val()]; ok {
			return d.Errf("%s: %s given twice", name, d.Val())
		}
		lines[d.Val()] = d.Line()
		if err := sub(d); err != nil {
			return err
		}
	}
	if err := check(); err != nil {
		return fmt.Errorf("%w, at %s:%d", err, d.File(), lineOf(err, name, lines, blockLine))
	}
	return nil
}

// lineOf is the line of the first key of block that err (a Validate's:
// one config.Error, or several joined) is about and the block wrote, or the
// block's own line when it wrote none of them (a value checked against
// another's default).
func lineOf(err error, block string, lines map[string]int, blockLine int) int {
	for _, e := range keyErrors(err) {
		if l, ok := lines[caddyfileKey(block, e.Key)]; ok && e.Block == block {
			return l
		}
	}
	return blockLine
}

// keyErrors lists the config errors in err, in order: err itself, or
// those it joins.
func keyErrors(err error) []*config.Error {
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		var all []*config.Error
		for _, err := range joined.Unwrap() {
			all = append(all, keyErrors(err)...)
		}
		return all
	}
	if e := (*config.Error)(nil); errors.As(err, &e) {
		return []*config.Error{e}
	}
	return nil
}

// caddyfileKey is the Caddyfile key that writes the JSON key of block
// (its first word: "max_wait high" is a priority's max_wait): the
// Caddyfile writes some JSON keys as arguments of another key.
func caddyfileKey(block, key string) string {
	key, _, _ = strings.Cut(key, " ")
	switch block + " " + key {
	case "gpu urls", "gpu path":
		return "source" // source prometheus <url>..., source nvidia-smi <path>
	case "gpu pair_kind", "gpu pair_metric", "gpu metric_max":
		return "metric" // metric <name> total|free <name>, metric <name> max <n>
	case "priority high_reserve_share":
		return "high_reserve" // high_reserve 20%
	}
	return key
}

// Each block's parser takes one line of its block: the key the cursor is
// on and its arguments. A number's bounds, and what only the block as a
// whole can judge, its Validate says at the end of the block; a whole
// number or a number written as 0 is recorded in the block's Zeros, so
// that the default never replaces it.

func qpsKey(d *caddyfile.Dispenser, c *qps.Config) error {
	const b = "qps"
	switch d.Val() {
	case "window":
		return durationKey(d, b, &c.Window)
	case "sigma":
		return numberKey(d, b, &c.Sigma, &c.Zeros)
	case "trip_factor":
		return numberKey(d, b, &c.TripFactor, &c.Zeros)
	case "min_baseline":
		return numberKey(d, b, &c.MinBaseline, &c.Zeros)
	case "max_rate":
		return numberKey(d, b, &c.MaxRate, &c.Zeros)
	case "limit":
		return keyErr(d, b, "limit", "is now max_rate (req/s; concurrency's limit counts slots)")
	case "warmup":
		return wholeKey(d, b, &c.Warmup, &c.Zeros)
	}
	return unknownKey(d, b)
}

func latencyKey(d *caddyfile.Dispenser, c *latency.Config) error {
	const b = "latency"
	switch d.Val() {
	case "percentile":
		return numberKey(d, b, &c.Percentile, &c.Zeros)
	case "window":
		return durationKey(d, b, &c.Window)
	case "factor":
		return numberKey(d, b, &c.Factor, &c.Zeros)
	case "consecutive":
		return wholeKey(d, b, &c.Consecutive, &c.Zeros)
	case "ceiling":
		return durationKey(d, b, &c.Ceiling)
	case "measure":
		return oneArg(d, b, func(v string) error { c.Measure = v; return nil }) // Validate names the choices
	case "min_threshold":
		return durationKey(d, b, &c.MinThreshold)
	case "slo":
		return durationKey(d, b, &c.SLO)
	}
	return unknownKey(d, b)
}

func circuitKey(d *caddyfile.Dispenser, c *breaker.CircuitConfig) error {
	const b = "circuit"
	switch d.Val() {
	case "error_ratio":
		return numberKey(d, b, &c.ErrorRatio, &c.Zeros)
	case "min_requests":
		return wholeKey(d, b, &c.MinRequests, &c.Zeros)
	case "window":
		return durationKey(d, b, &c.Window)
	case "open_for":
		return durationKey(d, b, &c.OpenFor)
	case "max_open_for":
		return durationKey(d, b, &c.MaxOpenFor)
	case "probes":
		return wholeKey(d, b, &c.Probes, &c.Zeros)
	case "probe_timeout":
		return durationKey(d, b, &c.ProbeTimeout)
	}
	return unknownKey(d, b)
}

func persistKey(d *caddyfile.Dispenser, c *PersistConfig) error {
	switch d.Val() {
	case "max_age":
		return durationKey(d, "persist", &c.MaxAge)
	case "off":
		return keyErr(d, "persist", "off", "stands alone, as: persist off")
	}
	return unknownKey(d, "persist")
}

func gpuKey(d *caddyfile.Dispenser, c *gpu.Config) error {
	switch d.Val() {
	case "source":
		args := d.RemainingArgs()
		if len(args) == 0 {
			return d.ArgErr()
		}
		c.Source = args[0]
		switch c.Source {
		case "auto", "nvml", "off":
			if len(args) > 1 {
				return keyErr(d, "gpu", "source", "%s takes no further arguments", c.Source)
			}
		case "nvidia-smi":
			if len(args) > 2 {
				return keyErr(d, "gpu", "source", "nvidia-smi takes at most one path")
			}
			if len(args) == 2 {
				c.Path = args[1]
			}
		case "prometheus":
			if len(args) < 2 {
				return keyErr(d, "gpu", "source", "prometheus needs at least one /metrics URL")
			}
			c.URLs = args[1:]
		default:
			return keyErr(d, "gpu", "source", "must be auto, nvml, nvidia-smi, prometheus or off, got %q", c.Source)
		}
		return nil
	case "aggregate":
		return oneArg(d, "gpu", func(v string) error {
			if v != "max" && v != "mean" {
				return keyErr(d, "gpu", "aggregate", "must be max or mean, got %q", v)
			}
			c.Aggregate = v
			return nil
		})
	case "devices":
		c.Devices = d.RemainingArgs()
		if len(c.Devices) == 0 {
			return d.ArgErr()
		}
		return nil
	case "on_error":
		return oneArg(d, "gpu", func(v string) error {
			if v != "allow" && v != "shed" {
				return keyErr(d, "gpu", "on_error", "must be allow or shed, got %q", v)
			}
			c.OnError = v
			return nil
		})
	}
	return gaugeKey(d, "gpu", c)
}

// upstreamGaugeKey reads a key of the upstream_gauge block: its path, or
// a gauge key as the gpu block's (gaugeKey).
func upstreamGaugeKey(d *caddyfile.Dispenser, path *string, c *gpu.Config) error {
	switch d.Val() {
	case "path":
		return oneArg(d, gpu.UpstreamBlock, func(v string) error { *path = v; return nil })
	}
	return gaugeKey(d, gpu.UpstreamBlock, c)
}

// gaugeKey reads a key the gpu and upstream_gauge blocks share (what a
// prometheus source reads, and how it is judged) into c, naming block in
// its errors.
func gaugeKey(d *caddyfile.Dispenser, block string, c *gpu.Config) error {
	switch d.Val() {
	case "metric":
		args := d.RemainingArgs()
		switch len(args) {
		case 1:
			c.Metric = args[0]
		case 3:
			if args[1] == "max" {
				f, err := strconv.ParseFloat(args[2], 64)
				if err != nil || !(f > 0) || math.IsInf(f, 0) {
					return keyErr(d, block, "metric", "%s max %q: must be a positive number (the count that reads as 100%%)", args[0], args[2])
				}
				c.Metric, c.MetricMax = args[0], f
				return nil
			}
			if args[1] != "total" && args[1] != "free" {
				return keyErr(d, block, "metric", "%s: the second argument must be total, free or max, got %q", args[0], args[1])
			}
			c.Metric, c.PairKind, c.PairMetric = args[0], args[1], args[2]
		default:
			return keyErr(d, block, "metric", "takes <name>, <name> total|free <name> or <name> max <n>")
		}
		return nil
	case "labels":
		args := d.RemainingArgs()
		if len(args) == 0 {
			return d.ArgErr()
		}
		c.Labels = make(map[string]string, len(args))
		for _, a := range args {
			k, v, ok := strings.Cut(a, "=")
			if !ok || k == "" {
				return keyErr(d, block, "labels", "filter %q must be name=value", a)
			}
			c.Labels[k] = strings.Trim(v, `"`)
		}
		return nil
	case "threshold":
		return oneArg(d, block, func(v string) error {
			f, err := parseFraction(v)
			if err != nil {
				return keyErr(d, block, "threshold", "must be a percentage such as 75%% or a fraction in (0,1], got %q", v)
			}
			c.Threshold = f
			return nil
		})
	case "interval":
		return durationKey(d, block, &c.Interval)
	case "timeout":
		return durationKey(d, block, &c.Timeout)
	case "stale_after":
		return durationKey(d, block, &c.StaleAfter)
	}
	return unknownKey(d, block)
}

func priorityKey(d *caddyfile.Dispenser, c *PriorityConfig) error {
	if why, ok := priority.Removed[d.Val()]; ok {
		return keyErr(d, "priority", d.Val(), "%s", why)
	}
	switch d.Val() {
	case "from":
		return oneArg(d, "priority", func(v string) error {
			if !strings.Contains(v, "{") {
				// A literal would give every request the same claim.
				return keyErr(d, "priority", "from", "must be a placeholder such as {header.X-Priority}, got %q", v)
			}
			c.From = v
			return nil
		})
	case "high_reserve":
		return oneArg(d, "priority", func(v string) error {
			if strings.HasSuffix(v, "%") {
				f, err := parseNumber(v)
				if err != nil || f < 0 || f >= 1 {
					return keyErr(d, "priority", "high_reserve", "must be a share from 0%% to under 100%% of the limit, or a whole number of slots, got %q", v)
				}
				c.HighReserveShare = f
				if f == 0 {
					c.Zeros.Add("high_reserve_share") // 0%: no reserve
				}
				return nil
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return keyErr(d, "priority", "high_reserve", "must be a whole number of slots ≥ 0, or a share such as 20%%, got %q", v)
			}
			c.HighReserve = &n
			return nil
		})
	case "trusted":
		set, err := caddyhttp.ParseCaddyfileNestedMatcherSet(d)
		if err != nil {
			if hasLocation(err, d.File()) {
				// Most of Caddy's matcher errors name the line already.
				return fmt.Errorf("priority: trusted: %w", err)
			}
			return d.Errf("priority: trusted: %v", err)
		}
		if len(set) == 0 {
			return keyErr(d, "priority", "trusted", "needs a matcher, such as: trusted remote_ip 10.0.0.0/8")
		}
		c.TrustedRaw = set
		return nil
	case "default":
		return oneArg(d, "priority", func(v string) error { c.Default = v; return nil }) // Validate names the choices
	}
	return unknownKey(d, "priority")
}

func concurrencyKey(d *caddyfile.Dispenser, c *admission.Config) error {
	switch d.Val() {
	case "limit":
		return oneArg(d, "concurrency", func(v string) error {
			if v == "auto" {
				c.Limit = 0
				return nil
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return keyErr(d, "concurrency", "limit", "must be auto or a whole number ≥ 1, got %q", v)
			}
			c.Limit = n
			return nil
		})
	case "weigh_body":
		return oneArg(d, "concurrency", func(v string) error {
			if v == "off" {
				c.WeighBody = -1
				return nil
			}
			n, err := humanize.ParseBytes(v)
			if err != nil || n < 1 || n > admission.MaxWeighBody {
				return keyErr(d, "concurrency", "weigh_body", "must be a size such as 64KiB (at most 16MiB), or off, got %q", v)
			}
			c.WeighBody = int64(n)
			return nil
		})
	case "max_wait":
		args := d.RemainingArgs()
		wait := func(v string) (config.Duration, error) {
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur <= 0 {
				return 0, keyErr(d, "concurrency", "max_wait", "must be a positive duration such as 1s, got %q", v)
			}
			return config.Duration(dur), nil
		}
		switch {
		case len(args) == 1:
			w, err := wait(args[0])
			c.MaxWait = admission.MaxWait{High: w, Medium: w, Low: w}
			return err
		case len(args) == 0 || len(args)%2 != 0:
			return keyErr(d, "concurrency", "max_wait", "takes one duration, or pairs such as: max_wait high 5s medium 1s low 500ms")
		}
		seen := map[string]bool{}
		for i := 0; i < len(args); i += 2 {
			w, err := wait(args[i+1])
			if err != nil {
				return err
			}
			if seen[args[i]] {
				return keyErr(d, "concurrency", "max_wait", "%s given twice", args[i])
			}
			seen[args[i]] = true
			switch args[i] {
			case "high":
				c.MaxWait.High = w
			case "medium":
				c.MaxWait.Medium = w
			case "low":
				c.MaxWait.Low = w
			default:
				return keyErr(d, "concurrency", "max_wait", "%q is no priority (high, medium or low)", args[i])
			}
		}
		return nil
	case "min":
		return wholeKey(d, "concurrency", &c.Min, &c.Zeros)
	case "max":
		return wholeKey(d, "concurrency", &c.Max, &c.Zeros)
	case "initial":
		return wholeKey(d, "concurrency", &c.Initial, &c.Zeros)
	case "queue":
		return wholeKey(d, "concurrency", &c.Queue, &c.Zeros)
	}
	return unknownKey(d, "concurrency")
}

// oneArg reads exactly one argument of a key of block ("" at the top
// level) and hands it to set.
func oneArg(d *caddyfile.Dispenser, block string, set func(string) error) error {
	name := d.Val()
	if !d.NextArg() {
		return keyErr(d, block, name, "needs a value")
	}
	v := d.Val()
	if d.NextArg() {
		return keyErr(d, block, name, "takes one value, got more")
	}
	return set(v)
}

// keyErr is a config error (config.Errorf: "block: key message") at the
// dispenser's file and line.
func keyErr(d *caddyfile.Dispenser, block, key, format string, args ...any) error {
	return d.Err(config.Errorf(block, key, format, args...).Error())
}

// durationKey sets dst from the key's one argument, a positive duration.
func durationKey(d *caddyfile.Dispenser, block string, dst *config.Duration) error {
	key := d.Val()
	return oneArg(d, block, func(v string) error {
		dur, err := caddy.ParseDuration(v)
		if err != nil || dur <= 0 {
			return keyErr(d, block, key, "must be a positive duration such as 10s, got %q", v)
		}
		*dst = config.Duration(dur)
		return nil
	})
}

// numberKey sets dst from the key's one argument, a finite number (a
// trailing % divides by 100), and records a 0 in zeros.
func numberKey(d *caddyfile.Dispenser, block string, dst *float64, zeros *config.Zeros) error {
	key := d.Val()
	return oneArg(d, block, func(v string) error {
		x, err := parseNumber(v)
		if err != nil {
			return keyErr(d, block, key, "must be a finite number, got %q", v)
		}
		if *dst = x; x == 0 {
			zeros.Add(key)
		}
		return nil
	})
}

// wholeKey sets dst from the key's one argument, a whole number, and
// records a 0 in zeros.
func wholeKey(d *caddyfile.Dispenser, block string, dst *int, zeros *config.Zeros) error {
	key := d.Val()
	return oneArg(d, block, func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return keyErr(d, block, key, "must be a whole number, got %q", v)
		}
		if *dst = n; n == 0 {
			zeros.Add(key)
		}
		return nil
	})
}

// parseNumber reads a finite number; "50%" is 0.5.
func parseNumber(v string) (float64, error) {
	pct := strings.HasSuffix(v, "%")
	f, err := strconv.ParseFloat(strings.TrimSuffix(v, "%"), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, errors.New("not a finite number")
	}
	if pct {
		f /= 100
	}
	return f, nil
}

// parseFraction reads "75%" or "0.75" as 0.75; the result is in (0,1].
func parseFraction(v string) (float64, error) {
	pct := strings.HasSuffix(v, "%")
	f, err := strconv.ParseFloat(strings.TrimSuffix(v, "%"), 64)
	if err != nil {
		return 0, errFraction
	}
	if pct {
		f /= 100
	}
	if !(f > 0 && f <= 1) {
		return 0, errFraction
	}
	return f, nil
}

var errFraction = errors.New("want a percentage such as 75% or a fraction in (0,1]")

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
