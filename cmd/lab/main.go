// Command lab is the overload lab: it plays each scenario (a step to 3×
// capacity, a capacity drop, heterogeneous answer lengths at 2×, a slow
// ramp to 3× and back, a cold start into 2×, a steady 0.9×, a step under a
// tight objective stated to the module, upstreams that answer 503 when
// full; and the pool scenarios of pool.go, several upstreams behind one
// gateway, played against set-ups of their own) against four
// set-ups at once — Caddy with a plain reverse_proxy; the same with one of
// two peers behind it, a static in-flight limit and Gradient2 (the
// published algorithm, implemented in the lab); and Caddy with
// adaptive_throttle at its defaults — each in front of its own llmsim, and
// writes a markdown table, a PNG and a JSON summary per scenario into
// results/, checks the targets for the module, then runs
// lab/overhead.sh (wrk, Caddy with and without the module).
//
// Run it from the repository root:
//
//	go run ./cmd/lab               # the whole lab, about 20 minutes
//	go run ./cmd/lab -smoke        # every scenario and set-up for seconds (CI)
//	go run ./cmd/lab -upstream ollama  # the step scenario against a real Ollama (ollama.go)
//	go run ./cmd/lab -overhead=false -scenarios step -setups adaptive -rules-off "turnover stuck"
//	                               # the module, and the module without each rule (admission.Rule)
//	go run ./cmd/lab -scenarios pool-drop,pool-slow,pool-death,pool-shared -overhead=false  # the pool scenarios
//
// It builds nothing twice: llmsim and loadgen once into a temporary bin
// folder, ./caddy only when missing (./xcaddy-build.sh), then copied so a
// rebuild during the run cannot disturb it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ai-guardian/adaptivethrottle/internal/llmsim"
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
		fmt.Fprintln(os.Stderr, "lab:", err)
		os.Exit(1)
	}
}

