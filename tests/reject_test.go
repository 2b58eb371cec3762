package tests

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/ai-guardian/adaptivethrottle/internal/llmsim"
)

// A reload that Caddy rejects leaves the running throttle exactly as it
// was: still listed in status, still measuring, its metrics still there,
// its settings unchanged; a good reload afterwards finds it, learned state
// included. Each way our Provision can fail is tried: a GPU source that
// cannot open under on_error shed, a value the JSON config gets wrong, a
// trusted matcher that does not provision; and a config that fails before
// our handler is provisioned at all.
func TestRejectedReloadKeepsTheRunningThrottle(t *testing.T) {
	_, addr := upstream(t, llmsim.Config{})
	smi, _ := filepath.Abs("../sensors/testdata/smi_ok.sh")
	site := func(gpu, qps, priority string) string {
		return caddyfile(`http://localhost:9080 {
	adaptive_throttle {
		name llm-main
		gpu {
			devices 1
			` + gpu + `
		}
		qps {
			warmup 3
			` + qps + `
		}
		` + priority + `
	}
	reverse_proxy ` + addr + `
}`)
	}
	good := site("source nvidia-smi "+smi+"\n\t\t\tinterval 500ms", "trip_factor 2", "")
	tc := start(t, strings.TrimPrefix(good, caddyfile("")))
	stop := lightTraffic(t, tc.Client, 10)
	defer stop()
	eventually(t, 15*time.Second, "a learned baseline and a GPU reading", func() bool {
		st := status(t, "llm-main")
		return st.Levels.QPS.LearnedS >= 4 && st.Levels.GPU.Available
	})

	toJSON := func(caddyfileText string) string {
		out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfileText), nil)
		if err != nil {
			t.Fatalf("adapting: %v", err)
		}
		return string(out)
	}
	goodJSON := toJSON(good)
	if !strings.Contains(goodJSON, `"trip_factor":2`) {
		t.Fatalf("the adapted config has no trip_factor 2: %s", goodJSON)
	}
	rejected := []struct {
		name, contentType, body, reason string
	}{
		{"gpu source that cannot open, on_error shed", "text/caddyfile",
			site("source nvidia-smi /nonexistent/nvidia-smi\n\t\t\ton_error shed", "trip_factor 4", ""), "/nonexistent/nvidia-smi"},
		{"a bad value in JSON", "application/json",
			strings.Replace(goodJSON, `"trip_factor":2`, `"trip_factor":0.5`, 1), "qps: trip_factor must be above 1"},
		// Another module fails before ours is provisioned: Caddy has already
		// replaced the admin endpoint, and /metrics must still list ours.
		{"another handler that does not exist", "application/json",
			strings.Replace(goodJSON, `"handle":[{`, `"handle":[{"handler":"no_such_handler"},{`, 1), "no_such_handler"},
		{"a trusted matcher that does not provision", "text/caddyfile",
			site("source nvidia-smi "+smi, "trip_factor 4", "priority {\n\t\t\ttrusted remote_ip 10.0.0.0/99\n\t\t}"), "10.0.0.0/99"},
	}
	for _, c := range rejected {
		before := status(t, "llm-main")
		code, body := adminLoad(t, c.contentType, c.body)
		if code == http.StatusOK || !strings.Contains(body, c.reason) {
			t.Fatalf("%s: load answered %d %s, want a refusal naming %q", c.name, code, body, c.reason)
		}
		after := status(t, "llm-main") // fails the test if the throttle is gone
		if after.Levels.GPU.Source != "nvidia-smi" || !after.Levels.GPU.Available || after.Levels.GPU.OnError != "allow" {
			t.Fatalf("%s: the GPU level changed: %+v", c.name, after.Levels.GPU)
		}
		if after.Levels.QPS.LearnedS < before.Levels.QPS.LearnedS || after.Levels.QPS.Baseline == 0 {
			t.Fatalf("%s: the baseline was lost: before %+v after %+v", c.name, before.Levels.QPS, after.Levels.QPS)
		}
		if q := after.Levels.QPS; abs(q.Threshold-2*q.Baseline) > 1e-3 {
			t.Fatalf("%s: the rejected trip factor was applied: %+v", c.name, q)
		}
		if _, ok := scrape(t)[`caddy_adaptive_throttle_shedding{name="llm-main"}`]; !ok {
			t.Fatalf("%s: the metrics series are gone", c.name)
		}
		if resp := chat(t, tc, "low", false); resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: a request after the rejected load: %d %s", c.name, resp.StatusCode, drain(t, resp))
		} else {
			drain(t, resp)
		}
	}

	// A good reload afterwards finds the throttle and keeps what it learned.
	before := status(t, "llm-main").Levels.QPS
	if code, body := adminLoad(t, "text/caddyfile", site("source nvidia-smi "+smi+"\n\t\t\tthreshold 80%", "trip_factor 2", "")); code != http.StatusOK {
		t.Fatalf("good reload: %d %s", code, body)
	}
	st := status(t, "llm-main")
	if st.Levels.GPU.Threshold != 0.8 || st.Levels.QPS.LearnedS < before.LearnedS {
		t.Fatalf("after a good reload: gpu %+v qps %+v (before %+v)", st.Levels.GPU, st.Levels.QPS, before)
	}
	var all struct{ Instances []json.RawMessage }
	code, body := adminDo(t, "GET", "/throttle/status", "")
	if err := json.Unmarshal([]byte(body), &all); code != 200 || err != nil || len(all.Instances) != 1 {
		t.Fatalf("status lists %d instances (%d, %v)", len(all.Instances), code, err)
	}
}

// adminLoad posts a whole config to the admin API's /load.
func adminLoad(t *testing.T, contentType, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, adminURL+"/load", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	// A load, taken or rolled back, replaces Caddy's admin server, which
	// then closes this connection: a next request must not reuse it.
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, drain(t, resp)
}
