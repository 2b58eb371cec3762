package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ai-guardian/adaptivethrottle/internal/loadgen"
)

func TestRunFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "-target is required"},
		{[]string{"-target", "http://x", "-profile", "step"}, "needs -peak"},
		{[]string{"-target", "http://x", "-mix", "urgent=1"}, "unknown priority"},
		{[]string{"-target", "http://x", "-profile", "wave"}, "unknown profile"},
		{[]string{"-target", "http://x", "-profile", "capacity-drop", "-drop-at", "1s", "-duration", "2s"}, "upstream"},
		{[]string{"-target", "http://x", "extra"}, "unexpected arguments"},
		{[]string{"-target", "http://x", "-json", "/no/such/dir/out.json"}, "no such file"},
	} {
		err := run(context.Background(), tc.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run(%q) = %v, want an error mentioning %q", tc.args, err, tc.want)
		}
	}
}

// TestRunStepDemoFlags runs the flags the lead's run.sh uses, shortened, and
// checks the table and the JSON.
func TestRunStepDemoFlags(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.Header.Get("X-Priority") == "low" {
			w.Header().Set("Retry-After", "5")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {}\n\ndata: [DONE]\n\n")
	}))
	defer ts.Close()
	out := filepath.Join(t.TempDir(), "run.json")
	var stdout bytes.Buffer
	err := run(context.Background(), []string{"-target", ts.URL, "-profile", "step", "-base", "5", "-peak", "30",
		"-duration", "1s", "-step-at", "200ms", "-step-for", "400ms", "-json", out, "-records"}, &stdout, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// 5/s × 0.6 s + 30/s × 0.4 s = 15 requests.
	rows := map[string][]string{}
	for _, line := range strings.Split(stdout.String(), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			rows[f[0]] = f
		}
	}
	if !strings.Contains(stdout.String(), "profile step base 5 → peak 30 req/s") || rows["high"] == nil ||
		rows["medium"] == nil || rows["low"] == nil || rows["all"] == nil || rows["all"][1] != "15" {
		t.Errorf("table:\n%s", stdout.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var res loadgen.Result
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if res.Overall.Sent != 15 || len(res.Records) != 15 || res.Low.Shed429RA != res.Low.Sent || res.High.OK != res.High.Sent {
		t.Errorf("JSON result: overall %+v, low %+v, %d records", res.Overall, res.Low, len(res.Records))
	}
}

// TestRunLiveFlag: -live prints the header and a line a second to the log
// writer (stderr), with the gateway's state from -throttle-status; the table
// still goes to stdout.
func TestRunLiveFlag(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/throttle/status" {
			io.WriteString(w, `{"instances":[{"name":"llm-main","shedding":true,"override":null,
				"levels":{"qps":{"value":30,"threshold":10.5,"tripped":true,"learned_s":31},"gpu":{},"latency":{"tripped":true}},
				"circuit":{"state":"closed"}}]}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {}\n\ndata: [DONE]\n\n")
	}))
	defer ts.Close()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"-target", ts.URL, "-base", "5", "-duration", "1500ms",
		"-throttle-status", ts.URL + "/throttle/status", "-live"}, &stdout, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(stderr.String(), "\n")
	if len(lines) < 2 || !strings.Contains(lines[0], "passed h/m/l") || !strings.Contains(lines[0], "gateway") ||
		!strings.HasPrefix(strings.TrimSpace(lines[1]), "1s ") ||
		!strings.HasSuffix(lines[1], "SHEDDING qps latency · qps 30.0/s, trips above 10.5/s") {
		t.Errorf("stderr:\n%s", stderr.String())
	}
	if strings.Contains(stdout.String(), "gateway") || !strings.Contains(stdout.String(), "profile constant") {
		t.Errorf("stdout:\n%s", stdout.String())
	}
}
