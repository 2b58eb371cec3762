package throttle

import (
	"encoding/json"
	"io"
	"math"
	"net/http"
	"strings"
	"sync/atomic"
)

// weigher tells short requests from long ones by the answer length they
// ask for (max_tokens in an OpenAI or Ollama JSON body), and learns what
// short is: at most half the mean length asked. A short request gives its
// slot back soon, so it may borrow high's reserve (admission.Gate).
//
// A body is read only when a decision needs it: the request would wait
// for a slot while slots turn over slowly (the reserve is held then, and
// only short requests may borrow it). It is read whole, up to the
// configured bound, and put back for reverse_proxy: what the upstream
// receives is byte for byte what the client sent.
type weigher struct {
	limit atomic.Int64 // bytes: bodies with a Content-Length up to this are read; ≤ 0: none
	below atomic.Int64 // tokens: a length up to this is short; 0 while nothing is learned

	// Counted by the request path: the lengths read, and how many
	// requests were found short.
	sum, count, shorts atomic.Uint64

	// Sampler only.
	asked, weighed     float64 // decaying sums of the tokens asked and the requests read: their ratio is the mean length
	lastSum, lastCount uint64
}

// Tuning of the weigher.
const (
	// weighLearn: lengths read before the mean is trusted.
	weighLearn = 8
	// lengthAlpha: the decay per step of the mean length asked (memory:
	// 20 steps, 5 s, some tens of requests while many wait).
	lengthAlpha = 0.05
	// shortShare: a request asking at most this share of the mean length
	// is short.
	shortShare = 0.5
)

// short reports whether r is known to be short, reading its body if it
// has a small JSON one. A request it cannot weigh is not short.
func (w *weigher) short(r *http.Request) bool { return w.isShort(w.weigh(r)) }

// weigh returns the answer length r asks for, reading its body if it has
// a small JSON one (at most once per request: the body is then put back
// whole); 0 when it cannot be weighed.
func (w *weigher) weigh(r *http.Request) int64 {
	n := w.limit.Load()
	if r == nil || n <= 0 || r.Body == nil || r.Body == http.NoBody || r.ContentLength <= 0 || r.ContentLength > n {
		return 0
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.Contains(ct, "json") {
		return 0
	}
	tokens, ok := readLength(r)
	if !ok {
		return 0
	}
	w.sum.Add(uint64(tokens))
	w.count.Add(1)
	return tokens
}

// isShort reports whether an answer of tokens (0: unknown) is short, and
// counts it when it is.
func (w *weigher) isShort(tokens int64) bool {
	if below := w.below.Load(); below > 0 && tokens > 0 && tokens <= below {
		w.shorts.Add(1)
		return true
	}
	return false
}

// askedLength is the part of a request body that says how long an answer
// may be: OpenAI's max_completion_tokens (or the older max_tokens),
// Ollama's options.num_predict.
type askedLength struct {
	MaxCompletionTokens *int64 `json:"max_completion_tokens"`
	MaxTokens           *int64 `json:"max_tokens"`
	Options             struct {
		NumPredict *int64 `json:"num_predict"`
	} `json:"options"`
}

// readLength reads r's body (of a known Content-Length), puts it back and
// returns the answer length it asks for.
func readLength(r *http.Request) (int64, bool) {
	buf := make([]byte, r.ContentLength)
	got, err := io.ReadFull(r.Body, buf)
	r.Body = &replayBody{buf: buf[:got], rest: r.Body, err: err}
	if err != nil {
		return 0, false
	}
	var a askedLength
	if json.Unmarshal(buf, &a) != nil {
		return 0, false
	}
	for _, v := range []*int64{a.MaxCompletionTokens, a.MaxTokens, a.Options.NumPredict} {
		if v != nil && *v > 0 {
			return *v, true
		}
	}
	return 0, false
}

// replayBody gives back what was read of a body, then the rest of it (or
// the error that stopped the reading).
type replayBody struct {
	buf  []byte
	rest io.ReadCloser
	err  error
}

func (b *replayBody) Read(p []byte) (int, error) {
	if len(b.buf) > 0 {
		n := copy(p, b.buf)
		b.buf = b.buf[n:]
		return n, nil
	}
	if b.err != nil {
		return 0, b.err
	}
	return b.rest.Read(p)
}

func (b *replayBody) Close() error { return b.rest.Close() }

// step learns, once a sampler step, the mean length asked, and publishes
// what short is.
func (w *weigher) step() {
	sum, count := w.sum.Load(), w.count.Load()
	// Each request weighs the same, however many a step read.
	w.asked = w.asked*(1-lengthAlpha) + float64(sum-w.lastSum)
	w.weighed = w.weighed*(1-lengthAlpha) + float64(count-w.lastCount)
	w.lastSum, w.lastCount = sum, count
	if count >= weighLearn && w.weighed > 0 {
		w.below.Store(int64(math.Round(shortShare * w.asked / w.weighed)))
	}
}
