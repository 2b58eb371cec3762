package adaptivethrottle

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/ai-guardian/adaptivethrottle/throttle"
)

var update = flag.Bool("update", false, "rewrite the adapt golden files")

// Each testdata/adapt/*.caddyfile adapts to the JSON beside it: the
// directive's order (before reverse_proxy, whatever the file says), its
// matcher, every subdirective and the derived instance names.
func TestAdaptGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/adapt/*.caddyfile")
	if len(files) == 0 {
		t.Fatal("no golden files")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			in, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(in, map[string]any{"filename": f})
			if err != nil {
				t.Fatal(err)
			}
			if len(warnings) > 0 {
				t.Fatalf("warnings: %v", warnings)
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, out, "", "\t"); err != nil {
				t.Fatal(err)
			}
			golden := strings.TrimSuffix(f, ".caddyfile") + ".json"
			if *update {
				if err := os.WriteFile(golden, append(pretty.Bytes(), '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -run TestAdaptGolden -update)", err)
			}
			if got := append(pretty.Bytes(), '\n'); !bytes.Equal(got, want) {
				t.Fatalf("%s adapts to\n%s\nwant\n%s", f, got, want)
			}
		})
	}
}

func TestAdaptErrorNamesFileAndLine(t *testing.T) {
	in := []byte(":8080 {\n\tadaptive_throttle {\n\t\tlatency {\n\t\t\tfactor one\n\t\t}\n\t}\n}\n")
	_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(in, map[string]any{"filename": "Caddyfile.bad"})
	if err == nil || !strings.Contains(err.Error(), "Caddyfile.bad:4") || !strings.Contains(err.Error(), "factor must be a finite number") {
		t.Fatalf("error %v does not name Caddyfile.bad:4 and the problem", err)
	}
}

// adaptErr adapts a Caddyfile that must fail, and returns the error.
func adaptErr(t *testing.T, caddyfile string) string {
	t.Helper()
	_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), map[string]any{"filename": "Caddyfile.bad"})
	if err == nil {
		t.Fatalf("adapted:\n%s", caddyfile)
	}
	return err.Error()
}

// A matcher that is not defined fails adapt at the directive's line, not
// with a bare "unrecognized matcher name".
func TestAdaptUndefinedMatcherNamesFileAndLine(t *testing.T) {
	for _, in := range []string{
		":8080 {\n\tadaptive_throttle @nosuch\n\treverse_proxy 127.0.0.1:8000\n}\n",
		":8080 {\n\tadaptive_throttle @nosuch {\n\t\tname llm\n\t}\n}\n",
	} {
		if err := adaptErr(t, in); !strings.Contains(err, "@nosuch") || !strings.HasSuffix(err, ", at Caddyfile.bad:2") {
			t.Errorf("error %q does not name @nosuch at Caddyfile.bad:2", err)
		}
	}
}

// A defined matcher still applies to the route.
func TestAdaptNamedMatcher(t *testing.T) {
	in := []byte(":8080 {\n\t@llm path /v1/*\n\tadaptive_throttle @llm\n\treverse_proxy 127.0.0.1:8000\n}\n")
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(in, map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"match":[{"path":["/v1/*"]}],"handle":[{"handler":"adaptive_throttle"`) {
		t.Fatalf("the matcher is not on the throttle's route: %s", out)
	}
}

// A bad trusted matcher names its location once, not twice.
func TestAdaptTrustedErrorNamesLocationOnce(t *testing.T) {
	for _, c := range []struct{ matcher, want string }{
		{"remote_ipp 10.0.0.0/8", "module not registered: http.matchers.remote_ipp"},
		{"header", "malformed header matcher"},
	} {
		err := adaptErr(t, ":8080 {\n\tadaptive_throttle {\n\t\tpriority {\n\t\t\ttrusted "+c.matcher+"\n\t\t}\n\t}\n}\n")
		if !strings.Contains(err, "trusted: ") || !strings.Contains(err, c.want) || !strings.HasSuffix(err, ", at Caddyfile.bad:4") || strings.Count(err, ", at ") != 1 {
			t.Errorf("trusted %s: error %q should say %q and end with one \", at Caddyfile.bad:4\"", c.matcher, err, c.want)
		}
	}
}

// throttleNames maps each adaptive_throttle in adapted JSON to its name,
// keyed by its retry_after (which the test sets apart for each).
func throttleNames(t *testing.T, out []byte) map[string]string {
	t.Helper()
	var cfg any
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	names := map[string]string{}
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if v["handler"] == "adaptive_throttle" {
				names[fmt.Sprint(v["retry_after"])], _ = v["name"].(string)
			}
			for _, e := range v {
				walk(e)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	walk(cfg)
	return names
}

// The n-th unnamed handler in the Caddyfile is default-n (the first plain
// default) however many named ones come before or between them, so adding
// a named handler renames none of the unnamed ones.
func TestAdaptUnnamedHandlersNumberedStably(t *testing.T) {
	in := []byte(`:8080 {
	adaptive_throttle /a/* {
		name llm-main
		retry_after 1s
	}
	adaptive_throttle /b/* {
		name llm-big
		retry_after 2s
	}
	adaptive_throttle /c/* {
		retry_after 3s
	}
	adaptive_throttle /d/* {
		retry_after 4s
	}
	reverse_proxy 127.0.0.1:8000
}
:8081 {
	adaptive_throttle {
		retry_after 5s
	}
	adaptive_throttle /f/* {
		name llm-small
		retry_after 6s
	}
	reverse_proxy 127.0.0.1:8001
}
`)
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(in, map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatal(err)
	}
	got := throttleNames(t, out)
	want := map[string]string{}
	for i, name := range []string{"llm-main", "llm-big", "default", "default-2", "default-3", "llm-small"} {
		want[fmt.Sprint(float64(i+1)*1e9)] = name // retry_after in nanoseconds
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("names by retry_after (ns): %v, want %v", got, want)
	}
}

// Handlers that share a name share one learned state: with other settings
// they would overwrite each other on every reload, so adapt refuses them,
// naming both places; the same settings twice are fine.
func TestAdaptSameNameOtherSettings(t *testing.T) {
	site := func(second string) string {
		return ":8080 {\n\tadaptive_throttle {\n\t\tname llm\n\t\tqps {\n\t\t\tsigma 3\n\t\t}\n\t}\n\trespond a\n}\n:8081 {\n" +
			second + "\trespond b\n}\n"
	}
	got := adaptErr(t, site("\tadaptive_throttle {\n\t\tname llm\n\t}\n"))
	if want := `adaptive_throttle "llm" is configured at Caddyfile.bad:2 with other settings: handlers that share a name share one learned state and must agree; give this one its own name, at Caddyfile.bad:11`; !strings.HasSuffix(got, want) {
		t.Fatalf("got %s\nwant %s", got, want)
	}
	same := site("\tadaptive_throttle {\n\t\tname llm\n\t\tqps {\n\t\t\tsigma 3\n\t\t}\n\t}\n")
	if _, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(same), map[string]any{"filename": "Caddyfile"}); err != nil {
		t.Fatalf("the same settings under one name: %v", err)
	}
}

// site wraps lines (one a line, tab-indented) in an adaptive_throttle
// directive at line 2 of a Caddyfile: the first line is at line 3.
func site(lines ...string) string {
	return ":8080 {\n\tadaptive_throttle {\n\t\t" + strings.Join(lines, "\n\t\t") + "\n\t}\n\trespond ok\n}\n"
}

// Every size, count and duration has an upper bound that adapt checks,
// naming the block, the key and the bound at the key's line: no value a
// config can hold makes Provision allocate, wait or hold in proportion to
// an unchecked number (qps { window 1000000h } once asked for 28.8 GB).
func TestAdaptRefusesValuesPastTheirBound(t *testing.T) {
	cases := []struct {
		lines []string
		want  string
		line  int
	}{
		{[]string{"qps {", "\twindow 1000000h", "}"}, "qps: window must be at most 24h, got 1000000h", 4},
		{[]string{"qps {", "\tmax_rate 1e9", "}"}, "qps: max_rate must be at most 1000000, got 1000000000", 4},
		{[]string{"qps {", "\tmin_baseline 1e9", "}"}, "qps: min_baseline must be at most 1000000", 4},
		{[]string{"qps {", "\tsigma 1e308", "}"}, "qps: sigma must be at most 100, got 1e+308", 4},
		{[]string{"qps {", "\ttrip_factor 101", "}"}, "qps: trip_factor must be at most 100, got 101", 4},
		{[]string{"latency {", "\tfactor 1e300", "}"}, "latency: factor must be at most 100", 4},
		{[]string{"qps {", "\twindow 1m", "\twarmup 100000", "}"}, "qps: warmup must not exceed the window (1m0s), got 100000 seconds", 5},
		{[]string{"retry_after 999999h"}, "retry_after must be at most 1h, got 999999h", 3},
		{[]string{"name x", "retry_after_max 48h"}, "retry_after_max must be at most 1h, got 48h", 4},
		{[]string{"concurrency {", "\tmax_wait 87600h", "}"}, "concurrency: max_wait high must be at most 1h, got 87600h", 4},
		{[]string{"concurrency {", "\tmax_wait low 2h", "}"}, "concurrency: max_wait low must be at most 1h, got 2h", 4},
		{[]string{"concurrency {", "\tlimit 1000000000", "}"}, "concurrency: limit must be at most 100000, got 1000000000", 4},
		{[]string{"concurrency {", "\tmax 50", "\tlimit 100", "}"}, "concurrency: limit 100 must not exceed max 50", 5},
		{[]string{"concurrency {", "\tqueue 1000000000000", "}"}, "concurrency: queue must be at most 100000, got 1000000000000", 4},
		{[]string{"concurrency {", "\tmax 200000", "}"}, "concurrency: max must be at most 100000", 4},
		{[]string{"concurrency {", "\tweigh_body 1GiB", "}"}, "concurrency: weigh_body must be a size such as 64KiB (at most 16MiB)", 4},
		{[]string{"latency {", "\twindow 2h", "}"}, "latency: window must be at most 1h, got 2h", 4},
		{[]string{"latency {", "\tceiling 2h", "}"}, "latency: ceiling must be at most 1h, got 2h", 4},
		{[]string{"latency {", "\tslo 90m", "}"}, "latency: slo must be at most 1h, got 1h30m", 4},
		{[]string{"latency {", "\tconsecutive 5000", "}"}, "latency: consecutive must be at most 1000, got 5000", 4},
		{[]string{"circuit {", "\twindow 2h", "}"}, "circuit: window must be at most 1h, got 2h", 4},
		{[]string{"circuit {", "\topen_for 48h", "}"}, "circuit: open_for must be at most 24h, got 48h", 4},
		{[]string{"circuit {", "\tmax_open_for 48h", "}"}, "circuit: max_open_for must be at most 24h, got 48h", 4},
		{[]string{"circuit {", "\tprobe_timeout 2h", "}"}, "circuit: probe_timeout must be at most 1h, got 2h", 4},
		{[]string{"circuit {", "\tmin_requests 2000000", "}"}, "circuit: min_requests must be at most 1000000", 4},
		{[]string{"circuit {", "\tprobes 5000", "}"}, "circuit: probes must be within 1..1024, got 5000", 4},
		{[]string{"gpu {", "\tinterval 2h", "\tstale_after 3h", "}"}, "gpu: interval must be at most 1h, got 2h", 4},
		{[]string{"gpu {", "\tstale_after 48h", "}"}, "gpu: stale_after must be at most 24h, got 48h", 4},
		{[]string{"priority {", "\thigh_reserve 200000", "}"}, "priority: high_reserve must be at most 100000, got 200000", 4},
		{[]string{"priority {", "\tmedium_floor 1e7", "}"}, "priority: medium_floor must be at most 1000000", 4},
		{[]string{"persist {", "\tmax_age 60d", "}"}, "persist: max_age must be at most 720h, got 1440h", 4},
	}
	for _, c := range cases {
		in := site(c.lines...)
		err := adaptErr(t, in)
		if !strings.Contains(err, c.want) || !strings.Contains(err, "Caddyfile.bad:"+itoa(c.line)) {
			t.Errorf("%q:\n got  %s\n want %q at Caddyfile.bad:%d", c.lines, err, c.want, c.line)
		}
	}
}

// adaptedHandler adapts a Caddyfile and loads its one adaptive_throttle
// as Caddy does: from the adapted JSON, refusing unknown keys.
func adaptedHandler(t *testing.T, caddyfile string) (*Handler, string) {
	t.Helper()
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatal(err)
	}
	var raw json.RawMessage
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if v["handler"] == "adaptive_throttle" {
				delete(v, "handler")
				raw, _ = json.Marshal(v)
			}
			for _, e := range v {
				walk(e)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	var cfg any
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	walk(cfg)
	h := new(Handler)
	if err := caddy.StrictUnmarshalJSON(raw, h); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	return h, string(raw)
}

// A zero the user wrote is honoured where it means something and refused,
// with the reason, where it does not; never replaced by the default. Both
// in the Caddyfile (through the JSON adapt writes, as Caddy loads it) and
// in JSON written by hand.
func TestWrittenZeroHonouredOrRefused(t *testing.T) {
	honoured := []struct {
		caddyfile []string
		json      string
		got       func(throttle.Config) any
		want      any
	}{
		{[]string{"qps {", "\tsigma 0", "}"}, `{"qps":{"sigma":0}}`, func(c throttle.Config) any { return c.QPS.Sigma }, 0.0},
		{[]string{"qps {", "\tmin_baseline 0", "}"}, `{"qps":{"min_baseline":0}}`, func(c throttle.Config) any { return c.QPS.MinBaseline }, 0.0},
		{[]string{"qps {", "\twarmup 0", "}"}, `{"qps":{"warmup":0}}`, func(c throttle.Config) any { return c.QPS.Warmup }, 0},
		{[]string{"priority {", "\thigh_reserve 0%", "}"}, `{"priority":{"high_reserve_share":0}}`, func(c throttle.Config) any { return c.Priority.Reserve(10) }, 0},
		{[]string{"priority {", "\thigh_reserve 0", "}"}, `{"priority":{"high_reserve":0}}`, func(c throttle.Config) any { return c.Priority.Reserve(10) }, 0},
		{[]string{"priority {", "\tmedium_floor 0", "}"}, `{"priority":{"medium_floor":0}}`, func(c throttle.Config) any { return c.Priority.MediumFloor }, 0.0},
		{[]string{"concurrency {", "\tlimit auto", "}"}, `{"concurrency":{"limit":0}}`, func(c throttle.Config) any { return c.Concurrency.Limit }, 0},
	}
	for _, c := range honoured {
		h, raw := adaptedHandler(t, site(c.caddyfile...))
		cfg, err := h.config()
		if err != nil {
			t.Errorf("%q (adapted to %s): %v", c.caddyfile, raw, err)
		} else if got := c.got(cfg); got != c.want {
			t.Errorf("%q (adapted to %s): %v, want %v", c.caddyfile, raw, got, c.want)
		}
		var j Handler
		if err := caddy.StrictUnmarshalJSON([]byte(c.json), &j); err != nil {
			t.Fatal(err)
		}
		if cfg, err := j.config(); err != nil {
			t.Errorf("%s: %v", c.json, err)
		} else if got := c.got(cfg); got != c.want {
			t.Errorf("%s: %v, want %v", c.json, got, c.want)
		}
	}

	refused := []struct {
		caddyfile  []string // nil: a zero the Caddyfile cannot write
		json, want string
	}{
		{[]string{"qps {", "\ttrip_factor 0", "}"}, `{"qps":{"trip_factor":0}}`, "qps: trip_factor must be above 1, got 0"},
		{[]string{"qps {", "\tmax_rate 0", "}"}, `{"qps":{"max_rate":0}}`, "qps: max_rate must be positive (leave it out for no fixed ceiling), got 0"},
		{[]string{"latency {", "\tpercentile 0", "}"}, `{"latency":{"percentile":0}}`, "latency: percentile must be in (0,100], got 0"},
		{[]string{"latency {", "\tfactor 0", "}"}, `{"latency":{"factor":0}}`, "latency: factor must be above 1, got 0"},
		{[]string{"latency {", "\tconsecutive 0", "}"}, `{"latency":{"consecutive":0}}`, "latency: consecutive must be a whole number ≥ 1, got 0"},
		{[]string{"circuit {", "\terror_ratio 0", "}"}, `{"circuit":{"error_ratio":0}}`, "circuit: error_ratio must be within (0, 1], got 0"},
		{[]string{"circuit {", "\tmin_requests 0", "}"}, `{"circuit":{"min_requests":0}}`, "circuit: min_requests must be a whole number ≥ 1, got 0"},
		{[]string{"circuit {", "\tprobes 0", "}"}, `{"circuit":{"probes":0}}`, "circuit: probes must be within 1..1024, got 0"},
		{[]string{"concurrency {", "\tqueue 0", "}"}, `{"concurrency":{"queue":0}}`, "concurrency: queue must be a whole number ≥ 1, got 0"},
		{[]string{"concurrency {", "\tmax 0", "}"}, `{"concurrency":{"max":0}}`, "concurrency: max must be a whole number ≥ 1, got 0"},
		{[]string{"gpu {", "\tthreshold 0%", "}"}, `{"gpu":{"threshold":0}}`, "gpu: threshold must be"},
		{nil, `{"qps":{"window":0}}`, "qps: window must be at least 10s, got 0s"},
		{nil, `{"latency":{"window":"0s"}}`, "latency: window must be at least 1s, got 0s"},
		{nil, `{"latency":{"slo":0}}`, "latency: slo must be a positive duration, got 0s"},
		{nil, `{"circuit":{"open_for":0}}`, "circuit: open_for must be positive, got 0s"},
		{nil, `{"gpu":{"interval":0}}`, "gpu: interval must be at least 100ms, got 0s"},
		{nil, `{"concurrency":{"max_wait":{"high":0}}}`, "concurrency: max_wait high must be positive, got 0s"},
		{nil, `{"concurrency":{"weigh_body":0}}`, "concurrency: weigh_body must be a size in bytes, or -1 (off), got 0"},
		{nil, `{"retry_after":0}`, "retry_after must be a positive duration, got 0s"},
		{nil, `{"retry_after_max":"0s"}`, "retry_after_max must be a positive duration, got 0s"},
		{nil, `{"persist":{"max_age":0}}`, "persist: max_age must be a positive duration, got 0s"},
	}
	for _, c := range refused {
		if c.caddyfile != nil {
			if err := adaptErr(t, site(c.caddyfile...)); !strings.Contains(err, c.want) || !strings.Contains(err, "Caddyfile.bad:4") {
				t.Errorf("%q: %s\n want %q at Caddyfile.bad:4", c.caddyfile, err, c.want)
			}
		}
		var h Handler
		if err := caddy.StrictUnmarshalJSON([]byte(c.json), &h); err != nil {
			t.Fatalf("%s: %v", c.json, err)
		}
		if err := h.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Validate() = %v, want %q", c.json, err, c.want)
		}
	}

	// Keys left out still take the defaults, and an unknown key is still
	// refused inside a block as at the top.
	var h Handler
	if err := caddy.StrictUnmarshalJSON([]byte(`{"qps":{"window":"1m"},"priority":{"from":"{http.request.header.X-Tier}"}}`), &h); err != nil {
		t.Fatal(err)
	}
	if cfg, err := h.config(); err != nil || cfg.QPS.Sigma != 2 || cfg.Priority.Reserve(10) != 2 || h.claimFrom() != "{http.request.header.X-Tier}" {
		t.Fatalf("defaults: %+v %v", cfg, err)
	}
	for _, bad := range []string{`{"qps":{"sigmaa":1}}`, `{"priority":{"form":"x"}}`, `{"concurrency":{"max_wait":{"urgent":"1s"}}}`, `{"retry":1}`} {
		if err := caddy.StrictUnmarshalJSON([]byte(bad), new(Handler)); err == nil || !strings.Contains(err.Error(), "unknown field") {
			t.Errorf("%s: %v, want an unknown field", bad, err)
		}
	}
}

// Retry-After has a ceiling: retry_after_max (default 60s, or the floor if
// that is more), never below the floor.
func TestAdaptRetryAfterMax(t *testing.T) {
	for _, c := range []struct {
		lines []string
		want  time.Duration
	}{
		{[]string{"name a"}, time.Minute},
		{[]string{"retry_after_max 30s"}, 30 * time.Second},
		{[]string{"retry_after 90s"}, 90 * time.Second},
		{[]string{"retry_after 10s", "retry_after_max 10s"}, 10 * time.Second},
	} {
		h, raw := adaptedHandler(t, site(c.lines...))
		cfg, err := h.config()
		if err != nil || cfg.RetryAfterMax.D() != c.want {
			t.Errorf("%q (%s): retry_after_max %v, %v; want %v", c.lines, raw, cfg.RetryAfterMax.D(), err, c.want)
		}
	}
	err := adaptErr(t, site("retry_after 10s", "retry_after_max 5s"))
	if want := "retry_after_max 5s must not be below retry_after 10s, at Caddyfile.bad:4"; !strings.Contains(err, want) {
		t.Errorf("max below the floor: %s\n want %s", err, want)
	}
}

// lb_policy adaptive_throttle takes at most a name: more fails adapt at
// its line, as does a block.
func TestAdaptPolicyRefusesMoreThanAName(t *testing.T) {
	for in, want := range map[string]string{
		":8080 {\n\tadaptive_throttle\n\treverse_proxy 127.0.0.1:9001 127.0.0.1:9002 {\n\t\tlb_policy adaptive_throttle pool extra\n\t}\n}\n":   "wrong argument count",
		":8080 {\n\tadaptive_throttle\n\treverse_proxy 127.0.0.1:9001 {\n\t\tlb_policy adaptive_throttle pool {\n\t\t\tname x\n\t\t}\n\t}\n}\n": "takes no block",
	} {
		if err := adaptErr(t, in); !strings.Contains(err, want) || !strings.Contains(err, "Caddyfile.bad:4") {
			t.Errorf("error %q should say %q at Caddyfile.bad:4", err, want)
		}
	}
}
