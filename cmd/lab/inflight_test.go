package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// blockingUpstream answers each request only when told to (release), and
// says when one has arrived (entered) or its client left (gone).
type blockingUpstream struct {
	entered chan struct{}
	release chan struct{}
	gone    chan struct{}
}

func newBlockingUpstream(t *testing.T) (*blockingUpstream, *url.URL) {
	b := &blockingUpstream{entered: make(chan struct{}, 64), release: make(chan struct{}), gone: make(chan struct{}, 64)}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Read the body first, as llmsim does: only then does the server
		// watch the connection and cancel r.Context() when the client goes.
		io.Copy(io.Discard, r.Body)
		b.entered <- struct{}{}
		select {
		case <-b.release:
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: [DONE]\n\n")
		case <-r.Context().Done():
			b.gone <- struct{}{}
		}
	}))
	t.Cleanup(ts.Close)
	u, _ := url.Parse(ts.URL)
	return b, u
}

// wait is a guard against a hang, never an assertion on timing.
func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func post(ctx context.Context, url string) (*http.Response, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions", strings.NewReader("{}"))
	return http.DefaultClient.Do(req)
}

// TestInflightLimit: N requests pass, the N+1th is refused at once with
// 429 and Retry-After: 1, and a slot frees when an answer completes and
// when a client leaves.
func TestInflightLimit(t *testing.T) {
	up, u := newBlockingUpstream(t)
	const n = 3
	lim, err := newInflightLimit(u, n)
	if err != nil {
		t.Fatal(err)
	}
	released := make(chan struct{}, 16)
	lim.gate.onRelease = func() { released <- struct{}{} }
	ts := httptest.NewServer(lim)
	defer ts.Close()

	type answer struct {
		status int
		body   string
		err    error
	}
	answers := make(chan answer, n)
	cancelFirst := func() {}
	for i := range n {
		ctx := context.Background()
		if i == 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithCancel(ctx)
			cancelFirst = cancel
		}
		go func() {
			resp, err := post(ctx, ts.URL)
			if err != nil {
				answers <- answer{err: err}
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			answers <- answer{status: resp.StatusCode, body: string(b)}
		}()
		wait(t, up.entered, "a request to reach the upstream")
	}
	if s := lim.snapshot(); s.InFlight != n || s.Limit != n || s.Peak != n {
		t.Fatalf("snapshot with %d in flight: %+v", n, s)
	}

	refused := func() {
		t.Helper()
		resp, err := post(context.Background(), ts.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" {
			t.Fatalf("request %d: %s, Retry-After %q; want 429 with Retry-After: 1", n+1, resp.Status, resp.Header.Get("Retry-After"))
		}
	}
	refused()

	// A client that leaves frees its slot.
	cancelFirst()
	wait(t, up.gone, "the upstream to see the client leave")
	wait(t, released, "the slot of the client that left")
	if a := <-answers; a.err == nil {
		t.Errorf("the cancelled request got an answer: %+v", a)
	}
	// Now one passes again; and the limit holds once more.
	go func() {
		resp, err := post(context.Background(), ts.URL)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			answers <- answer{status: resp.StatusCode, body: string(b)}
		}
	}()
	wait(t, up.entered, "the request after the slot freed")
	refused()

	// Answers that complete free theirs.
	for range n {
		up.release <- struct{}{}
		wait(t, released, "a completed answer's slot")
	}
	for range n {
		if a := <-answers; a.status != 200 || a.body != "data: [DONE]\n\n" {
			t.Errorf("answer %+v", a)
		}
	}
	if s := lim.snapshot(); s.InFlight != 0 || s.Peak != n {
		t.Errorf("after the answers: %+v (peak since the last look %d)", s, n)
	}
	if s := lim.snapshot(); s.Peak != 0 {
		t.Errorf("the peak resets at each look: %+v", s)
	}

	if _, err := newInflightLimit(u, 0); err == nil {
		t.Error("N = 0 accepted")
	}
	if _, err := newInflightLimit(nil, 3); err == nil {
		t.Error("no upstream accepted")
	}
	if defaultInflight(8) != 12 || defaultInflight(4) != 6 || defaultInflight(1) != 2 {
		t.Errorf("default N: %d %d %d", defaultInflight(8), defaultInflight(4), defaultInflight(1))
	}
}
