package adaptivethrottle

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/ai-guardian/adaptivethrottle/levels/gpu"
	"github.com/ai-guardian/adaptivethrottle/throttle"
)

// gpuOff is a running throttle with the GPU level off, closed at the end of
// the test.
func gpuOff(tb testing.TB, name string) *throttle.Throttle {
	tb.Helper()
	th, err := throttle.New(throttle.WithName(name), throttle.WithConfig(throttle.Config{GPU: gpu.Config{Source: "off"}}))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = th.Close() })
	return th
}

// The status answer stays bounded however many instances a config has.
func TestStatusIsBounded(t *testing.T) {
	const n = maxInstancesShown + 44
	for i := range n {
		name := fmt.Sprintf("bounded-%03d", i)
		instances.LoadOrStore(name, pooled{Throttle: gpuOff(t, name)})
		t.Cleanup(func() { instances.Delete(name) })
	}
	w := httptest.NewRecorder()
	if err := (adminAPI{}).handleStatus(w, httptest.NewRequest(http.MethodGet, "/throttle/status", nil)); err != nil {
		t.Fatal(err)
	}
	var resp statusResponse
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	if len(resp.Instances) != maxInstancesShown || !resp.Truncated {
		t.Fatalf("%d instances shown (truncated %v) of %d", len(resp.Instances), resp.Truncated, n)
	}
	if perInstance := w.Body.Len() / maxInstancesShown; perInstance > 4096 {
		t.Fatalf("%d bytes per instance", perInstance)
	}
	if resp.Instances[0].Name != "bounded-000" {
		t.Fatalf("not sorted by name: %s first", resp.Instances[0].Name)
	}
	// One is asked for by its name; the former ?instance= names the new.
	w = httptest.NewRecorder()
	if err := (adminAPI{}).handleStatus(w, httptest.NewRequest(http.MethodGet, "/throttle/status?name=bounded-007", nil)); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil || len(resp.Instances) != 1 || resp.Instances[0].Name != "bounded-007" {
		t.Fatalf("?name=bounded-007: %v %s", err, w.Body)
	}
	var apiErr caddy.APIError
	err := (adminAPI{}).handleStatus(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/throttle/status?instance=bounded-007", nil))
	if !errors.As(err, &apiErr) || apiErr.HTTPStatus != 400 || apiErr.Message != `"instance" is now "name"` {
		t.Fatalf("?instance=: %v", err)
	}
}

// Status reads as figures, not as float noise: durations and ratios are
// rounded to four decimals.
func TestStatusRoundsItsFigures(t *testing.T) {
	in := gpuOff(t, "rounded")
	now := time.Unix(1_800_000_000, 0)
	if err := in.SetOverride("shed", now, now.Add(10*time.Minute+123456789*time.Nanosecond)); err != nil {
		t.Fatal(err)
	}
	st := in.Status(now)
	if st.Override == nil || st.Override.ExpiresInS != 600.1235 {
		t.Fatalf("override expires in %+v, want 600.1235 s", st.Override)
	}
}

// adminPost drives an admin handler as Caddy's admin server would, and
// returns the status and the reason of a refusal.
func adminPost(t *testing.T, fn func(http.ResponseWriter, *http.Request) error, path, body string) (int, string) {
	t.Helper()
	err := fn(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, path, strings.NewReader(body)))
	if err == nil {
		return http.StatusOK, ""
	}
	var apiErr caddy.APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("%s %q: not an APIError: %v", path, body, err)
	}
	return apiErr.HTTPStatus, apiErr.Message
}

