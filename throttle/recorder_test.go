package throttle

import (
	"net/http"
	"net/http/httptest"
	"testing"
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
	rec2 := getRecorder()
	rec2.ResponseWriter = httptest.NewRecorder()
	rec2.WriteHeader(http.StatusEarlyHints)
	rec2.WriteHeader(http.StatusCreated)
	if rec2.status != http.StatusCreated || rec2.at != 0 {
		t.Fatalf("1xx taken as the status, or time taken when not asked: %d %v", rec2.status, rec2.at)
	}
}