type options struct {
	out       string
	smoke     bool
	scenarios string
	overhead  bool
	parallel  bool
	keep      bool
	inflight  int
	setups    string
	rulesOff  string
	ollama    ollamaOptions
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o options
	fs := flag.NewFlagSet("lab", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.out, "out", "", "results folder (default results/, or a temporary folder with -smoke)")
	fs.BoolVar(&o.smoke, "smoke", false, "tiny durations: checks every part works, in under a minute; figures mean nothing")
	fs.StringVar(&o.scenarios, "scenarios", strings.Join(scenarioNames, ","), "scenarios to run, comma-separated")
	fs.BoolVar(&o.overhead, "overhead", true, "also run lab/overhead.sh (wrk); never with -smoke")
	fs.BoolVar(&o.parallel, "parallel", false, "run the scenarios at the same time too (4 set-ups each; always on with -smoke)")
	fs.IntVar(&o.inflight, "inflight", 0, "the static in-flight limit's N (0: 1.5 × llmsim's slots)")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary folder with logs and rendered Caddyfiles")
	fs.StringVar(&o.setups, "setups", strings.Join(setupNames, ","), "set-ups to run, comma-separated (with -upstream ollama: the peers to run; the module's set-ups always run)")
	fs.StringVar(&o.rulesOff, "rules-off", "", `admission rules to turn off, one more adaptive set-up per space-separated item, each a comma-separated list of rules (e.g. "turnover standingqueue,guard"): see the admission package doc; with -upstream ollama, the first -ollama-adaptive set-up with those rules off`)
	fs.StringVar(&adaptiveConcurrency, "adaptive-concurrency", "", `lines for the adaptive set-up's concurrency block, to measure a setting against the defaults (e.g. "weigh_body off")`)
	o.ollama.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(root, "lab", "adaptive.Caddyfile.tmpl")); err != nil {
		return errors.New("run the lab from the repository root (lab/adaptive.Caddyfile.tmpl not found)")
	}
	switch o.ollama.upstream {
	case "llmsim":
	case "ollama":
		return runOllama(ctx, o, root, stdout, stderr)
	default:
		return fmt.Errorf("-upstream %q: want llmsim or ollama", o.ollama.upstream)
	}
	started := time.Now()

	if o.inflight < 0 {
		return fmt.Errorf("-inflight %d: must be ≥ 0", o.inflight)
	}
	if labSetups, err = chooseSetups(o.setups, o.rulesOff); err != nil {
		return err
	}
	capacity := llmsim.Config{}.Capacity()
	all := scenarios(llmsim.Config{}, o.inflight, o.smoke)
	var scs []scenario
	for _, name := range strings.Split(o.scenarios, ",") {
		i := slices.IndexFunc(all, func(s scenario) bool { return s.Name == strings.TrimSpace(name) })
		if i < 0 {
			return fmt.Errorf("unknown scenario %q (want %s)", name, strings.Join(scenarioNames, ", "))
		}
		scs = append(scs, all[i])
	}
	if err := poolSetupsFixed(scs, labSetups); err != nil {
		return err
	}

	tmp, err := os.MkdirTemp("", "adaptivethrottle-lab-")
	if err != nil {
		return err
	}
	failed := true
	defer func() {
		if o.keep || failed {
			fmt.Fprintf(stderr, "lab: logs and Caddyfiles kept in %s\n", tmp)
			return
		}
		os.RemoveAll(tmp)
	}()
	if o.out == "" {
		o.out = filepath.Join(root, "results")
		if o.smoke {
			o.out = filepath.Join(tmp, "results")
		}
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}

	b, err := prepareBins(ctx, root, tmp, stdout, stderr)
	if err != nil {
		return err
	}
	machine := machineInfo()
	fmt.Fprintf(stdout, "lab: %s\nlab: capacity %.2f req/s; results into %s\n", machine, capacity, o.out)

	var (
		mu   sync.Mutex
		errs []error
	)
	runOne := func(sc scenario) {
		outs, cs, err := runScenario(ctx, b, root, tmp, o.out, sc, machine, stdout)
		if err == nil && o.smoke {
			err = smokeCheck(sc, outs)
		}
		if err == nil {
			var buf strings.Builder
			printTargets(&buf, sc, evalTargets(sc, outs, cs))
			mu.Lock()
			io.WriteString(stdout, buf.String())
			mu.Unlock()
		}
		if err != nil {
			mu.Lock()
			errs = append(errs, fmt.Errorf("%s: %w", sc.Name, err))
			mu.Unlock()
		}
	}
	if o.parallel || o.smoke {
		// Two waves, the single-upstream scenarios then the pool ones:
		// all of them at once start over a hundred processes, more than
		// two CPUs bring up within the set-ups' readiness timeouts.
		for _, pool := range []bool{false, true} {
			var wg sync.WaitGroup
			for _, sc := range scs {
				if (len(sc.Pool) > 0) == pool {
					wg.Go(func() { runOne(sc) })
				}
			}
			wg.Wait()
		}
	} else {
		for _, sc := range scs {
			if ctx.Err() != nil {
				break
			}
			runOne(sc)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if o.overhead && !o.smoke {
		fmt.Fprintln(stdout, "lab: end-to-end overhead (lab/overhead.sh)…")
		cmd := exec.CommandContext(ctx, filepath.Join(root, "lab", "overhead.sh"))
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CADDY="+b.caddy, "LLMSIM="+b.llmsim, "OUT="+filepath.Join(o.out, "overhead.md"))
		cmd.Stdout, cmd.Stderr = stdout, stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("lab/overhead.sh: %w", err)
		}
	}
	where := o.out
	if o.smoke && !o.keep && strings.HasPrefix(o.out, tmp) {
		where = "a temporary folder, now removed (-out or -keep to look at them)"
	}
	fmt.Fprintf(stdout, "lab: done in %s; tables and plots in %s\n", time.Since(started).Round(time.Second), where)
	failed = false
	return nil
}

