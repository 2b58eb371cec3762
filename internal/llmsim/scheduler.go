package llmsim

import (
	"container/list"
	"context"
	"errors"
	"sync"
	"time"
)

// Errors a request can meet on its way to a slot.
var (
	errOOM       = errors.New("CUDA out of memory (simulated)")
	errQueueFull = errors.New("model is overloaded: request queue is full") // answered as Config.FullAnswer says
	errClosed    = errors.New("server is shutting down")
)

type seqState int

const (
	stQueued seqState = iota
	stRunning
	stDone
)

// seq is one request inside the scheduler. All fields are guarded by
// scheduler.mu.
type seq struct {
	prompt    int
	generated int
	state     seqState
	elem      *list.Element
	queuedAt  time.Time
	admitted  chan error // buffered 1: nil = running, else the reason it failed
	queueWait time.Duration
}

// scheduler is the FIFO queue feeding the batch slots, and the memory
// bookkeeping that comes with it. One mutex: the work per call is tiny and
// exactness matters more than throughput here.
type scheduler struct {
	cfg Config

	mu       sync.Mutex
	slots    int
	queue    list.List // of *seq
	running  int
	kvTokens int64 // Σ prompt+generated over running sequences
	ooms     int64
	rejected int64 // queue full
	served   int64
	cancels  int64
}

func newScheduler(cfg Config) *scheduler {
	s := &scheduler{cfg: cfg, slots: cfg.Slots}
	s.queue.Init()
	return s
}

// memUsedLocked is BaseMemory + running KV + queued buffers.
func (s *scheduler) memUsedLocked() int64 {
	return s.cfg.BaseMemory + s.kvTokens*s.cfg.KVPerToken + int64(s.queue.Len())*s.cfg.QueuedMemory
}

// enqueue admits a request of prompt tokens to the queue, or fails at once
// when its buffers would not fit in memory or the queue is full (at
// QueueLimit, or with NoQueue whenever every slot is busy).
func (s *scheduler) enqueue(prompt int, now time.Time) (*seq, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.memUsedLocked()+s.cfg.QueuedMemory > s.cfg.TotalMemory {
		s.ooms++
		return nil, errOOM
	}
	if (s.cfg.QueueLimit > 0 && s.queue.Len() >= s.cfg.QueueLimit) || (s.cfg.NoQueue && s.running+s.queue.Len() >= s.slots) {
		s.rejected++
		return nil, errQueueFull
	}
	q := &seq{prompt: prompt, queuedAt: now, admitted: make(chan error, 1)}
	q.elem = s.queue.PushBack(q)
	s.dispatchLocked(now)
	return q, nil
}

// dispatchLocked moves queued requests into free slots, in order. A request
// whose prompt KV does not fit fails with OOM and frees its queue buffers.
func (s *scheduler) dispatchLocked(now time.Time) {
	for s.running < s.slots && s.queue.Len() > 0 {
		q := s.queue.Remove(s.queue.Front()).(*seq)
		q.elem = nil
		q.queueWait = now.Sub(q.queuedAt)
		if s.memUsedLocked()+int64(q.prompt)*s.cfg.KVPerToken > s.cfg.TotalMemory {
			s.ooms++
			q.state = stDone
			q.admitted <- errOOM
			continue
		}
		q.state = stRunning
		s.running++
		s.kvTokens += int64(q.prompt)
		q.admitted <- nil
	}
}

// wait blocks until q has a slot, fails, ctx ends or done closes. On any
// error other than OOM the request has left the scheduler.
func (s *scheduler) wait(ctx context.Context, q *seq, done <-chan struct{}) error {
	select {
	case err := <-q.admitted:
		return err
	case <-ctx.Done():
		s.leave(q, false)
		return ctx.Err()
	case <-done:
		s.leave(q, false)
		return errClosed
	}
}

// leave removes q from the queue or frees its slot; ok says it finished
// normally (counted as served). Calling it twice is harmless.
func (s *scheduler) leave(q *seq, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch q.state {
	case stQueued:
		s.queue.Remove(q.elem)
		q.elem = nil
		s.cancels++
	case stRunning:
		s.running--
		s.kvTokens -= int64(q.prompt + q.generated)
		if ok {
			s.served++
		} else {
			s.cancels++
		}
		s.dispatchLocked(time.Now())
	case stDone:
		return
	}
	q.state = stDone
}

// tokenDelay is the time the next token takes at the current occupancy.
func (s *scheduler) tokenDelay() time.Duration {
	s.mu.Lock()
	running, slots := s.running, s.slots
	s.mu.Unlock()
	return s.cfg.TokenDelay(running, slots)
}

// addToken grows q's KV cache by one token.
func (s *scheduler) addToken(q *seq) {
	s.mu.Lock()
	if q.state == stRunning {
		q.generated++
		s.kvTokens++
	}
	s.mu.Unlock()
}

// setSlots changes the batch size; running sequences above it finish, and
// no new ones start until the batch is under it.
func (s *scheduler) setSlots(n int) {
	s.mu.Lock()
	s.slots = n
	s.dispatchLocked(time.Now())
	s.mu.Unlock()
}

// snapshot is a consistent view of the scheduler's counters.
type snapshot struct {
	Slots, Running, Waiting          int
	MemUsed                          int64
	OOMs, Rejected, Served, Canceled int64
}

func (s *scheduler) snapshot() snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return snapshot{
		Slots: s.slots, Running: s.running, Waiting: s.queue.Len(),
		MemUsed: s.memUsedLocked(),
		OOMs:    s.ooms, Rejected: s.rejected, Served: s.served, Canceled: s.cancels,
	}
}
