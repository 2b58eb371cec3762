package throttle

import (
	"net/http"
)

// A request that waits for a slot leaves the queue as soon as its client
// goes away: it waits on its context. Go's HTTP/1 server ends that context
// on a closed connection only from a read of the connection, which it
// starts once the request body has been read to its end; while a body lies
// unread, the context lasts as long as the client's connection is not
// written to. So a waiting HTTP/1 request has its body read into memory
// meanwhile (holdBody), and the body is given back byte for byte to the
// next handler. HTTP/2 and HTTP/3 end a request's context when its stream
// is reset or its connection closes, whatever was read: nothing is read
// there.
//
// Memory is bounded: only bodies with a Content-Length of at most
// holdBodyMax are read, and at most holdBodyTotal bytes of them at once
// per throttle while they wait; a request beyond either bound waits with
// its body unread, and a client of it that goes away is seen when its
// wait ends.
const (
	holdBodyMax   = 1 << 20
	holdBodyTotal = 64 << 20
)

// holdBody starts reading r's body, when it is one to read, and returns
// the bytes it reserved of holdBodyTotal (0: none read), which the caller
// gives back (unhold) when the wait ends. r.Body is replaced by a body
// that yields what was read, once the reading ended, then the rest.
func (t *Throttle) holdBody(r *http.Request) int64 {
	if r == nil || r.ProtoMajor != 1 || r.Body == nil || r.Body == http.NoBody ||
		r.ContentLength <= 0 || r.ContentLength > holdBodyMax {
		return 0
	}
	if _, read := r.Body.(*replayBody); read { // weighed: read to its end already
		return 0
	}
	n := r.ContentLength + 1 // one byte more: the read that finds the end
	if t.held.Add(n) > holdBodyTotal {
		t.held.Add(-n)
		return 0
	}
	b := &heldBody{done: make(chan struct{}), replayBody: replayBody{rest: r.Body}}
	r.Body = b
	go b.fill(make([]byte, n))
	return n
}

// unhold gives back n bytes that holdBody reserved.
func (t *Throttle) unhold(n int64) {
	if n > 0 {
		t.held.Add(-n)
	}
}

// heldBody is a request body being read into memory while its request
// waits. Read waits until the reading ended, then replays. rest is set
// before the reading starts and never changes; buf and err are written by
// fill alone, before done is closed.
type heldBody struct {
	done chan struct{}
	replayBody
}

// fill reads the body into buf until it ends, fails or buf is full.
func (b *heldBody) fill(buf []byte) {
	defer close(b.done)
	got := 0
	var err error
	for got < len(buf) && err == nil {
		var k int
		k, err = b.rest.Read(buf[got:])
		got += k
	}
	b.buf, b.err = buf[:got], err
}

func (b *heldBody) Read(p []byte) (int, error) {
	<-b.done
	return b.replayBody.Read(p)
}