// prepareBins builds llmsim and loadgen once, and finds (or builds, once)
// ./caddy, copying it so that a rebuild during the run cannot pull it away.
func prepareBins(ctx context.Context, root, tmp string, stdout, stderr io.Writer) (bins, error) {
	binDir := filepath.Join(tmp, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return bins{}, err
	}
	fmt.Fprintln(stdout, "lab: go build ./cmd/llmsim ./cmd/loadgen")
	build := exec.CommandContext(ctx, "go", "build", "-o", binDir+string(os.PathSeparator), "./cmd/llmsim", "./cmd/loadgen")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return bins{}, fmt.Errorf("go build: %v\n%s", err, out)
	}
	caddy := filepath.Join(root, "caddy")
	if why := caddyStale(root, caddy); why != "" {
		fmt.Fprintf(stdout, "lab: ./caddy %s: ./xcaddy-build.sh (minutes when cold)…\n", why)
		cmd := exec.CommandContext(ctx, filepath.Join(root, "xcaddy-build.sh"))
		cmd.Dir = root
		cmd.Stdout, cmd.Stderr = stderr, stderr
		if err := cmd.Run(); err != nil {
			return bins{}, fmt.Errorf("./xcaddy-build.sh: %w", err)
		}
	}
	b := bins{llmsim: filepath.Join(binDir, "llmsim"), loadgen: filepath.Join(binDir, "loadgen"), caddy: filepath.Join(binDir, "caddy")}
	if err := copyFile(caddy, b.caddy); err != nil {
		return bins{}, err
	}
	mods, err := exec.CommandContext(ctx, b.caddy, "list-modules").Output()
	if err != nil {
		return bins{}, fmt.Errorf("./caddy list-modules: %w", err)
	}
	if !strings.Contains(string(mods), "http.handlers.adaptive_throttle") {
		return bins{}, errors.New("./caddy lacks http.handlers.adaptive_throttle: rebuild it with ./xcaddy-build.sh")
	}
	if policyAvailable = strings.Contains(string(mods), policyModule); !policyAvailable {
		fmt.Fprintf(stdout, "lab: ./caddy has no %s: the pool scenarios run without the policy's set-up\n", policyModule)
	}
	return b, nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// runScenario starts the four set-ups, plays the load against all of them
