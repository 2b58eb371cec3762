// Command loadgen sends an open-loop stream of chat completion requests with
// an X-Priority mix and reports, per priority, what became of them (see
// package internal/loadgen). A table goes to stdout; -json writes the full
// result (stats, per-second series, polls) to a file; -live prints a line a
// second to stderr while the run goes on (what was sent, what the gateway
// passed and shed, by priority, and its tripped levels).
//
//	loadgen -target http://127.0.0.1:8080 -profile step -base 5 -peak 30 -duration 88s -step-at 33s -step-for 20s \
//	        -throttle-status http://localhost:2019/throttle/status -upstream http://127.0.0.1:8000 -live
//	loadgen -target http://localhost:8080 -profile capacity-drop -base 9.5 -duration 120s \
//	        -drop-at 60s -drop-to 4 -upstream http://127.0.0.1:8000 -throttle-status http://localhost:2019/throttle/status
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ai-guardian/adaptivethrottle/internal/loadgen"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		msg := err.Error()
		if !strings.HasPrefix(msg, "loadgen: ") { // the package's errors name it already
			msg = "loadgen: " + msg
		}
		fmt.Fprintln(os.Stderr, msg)
		os.Exit(2)
	}
}

// run parses args, runs the load, prints the table to out and writes JSON
// if asked.
func run(ctx context.Context, args []string, out, logw io.Writer) error {
	var (
		cfg      = loadgen.Config{SLO: loadgen.DefaultSLO}
		prof     = &cfg.Profile
		kind     string
		mix      string
		sizes    string
		points   string
		arrivals string
		jsonOut  string
		seed     uint64
		live     bool
	)
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(logw)
	fs.StringVar(&cfg.Target, "target", "", "base URL (the chat path is added) or full URL of the endpoint (required)")
	fs.StringVar(&kind, "profile", string(loadgen.Constant), "rate profile: constant, step, ramp, burst, capacity-drop, points")
	fs.StringVar(&points, "points", "", "points profile: time:rate corners, linear in between, e.g. 0s:3,10s:3,100s:30,145s:3")
	fs.Float64Var(&prof.Base, "base", 5, "base rate, req/s")
	fs.Float64Var(&prof.Peak, "peak", 0, "peak rate, req/s (step, ramp, burst)")
	fs.DurationVar(&prof.Duration, "duration", 60*time.Second, "how long to send")
	fs.DurationVar(&prof.StepAt, "step-at", 0, "step/ramp: onset; burst: first burst")
	fs.DurationVar(&prof.StepFor, "step-for", 0, "step: time at peak; ramp: rise time; burst: length of a burst")
	fs.DurationVar(&prof.Every, "burst-every", 0, "burst: period between burst starts")
	fs.DurationVar(&prof.DropAt, "drop-at", 0, "capacity-drop: when to cut the upstream's slots (needs -upstream)")
	fs.IntVar(&cfg.DropTo, "drop-to", 4, "capacity-drop: slots after the cut")
	fs.StringVar(&arrivals, "arrivals", string(loadgen.Uniform), "uniform (evenly spaced) or poisson (seeded)")
	fs.StringVar(&mix, "mix", "high=0.1,medium=0.3,low=0.6", "X-Priority shares: high=…,medium=…,low=… or h/m/l")
	fs.Uint64Var(&seed, "seed", 1, "seed for the priority mix and poisson arrivals")
	fs.DurationVar(&cfg.SLO.TTFB, "slo-ttfb", loadgen.DefaultSLO.TTFB, "SLO: time to the first token (0 = none)")
	fs.DurationVar(&cfg.SLO.Total, "slo-total", loadgen.DefaultSLO.Total, "SLO: time to the whole answer (0 = none)")
	fs.DurationVar(&cfg.Timeout, "timeout", loadgen.DefaultTimeout, "client timeout per request")
	fs.DurationVar(&cfg.Drain, "drain", 0, "after the last send, wait at most this for answers (default: -timeout)")
	fs.IntVar(&cfg.MaxInFlight, "max-inflight", loadgen.DefaultMaxInFlight, "hard cap on requests in flight; beyond it requests are counted as client overflow")
	fs.BoolVar(&cfg.Stream, "stream", true, "ask for SSE streaming (TTFB = first data line)")
	fs.IntVar(&cfg.PromptChars, "prompt-chars", loadgen.DefaultPromptChars, "prompt length in characters (≈ 4 per token)")
	fs.IntVar(&cfg.MaxTokens, "max-tokens", 0, "max_tokens to ask for (0 = server default)")
	fs.StringVar(&sizes, "sizes", "", "max_tokens mix drawn per request (seeded), e.g. 16=0.75,512=0.25; overrides -max-tokens")
	fs.StringVar(&cfg.Model, "model", loadgen.DefaultModel, "model name in the request")
	fs.StringVar(&cfg.Upstream, "upstream", "", "llmsim base URL: poll /admin/state each second; capacity-drop posts /admin/slots")
	fs.StringVar(&cfg.ThrottleStatus, "throttle-status", "", "Caddy admin /throttle/status URL to poll each second")
	fs.StringVar(&cfg.ThrottleInstance, "throttle-instance", "", "instance to follow in /throttle/status (default: first)")
	fs.StringVar(&jsonOut, "json", "", "write the full result as JSON to this file")
	fs.BoolVar(&cfg.KeepRecords, "records", false, "include every request in the JSON")
	fs.BoolVar(&live, "live", false, "print a line a second to stderr while the run goes on: sent, passed and shed by priority, the tripped levels (with -throttle-status)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if cfg.Target == "" {
		return errors.New("-target is required")
	}
	prof.Kind = loadgen.Kind(kind)
	cfg.Arrivals = loadgen.Arrivals(arrivals)
	cfg.Seed = seed
	m, err := loadgen.ParseMix(mix)
	if err != nil {
		return err
	}
	cfg.Mix = m
	if cfg.Sizes, err = loadgen.ParseSizes(sizes); err != nil {
		return err
	}
	if points != "" {
		if prof.Points, err = loadgen.ParsePoints(points); err != nil {
			return err
		}
	}
	if prof.Kind == loadgen.Step || prof.Kind == loadgen.Ramp || prof.Kind == loadgen.Burst {
		if prof.Peak == 0 {
			return fmt.Errorf("-profile %s needs -peak", kind)
		}
	}
	if jsonOut != "" { // fail before the run, not after it
		f, err := os.OpenFile(jsonOut, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return err
		}
		f.Close()
	}
	cfg.Log = logw
	if live {
		cfg.Live = logw
	}

	res, runErr := loadgen.Run(ctx, cfg)
	if res == nil {
		return runErr
	}
	if err := res.WriteTable(out); err != nil {
		return err
	}
	if jsonOut != "" {
		if err := writeJSON(jsonOut, res); err != nil {
			return err
		}
	}
	return runErr
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", strings.TrimSuffix(tmp, ".tmp"), err)
	}
	return nil
}
