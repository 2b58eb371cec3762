package adaptivethrottle

import (
	"io"
	"net/http"
	"sync"
	"time"
)

// recorder notes the status and the time of the first byte of a response.
// Recorders are pooled so that the request path allocates nothing.
type recorder struct {
	http.ResponseWriter
	status int
	wrote  bool
	stamp  bool      // take the time at the first byte (measure ttfb)
	at     time.Time // when the first byte was written, if stamp
}

var recorders = sync.Pool{New: func() any { return new(recorder) }}

func getRecorder(w http.ResponseWriter, stamp bool) *recorder {
	rec := recorders.Get().(*recorder)
	rec.ResponseWriter, rec.stamp = w, stamp
	return rec
}

func putRecorder(rec *recorder) {
	*rec = recorder{}
	recorders.Put(rec)
}

// WriteHeader records the final status; 1xx informational answers other
// than 101 (Switching Protocols) are not the response yet.
func (rec *recorder) WriteHeader(code int) {
	if !rec.wrote && (code >= 200 || code == http.StatusSwitchingProtocols) {
		rec.wrote, rec.status = true, code
		if rec.stamp {
			rec.at = now()
		}
	}
	rec.ResponseWriter.WriteHeader(code)
}

func (rec *recorder) Write(b []byte) (int, error) {
	if !rec.wrote {
		rec.WriteHeader(http.StatusOK)
	}
	return rec.ResponseWriter.Write(b)
}

// ReadFrom keeps the underlying writer's fast path (sendfile, splice)
// without letting it write the header behind our back.
func (rec *recorder) ReadFrom(r io.Reader) (int64, error) {
	if !rec.wrote {
		rec.WriteHeader(http.StatusOK)
	}
	if rf, ok := rec.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(rec.ResponseWriter, r)
}

// FlushError sends buffered data; streaming (SSE) responses depend on it.
// The writer below may be another wrapper that flushes only through its
// own Unwrap chain, so ask a ResponseController rather than assert Flusher.
func (rec *recorder) FlushError() error {
	if !rec.wrote {
		rec.WriteHeader(http.StatusOK)
	}
	return http.NewResponseController(rec.ResponseWriter).Flush()
}

// Flush is FlushError for callers that assert http.Flusher.
func (rec *recorder) Flush() { _ = rec.FlushError() }

// Unwrap lets http.ResponseController reach the connection (hijacking for
// upgrades, deadlines, full-duplex).
func (rec *recorder) Unwrap() http.ResponseWriter { return rec.ResponseWriter }
