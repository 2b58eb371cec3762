package throttle

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/breaker"
)

// unwrapOnly hides the Flusher of the writer below, as Caddy's own wrappers
// do; flushing must still reach it.
type unwrapOnly struct{ rw http.ResponseWriter }

func (u unwrapOnly) Header() http.Header         { return u.rw.Header() }
func (u unwrapOnly) Write(b []byte) (int, error) { return u.rw.Write(b) }
func (u unwrapOnly) WriteHeader(c int)           { u.rw.WriteHeader(c) }
func (u unwrapOnly) Unwrap() http.ResponseWriter { return u.rw }

func TestRecorderFlushesThroughUnwrap(t *testing.T) {
	under := httptest.NewRecorder()
	rec := getRecorder()
	rec.ResponseWriter, rec.stamp = unwrapOnly{under}, true
	if err := http.NewResponseController(rec).Flush(); err != nil {
		t.Fatal(err)
	}
	if !under.Flushed || !rec.wrote || rec.status != http.StatusOK || rec.at == 0 {
		t.Fatalf("flushed %v wrote %v status %d", under.Flushed, rec.wrote, rec.status)
	}
	rec.WriteHeader(http.StatusTeapot) // a late WriteHeader does not change the recorded status
	if rec.status != http.StatusOK {
		t.Fatalf("status %d", rec.status)
	}
	// The first byte is timed and counted for the concurrency limit once,
	// at the final status, not at a 1xx; a 5xx is not counted.
	fb := newFirstBytes()
	rec2 := getRecorder()
	rec2.ResponseWriter, rec2.fb, rec2.start = httptest.NewRecorder(), &fb, Now()-breaker.Mono(time.Second)
	rec2.WriteHeader(http.StatusEarlyHints)
	if rec2.wrote || fb.count.Load() != 0 {
		t.Fatal("a 1xx counted as the first byte")
	}
	rec2.WriteHeader(http.StatusCreated)
	rec2.WriteHeader(http.StatusAccepted)
	if rec2.status != http.StatusCreated || rec2.at == 0 || fb.count.Load() != 1 || fb.sum.Load() < uint64(time.Second) {
		t.Fatalf("1xx taken as the status, or the first byte not counted once: %d %v %d %d", rec2.status, rec2.at, fb.count.Load(), fb.sum.Load())
	}
	rec3 := getRecorder()
	rec3.ResponseWriter, rec3.fb = httptest.NewRecorder(), &fb
	rec3.WriteHeader(http.StatusBadGateway)
	if fb.count.Load() != 1 {
		t.Fatal("a 5xx counted as a first byte")
	}
}

// Under measure ttfb, an answer that is not streamed is marked whole (its
// first byte is its end) and its size counted; streamed ones (SSE,
// Ollama's NDJSON) and measure total are not.
func TestRecorderTellsWholeAnswers(t *testing.T) {
	for _, c := range []struct {
		ct    string
		stamp bool
		whole bool
	}{
		{"application/json", true, true},
		{"", true, true},
		{"text/event-stream; charset=utf-8", true, false},
		{"application/x-ndjson", true, false},
		{"application/json", false, false},
	} {
		rec := getRecorder()
		under := httptest.NewRecorder()
		rec.ResponseWriter, rec.stamp = under, c.stamp
		if c.ct != "" {
			under.Header().Set("Content-Type", c.ct)
		}
		rec.Write([]byte("0123456789"))
		rec.ReadFrom(strings.NewReader("abcde"))
		if rec.whole != c.whole || rec.size != 15 {
			t.Errorf("%q (stamp %v): whole %v size %d, want whole %v size 15", c.ct, c.stamp, rec.whole, rec.size, c.whole)
		}
		putRecorder(rec)
	}
}
