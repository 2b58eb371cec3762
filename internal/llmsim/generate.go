package llmsim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// handleGenerate serves /v1/chat/completions (chat) and /v1/completions:
// queue, wait for a slot, prefill, then one token at a time at the batch's
// current speed.
func (s *Server) handleGenerate(w http.ResponseWriter, r *http.Request, chat bool) {
	g, err := parseGenRequest(w, r, chat, s.cfg)
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			writeError(w, http.StatusRequestEntityTooLarge, err.Error())
			return
		}
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx := r.Context()
	q, err := s.sched.enqueue(g.prompt, time.Now())
	if err == nil {
		err = s.sched.wait(ctx, q, s.done)
	}
	switch {
	case errors.Is(err, errOOM), errors.Is(err, errClosed):
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	case errors.Is(err, errQueueFull):
		s.writeFull(w)
		return
	case err != nil: // client gone: nobody to answer
		return
	}
	defer s.sched.leave(q, false) // a no-op once finished below
	w.Header().Set("X-Llmsim-Queue-Wait", strconv.FormatInt(q.queueWait.Milliseconds(), 10))

	var pace pacer // prefill and tokens on one schedule: timer slop is not added up
	if !s.sleep(ctx, pace.next(time.Now(), s.cfg.PrefillTime)) {
		s.abandon(ctx, w, false)
		return
	}
	prefix := "cmpl"
	if chat {
		prefix = "chatcmpl"
	}
	id := fmt.Sprintf("%s-llmsim-%d", prefix, s.ids.Add(1))
	created := time.Now().Unix()
	finish := "stop"
	if g.explicitMx {
		finish = "length"
	}
	var sse *sseWriter
	if g.stream {
		sse = &sseWriter{w: w, rc: http.NewResponseController(w), chat: chat, id: id, created: created, model: s.cfg.ModelName}
	}
	for i := range g.maxTokens {
		if !s.sleep(ctx, pace.next(time.Now(), s.sched.tokenDelay())) {
			s.abandon(ctx, w, sse != nil && sse.started)
			return
		}
		s.sched.addToken(q)
		if sse != nil && !sse.token(i) {
			return
		}
	}
	// Generation is over: the slot frees before the answer goes out, as in a
	// real server, so a client holding the answer sees the counters updated.
	s.sched.leave(q, true)
	if sse != nil {
		sse.finish(finish)
		return
	}
	text := tokensText(g.maxTokens)
	c := choice{FinishReason: &finish}
	obj := "text_completion"
	if chat {
		c.Message, obj = &message{Role: "assistant", Content: text}, "chat.completion"
	} else {
		c.Text = &text
	}
	writeJSON(w, http.StatusOK, completion{
		ID: id, Object: obj, Created: created, Model: s.cfg.ModelName, Choices: []choice{c},
		Usage: &usage{PromptTokens: g.prompt, CompletionTokens: g.maxTokens, TotalTokens: g.prompt + g.maxTokens},
	})
}

// abandon ends a request cut short. A client that left needs no answer; one
// the server is leaving gets 503, unless its stream has begun, which then
// simply stops short of [DONE].
func (s *Server) abandon(ctx context.Context, w http.ResponseWriter, started bool) {
	if ctx.Err() == nil && !started {
		writeError(w, http.StatusServiceUnavailable, errClosed.Error())
	}
}

// sleep waits d, or less if ctx ends or the server closes; it reports
// whether the whole d passed.
func (s *Server) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
	case <-s.done:
	}
	return false
}

// sseWriter streams chunks as server-sent events, one flush per token.
type sseWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	chat    bool
	id      string
	created int64
	model   string
	started bool
}

func (e *sseWriter) chunk(c choice) bool {
	obj := "text_completion"
	if e.chat {
		obj = "chat.completion.chunk"
	}
	// Plain structs of strings and numbers: Marshal cannot fail.
	body, _ := json.Marshal(completion{ID: e.id, Object: obj, Created: e.created, Model: e.model, Choices: []choice{c}})
	return e.event(body)
}

func (e *sseWriter) event(data []byte) bool {
	if !e.started {
		h := e.w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		e.w.WriteHeader(http.StatusOK)
		e.started = true
	}
	if _, err := fmt.Fprintf(e.w, "data: %s\n\n", data); err != nil {
		return false
	}
	if err := e.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return false
	}
	return true
}

// token sends the i-th token; the first also carries the assistant role.
func (e *sseWriter) token(i int) bool {
	t := tokenText(i)
	c := choice{}
	if e.chat {
		c.Delta = &message{Content: t}
		if i == 0 {
			c.Delta.Role = "assistant"
		}
	} else {
		c.Text = &t
	}
	return e.chunk(c)
}

// finish sends the chunk carrying finish_reason, then [DONE].
func (e *sseWriter) finish(reason string) {
	c := choice{FinishReason: &reason}
	if e.chat {
		c.Delta = &message{}
	} else {
		empty := ""
		c.Text = &empty
	}
	if e.chunk(c) {
		e.event([]byte("[DONE]"))
	}
}
