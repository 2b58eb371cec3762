package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/throttle"
)

// The example protects a real net/http server over real HTTP: requests pass
// while nothing is tripped; under shedding low gets 429 with the JSON body
// and a Retry-After that matches it, high keeps its reserve; the status
// route counts both.
func TestExampleProtectsAPlainServer(t *testing.T) {
	th, err := throttle.New(throttle.WithName("example"), throttle.WithGPUSource("off"), throttle.WithHighReserve(2))
	if err != nil {
		t.Fatal(err)
	}
	defer th.Close()
	upstreamHits := 0
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upstreamHits++
		_, _ = io.WriteString(w, "ok")
	})
	srv := httptest.NewServer(newServer(th, next))
	defer srv.Close()

	send := func(prio string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions", strings.NewReader(`{}`))
		req.Header.Set("X-Priority", prio)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	for _, p := range []string{"low", "medium", "high", ""} {
		if resp := send(p); resp.StatusCode != http.StatusOK {
			t.Fatalf("%q while healthy: %d", p, resp.StatusCode)
		}
	}
	if err := th.SetOverride("shed", time.Now(), time.Time{}); err != nil {
		t.Fatal(err)
	}
	resp := send("low")
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("low while shedding: %d", resp.StatusCode)
	}
	var body struct {
		Error, Level, Priority string
		RetryAfter             int `json:"retry_after"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if body.Error != "overloaded" || body.Level != "override" || body.Priority != "low" ||
		resp.Header.Get("Retry-After") != strconv.Itoa(body.RetryAfter) || body.RetryAfter < 5 {
		t.Fatalf("refusal %+v, Retry-After %q", body, resp.Header.Get("Retry-After"))
	}
	if resp := send("high"); resp.StatusCode != http.StatusOK {
		t.Fatalf("high while shedding: %d", resp.StatusCode)
	}
	if upstreamHits != 5 {
		t.Fatalf("upstream saw %d requests, want 4 healthy + 1 high", upstreamHits)
	}

	sr, err := srv.Client().Get(srv.URL + "/throttle/status")
	if err != nil {
		t.Fatal(err)
	}
	defer sr.Body.Close()
	raw, err := io.ReadAll(sr.Body)
	if err != nil || sr.StatusCode != http.StatusOK {
		t.Fatalf("status: %d %s %v", sr.StatusCode, raw, err)
	}
	var st throttle.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatalf("status %s: %v", raw, err)
	}
	if st.Name != "example" || !st.Shedding || st.Priorities.Low.Shed != 1 || st.Priorities.High.Passed != 2 || st.Admission.InFlight != 0 {
		t.Fatalf("status %+v", st)
	}
}

// The stand-in answers a completion.
func TestStandIn(t *testing.T) {
	w := httptest.NewRecorder()
	standIn().ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/chat/completions", nil))
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "chat.completion") {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
}
