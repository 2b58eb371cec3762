package adaptivethrottle

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/config"
	"github.com/ai-guardian/adaptivethrottle/levels/gpu"
	"github.com/ai-guardian/adaptivethrottle/levels/latency"
	"github.com/ai-guardian/adaptivethrottle/levels/qps"
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
		if hasLocation(err) {
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

// location is how caddyfile.Dispenser.WrapErr ends an error.
var location = regexp.MustCompile(`, at \S+:\d+( import chain \[.*\])?$`)

// hasLocation reports whether err already names a file and line, so that
// wrapping it again would print the location twice.
func hasLocation(err error) bool { return location.MatchString(err.Error()) }

// stateKey counts the unnamed adaptive_throttle directives in one
// Caddyfile: the n-th is called default-n (the first plain default), so
// adding or removing a named one renames none of them.
const stateKey = "adaptive_throttle_unnamed"

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
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
	return t, nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	adaptive_throttle [<matcher>] {
//		name        <name>
//		qps {
//			window       <duration>   # 5m
//			sigma        <n>          # 2
//			trip_factor  <n>          # 1.5
//			min_baseline <req/s>      # 5
//			limit        <req/s>      # none
//			warmup       <seconds>    # 30
//		}
//		gpu off
//		gpu {
//			source      auto | nvml | nvidia-smi [<path>] | prometheus <url>... | off
//			metric      <name> [total|free <name>]
//			labels      <label>=<value>...
//			aggregate   max | mean
//			threshold   <percent>%|<fraction>   # 75%
//			interval    <duration>   # 2s
//			timeout     <duration>   # 80% of interval
//			stale_after <duration>   # 10s
//			devices     <index|uuid>...
//			on_error    allow | shed
//		}
//		latency {
//			percentile  <n>          # 99
//			window      <duration>   # 10s
//			factor      <n>          # 1.8
//			consecutive <n>          # 3
//			ceiling     <duration>   # 8s
//			measure     ttfb | total
//		}
//		circuit {
//			error_ratio   <n>        # 0.5
//			min_requests  <n>        # 20
//			window        <duration> # 30s
//			open_for      <duration> # 60s
//			max_open_for  <duration> # 16 × open_for
//			probes        <n>        # 1
//			probe_timeout <duration> # 30s
//		}
//		priority {
//			from         <placeholder>  # {header.X-Priority}
//			default      high | medium | low
//			high_reserve <n>            # 8
//			medium_floor <req/s>        # 1
//			trusted      <matcher...>   # honour claims only from these requests
//		}
//		retry_after <duration>         # 5s
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		key := d.Val()
		if seen[key] {
			// A second block would silently replace the first.
			return d.Errf("%s given twice in one adaptive_throttle; merge the two", key)
		}
		seen[key] = true
		var err error
		switch key {
		case "name":
			err = oneArg(d, func(v string) error { h.Name = v; return nil })
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
		case "latency":
			h.Latency = new(latency.Config)
			err = parseBlock(d, func(d *caddyfile.Dispenser) error { return latencyKey(d, h.Latency) }, func() error { return h.Latency.Validate() })
		case "circuit":
			h.Circuit = new(breaker.CircuitConfig)
			err = parseBlock(d, func(d *caddyfile.Dispenser) error { return circuitKey(d, h.Circuit) }, func() error { return h.Circuit.Validate() })
		case "priority":
			h.Priority = new(PriorityConfig)
			err = parseBlock(d, func(d *caddyfile.Dispenser) error { return priorityKey(d, h.Priority) }, func() error { return h.Priority.Validate() })
		case "retry_after":
			err = oneArg(d, durationInto(d, &h.RetryAfter))
		default:
			return d.Errf("unrecognized subdirective %q", d.Val())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// parseBlock runs sub for each line of a nested block (a block is
// required; a key given twice is an error), then checks the block as a
// whole, so that what only the block can judge (a window against its
// minimum, a timeout against the interval) fails adapt at the block's line.
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
		return fmt.Errorf("%w, at %s:%d", err, d.File(), lineOf(err.Error(), lines, blockLine))
	}
	return nil
}

// lineOf is the line of the key a block's error names first (the one it is
// about), or the block's own line when it names none.
func lineOf(msg string, lines map[string]int, blockLine int) int {
	line, at := blockLine, len(msg)
	for key, l := range lines {
		for i := 0; i+len(key) <= len(msg); {
			j := strings.Index(msg[i:], key)
			if j < 0 {
				break
			}
			j += i
			end := j + len(key)
			word := (j == 0 || !isKeyByte(msg[j-1])) && (end == len(msg) || !isKeyByte(msg[end]))
			if word && j < at {
				line, at = l, j
			}
			i = end
		}
	}
	return line
}

func isKeyByte(c byte) bool { return c == '_' || 'a' <= c && c <= 'z' }

func qpsKey(d *caddyfile.Dispenser, c *qps.Config) error {
	switch d.Val() {
	case "window":
		return oneArg(d, durationInto(d, &c.Window))
	case "sigma":
		return oneArg(d, floatInto(d, &c.Sigma, 0))
	case "trip_factor":
		return oneArg(d, floatInto(d, &c.TripFactor, 1))
	case "min_baseline":
		return oneArg(d, floatInto(d, &c.MinBaseline, 0))
	case "limit":
		return oneArg(d, floatInto(d, &c.Limit, 0))
	case "warmup":
		return oneArg(d, intInto(d, &c.Warmup, 1))
	}
	return d.Errf("unrecognized qps subdirective %q", d.Val())
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
				return d.Errf("gpu source %s takes no further arguments", c.Source)
			}
		case "nvidia-smi":
			if len(args) > 2 {
				return d.Errf("gpu source nvidia-smi takes at most one path")
			}
			if len(args) == 2 {
				c.Path = args[1]
			}
		case "prometheus":
			if len(args) < 2 {
				return d.Errf("gpu source prometheus needs at least one /metrics URL")
			}
			c.URLs = args[1:]
		default:
			return d.Errf("unknown gpu source %q (want auto, nvml, nvidia-smi, prometheus or off)", c.Source)
		}
		return nil
	case "metric":
		args := d.RemainingArgs()
		switch len(args) {
		case 1:
			c.Metric = args[0]
		case 3:
			if args[1] != "total" && args[1] != "free" {
				return d.Errf("metric %s: the second argument must be total or free, got %q", args[0], args[1])
			}
			c.Metric, c.PairKind, c.PairMetric = args[0], args[1], args[2]
		default:
			return d.Errf("metric takes <name> or <name> total|free <name>")
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
				return d.Errf("label filter %q must be name=value", a)
			}
			c.Labels[k] = strings.Trim(v, `"`)
		}
		return nil
	case "aggregate":
		return oneArg(d, func(v string) error {
			if v != "max" && v != "mean" {
				return d.Errf("aggregate must be max or mean, got %q", v)
			}
			c.Aggregate = v
			return nil
		})
	case "threshold":
		return oneArg(d, func(v string) error {
			f, err := parseFraction(v)
			if err != nil {
				return d.Errf("threshold %q: %v", v, err)
			}
			c.Threshold = f
			return nil
		})
	case "interval":
		return oneArg(d, durationInto(d, &c.Interval))
	case "timeout":
		return oneArg(d, durationInto(d, &c.Timeout))
	case "stale_after":
		return oneArg(d, durationInto(d, &c.StaleAfter))
	case "devices":
		c.Devices = d.RemainingArgs()
		if len(c.Devices) == 0 {
			return d.ArgErr()
		}
		return nil
	case "on_error":
		return oneArg(d, func(v string) error {
			if v != "allow" && v != "shed" {
				return d.Errf("on_error must be allow or shed, got %q", v)
			}
			c.OnError = v
			return nil
		})
	}
	return d.Errf("unrecognized gpu subdirective %q", d.Val())
}