// at once, stops them, and writes results/<name>.{md,png,json}.
func runScenario(ctx context.Context, b bins, root, tmp, outDir string, sc scenario, machine string, stdout io.Writer) ([]outcome, []ceiling, error) {
	fmt.Fprintf(stdout, "lab: %s — starting set-ups\n", sc.Title)
	envs := make([]*env, 0, len(sc.setups()))
	defer func() {
		for _, e := range envs {
			e.stop()
		}
	}()
	for _, s := range sc.setups() {
		e, err := startSetup(ctx, b, filepath.Join(root, "lab"), filepath.Join(tmp, sc.Name, s), s, sc)
		for try := 2; errors.Is(err, errPortTaken) && try <= 3; try++ {
			fmt.Fprintf(stdout, "lab: %s/%s: %v\nlab: %s/%s: starting it again on other ports (try %d of 3)\n", sc.Name, s, err, sc.Name, s, try)
			e, err = startSetup(ctx, b, filepath.Join(root, "lab"), filepath.Join(tmp, sc.Name, s), s, sc)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("set-up %s: %w", s, err)
		}
		envs = append(envs, e)
	}
	load := func(ctx context.Context, e env) (*loadgen.Result, error) {
		dir := filepath.Join(tmp, sc.Name, e.Setup)
		jsonPath := filepath.Join(dir, "loadgen.json")
		p, err := startProc("loadgen", dir, b.loadgen, loadArgs(loadConfig(sc, e), jsonPath), nil)
		if err != nil {
			return nil, err
		}
		if err := p.wait(ctx); err != nil {
			return nil, fmt.Errorf("loadgen: %v (see %s)", err, p.log)
		}
		raw, err := os.ReadFile(jsonPath)
		if err != nil {
			return nil, err
		}
		var res loadgen.Result
		if err := json.Unmarshal(raw, &res); err != nil {
			return nil, fmt.Errorf("%s: %w", jsonPath, err)
		}
		return &res, nil
	}
	fmt.Fprintf(stdout, "lab: %s — load for %v (+ up to %v drain) on %d set-ups\n", sc.Name, sc.Profile.Duration, sc.Timeout, len(envs))
	outs, err := playAll(ctx, sc, envs, load)
	if err != nil {
		return nil, nil, err
	}
	for _, o := range outs {
		s := o.Res.Overall
		of := "capacity"
		if len(sc.Pool) > 0 {
			of = "what the pool can serve"
		}
		fmt.Fprintf(stdout, "lab: %s/%s: sent %d, OK within SLO %s, shed %d, upstream OOMs %d, goodput in window %.2f req/s (%.2f of %s%s)\n",
			sc.Name, o.Setup, s.Sent, pct(s.SLOAttainment), s.Shed(), o.UpstreamOOMs, o.GoodputWindow, o.GoodputRatio, of, map[bool]string{true: ", tokens"}[sc.tokens()])
		if o.Pool != nil && len(poolDeaths(sc.Pool)) > 0 {
			fmt.Fprintf(stdout, "lab: %s/%s: %d failed (neither answered nor refused), %d in flight on upstreams when they died\n", sc.Name, o.Setup, o.Failed, o.Pool.DeadInFlight)
		}
	}
	cs := ceilingOf(sc, outs)
	if cs != nil {
		var parts []string
		for keep, c := range cs {
			parts = append(parts, fmt.Sprintf("keeping %d slot(s) %.2f (high %d of %d)", keep, c.Goodput, c.HighMet, c.High))
		}
		fmt.Fprintf(stdout, "lab: %s: an ideal gateway within the SLO in the module's order, on these arrivals (simulated): %s of capacity\n",
			sc.Name, strings.Join(parts, ", "))
	}
	return outs, cs, writeResults(outDir, sc, outs, cs, machine)
}

// smokeCheck asks of a smoke run only that every part worked: each set-up
// was sent load and served some of it, the adaptive one was polled, the
// peers were sampled, and token counts came back.
func smokeCheck(sc scenario, outs []outcome) error {
	if len(outs) != len(sc.setups()) {
		return fmt.Errorf("smoke: %d set-ups ran, want %d", len(outs), len(sc.setups()))
	}
	for _, o := range outs {
		if o.Res.Overall.Tokens == 0 {
			return fmt.Errorf("smoke: set-up %s: no tokens counted in %d answers", o.Setup, o.Res.Overall.OK)
		}
		if (o.Setup == setupInflight || o.Setup == setupGradient2) && len(o.Peer) == 0 {
			return fmt.Errorf("smoke: set-up %s: the limiter was never sampled", o.Setup)
		}
		if o.Res.Overall.Sent == 0 || o.Res.Overall.OK == 0 {
			return fmt.Errorf("smoke: set-up %s served nothing: %+v", o.Setup, o.Res.Overall)
		}
		if o.UpstreamOOMs < 0 {
			return fmt.Errorf("smoke: set-up %s: the upstream was never polled", o.Setup)
		}
		if moduleSetup(o.Setup) && o.Transitions == nil {
			return fmt.Errorf("smoke: set-up %s: /throttle/status was never polled", o.Setup)
		}
		if len(sc.Pool) > 0 {
			if o.Pool == nil || len(o.Pool.Samples) == 0 {
				return fmt.Errorf("smoke: set-up %s: the pool's upstreams were never looked at", o.Setup)
			}
			want := len(timeline(sc.Pool)) // and three notes per outside load: it starts, stops, and is done
			for _, u := range sc.Pool {
				want += 3 * len(u.Outside)
			}
			if len(o.Pool.Events) != want {
				return fmt.Errorf("smoke: set-up %s: %d changes to the pool, want %d: %+v", o.Setup, len(o.Pool.Events), want, o.Pool.Events)
			}
		}
	}
	return nil
}

