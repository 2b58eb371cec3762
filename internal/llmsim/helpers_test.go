package llmsim

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// fastConfig makes a server that answers in microseconds.
func fastConfig() Config {
	return Config{Slots: 2, PrefillTime: time.Microsecond, TokenTime: time.Microsecond, DefaultMaxTokens: 3}
}

// slowTokens makes every token take an hour: a request holds its slot until
// its client leaves, which is how tests pin the scheduler in a state.
func slowTokens(slots int) Config {
	return Config{Slots: slots, PrefillTime: time.Microsecond, TokenTime: time.Hour}
}

type testEnv struct {
	sim *Server
	ts  *httptest.Server
}

func newEnv(t *testing.T, cfg Config) *testEnv {
	t.Helper()
	sim := New(cfg)
	ts := httptest.NewServer(sim)
	t.Cleanup(func() {
		sim.Close() // first: ends hangs and long generations
		ts.Close()
	})
	return &testEnv{sim: sim, ts: ts}
}

const chatBody = `{"model":"demo-llm","messages":[{"role":"user","content":"0123456789abcdef"}]}`

func (e *testEnv) do(t *testing.T, ctx context.Context, method, path, body string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, e.ts.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return e.ts.Client().Do(req)
}

// call does a request and reads the whole answer; it fails the test on a
// transport error.
func (e *testEnv) call(t *testing.T, method, path, body string) (int, http.Header, []byte) {
	t.Helper()
	resp, err := e.do(t, context.Background(), method, path, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp.StatusCode, resp.Header, b
}

// background sends a chat request that the test can cancel; its outcome
// (status, or -1 on a transport error) arrives on the channel.
func (e *testEnv) background(t *testing.T, body string) (context.CancelFunc, <-chan int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan int, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.ts.URL+"/v1/chat/completions", strings.NewReader(body))
		resp, err := e.ts.Client().Do(req)
		if err != nil {
			out <- -1
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		out <- resp.StatusCode
	}()
	t.Cleanup(cancel)
	return cancel, out
}

// waitState polls the server's state until cond holds (the scheduler moves
// in its own time; the assertion is on the state reached, not on timing).
func waitState(t *testing.T, s *Server, what string, cond func(State) bool) State {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := s.State()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; state %+v", what, st)
		}
		time.Sleep(time.Millisecond)
	}
}

func recv(t *testing.T, ch <-chan int) int {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatal("request did not finish")
		return 0
	}
}

func decode(t *testing.T, b []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
}

type errBody struct {
	Error struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Code    int    `json:"code"`
	} `json:"error"`
}