func latencyKey(d *caddyfile.Dispenser, c *latency.Config) error {
	switch d.Val() {
	case "percentile":
		return oneArg(d, func(v string) error {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || !(f > 0 && f <= 100) {
				return d.Errf("percentile must be a number in (0,100], got %q", v)
			}
			c.Percentile = f
			return nil
		})
	case "window":
		return oneArg(d, durationInto(d, &c.Window))
	case "factor":
		return oneArg(d, floatInto(d, &c.Factor, 1))
	case "consecutive":
		return oneArg(d, intInto(d, &c.Consecutive, 1))
	case "ceiling":
		return oneArg(d, durationInto(d, &c.Ceiling))
	case "measure":
		return oneArg(d, func(v string) error {
			if v != "ttfb" && v != "total" {
				return d.Errf("measure must be ttfb or total, got %q", v)
			}
			c.Measure = v
			return nil
		})
	}
	return d.Errf("unrecognized latency subdirective %q", d.Val())
}

func circuitKey(d *caddyfile.Dispenser, c *breaker.CircuitConfig) error {
	switch d.Val() {
	case "error_ratio":
		return oneArg(d, func(v string) error {
			f, err := parseFraction(v)
			if err != nil {
				return d.Errf("error_ratio %q: %v", v, err)
			}
			c.ErrorRatio = f
			return nil
		})
	case "min_requests":
		return oneArg(d, intInto(d, &c.MinRequests, 1))
	case "window":
		return oneArg(d, durationInto(d, &c.Window))
	case "open_for":
		return oneArg(d, durationInto(d, &c.OpenFor))
	case "max_open_for":
		return oneArg(d, durationInto(d, &c.MaxOpenFor))
	case "probes":
		return oneArg(d, intInto(d, &c.Probes, 1))
	case "probe_timeout":
		return oneArg(d, durationInto(d, &c.ProbeTimeout))
	}
	return d.Errf("unrecognized circuit subdirective %q", d.Val())
}