// playAll runs load against every set-up at the same time and analyzes
// each run.
func playAll(ctx context.Context, sc scenario, envs []*env, load func(context.Context, env) (*loadgen.Result, error)) ([]outcome, error) {
	outs := make([]outcome, len(envs))
	errs := make([]error, len(envs))
	var wg sync.WaitGroup
	for i, e := range envs {
		wg.Go(func() {
			var samples []peerSample
			stopSampling := func() {}
			poolStart := time.Now()
			if e.pool != nil {
				done := make(chan struct{})
				finished := make(chan struct{})
				go func() {
					defer close(finished)
					e.pool.play(ctx, poolStart, done)
				}()
				stopSampling = func() { close(done); <-finished }
			}
			if e.peer != nil {
				done := make(chan struct{})
				finished := make(chan struct{})
				go func() {
					defer close(finished)
					samples = samplePeer(e.peer, done)
				}()
				stopPool := stopSampling
				stopSampling = func() { close(done); <-finished; stopPool() }
			}
			res, err := load(ctx, *e)
			stopSampling()
			if err != nil {
				errs[i] = fmt.Errorf("%s: %w", e.Setup, err)
				return
			}
			if e.pool != nil {
				r := e.pool.result()
				r.shift(res.Start.Sub(poolStart))
				res.Events = append(res.Events, r.Events...)
				outs[i] = analyze(sc, e.Setup, res)
				outs[i].Pool = &r
				outs[i].UpstreamOOMs = r.OOMs
			} else {
				outs[i] = analyze(sc, e.Setup, res)
			}
			outs[i].Peer = samples
		})
	}
	wg.Wait()
	return outs, errors.Join(errs...)
}

// samplePeer looks at a peer once a second until done closes.
func samplePeer(p peer, done <-chan struct{}) []peerSample {
	start := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var out []peerSample
	for {
		select {
		case <-done:
			return out
		case <-tick.C:
			out = append(out, peerSample{T: time.Since(start).Seconds(), peerSnap: p.snapshot()})
		}
	}
}

// writeResults writes <name>.md, .png and .json into dir; cs is the ideal
// gateway's figures (ceilingOf), nil where there are none.
func writeResults(dir string, sc scenario, outs []outcome, cs []ceiling, machine string) error {
	var md strings.Builder
	if err := writeMarkdown(&md, sc, outs, cs, machine); err != nil {
		return err
	}
	fmt.Fprintf(&md, "\n![%s](%s.png)\n", sc.Title, sc.Name)
	if err := os.WriteFile(filepath.Join(dir, sc.Name+".md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	if err := writePlot(filepath.Join(dir, sc.Name+".png"), sc, outs); err != nil {
		return err
	}
	return writeOutcomesJSON(filepath.Join(dir, sc.Name+".json"), sc, outs, cs)
}

// machineInfo is one line: CPUs, CPU model, Go version, kernel.
func machineInfo() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel := ""
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = ", Linux " + strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("Machine: %d CPUs (%s), %s%s.", runtime.NumCPU(), model, runtime.Version(), kernel)
}

// caddyStale says why ./caddy (at path, in the module at root) must be
// built before a run: it is missing, or a Go file of the module is newer,
// so it would measure a module other than the code's; "" when neither.
func caddyStale(root, path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return "missing"
	}
	newer := ""
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || newer != "" {
			return filepath.SkipDir
		}
		if d.IsDir() {
			// cmd/ holds the lab and its tools, never built into ./caddy.
			if n := d.Name(); p != root && (strings.HasPrefix(n, ".") || n == "testdata" || n == "results" || p == filepath.Join(root, "cmd")) {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") {
			if info, err := d.Info(); err == nil && info.ModTime().After(fi.ModTime()) {
				newer, _ = filepath.Rel(root, p)
			}
		}
		return nil
	})
	if newer != "" {
		return "older than " + newer
	}
	return ""
}
