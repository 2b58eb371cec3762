package adaptivethrottle

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"
)

// FuzzCaddyfile: whatever the block holds, parsing never panics, an error
// always names the line, and a config that parses is either valid or
// refused by Validate with an error (never a panic in config).
func FuzzCaddyfile(f *testing.F) {
	for _, seed := range []string{
		"",
		"name llm\nretry_after 2s",
		"qps {\nwindow 5m\nsigma 2\ntrip_factor 1.5\nmin_baseline 5\nlimit 100\nwarmup 30\n}",
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
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, block string) {
		h := new(Handler)
		err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("adaptive_throttle {\n" + block + "\n}"))
		if err != nil {
			if !strings.Contains(err.Error(), "Testfile:") {
				t.Fatalf("error without file and line: %v", err)
			}
			return
		}
		_, _ = h.config()
	})
}

// FuzzAdminBodies: any body to override and reset gets 200 or a 4xx
// APIError, never a panic, never a 5xx; a refused body changes nothing.
func FuzzAdminBodies(f *testing.F) {
	for _, seed := range []string{
		`{"instance":"fuzz","state":"shed","for":"10m"}`,
		`{"instance":"fuzz","state":"auto"}`,
		`{"instance":"fuzz","state":"pass","for":"1h"}`,
		`{"instance":"fuzz","what":"baselines"}`,
		`{"instance":"fuzz","what":"circuit"}`,
		`{"state":"shed"}`,
		`{"instance":"fuzz","state":"shed","for":"-1s"}`,
		`{"instance":"fuzz","state":"shed","for":"999999999999h"}`,
		`{"instance":"fuzz","state":"shed"}{}`,
		`{"instance":"fuzz","state":"shed"}}`,
		`{"instance":"fuzz","state":"shed"}]`,
		`{"instance":"fuzz","STATE":"shed"}`,
		`{"INSTANCE":"fuzz","What":"all"}`,
		`[]`, `null`, `"shed"`, `{"instance":1}`, `{`, ``,
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
