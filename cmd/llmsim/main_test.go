package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a log sink the server goroutine and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRunServesAndStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs syncBuffer
	addrc := make(chan net.Addr, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, []string{"-listen", "127.0.0.1:0", "-slots", "4", "-prefill", "1ms", "-token-time", "1ms",
			"-max-tokens", "2", "-total-mem", "40GiB", "-model", "m1", "-drop-slots-after", "20ms", "-drop-slots-to", "1"},
			&logs, func(a net.Addr) { addrc <- a })
	}()
	var base string
	select {
	case a := <-addrc:
		base = "http://" + a.String()
	case err := <-errc:
		t.Fatalf("run ended early: %v", err)
	}
	if l := logs.String(); !strings.Contains(l, "capacity ≈ 800.0 req/s") || !strings.Contains(l, "4 slots") {
		t.Fatalf("start line: %q", l) // 4 / (0.001 + 2×0.001×2)
	}

	resp, err := http.Post(base+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Model string `json:"model"`
		Usage struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	err = json.NewDecoder(resp.Body).Decode(&c)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || c.Model != "m1" || c.Usage.CompletionTokens != 2 {
		t.Fatalf("chat: %d %+v %v", resp.StatusCode, c, err)
	}

	// The scheduled capacity drop happens.
	deadline := time.Now().Add(5 * time.Second)
	for {
		var st struct {
			Slots       int   `json:"slots"`
			MemoryTotal int64 `json:"memory_total_bytes"`
		}
		resp, err := http.Get(base + "/admin/state")
		if err != nil {
			t.Fatal(err)
		}
		_ = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if st.MemoryTotal != 40<<30 {
			t.Fatalf("total memory %d, want 40 GiB", st.MemoryTotal)
		}
		if st.Slots == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slots still %d", st.Slots)
		}
		time.Sleep(5 * time.Millisecond)
	}

	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("run after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	if _, err := http.Get(base + "/health"); err == nil {
		t.Fatal("still serving after shutdown")
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-slots", "-1"},
		{"-slots", "0"},
		{"-total-mem", "lots"},
		{"-total-mem", "1GiB", "-base-mem", "2GiB"},
		{"-token-slowdown", "0.5"},
		{"-drop-slots-to", "-2"},
		{"-nope"},
		{"extra"},
		{"-listen", "256.0.0.1:0"},
		{"-full-answer", "vllm"},
	} {
		err := run(context.Background(), args, io.Discard, nil)
		if err == nil || errors.Is(err, flag.ErrHelp) {
			t.Errorf("run(%q) = %v, want an error", args, err)
		}
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]int64{
		"1024": 1024, "80GiB": 80 << 30, "80gi": 80 << 30, "512MiB": 512 << 20, "1.5KiB": 1536,
		"80GB": 80e9, "2m": 2e6, "7b": 7, " 3 MiB ": 3 << 20,
	} {
		var b byteSize
		if err := b.Set(in); err != nil || int64(b) != want {
			t.Errorf("Set(%q) = %d, %v; want %d", in, b, err, want)
		}
	}
	for _, in := range []string{"", "GiB", "-1GiB", "NaN", "Inf", "1e30", "12 parsecs"} {
		var b byteSize
		if err := b.Set(in); err == nil {
			t.Errorf("Set(%q) = %d, want an error", in, b)
		}
	}
}

// -no-queue and -full-answer make a server that refuses as Ollama does as
// soon as its one slot is busy, and says so at start.
func TestRunNoQueueAnswersAsOllama(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs syncBuffer
	addrc := make(chan net.Addr, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, []string{"-listen", "127.0.0.1:0", "-slots", "1", "-prefill", "1ms", "-token-time", "1h",
			"-no-queue", "-full-answer", "ollama"}, &logs, func(a net.Addr) { addrc <- a })
	}()
	var base string
	select {
	case a := <-addrc:
		base = "http://" + a.String()
	case err := <-errc:
		t.Fatalf("run ended early: %v", err)
	}
	if l := logs.String(); !strings.Contains(l, "no queue") || !strings.Contains(l, "ollama") {
		t.Fatalf("start line: %q", l)
	}
	body := `{"messages":[{"role":"user","content":"hi"}],"stream":true}`
	go func() { // takes the one slot for an hour, until the server shuts down
		if resp, err := http.Post(base+"/v1/chat/completions", "application/json", strings.NewReader(body)); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var st struct {
			Running int `json:"running"`
		}
		resp, err := http.Get(base + "/admin/state")
		if err != nil {
			t.Fatal(err)
		}
		_ = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if st.Running == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first request never took the slot")
		}
		time.Sleep(5 * time.Millisecond)
	}
	resp, err := http.Post(base+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), "server busy, please try again.  maximum pending requests exceeded") {
		t.Fatalf("with the one slot busy: %d %q, want Ollama's 503", resp.StatusCode, b)
	}
	cancel()
	select {
	case <-errc:
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel")
	}
}
