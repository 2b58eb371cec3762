package adaptivethrottle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/ai-guardian/adaptivethrottle/levels/gpu"
)

// FuzzCaddyfile: whatever the block holds, parsing never panics, an error
// always names the line, and a config that parses is either valid or
// refused by Validate with an error (never a panic in config). What is
// valid is then loaded as Caddy loads it (from the JSON adapt writes) and
// provisioned, and Provision must stay within provisionBudget of memory:
// every key of every block is also tried at huge, tiny and odd values, so
// that no number a config can hold makes Provision allocate in proportion
// to it.
func FuzzCaddyfile(f *testing.F) {
	for _, seed := range []string{
		"",
		"name llm\nretry_after 2s",
		"qps {\nwindow 5m\nsigma 2\ntrip_factor 1.5\nmin_baseline 5\nmax_rate 100\nwarmup 30\n}",
		"gpu off",
		"gpu {\nsource prometheus http://a/metrics http://b/metrics\nmetric DCGM_FI_DEV_FB_USED free DCGM_FI_DEV_FB_FREE\nlabels gpu=0\nthreshold 80%\n}",
		"gpu {\nsource nvidia-smi /usr/bin/nvidia-smi\ninterval 1s\ntimeout 500ms\nstale_after 5s\ndevices 0 GPU-1\non_error shed\n}",
		"latency {\npercentile 95\nwindow 5s\nfactor 2\nconsecutive 2\nceiling 10s\nmeasure total\n}",
		"circuit {\nerror_ratio 50%\nmin_requests 10\nwindow 10s\nopen_for 5s\nmax_open_for 1m\nprobes 2\nprobe_timeout 5s\n}",
		"priority {\nfrom {http.request.header.X-Tier}\ndefault low\nhigh_reserve 0\nmedium_floor 0.5\ntrusted remote_ip 10.0.0.0/8\n}",
		"qps {\nwindow -1s\n}",
		"gpu {\nthreshold 1e400%\n}",
		"latency {\npercentile NaN\n}",
		"priority {\nhigh_reserve 99999999999999999999\n}",
		// Every bound at once: the largest config that adapts.
		"qps {\nwindow 24h\nwarmup 86400\nmax_rate 1000000\nmin_baseline 1000000\nsigma 100\ntrip_factor 100\n}\nlatency {\nwindow 1h\nceiling 1h\nslo 1h\nconsecutive 1000\nfactor 100\n}\n" +
			"circuit {\nwindow 1h\nopen_for 24h\nmax_open_for 24h\nprobes 1024\nprobe_timeout 1h\nmin_requests 1000000\n}\n" +
			"concurrency {\nmax 100000\nlimit 100000\ninitial 100000\nmin 100000\nqueue 100000\nmax_wait 1h\nweigh_body 16MiB\n}\n" +
			"priority {\nhigh_reserve 100000\nmedium_floor 1000000\n}\nretry_after 1h\nretry_after_max 1h\npersist {\nmax_age 30d\n}",
	} {
		f.Add(seed)
	}
	extremes := []string{"0", "0%", "-1", "1", "1e-300", "0.0000001", "100%", "1e18", "1e308", "9223372036854775807",
		"99999999999999999999", "1000000000", "1000000000000", "1000000h", "2562047h", "87600h", "999999h", "10000h", "1ns", "1GiB"}
	keys := map[string][]string{
		"qps":         {"window", "sigma", "trip_factor", "min_baseline", "max_rate", "warmup"},
		"gpu":         {"threshold", "interval", "timeout", "stale_after"},
		"latency":     {"percentile", "window", "factor", "consecutive", "ceiling", "slo", "min_threshold"},
		"circuit":     {"error_ratio", "min_requests", "window", "open_for", "max_open_for", "probes", "probe_timeout"},
		"priority":    {"high_reserve", "medium_floor"},
		"concurrency": {"limit", "min", "max", "initial", "queue", "max_wait", "weigh_body"},
		"persist":     {"max_age"},
		"":            {"retry_after", "retry_after_max"},
	}
	for block, ks := range keys {
		for _, k := range ks {
			for _, v := range extremes {
				if block == "" {
					f.Add(k + " " + v)
				} else {
					f.Add(block + " {\n" + k + " " + v + "\n}")
				}
			}
		}
	}
	n := 0
	f.Fuzz(func(t *testing.T, block string) {
		h := new(Handler)
		err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("adaptive_throttle {\n" + block + "\n}"))
		if err != nil {
			if !strings.Contains(err.Error(), "Testfile:") {
				t.Fatalf("error without file and line: %v", err)
			}
			return
		}
		if _, err := h.config(); err != nil {
			return
		}
		// Loaded as Caddy loads it: from the JSON adapt writes.
		b, err := json.Marshal(h)
		if err != nil {
			t.Fatalf("%q: %v", block, err)
		}
		loaded := new(Handler)
		if err := caddy.StrictUnmarshalJSON(b, loaded); err != nil {
			t.Fatalf("%q adapts to %s, which does not load: %v", block, b, err)
		}
		if err := loaded.Validate(); err != nil {
			t.Fatalf("%q is valid, but not once loaded from %s: %v", block, b, err)
		}
		n++
		loaded.Name = fmt.Sprintf("fuzz-%d", n)    // a throttle of its own, not one a reload keeps
		loaded.GPU = &gpu.Config{Source: "off"}    // no sensor: its settings were checked above
		loaded.Persist = &PersistConfig{Off: true} // no storage
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		defer cancel()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		err = loaded.Provision(ctx)
		runtime.ReadMemStats(&after)
		if err != nil && !strings.HasPrefix(err.Error(), "priority: trusted: ") { // a matcher's own provision may fail
			t.Fatalf("%q is valid, but Provision fails: %v", block, err)
		}
		if err := loaded.Cleanup(); err != nil {
			t.Fatal(err)
		}
		if grew := after.TotalAlloc - before.TotalAlloc; grew > provisionBudget {
			t.Fatalf("%q: Provision allocated %d MiB, more than %d MiB", block, grew>>20, provisionBudget>>20)
		}
	})
}

