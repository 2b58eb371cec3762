package llmsim

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestChatCompletionShape(t *testing.T) {
	e := newEnv(t, fastConfig())
	// 16 + 24 characters = 40 → 10 prompt tokens; max_tokens 5 → "length".
	body := `{"model":"x","messages":[{"role":"system","content":"0123456789abcdef"},` +
		`{"role":"user","content":[{"type":"text","text":"0123456789abcdefghijklmn"}]}],"max_tokens":5}`
	code, hdr, b := e.call(t, http.MethodPost, "/v1/chat/completions", body)
	if code != http.StatusOK || !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
		t.Fatalf("status %d, type %q: %s", code, hdr.Get("Content-Type"), b)
	}
	if _, err := strconv.Atoi(hdr.Get("X-Llmsim-Queue-Wait")); err != nil {
		t.Fatalf("X-Llmsim-Queue-Wait %q: %v", hdr.Get("X-Llmsim-Queue-Wait"), err)
	}
	var c completion
	decode(t, b, &c)
	if c.Object != "chat.completion" || c.Model != "demo-llm" || !strings.HasPrefix(c.ID, "chatcmpl-") || c.Created == 0 {
		t.Fatalf("envelope %+v", c)
	}
	if len(c.Choices) != 1 || c.Choices[0].Message == nil || c.Choices[0].FinishReason == nil {
		t.Fatalf("choices %s", b)
	}
	ch := c.Choices[0]
	if ch.Message.Role != "assistant" || ch.Message.Content != "tok0 tok1 tok2 tok3 tok4" || *ch.FinishReason != "length" {
		t.Fatalf("choice %+v %q", ch.Message, *ch.FinishReason)
	}
	if u := c.Usage; u == nil || *u != (usage{PromptTokens: 10, CompletionTokens: 5, TotalTokens: 15}) {
		t.Fatalf("usage %+v", c.Usage)
	}

	// No max_tokens: DefaultMaxTokens, and the model "stops" on its own.
	_, _, b = e.call(t, http.MethodPost, "/v1/chat/completions", chatBody)
	c = completion{}
	decode(t, b, &c)
	if *c.Choices[0].FinishReason != "stop" || c.Usage.CompletionTokens != 3 || c.Usage.PromptTokens != 4 {
		t.Fatalf("default generation: %s", b)
	}
	if st := e.sim.State(); st.Served != 2 || st.Running != 0 || st.MemoryUsed != DefaultBaseMemory {
		t.Fatalf("state after two requests: %+v", st)
	}
}

func TestMaxTokensCapped(t *testing.T) {
	cfg := fastConfig()
	cfg.MaxTokensLimit = 4
	e := newEnv(t, cfg)
	_, _, b := e.call(t, http.MethodPost, "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":100000}`)
	var c completion
	decode(t, b, &c)
	if c.Usage.CompletionTokens != 4 || c.Usage.PromptTokens != 1 {
		t.Fatalf("usage %+v, want 4 completion tokens (the cap), 1 prompt token (the minimum)", c.Usage)
	}
}

func TestBadRequests(t *testing.T) {
	e := newEnv(t, fastConfig())
	for _, tc := range []struct {
		method, path, body string
		code               int
		msg                string
	}{
		{"POST", "/v1/chat/completions", `{"messages":`, 400, "invalid JSON"},
		{"POST", "/v1/chat/completions", `{"messages":[]}`, 400, "messages"},
		{"POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":5}]}`, 400, "content"},
		{"POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}],"max_tokens":0}`, 400, "max_tokens"},
		{"POST", "/v1/completions", `{"max_tokens":3}`, 400, "prompt"},
		{"GET", "/v1/chat/completions", "", 405, "use POST"},
		{"POST", "/v1/nope", "{}", 404, "no route"},
		{"POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"` + strings.Repeat("a", maxBody) + `"}]}`, 413, "too large"},
	} {
		code, _, b := e.call(t, tc.method, tc.path, tc.body)
		var eb errBody
		decode(t, b, &eb)
		if code != tc.code || eb.Error.Code != tc.code || !strings.Contains(eb.Error.Message, tc.msg) || eb.Error.Type != "invalid_request_error" {
			t.Errorf("%s %s %.40q: %d %+v, want %d mentioning %q", tc.method, tc.path, tc.body, code, eb.Error, tc.code, tc.msg)
		}
	}
}

func TestLegacyCompletionsModelsHealth(t *testing.T) {
	e := newEnv(t, fastConfig())
	code, _, b := e.call(t, "POST", "/v1/completions", `{"prompt":["abcd","efgh"],"max_tokens":2}`)
	var c completion
	decode(t, b, &c)
	if code != 200 || c.Object != "text_completion" || c.Choices[0].Text == nil || *c.Choices[0].Text != "tok0 tok1" || c.Usage.PromptTokens != 2 {
		t.Fatalf("completions: %d %s", code, b)
	}
	code, _, b = e.call(t, "GET", "/v1/models", "")
	var m struct {
		Object string `json:"object"`
		Data   []struct {
			ID      string `json:"id"`
			Object  string `json:"object"`
			Created int64  `json:"created"`
			OwnedBy string `json:"owned_by"`
		} `json:"data"`
	}
	decode(t, b, &m)
	if code != 200 || m.Object != "list" || len(m.Data) != 1 || m.Data[0].ID != "demo-llm" {
		t.Fatalf("models: %d %s", code, b)
	}
	if code, _, _ := e.call(t, "GET", "/health", ""); code != 200 {
		t.Fatalf("health: %d", code)
	}
}

// readEvent reads one SSE event's data line.
func readEvent(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("reading event: %v", err)
	}
	if blank, err := r.ReadString('\n'); err != nil || blank != "\n" {
		t.Fatalf("event %q not followed by a blank line: %q %v", line, blank, err)
	}
	data, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "data: ")
	if !ok {
		t.Fatalf("event line %q", line)
	}
	return data
}

