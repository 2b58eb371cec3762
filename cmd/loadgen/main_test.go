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