// provisionBudget is the most memory one Provision may allocate, whatever
// the config.
const provisionBudget = 64 << 20

// FuzzAdminBodies: any body to override and reset gets 200 or a 4xx
// APIError, never a panic, never a 5xx; a refused body changes nothing.
func FuzzAdminBodies(f *testing.F) {
	for _, seed := range []string{
		`{"name":"fuzz","state":"shed","for":"10m"}`,
		`{"name":"fuzz","state":"auto"}`,
		`{"name":"fuzz","state":"pass","for":"1h"}`,
		`{"name":"fuzz","what":"baselines"}`,
		`{"name":"fuzz","what":"circuit"}`,
		`{"state":"shed"}`,
		`{"name":"fuzz","state":"shed","for":"-1s"}`,
		`{"name":"fuzz","state":"shed","for":"999999999999h"}`,
		`{"name":"fuzz","state":"shed"}{}`,
		`{"name":"fuzz","state":"shed"}}`,
		`{"name":"fuzz","state":"shed"}]`,
		`{"name":"fuzz","STATE":"shed"}`,
		`{"INSTANCE":"fuzz","What":"all"}`,
		`[]`, `null`, `"shed"`, `{"name":1}`, `{`, ``,
	} {
		f.Add(seed)
	}
	h := newHandler(f, &Handler{Name: "fuzz"})
	h.t.SetLogger(zap.NewNop())
	override := func() string {
		if o := h.t.Status(time.Now()).Override; o != nil {
			return o.State + " " + o.Set.String()
		}
		return ""
	}
	api := adminAPI{}
	f.Fuzz(func(t *testing.T, body string) {
		for _, route := range []struct {
			path string
			fn   func(http.ResponseWriter, *http.Request) error
		}{{"/throttle/override", api.handleOverride}, {"/throttle/reset", api.handleReset}} {
			before := override()
			w := httptest.NewRecorder()
			err := route.fn(w, httptest.NewRequest(http.MethodPost, route.path, strings.NewReader(body)))
			if err == nil {
				continue
			}
			var apiErr caddy.APIError
			if !errors.As(err, &apiErr) || apiErr.HTTPStatus < 400 || apiErr.HTTPStatus >= 500 {
				t.Fatalf("%s %q: %v", route.path, body, err)
			}
			if override() != before {
				t.Fatalf("%s %q was refused (%v) but changed the override", route.path, body, err)
			}
		}
		_ = h.t.SetOverride("auto", time.Now(), time.Time{})
	})
}
