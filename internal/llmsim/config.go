// Package llmsim simulates an OpenAI-compatible LLM inference server running
// on one GPU: a FIFO queue feeding a fixed number of batch slots, per-token
// time that rises with batch occupancy, and GPU memory that grows with the
// queue until it runs out. It exists so that a load shedder in front of it
// visibly matters: below capacity it answers quickly, above capacity its
// queue, latency and memory grow without bound and it finally fails with
// simulated CUDA out-of-memory errors, as real servers do.
//
// Capacity (req/s at a full batch, for DefaultMaxTokens tokens each) is
//
//	Slots / (PrefillTime + DefaultMaxTokens × TokenTime × TokenSlowdown)
//
// which with the defaults is 8 / (0.04 s + 24 × 0.015 s × 2) ≈ 10.5 req/s.
package llmsim

import (
	"errors"
	"fmt"
	"time"
)

// Memory sizes used by the defaults.
const (
	MiB = int64(1) << 20
	GiB = int64(1) << 30
)

// Defaults look like an 8B fp16 model on an 80 GB card: 16 GiB of weights,
// 512 KiB of KV cache per token, and 256 MiB held by each queued request
// (prompt buffers, pinned host/device staging). At healthy load memory stays
// near 20%; 176 queued requests pass 75%, and about 256 exhaust the card.
const (
	DefaultSlots            = 8
	DefaultPrefillTime      = 40 * time.Millisecond
	DefaultTokenTime        = 15 * time.Millisecond
	DefaultTokenSlowdown    = 2.0
	DefaultDefaultMaxTokens = 24
	DefaultMaxTokensLimit   = 512
	DefaultTotalMemory      = 80 * GiB
	DefaultBaseMemory       = 16 * GiB
	DefaultKVPerToken       = 512 << 10
	DefaultQueuedMemory     = 256 * MiB
	DefaultModelName        = "demo-llm"
)

// How a server answers a request its full queue cannot take.
const (
	// FullOpenAI: 429 with an OpenAI-style error body.
	FullOpenAI = "openai"
	// FullOllama: 503 {"error":"server busy, please try again.  maximum
	// pending requests exceeded"}, as Ollama answers at OLLAMA_MAX_QUEUE.
	FullOllama = "ollama"
	// FullTGI: 429 {"error":"Model is overloaded","error_type":"overloaded"},
	// as text-generation-inference answers at its queue's limit.
	FullTGI = "tgi"
)

// Config sets the simulated server's shape. Zero fields take the defaults
// above (New applies them); Validate reports fields that are out of range.
type Config struct {
	Slots            int           // concurrent sequences in the batch
	PrefillTime      time.Duration // per request, before its first token
	TokenTime        time.Duration // per token at an empty batch
	TokenSlowdown    float64       // per-token time multiplier at a full batch (≥ 1)
	DefaultMaxTokens int           // tokens generated when the request names none
	MaxTokensLimit   int           // cap on a request's max_tokens
	QueueLimit       int           // 0 = unbounded (real servers queue without bound)
	NoQueue          bool          // refuse whenever every slot is busy: a queue capped at 0
	// FullAnswer is how a request over the queue's cap is refused, as a
	// real server answers when full: FullOpenAI (the default), FullOllama
	// or FullTGI.
	FullAnswer   string
	TotalMemory  int64  // bytes of GPU memory
	BaseMemory   int64  // bytes held by weights and runtime
	KVPerToken   int64  // bytes per token of a running sequence, prompt included
	QueuedMemory int64  // bytes each queued request holds
	ModelName    string // reported in responses, /v1/models and metric labels
	SMIFile      string // nvidia-smi CSV rewritten every 100 ms; empty = off
}