func TestStreamChunks(t *testing.T) {
	for _, chat := range []bool{true, false} {
		t.Run(fmt.Sprint("chat=", chat), func(t *testing.T) {
			e := newEnv(t, fastConfig())
			path, body, obj := "/v1/chat/completions", `{"messages":[{"role":"user","content":"hello"}],"stream":true,"max_tokens":4}`, "chat.completion.chunk"
			if !chat {
				path, body, obj = "/v1/completions", `{"prompt":"hello","stream":true,"max_tokens":4}`, "text_completion"
			}
			resp, err := e.do(t, context.Background(), "POST", path, body)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("status %d, type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			r := bufio.NewReader(resp.Body)
			var text strings.Builder
			for i := range 5 { // 4 tokens + the finish chunk
				var c completion
				decode(t, []byte(readEvent(t, r)), &c)
				if c.Object != obj || len(c.Choices) != 1 || c.Usage != nil {
					t.Fatalf("chunk %d: %+v", i, c)
				}
				ch := c.Choices[0]
				if (ch.FinishReason != nil) != (i == 4) {
					t.Fatalf("chunk %d: finish_reason %v", i, ch.FinishReason)
				}
				if chat {
					if ch.Delta == nil || (ch.Delta.Role == "assistant") != (i == 0) {
						t.Fatalf("chunk %d: delta %+v", i, ch.Delta)
					}
					text.WriteString(ch.Delta.Content)
				} else {
					text.WriteString(*ch.Text)
				}
				if i == 4 && *ch.FinishReason != "length" {
					t.Fatalf("finish_reason %q", *ch.FinishReason)
				}
			}
			if got := readEvent(t, r); got != "[DONE]" {
				t.Fatalf("last event %q, want [DONE]", got)
			}
			if text.String() != "tok0 tok1 tok2 tok3" {
				t.Fatalf("streamed text %q", text.String())
			}
			if _, err := r.ReadByte(); err == nil {
				t.Fatal("data after [DONE]")
			}
		})
	}
}

// The first chunk must reach the client while the server is still
// generating. The whole stream (15 tokens, about 2.7 KB) fits in net/http's
// 4 KiB write buffer, so without a flush per token nothing would arrive
// until the request had finished; with 60 ms tokens it is still running
// after the first two events.
func TestStreamIsProgressive(t *testing.T) {
	cfg := Config{Slots: 1, PrefillTime: time.Microsecond, TokenTime: 60 * time.Millisecond}
	e := newEnv(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err := e.do(t, ctx, "POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"stream":true,"max_tokens":15}`)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	for i := range 2 {
		var c completion
		decode(t, []byte(readEvent(t, r)), &c)
		if c.Choices[0].Delta.Content != tokenText(i) {
			t.Fatalf("event %d: %+v", i, c.Choices[0].Delta)
		}
	}
	if st := e.sim.State(); st.Running != 1 || st.Served != 0 {
		t.Fatalf("after two events the request should still be generating: %+v", st)
	}
	cancel() // the client leaves mid-stream: its slot frees
	waitState(t, e.sim, "slot freed", func(s State) bool { return s.Running == 0 && s.Cancelled == 1 })
}

func TestQueueingWithOneSlot(t *testing.T) {
	e := newEnv(t, slowTokens(1))
	cancelA, doneA := e.background(t, chatBody)
	waitState(t, e.sim, "A running", func(s State) bool { return s.Running == 1 })
	cancelB, doneB := e.background(t, chatBody)
	st := waitState(t, e.sim, "B waiting", func(s State) bool { return s.Waiting == 1 })
	if st.Running != 1 || st.MemoryUsed != DefaultBaseMemory+DefaultQueuedMemory+4*DefaultKVPerToken {
		t.Fatalf("state %+v", st)
	}
	cancelA()
	if got := recv(t, doneA); got != -1 {
		t.Fatalf("cancelled request ended with %d", got)
	}
	waitState(t, e.sim, "B admitted", func(s State) bool { return s.Running == 1 && s.Waiting == 0 && s.Cancelled == 1 })
	cancelB()
	recv(t, doneB)
	st = waitState(t, e.sim, "all gone", func(s State) bool { return s.Running == 0 })
	if st.MemoryUsed != DefaultBaseMemory || st.Cancelled != 2 {
		t.Fatalf("state after both left: %+v", st)
	}
}

func TestCancelWhileQueued(t *testing.T) {
	e := newEnv(t, slowTokens(1))
	e.background(t, chatBody)
	waitState(t, e.sim, "A running", func(s State) bool { return s.Running == 1 })
	cancelB, doneB := e.background(t, chatBody)
	waitState(t, e.sim, "B waiting", func(s State) bool { return s.Waiting == 1 })
	cancelB()
	recv(t, doneB)
	st := waitState(t, e.sim, "B left the queue", func(s State) bool { return s.Waiting == 0 })
	if st.Running != 1 || st.MemoryUsed != DefaultBaseMemory+4*DefaultKVPerToken {
		t.Fatalf("state %+v", st)
	}
}

func TestQueueWaitHeader(t *testing.T) {
	e := newEnv(t, fastConfig())
	e.sim.SetSlots(0)
	out := make(chan http.Header, 1)
	go func() {
		resp, err := e.do(t, context.Background(), "POST", "/v1/chat/completions", chatBody)
		if err != nil {
			out <- nil
			return
		}
		resp.Body.Close()
		out <- resp.Header
	}()
	waitState(t, e.sim, "queued", func(s State) bool { return s.Waiting == 1 })
	time.Sleep(20 * time.Millisecond) // the request waits at least this long: the header must say so
	e.sim.SetSlots(1)
	var h http.Header
	select {
	case h = <-out:
	case <-time.After(5 * time.Second):
		t.Fatal("no answer")
	}
	ms, err := strconv.Atoi(h.Get("X-Llmsim-Queue-Wait"))
	if err != nil || ms < 20 {
		t.Fatalf("X-Llmsim-Queue-Wait %q, want ≥ 20", h.Get("X-Llmsim-Queue-Wait"))
	}
}

func TestOOMOverHTTP(t *testing.T) {
	cfg := fastConfig()
	cfg.TotalMemory, cfg.BaseMemory, cfg.QueuedMemory, cfg.KVPerToken = 10*MiB, 4*MiB, MiB, 1<<10
	e := newEnv(t, cfg)
	e.sim.SetSlots(0)
	for i := 1; i <= 6; i++ {
		e.background(t, chatBody)
		waitState(t, e.sim, fmt.Sprint(i, " queued"), func(s State) bool { return s.Waiting == i })
		if got := e.sim.State().MemoryUsed; got != 4*MiB+int64(i)*MiB {
			t.Fatalf("%d queued: memory %d", i, got)
		}
	}
	code, _, b := e.call(t, "POST", "/v1/chat/completions", chatBody)
	want := `{"error":{"message":"CUDA out of memory (simulated)","type":"server_error","code":503}}`
	if code != 503 || strings.TrimSpace(string(b)) != want {
		t.Fatalf("arrival past total: %d %s", code, b)
	}
	if st := e.sim.State(); st.OOMs != 1 || st.Waiting != 6 {
		t.Fatalf("state %+v", st)
	}
	e.sim.SetSlots(8) // the queue drains; memory frees; arrivals succeed again
	waitState(t, e.sim, "drained", func(s State) bool { return s.Served == 6 })
	if code, _, b := e.call(t, "POST", "/v1/chat/completions", chatBody); code != 200 {
		t.Fatalf("after draining: %d %s", code, b)
	}
}

func TestSetSlotsOverHTTPState(t *testing.T) {
	e := newEnv(t, slowTokens(4))
	for range 4 {
		e.background(t, chatBody)
	}
	waitState(t, e.sim, "4 running", func(s State) bool { return s.Running == 4 })
	code, _, b := e.call(t, "POST", "/admin/slots", `{"slots":2}`)
	var st State
	if err := json.Unmarshal(b, &st); code != 200 || err != nil || st.Slots != 2 || st.Running != 4 {
		t.Fatalf("POST /admin/slots: %d %s", code, b)
	}
	cancel, done := e.background(t, chatBody)
	waitState(t, e.sim, "new arrival waits", func(s State) bool { return s.Waiting == 1 && s.Running == 4 })
	cancel()
	recv(t, done)
}

func TestQueueLimitAndCloseOverHTTP(t *testing.T) {
	cfg := slowTokens(1)
	cfg.QueueLimit = 1
	e := newEnv(t, cfg)
	_, doneA := e.background(t, chatBody)
	waitState(t, e.sim, "A running", func(s State) bool { return s.Running == 1 })
	_, doneB := e.background(t, chatBody)
	waitState(t, e.sim, "B waiting", func(s State) bool { return s.Waiting == 1 })
	code, _, b := e.call(t, "POST", "/v1/chat/completions", chatBody)
	var eb errBody
	decode(t, b, &eb)
	if code != 429 || eb.Error.Code != 429 || !strings.Contains(eb.Error.Message, "queue is full") {
		t.Fatalf("over the queue limit: %d %s", code, b)
	}
	if st := e.sim.State(); st.Rejected != 1 || st.OOMs != 0 {
		t.Fatalf("state %+v", st)
	}
	// Close answers both the running and the queued request, 503, at once.
	e.sim.Close()
	if a, b := recv(t, doneA), recv(t, doneB); a != 503 || b != 503 {
		t.Fatalf("after Close: running got %d, queued got %d; want 503 both", a, b)
	}
}

// A full queue answers as the server FullAnswer names does: Ollama's 503
// "server busy", TGI's 429 "Model is overloaded", or the OpenAI-style 429.
// NoQueue refuses as soon as every slot is busy; QueueLimit past its cap.
func TestFullAnswersAsRealServers(t *testing.T) {
	for _, tc := range []struct {
		answer string
		status int
		body   string
	}{
		{FullOllama, 503, `{"error":"server busy, please try again.  maximum pending requests exceeded"}`},
		{FullTGI, 429, `{"error":"Model is overloaded","error_type":"overloaded"}`},
		{"", 429, `"message":"model is overloaded: request queue is full"`},
	} {
		t.Run("no queue "+tc.answer, func(t *testing.T) {
			cfg := slowTokens(2)
			cfg.NoQueue, cfg.FullAnswer = true, tc.answer
			e := newEnv(t, cfg)
			for range 2 {
				e.background(t, chatBody)
			}
			waitState(t, e.sim, "both slots busy", func(s State) bool { return s.Running == 2 })
			code, _, b := e.call(t, "POST", "/v1/chat/completions", chatBody)
			if code != tc.status || !strings.Contains(string(b), tc.body) {
				t.Fatalf("every slot busy, no queue: %d %s; want %d %s", code, b, tc.status, tc.body)
			}
			if st := e.sim.State(); st.Rejected != 1 || st.Waiting != 0 {
				t.Fatalf("state %+v, want 1 rejected, none waiting", st)
			}
		})
	}
	t.Run("queue of 2, ollama", func(t *testing.T) {
		cfg := slowTokens(1)
		cfg.QueueLimit, cfg.FullAnswer = 2, FullOllama
		e := newEnv(t, cfg)
		for range 3 {
			e.background(t, chatBody)
		}
		waitState(t, e.sim, "1 running, 2 waiting", func(s State) bool { return s.Running == 1 && s.Waiting == 2 })
		code, _, b := e.call(t, "POST", "/v1/chat/completions", chatBody)
		if code != 503 || !strings.Contains(string(b), "server busy") {
			t.Fatalf("past a queue of 2: %d %s, want Ollama's 503", code, b)
		}
	})
	if err := (Config{FullAnswer: "vllm"}).Validate(); err == nil || !strings.Contains(err.Error(), "full answer") {
		t.Fatalf("unknown full answer: %v", err)
	}
}