func priorityKey(d *caddyfile.Dispenser, c *PriorityConfig) error {
	switch d.Val() {
	case "from":
		return oneArg(d, func(v string) error {
			if !strings.Contains(v, "{") {
				// A literal would give every request the same claim.
				return d.Errf("from must be a placeholder such as {header.X-Priority}, got %q", v)
			}
			c.From = v
			return nil
		})
	case "default":
		return oneArg(d, func(v string) error {
			if v != "high" && v != "medium" && v != "low" {
				return d.Errf("default must be high, medium or low, got %q", v)
			}
			c.Default = v
			return nil
		})
	case "high_reserve":
		return oneArg(d, func(v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return d.Errf("high_reserve must be a whole number ≥ 0, got %q", v)
			}
			c.HighReserve = &n
			return nil
		})
	case "medium_floor":
		return oneArg(d, floatInto(d, &c.MediumFloor, 0))
	case "trusted":
		set, err := caddyhttp.ParseCaddyfileNestedMatcherSet(d)
		if err != nil {
			if hasLocation(err) {
				// Most of Caddy's matcher errors name the line already.
				return fmt.Errorf("trusted: %w", err)
			}
			return d.Errf("trusted: %v", err)
		}
		if len(set) == 0 {
			return d.Errf("trusted needs a matcher, such as: trusted remote_ip 10.0.0.0/8")
		}
		c.TrustedRaw = set
		return nil
	}
	return d.Errf("unrecognized priority subdirective %q", d.Val())
}

// oneArg reads exactly one argument and hands it to set.
func oneArg(d *caddyfile.Dispenser, set func(string) error) error {
	name := d.Val()
	if !d.NextArg() {
		return d.Errf("%s needs a value", name)
	}
	v := d.Val()
	if d.NextArg() {
		return d.Errf("%s takes one value, got more", name)
	}
	return set(v)
}

func durationInto(d *caddyfile.Dispenser, dst *config.Duration) func(string) error {
	name := d.Val()
	return func(v string) error {
		dur, err := caddy.ParseDuration(v)
		if err != nil || dur <= 0 {
			return d.Errf("%s must be a positive duration such as 10s, got %q", name, v)
		}
		*dst = config.Duration(dur)
		return nil
	}
}

// floatInto parses a number that must be above min (strictly, when min is 1: factors).
func floatInto(d *caddyfile.Dispenser, dst *float64, min float64) func(string) error {
	name := d.Val()
	return func(v string) error {
		f, err := strconv.ParseFloat(v, 64)
		switch {
		case err != nil || math.IsNaN(f) || math.IsInf(f, 0):
			return d.Errf("%s must be a finite number, got %q", name, v)
		case min == 1 && f <= 1:
			return d.Errf("%s must be above 1, got %q", name, v)
		case f < min:
			return d.Errf("%s must be at least %g, got %q", name, min, v)
		}
		*dst = f
		return nil
	}
}

func intInto(d *caddyfile.Dispenser, dst *int, min int) func(string) error {
	name := d.Val()
	return func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < min {
			return d.Errf("%s must be a whole number ≥ %d, got %q", name, min, v)
		}
		*dst = n
		return nil
	}
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
