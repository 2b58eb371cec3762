package throttle

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/admission"
	"github.com/ai-guardian/adaptivethrottle/priority"
)

func chatRequest(body, contentType string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(body))
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	return r
}

// A request is weighed by the answer length its JSON body asks for, and
// the body reaches the next handler byte for byte; what cannot be weighed
// (no length, not JSON, too large, unreadable) is not short, and a body
// that is not read stays the request's own.
func TestWeigherReadsTheAskedLengthAndPutsTheBodyBack(t *testing.T) {
	var w weigher
	w.limit.Store(1 << 10)
	w.below.Store(70)
	for _, tc := range []struct {
		name, body, ct string
		short, read    bool
	}{
		{"openai max_tokens", `{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":16}`, "application/json", true, true},
		{"long", `{"model":"m","messages":[],"max_tokens":512}`, "application/json", false, true},
		{"max_completion_tokens first", `{"max_tokens":16,"max_completion_tokens":400}`, "application/json", false, true},
		{"ollama num_predict", `{"model":"m","prompt":"hi","options":{"num_predict":8}}`, "application/json; charset=utf-8", true, true},
		{"no length", `{"model":"m","messages":[]}`, "application/json", false, true},
		{"not json", `{"max_tokens":16}`, "text/plain", false, false},
		{"bad json", `{"max_tokens":16`, "", false, true},
		{"too large", `{"max_tokens":16,"pad":"` + strings.Repeat("x", 2000) + `"}`, "application/json", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := chatRequest(tc.body, tc.ct)
			orig := r.Body
			if got := w.short(r); got != tc.short {
				t.Errorf("short = %v, want %v", got, tc.short)
			}
			if read := r.Body != orig; read != tc.read {
				t.Errorf("body read = %v, want %v", read, tc.read)
			}
			b, err := io.ReadAll(r.Body)
			if err != nil || string(b) != tc.body {
				t.Fatalf("the next handler reads %q (%v), want the body as sent", b, err)
			}
			if err := r.Body.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
	if w.short(nil) {
		t.Fatal("no request is short")
	}
	w.limit.Store(-1)
	if r := chatRequest(`{"max_tokens":16}`, "application/json"); w.short(r) {
		t.Fatal("weigh_body off, and a request was weighed")
	}
}

// A body that ends before its Content-Length is not weighed, and the next
// handler meets the same error the body gave.
func TestWeigherPassesOnAShortBody(t *testing.T) {
	var w weigher
	w.limit.Store(1 << 10)
	w.below.Store(70)
	r := chatRequest(`{"max_tokens":16}`, "application/json")
	r.ContentLength = 100
	if w.short(r) {
		t.Fatal("a truncated body was weighed")
	}
	b, err := io.ReadAll(r.Body)
	if string(b) != `{"max_tokens":16}` || err != io.ErrUnexpectedEOF {
		t.Fatalf("read %q, %v; want the bytes sent, then io.ErrUnexpectedEOF", b, err)
	}
}

// Short is at most half the mean length asked, each request weighing the
// same; nothing is short before a few lengths are read.
func TestWeigherLearnsWhatShortIs(t *testing.T) {
	var w weigher
	w.limit.Store(1 << 10)
	ask := func(n int) bool {
		return w.short(chatRequest(`{"max_tokens":`+strconv.Itoa(n)+`}`, "application/json"))
	}
	for range 7 {
		ask(16)
	}
	w.step()
	if w.below.Load() != 0 || ask(16) {
		t.Fatalf("short below %d after 7 lengths, want nothing learned", w.below.Load())
	}
	for range 100 { // three short, one long a step
		ask(16)
		ask(16)
		ask(16)
		ask(512)
		w.step()
	}
	if b := w.below.Load(); b != 70 {
		t.Fatalf("short below %d, want half of the mean 140", b)
	}
	if !ask(16) || ask(512) || ask(71) || !ask(70) {
		t.Fatal("16 and 70 are short, 71 and 512 are not")
	}
}

// While slots turn over slowly and short requests keep slots busy, the
// reserve is held while not shedding too: as many slots as the short
// requests want and one more for the next high request (the gate counts
// high requests in flight against the long ones' room as they come), at
// most half the limit; when the short requests are gone, it is not held.
func TestReserveGuardedWhileShortRequestsBorrowIt(t *testing.T) {
	th := testThrottle(t, Config{Concurrency: admission.Config{Limit: 10}})
	now := time.Unix(1000, 0)
	th.step(now, true)
	// 2 completions a second, answered fast: the reserve (2) is held, no
	// level trips.
	steady := func(th *Throttle, now *time.Time, seconds, rate int) {
		for range seconds {
			arrive(th, rate)
			th.latency.Record(50*time.Millisecond, 0)
			*now = now.Add(time.Second)
			th.step(*now, true)
		}
	}
	steady(th, &now, 3, 2)
	if th.gate.Guarding() {
		t.Fatal("guarding with no short request")
	}
	if th.gate.Wait(context.Background(), priority.Low, true, time.Second, 0) != admission.Granted {
		t.Fatal("a short request found no slot")
	}
	steady(th, &now, 40, 2)
	if th.shedding(now) {
		t.Fatal("shedding: the reserve would be held whole")
	}
	if !th.gate.Guarding() || th.gate.Reserve() != 2 {
		t.Fatalf("one short slot busy: guarding %v, reserve %d; want true, 1 + 1", th.gate.Guarding(), th.gate.Reserve())
	}
	for range 5 { // five more short requests
		if th.gate.Wait(context.Background(), priority.Medium, true, time.Second, 0) != admission.Granted {
			t.Fatal("a short request found no slot")
		}
	}
	steady(th, &now, 40, 2)
	if r := th.gate.Reserve(); r != 5 {
		t.Fatalf("6 short slots busy: reserve %d, want at most half the limit", r)
	}
	for range 6 {
		th.gate.Release(true)
	}
	steady(th, &now, 40, 2)
	if th.gate.Guarding() {
		t.Fatal("still guarding with no short request left")
	}
}

// What weighing one request costs: reading a chat body of about 1 KB,
// putting it back and decoding its length (only requests that would wait
// while slots turn over slowly pay it).
func BenchmarkWeigh(b *testing.B) {
	var w weigher
	w.limit.Store(64 << 10)
	w.below.Store(70)
	body := `{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("lorem ipsum ", 80) + `"}],"max_tokens":16}`
	b.ReportAllocs()
	for b.Loop() {
		r := chatRequest(body, "application/json")
		if !w.short(r) {
			b.Fatal("not short")
		}
	}
}

// The yardstick for BenchmarkWeigh: the request alone.
func BenchmarkWeighYardstick(b *testing.B) {
	body := `{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("lorem ipsum ", 80) + `"}],"max_tokens":16}`
	b.ReportAllocs()
	for b.Loop() {
		if r := chatRequest(body, "application/json"); r.ContentLength == 0 {
			b.Fatal("no body")
		}
	}
}