// Validate reports the first field that is out of range. Zero means
// "default" and is always accepted.
func (c Config) Validate() error {
	switch {
	case c.Slots < 0:
		return fmt.Errorf("llmsim: slots %d: must be ≥ 0", c.Slots)
	case c.PrefillTime < 0:
		return fmt.Errorf("llmsim: prefill time %v: must be ≥ 0", c.PrefillTime)
	case c.TokenTime < 0:
		return fmt.Errorf("llmsim: token time %v: must be ≥ 0", c.TokenTime)
	case c.TokenSlowdown != 0 && (c.TokenSlowdown < 1 || c.TokenSlowdown > 1000):
		return fmt.Errorf("llmsim: token slowdown %g: must be in [1, 1000]", c.TokenSlowdown)
	case c.DefaultMaxTokens < 0:
		return fmt.Errorf("llmsim: default max tokens %d: must be ≥ 0", c.DefaultMaxTokens)
	case c.MaxTokensLimit < 0:
		return fmt.Errorf("llmsim: max tokens limit %d: must be ≥ 0", c.MaxTokensLimit)
	case c.QueueLimit < 0:
		return fmt.Errorf("llmsim: queue limit %d: must be ≥ 0", c.QueueLimit)
	case c.FullAnswer != "" && c.FullAnswer != FullOpenAI && c.FullAnswer != FullOllama && c.FullAnswer != FullTGI:
		return fmt.Errorf("llmsim: full answer %q: want %s, %s or %s", c.FullAnswer, FullOpenAI, FullOllama, FullTGI)
	case c.TotalMemory < 0, c.BaseMemory < 0, c.KVPerToken < 0, c.QueuedMemory < 0:
		return errors.New("llmsim: memory sizes must be ≥ 0")
	}
	d := c.withDefaults()
	if d.BaseMemory >= d.TotalMemory {
		return fmt.Errorf("llmsim: base memory %d B must be below total memory %d B", d.BaseMemory, d.TotalMemory)
	}
	if d.DefaultMaxTokens > d.MaxTokensLimit {
		return fmt.Errorf("llmsim: default max tokens %d exceeds the limit %d", d.DefaultMaxTokens, d.MaxTokensLimit)
	}
	return nil
}

// withDefaults fills zero (and, defensively, negative) fields so that New
// never has to fail.
func (c Config) withDefaults() Config {
	if c.Slots <= 0 {
		c.Slots = DefaultSlots
	}
	if c.PrefillTime <= 0 {
		c.PrefillTime = DefaultPrefillTime
	}
	if c.TokenTime <= 0 {
		c.TokenTime = DefaultTokenTime
	}
	if c.TokenSlowdown < 1 {
		c.TokenSlowdown = DefaultTokenSlowdown
	}
	if c.DefaultMaxTokens <= 0 {
		c.DefaultMaxTokens = DefaultDefaultMaxTokens
	}
	if c.MaxTokensLimit <= 0 {
		c.MaxTokensLimit = DefaultMaxTokensLimit
	}
	if c.QueueLimit < 0 {
		c.QueueLimit = 0
	}
	if c.TotalMemory <= 0 {
		c.TotalMemory = DefaultTotalMemory
	}
	if c.BaseMemory <= 0 {
		c.BaseMemory = DefaultBaseMemory
	}
	if c.KVPerToken <= 0 {
		c.KVPerToken = DefaultKVPerToken
	}
	if c.QueuedMemory <= 0 {
		c.QueuedMemory = DefaultQueuedMemory
	}
	if c.FullAnswer != FullOllama && c.FullAnswer != FullTGI {
		c.FullAnswer = FullOpenAI
	}
	if c.ModelName == "" {
		c.ModelName = DefaultModelName
	}
	return c
}

// Capacity is the steady-state throughput in req/s at a full batch for
// DefaultMaxTokens tokens per request (see the package comment).
func (c Config) Capacity() float64 {
	return c.CapacityFor(float64(c.withDefaults().DefaultMaxTokens))
}

// CapacityFor is Capacity for answers of meanTokens tokens on average (a
// request holds its slot for prefill plus its tokens at a full batch's
// speed, so a mix of lengths costs what its mean does). Its tokens per
// second are CapacityFor(m) × m.
func (c Config) CapacityFor(meanTokens float64) float64 {
	d := c.withDefaults()
	perReq := d.PrefillTime.Seconds() + meanTokens*d.TokenTime.Seconds()*d.TokenSlowdown
	return float64(d.Slots) / perReq
}

// TokenDelay is the time one token takes while running of slots sequences
// are in the batch: TokenTime × (1 + (TokenSlowdown−1) × running/slots).
// Occupancy is capped at 1 so a batch left over a capacity drop is no slower
// than a full one.
func (c Config) TokenDelay(running, slots int) time.Duration {
	d := c.withDefaults()
	occ := 1.0
	if slots > 0 && running < slots {
		occ = float64(running) / float64(slots)
	}
	if running <= 0 {
		occ = 0
	}
	return time.Duration(float64(d.TokenTime) * (1 + (d.TokenSlowdown-1)*occ))
}
