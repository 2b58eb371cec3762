package adaptivethrottle

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"regexp"
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
//			limit        <req/s>      # none; ≤ 1000000
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
			err = parseBlock(d, func(d *caddyfile.Dispenser) error { return scalarKey(d, "qps", h.QPS) }, func() error { return h.QPS.Validate() })
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
			err = parseBlock(d, func(d *caddyfile.Dispenser) error { return scalarKey(d, "latency", h.Latency) }, func() error { return h.Latency.Validate() })
		case "circuit":
			h.Circuit = new(breaker.CircuitConfig)
			err = parseBlock(d, func(d *caddyfile.Dispenser) error { return scalarKey(d, "circuit", h.Circuit) }, func() error { return h.Circuit.Validate() })
		case "priority":
			h.Priority = new(PriorityConfig)
			err = parseBlock(d, func(d *caddyfile.Dispenser) error { return priorityKey(d, h.Priority) }, func() error { return h.Priority.Validate() })
		case "concurrency":
			h.Concurrency = new(admission.Config)
			err = parseBlock(d, func(d *caddyfile.Dispenser) error { return concurrencyKey(d, h.Concurrency) }, func() error { return h.Concurrency.Validate() })
		case "retry_after":
			err = oneArg(d, "", durationInto(d, &h.RetryAfter))
		case "retry_after_max":
			err = oneArg(d, "", durationInto(d, &h.RetryAfterMax))
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
			err = parseBlock(d, func(d *caddyfile.Dispenser) error {
				if d.Val() == "off" {
					return keyErr(d, "persist", "off", "stands alone, as: persist off")
				}
				return scalarKey(d, "persist", h.Persist)
			}, func() error { return h.Persist.Validate() })
		default:
			return d.Errf("unrecognized subdirective %q", d.Val())
		}
		if err != nil {
			return err
		}
	}
	// What only the whole can judge: the Retry-After bounds, and the
	// floor against the ceiling.
	top := throttle.Config{RetryAfter: h.RetryAfter, RetryAfterMax: h.RetryAfterMax}
	if err := top.Validate(); err != nil {
		return fmt.Errorf("%w, at %s:%d", err, d.File(), lineOf(err.Error(), seen, directiveLine))
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
	case "metric":
		args := d.RemainingArgs()
		switch len(args) {
		case 1:
			c.Metric = args[0]
		case 3:
			if args[1] == "max" {
				f, err := strconv.ParseFloat(args[2], 64)
				if err != nil || !(f > 0) || math.IsInf(f, 0) {
					return keyErr(d, "gpu", "metric", "%s max %q: must be a positive number (the count that reads as 100%%)", args[0], args[2])
				}
				c.Metric, c.MetricMax = args[0], f
				return nil
			}
			if args[1] != "total" && args[1] != "free" {
				return keyErr(d, "gpu", "metric", "%s: the second argument must be total, free or max, got %q", args[0], args[1])
			}
			c.Metric, c.PairKind, c.PairMetric = args[0], args[1], args[2]
		default:
			return keyErr(d, "gpu", "metric", "takes <name>, <name> total|free <name> or <name> max <n>")
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
				return keyErr(d, "gpu", "labels", "filter %q must be name=value", a)
			}
			c.Labels[k] = strings.Trim(v, `"`)
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
	case "threshold":
		return oneArg(d, "gpu", func(v string) error {
			f, err := parseFraction(v)
			if err != nil {
				return keyErr(d, "gpu", "threshold", "must be a percentage such as 75%% or a fraction in (0,1], got %q", v)
			}
			c.Threshold = f
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
	return scalarKey(d, "gpu", c)
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
			if hasLocation(err) {
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
	}
	return scalarKey(d, "priority", c)
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
	}
	return scalarKey(d, "concurrency", c)
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

func durationInto(d *caddyfile.Dispenser, dst *config.Duration) func(string) error {
	name := d.Val()
	return func(v string) error {
		dur, err := caddy.ParseDuration(v)
		if err != nil || dur <= 0 {
			return keyErr(d, "", name, "must be a positive duration such as 10s, got %q", v)
		}
		*dst = config.Duration(dur)
		return nil
	}
}

// scalarKey sets the field of block (a pointer to the block's config
// struct) whose JSON tag is the key on the line, from its one argument:
// the block's own type says what a key is, so a new key of a level needs
// no change here. Durations must be positive; numbers finite (a trailing %
// divides by 100); whole numbers whole (a *int, such as high_reserve, at
// least 0). A number written as 0 is recorded in the block's Zeros, so
// that the default never replaces it. What only the block can judge (a
// range, a bound, an enum, a zero) its Validate says at the end of the
// block, at this key's line.
func scalarKey(d *caddyfile.Dispenser, name string, block any) error {
	key := d.Val()
	f, ok := fieldByKey(reflect.ValueOf(block).Elem(), key)
	if !ok {
		return d.Errf("unrecognized %s subdirective %q", name, key)
	}
	return oneArg(d, name, func(v string) error {
		zero := false
		switch dst := f.Addr().Interface().(type) {
		case *config.Duration:
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur <= 0 {
				return keyErr(d, name, key, "must be a positive duration such as 10s, got %q", v)
			}
			*dst = config.Duration(dur)
		case *float64:
			x, err := parseNumber(v)
			if err != nil {
				return keyErr(d, name, key, "must be a finite number, got %q", v)
			}
			*dst, zero = x, x == 0
		case *int:
			n, err := strconv.Atoi(v)
			if err != nil {
				return keyErr(d, name, key, "must be a whole number, got %q", v)
			}
			*dst, zero = n, n == 0
		case **int:
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return keyErr(d, name, key, "must be a whole number ≥ 0, got %q", v)
			}
			*dst = &n
		case *string:
			*dst = v
		default:
			return keyErr(d, name, key, "cannot be set from the Caddyfile")
		}
		if z := reflect.ValueOf(block).Elem().FieldByName("Zeros"); zero && z.IsValid() {
			z.Addr().Interface().(*config.Zeros).Add(key)
		}
		return nil
	})
}

// fieldByKey finds the field of struct v (or of a struct it embeds) whose
// JSON name is key.
func fieldByKey(v reflect.Value, key string) (reflect.Value, bool) {
	for _, sf := range reflect.VisibleFields(v.Type()) {
		if !sf.IsExported() || sf.Anonymous {
			continue
		}
		if name, _, _ := strings.Cut(sf.Tag.Get("json"), ","); name == key {
			return v.FieldByIndex(sf.Index), true
		}
	}
	return reflect.Value{}, false
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
