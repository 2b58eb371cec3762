// Command llmsim runs the simulated LLM inference server (package
// internal/llmsim): an OpenAI-compatible upstream that queues, slows down and
// finally runs out of GPU memory under load, for demos and load-shedding labs.
//
//	llmsim -listen 127.0.0.1:8000 -smi-file /tmp/llmsim-nvidia-smi.csv -drop-slots-after 60s
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ai-guardian/adaptivethrottle/internal/llmsim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stderr, nil)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "llmsim:", err)
		os.Exit(2)
	}
}

// run parses args, serves until ctx ends, then shuts down. ready, when not
// nil, learns the bound address (tests listen on port 0).
func run(ctx context.Context, args []string, logw io.Writer, ready func(net.Addr)) error {
	var (
		cfg       llmsim.Config
		listen    string
		dropAfter time.Duration
		dropTo    int
		totalMem  = byteSize(llmsim.DefaultTotalMemory)
		baseMem   = byteSize(llmsim.DefaultBaseMemory)
		kvPerTok  = byteSize(llmsim.DefaultKVPerToken)
		queuedMem = byteSize(llmsim.DefaultQueuedMemory)
	)
	fs := flag.NewFlagSet("llmsim", flag.ContinueOnError)
	fs.SetOutput(logw)
	fs.StringVar(&listen, "listen", "127.0.0.1:8000", "address to listen on")
	fs.IntVar(&cfg.Slots, "slots", llmsim.DefaultSlots, "batch slots (concurrent sequences)")
	fs.DurationVar(&cfg.PrefillTime, "prefill", llmsim.DefaultPrefillTime, "time per request before its first token")
	fs.DurationVar(&cfg.TokenTime, "token-time", llmsim.DefaultTokenTime, "time per token at an empty batch")
	fs.Float64Var(&cfg.TokenSlowdown, "token-slowdown", llmsim.DefaultTokenSlowdown, "per-token time multiplier at a full batch (≥ 1)")
	fs.IntVar(&cfg.DefaultMaxTokens, "max-tokens", llmsim.DefaultDefaultMaxTokens, "tokens generated when a request names no max_tokens")
	fs.IntVar(&cfg.MaxTokensLimit, "max-tokens-limit", llmsim.DefaultMaxTokensLimit, "cap on a request's max_tokens")
	fs.IntVar(&cfg.QueueLimit, "queue-limit", 0, "queued requests before the full answer (0 = unbounded, like real servers by default)")
	fs.BoolVar(&cfg.NoQueue, "no-queue", false, "answer full whenever every slot is busy (a queue capped at 0)")
	fs.StringVar(&cfg.FullAnswer, "full-answer", llmsim.FullOpenAI, "how a full queue refuses: openai (429, OpenAI error), ollama (503 \"server busy\"), tgi (429 \"Model is overloaded\")")
	fs.Var(&totalMem, "total-mem", "GPU memory, bytes or with a suffix (80GiB, 512MiB)")
	fs.Var(&baseMem, "base-mem", "memory held by weights and runtime")
	fs.Var(&kvPerTok, "kv-per-token", "KV-cache bytes per token of a running sequence")
	fs.Var(&queuedMem, "queued-mem", "bytes each queued request holds")
	fs.StringVar(&cfg.SMIFile, "smi-file", "", "nvidia-smi CSV to rewrite every 100 ms (demo/nvidia-smi reads /tmp/llmsim-nvidia-smi.csv); empty = off")
	fs.StringVar(&cfg.ModelName, "model", llmsim.DefaultModelName, "model name in responses and metric labels")
	fs.DurationVar(&dropAfter, "drop-slots-after", 0, "after this long, cut the batch to -drop-slots-to (0 = never)")
	fs.IntVar(&dropTo, "drop-slots-to", llmsim.DefaultSlots/2, "batch slots after the drop")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	cfg.TotalMemory, cfg.BaseMemory = int64(totalMem), int64(baseMem)
	cfg.KVPerToken, cfg.QueuedMemory = int64(kvPerTok), int64(queuedMem)
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.Slots == 0 {
		return errors.New("-slots must be ≥ 1")
	}
	if dropAfter < 0 || dropTo < 0 {
		return errors.New("-drop-slots-after and -drop-slots-to must be ≥ 0")
	}

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	sim := llmsim.New(cfg)
	defer sim.Close()
	logger := log.New(logw, "llmsim: ", log.LstdFlags)
	logger.Printf("listening on http://%s, model %s, %d slots, capacity ≈ %.1f req/s at %d tokens/request",
		ln.Addr(), cfg.ModelName, cfg.Slots, cfg.Capacity(), sim.Config().DefaultMaxTokens)
	switch {
	case cfg.NoQueue:
		logger.Printf("no queue: a request finding every slot busy gets the %s full answer", sim.Config().FullAnswer)
	case cfg.QueueLimit > 0:
		logger.Printf("queue capped at %d: past it a request gets the %s full answer", cfg.QueueLimit, sim.Config().FullAnswer)
	}
	if dropAfter > 0 {
		t := time.AfterFunc(dropAfter, func() {
			sim.SetSlots(dropTo)
			logger.Printf("capacity drop: %d → %d slots", cfg.Slots, dropTo)
		})
		defer t.Stop()
	}
	if ready != nil {
		ready(ln.Addr())
	}

	hs := &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second, ErrorLog: logger}
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	select {
	case err := <-serveErr:
		return err
	case <-ctx.Done():
	}
	logger.Printf("shutting down")
	sim.Close() // ends queued and running requests, so Shutdown need not wait for them
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