// Admin bodies are strict: a stray } or ] after the object and keys in
// another case are 400s with a reason (encoding/json alone accepts both);
// what decodeStrict refused before still gets the same reason; a refused
// body changes nothing.
func TestAdminBodiesAreStrict(t *testing.T) {
	h := newHandler(t, &Handler{Name: "strict-body"})
	h.t.SetLogger(zap.NewNop())
	api := adminAPI{}
	const ov, rs = "/throttle/override", "/throttle/reset"
	for _, c := range []struct {
		path, body string
		code       int
		reason     string
	}{
		{ov, `{"name":"strict-body","state":"auto"}`, 200, ""},
		{ov, " \n{\"name\":\"strict-body\",\"state\":\"auto\"}\n ", 200, ""},
		{rs, `{"name":"strict-body","what":"circuit"}`, 200, ""},
		// trailing data encoding/json's More does not see
		{ov, `{"name":"strict-body","state":"shed"}}`, 400, "body has data after the JSON object"},
		{ov, `{"name":"strict-body","state":"shed"}]`, 400, "body has data after the JSON object"},
		{ov, `{"name":"strict-body","state":"shed"} ] `, 400, "body has data after the JSON object"},
		{rs, `{"name":"strict-body","what":"all"}}}`, 400, "body has data after the JSON object"},
		// keys in another case
		{ov, `{"name":"strict-body","STATE":"shed"}`, 400, `field names are case-sensitive: write "state"`},
		{ov, `{"Name":"strict-body","state":"shed"}`, 400, `field names are case-sensitive: write "name"`},
		{ov, `{"name":"strict-body","state":"shed","For":"1m"}`, 400, `field names are case-sensitive: write "for"`},
		{ov, `{"name":"strict-body","state":"auto","STATE":"shed"}`, 400, `field names are case-sensitive: write "state"`},
		{ov, `{"name":"strict-body","ſtate":"shed"}`, 400, `field names are case-sensitive: write "state"`},
		{rs, `{"name":"strict-body","WHAT":"all"}`, 400, `field names are case-sensitive: write "what"`},
		// the former name of "name"
		{ov, `{"instance":"strict-body","state":"shed"}`, 400, `"instance" is now "name"`},
		{rs, `{"what":"all","instance":"strict-body"}`, 400, `"instance" is now "name"`},
		// as before
		{ov, `{"name":"strict-body","state":"shed"} {}`, 400, "body has data after the JSON object"},
		{ov, `{"name":"strict-body","state":"shed","until":"later"}`, 400, "unknown field in body"},
		{ov, `{"name":"strict-body","state":7}`, 400, `field "state" has the wrong type`},
		{ov, `{"name":"strict-body","state":`, 400, "body is not valid JSON"},
		{ov, ``, 400, "empty body: a JSON object is required"},
		{ov, " \n ", 400, "empty body: a JSON object is required"},
		// anything but an object
		{ov, `[]`, 400, "body must be a JSON object"},
		{rs, ` [{"name":"strict-body","what":"all"}]`, 400, "body must be a JSON object"},
		{ov, `null`, 400, "body must be a JSON object"},
		{ov, `"shed"`, 400, "body must be a JSON object"},
		{rs, `7`, 400, "body must be a JSON object"},
		{ov, `[`, 400, "body is not valid JSON"},
		// a reset names what it forgets
		{rs, `{"name":"strict-body"}`, 400, `"what" is required: baselines, circuit or all`},
		{rs, `{"name":"strict-body","what":""}`, 400, `"what" is required: baselines, circuit or all`},
		{ov, `{"name":"strict-body","state":"drained"}`, 400, `"state" must be drain, shed, pass or auto`},
		{ov, `{"name":"strict-body","state":"shed","x":"` + strings.Repeat("a", maxAdminBody) + `"}`, 400, "body larger than 65536 bytes"},
		{rs, `{"name":"strict-body","what":"all"}` + strings.Repeat(" ", maxAdminBody), 400, "body larger than 65536 bytes"},
	} {
		fn := api.handleOverride
		if c.path == rs {
			fn = api.handleReset
		}
		code, reason := adminPost(t, fn, c.path, c.body)
		if code != c.code || reason != c.reason {
			t.Errorf("%s %.60q: %d %q, want %d %q", c.path, c.body, code, reason, c.code, c.reason)
		}
		if o := h.t.Status(time.Now()).Override; o != nil {
			t.Errorf("%s %.60q left an override: %s", c.path, c.body, o.State)
			override(t, h, "auto")
		}
	}
}

// An override drain is accepted like shed and pass, with or without
// "for", and shows in the answer; auto clears it.
func TestAdminOverrideDrain(t *testing.T) {
	h := newHandler(t, &Handler{Name: "drain-admin"})
	h.t.SetLogger(zap.NewNop())
	api := adminAPI{}
	for _, body := range []string{`{"name":"drain-admin","state":"drain"}`, `{"name":"drain-admin","state":"drain","for":"10m"}`} {
		if code, reason := adminPost(t, api.handleOverride, "/throttle/override", body); code != 200 {
			t.Fatalf("%s: %d %s", body, code, reason)
		}
		if st := h.t.Status(time.Now()); st.Override == nil || st.Override.State != "drain" || !st.Shedding {
			t.Fatalf("%s: override %+v, shedding %v", body, st.Override, st.Shedding)
		}
	}
	override(t, h, "auto")
	if st := h.t.Status(time.Now()); st.Override != nil || st.Shedding {
		t.Fatalf("after auto: override %+v, shedding %v", st.Override, st.Shedding)
	}
}
