package throttle

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/internal/shard"
	"github.com/ai-guardian/adaptivethrottle/pool"
)

// recorder notes the status and the time of the first byte of a response.
// Recorders are pooled so that the request path allocates nothing.
type recorder struct {
	http.ResponseWriter
	status int
	wrote  bool
	stamp  bool        // latency measures time to first byte (else the whole response)
	at     int64       // when the first byte was written (breaker.Mono)
	start  int64       // when the request was admitted (breaker.Mono)
	fb     *firstBytes // where a successful first byte is counted, for the limit
	high   bool        // a high-priority request: counted in Throttle.highIn
	short  bool        // its slot was taken as a short request's (admission.Gate.Release)
	whole  bool        // stamped, and the answer is not streamed: its first byte is its end
	size   int64       // bytes of the body written
	class  uint8       // its class for the service times (service): its answer length, if weighed
	// full: the upstream answered that it is full (FullStatus) and the
	// answer was held back: nothing of it reaches the client, and Serve
	// answers with the module's own refusal instead. Only a recorder of
	// Serve (fb set) holds an answer back.
	full bool
	// up is the pool member the load balancer sent the request to
	// (Binding.Bind), nil while none; upTk is its circuit's ticket, sent
	// when it was sent (breaker.Mono), upFB whether up counted its first
	// byte.
	up   *pool.Member
	upTk breaker.Ticket
	sent int64
	upFB bool
	// shard is this recorder's index into the sharded counters and
	// histograms, fixed for its life: a Decision carries its recorder for
	// it even when no response is recorded (Admit without Serve). sync.Pool keeps objects on the P
	// that put them back, so requests on one core keep writing the same
	// shards and their cache lines stay in that core's cache; a shard
	// picked at random per request would be fetched from the other cores'
	// caches half the time.
	shard uint32
	// Pooled recorders used by requests on different cores at once must
	// not share a cache line (two cache lines: adjacent-line prefetch).
	_ [64]byte
}

var (
	recorders = sync.Pool{New: func() any { return &recorder{shard: nextShard.Add(1)} }}
	nextShard atomic.Uint32
)

func getRecorder() *recorder { return recorders.Get().(*recorder) }

// putRecorder returns rec to the pool, reset: no reference to the
// request's writer, nothing recorded.
func putRecorder(rec *recorder) {
	rec.ResponseWriter, rec.stamp, rec.status, rec.wrote, rec.at, rec.fb, rec.high, rec.short, rec.whole, rec.size, rec.class, rec.full = nil, false, 0, false, 0, nil, false, false, false, 0, classUnknown, false
	rec.up, rec.upTk, rec.sent, rec.upFB = nil, breaker.Ticket{}, 0, false
	recorders.Put(rec)
}

// FullStatus reports whether status is an upstream's answer that it is
// full, not broken: 503 (Ollama at OLLAMA_MAX_QUEUE, vLLM at
// --max-num-queued-reqs), 429 (TGI and OpenAI-compatible servers) or 529
// (NVIDIA Dynamo).
func FullStatus(status int) bool {
	return status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests || status == 529
}

// WriteHeader records the final status; 1xx informational answers other
// than 101 (Switching Protocols) are not the response yet. Under Serve, an
// answer that the upstream is full is held back: neither its header nor
// its body is written (see Serve).
func (rec *recorder) WriteHeader(code int) {
	if !rec.wrote && (code >= 200 || code == http.StatusSwitchingProtocols) {
		rec.wrote, rec.status = true, code
		rec.at = Now().Mono
		if rec.fb != nil {
			if FullStatus(code) {
				rec.full = true
				return
			}
			if code < 500 {
				rec.fb.add(rec.shard, rec.at-rec.start)
				if rec.up != nil {
					rec.up.FirstByte(rec.shard, rec.at-rec.sent)
					rec.upFB = true
				}
			}
		}
		if rec.stamp {
			rec.whole = !streamed(rec.ResponseWriter.Header()["Content-Type"])
		}
	}
	if rec.full {
		return
	}
	rec.ResponseWriter.WriteHeader(code)
}

func (rec *recorder) Write(b []byte) (int, error) {
	if !rec.wrote {
		rec.WriteHeader(http.StatusOK)
	}
	if rec.full {
		return len(b), nil
	}
	n, err := rec.ResponseWriter.Write(b)
	rec.size += int64(n)
	return n, err
}

// ReadFrom keeps the underlying writer's fast path (sendfile, splice)
// without letting it write the header behind our back.
func (rec *recorder) ReadFrom(r io.Reader) (int64, error) {
	if !rec.wrote {
		rec.WriteHeader(http.StatusOK)
	}
	if rec.full {
		return io.Copy(io.Discard, r)
	}
	var n int64
	var err error
	if rf, ok := rec.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(rec.ResponseWriter, r)
	}
	rec.size += n
	return n, err
}

// streamed reports whether a response of content type ct streams its
// answer: server-sent events (OpenAI-compatible servers), or
// newline-delimited JSON (Ollama). Any other answer is sent whole.
func streamed(ct []string) bool {
	if len(ct) == 0 {
		return false
	}
	return strings.HasPrefix(ct[0], "text/event-stream") || strings.HasPrefix(ct[0], "application/x-ndjson")
}

// FlushError sends buffered data; streaming (SSE) responses depend on it.
// The writer below may be another wrapper that flushes only through its
// own Unwrap chain, so ask a ResponseController rather than assert Flusher.
func (rec *recorder) FlushError() error {
	if !rec.wrote {
		rec.WriteHeader(http.StatusOK)
	}
	if rec.full {
		return nil
	}
	return http.NewResponseController(rec.ResponseWriter).Flush()
}

// Flush is FlushError for callers that assert http.Flusher.
func (rec *recorder) Flush() { _ = rec.FlushError() }

// Unwrap lets http.ResponseController reach the connection (hijacking for
// upgrades, deadlines, full-duplex).
func (rec *recorder) Unwrap() http.ResponseWriter { return rec.ResponseWriter }

// firstBytes counts the successful first bytes and sums their times since
// admission: the concurrency limit's signal (admission.Signal), read by
// the sampler once a step. It is counted when the first byte is written,
// not when the answer ends: an answer's length is not congestion, and a
// signal a whole answer late would steer the limit a whole answer late.
// none counts, at their end, the admitted requests that had no successful
// first byte (a 5xx, no answer, the client gone, a panic), so that every
// admitted request is counted once in count + none: the requests whose
// wait for a first byte is over (admission.Signal.Answered).
type firstBytes struct {
	sum, count, none *shard.Counter
}

func newFirstBytes() firstBytes {
	return firstBytes{sum: shard.NewCounter(), count: shard.NewCounter(), none: shard.NewCounter()}
}

// answered is count + none, read after count so as to never overstate
// how many still wait (a request counted in none may have been in count).
func (f *firstBytes) answered() uint64 { return f.count.Load() + f.none.Load() }

func (f *firstBytes) add(sh uint32, ns int64) {
	f.sum.AddN(sh, uint64(max(0, ns)))
	f.count.Add(sh)
}
