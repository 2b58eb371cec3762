package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"
)

// Record is one request's fate. Times are milliseconds from the start of the
// run (AtMS, SentMS) or from sending (TTFBMS, TotalMS).
type Record struct {
	AtMS       float64  `json:"at_ms"`   // planned send time
	SentMS     float64  `json:"sent_ms"` // actual send time (≥ planned)
	Priority   Priority `json:"priority"`
	Class      Class    `json:"class"`
	Status     int      `json:"status,omitempty"`
	RetryAfter bool     `json:"retry_after,omitempty"` // a 429/503 carried Retry-After
	TTFBMS     float64  `json:"ttfb_ms,omitempty"`     // first SSE data line, or headers when not streaming
	TotalMS    float64  `json:"total_ms,omitempty"`    // answer fully read (or given up)
	WithinSLO  bool     `json:"within_slo,omitempty"`
	// MaxTokens is the max_tokens asked for (0: the server's default);
	// Tokens the completion tokens received: the usage the answer reports
	// when it has one, else the streamed chunks that carried text.
	MaxTokens int `json:"max_tokens,omitempty"`
	Tokens    int `json:"tokens,omitempty"`
}

// DoneMS is when the answer was complete (or abandoned), from the start.
func (r Record) DoneMS() float64 { return r.SentMS + r.TotalMS }

// maxErrorBody bounds how much of a refusal is read to classify it.
const maxErrorBody = 4 << 10

// requester sends one chat completion and classifies the answer.
type requester struct {
	client  *http.Client
	url     string
	bodies  map[int][]byte // by max_tokens (0: none named)
	stream  bool
	timeout time.Duration
	slo     SLO
}

// chatBody builds the request body: a prompt of promptChars characters
// (about promptChars/4 tokens to llmsim) and, if maxTokens > 0, max_tokens.
func chatBody(model string, promptChars, maxTokens int, stream bool) []byte {
	req := map[string]any{
		"model":    model,
		"messages": []map[string]string{{"role": "user", "content": strings.Repeat("x", promptChars)}},
		"stream":   stream,
	}
	if maxTokens > 0 {
		req["max_tokens"] = maxTokens
	}
	b, _ := json.Marshal(req) // maps of strings and ints cannot fail
	return b
}

// do sends one request and waits for its answer, at most r.timeout.
func (r *requester) do(run context.Context, prio Priority, maxTokens int) (rec Record) {
	rec.Priority, rec.MaxTokens = prio, maxTokens
	body, ok := r.bodies[maxTokens]
	if !ok { // sizes outside the plan's mix (tests): build it here
		body = r.bodies[0]
	}
	ctx, cancel := context.WithTimeout(run, r.timeout)
	defer cancel()
	start := time.Now()
	defer func() {
		rec.TotalMS = ms(time.Since(start))
		rec.WithinSLO = r.slo.Met(rec.Class, dur(rec.TTFBMS), dur(rec.TotalMS))
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url, bytes.NewReader(body))
	if err != nil { // the URL was checked when the run was set up
		rec.Class = ClassNetError
		return rec
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Priority", prio.String())
	if r.stream {
		req.Header.Set("Accept", "text/event-stream")
	}
	resp, err := r.client.Do(req)
	if err != nil {
		rec.Class = failure(run, ctx, err)
		return rec
	}
	defer resp.Body.Close()
	rec.Status = resp.StatusCode
	if resp.StatusCode != http.StatusOK {
		rec.TTFBMS = ms(time.Since(start))
		rec.RetryAfter = resp.Header.Get("Retry-After") != ""
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		rec.Class = ClassifyStatus(resp.StatusCode, body)
		return rec
	}
	if !r.stream || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		rec.TTFBMS = ms(time.Since(start))
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			rec.Class = failure(run, ctx, err)
			return rec
		}
		var c tokenChunk
		if json.Unmarshal(b, &c) == nil && c.Usage != nil {
			rec.Tokens = c.Usage.CompletionTokens
		}
		rec.Class = ClassOK
		return rec
	}
	rec.Class = r.readStream(run, ctx, resp.Body, start, &rec)
	return rec
}

// readStream reads server-sent events until [DONE]; the first data line
// sets the TTFB.
func (r *requester) readStream(run, ctx context.Context, body io.Reader, start time.Time, rec *Record) Class {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	usage := -1 // completion tokens from a usage chunk, when one comes
	for sc.Scan() {
		line := sc.Bytes()
		data, ok := bytes.CutPrefix(line, []byte("data:"))
		if !ok {
			continue
		}
		if rec.TTFBMS == 0 {
			rec.TTFBMS = ms(time.Since(start))
		}
		data = bytes.TrimSpace(data)
		if string(data) == "[DONE]" {
			_, _ = io.Copy(io.Discard, body) // let the connection be reused
			if usage >= 0 {
				rec.Tokens = usage
			}
			return ClassOK
		}
		var c tokenChunk
		if json.Unmarshal(data, &c) != nil {
			continue
		}
		if c.Usage != nil {
			usage = c.Usage.CompletionTokens
		}
		for _, ch := range c.Choices {
			if (ch.Delta != nil && ch.Delta.Content != "") || ch.Text != "" {
				rec.Tokens++
			}
		}
	}
	if err := sc.Err(); err != nil {
		return failure(run, ctx, err)
	}
	return ClassBroken
}

// tokenChunk is what the token count reads of a chunk or an answer: the
// text of each choice and the usage, when the server sends it.
type tokenChunk struct {
	Choices []struct {
		Delta *struct {
			Content string `json:"content"`
		} `json:"delta"`
		Text string `json:"text"`
	} `json:"choices"`
	Usage *struct {
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
}

// errDrained cancels requests still out when the drain time after the last
// send is over: they had no answer in time, so they count as timeouts.
var errDrained = errors.New("loadgen: no answer before the drain ended")

// failure classifies a transport error: the request's own deadline or the
// drain's end is a timeout; the run being interrupted (run ended for
// another reason), or anything else, a network error.
func failure(run, req context.Context, err error) Class {
	switch {
	case errors.Is(context.Cause(run), errDrained):
		return ClassTimeout
	case run.Err() != nil:
		return ClassNetError
	case req.Err() != nil || errors.Is(err, context.DeadlineExceeded):
		return ClassTimeout
	}
	return ClassNetError
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func dur(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }
