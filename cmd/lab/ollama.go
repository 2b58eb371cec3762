package main

// -upstream ollama: the step scenario against a real inference server,
// Ollama, serving a tiny random-weight llama (cmd/tinygguf) on one pinned
// CPU. One server is shared by the set-ups, which therefore run one after
// the other (the simulated scenarios run them at once, each with its own
// llmsim): plain Caddy, the two peers, then the module at its defaults and
// with each -ollama-adaptive configuration. Build Ollama with
// lab/ollama-build.sh; nothing is downloaded at run time.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ai-guardian/adaptivethrottle/admission"
	"github.com/ai-guardian/adaptivethrottle/internal/loadgen"
)

// ollamaOptions are the flags that choose and shape the Ollama upstream.
type ollamaOptions struct {
	upstream string // "llmsim" (the simulated scenarios) or "ollama"
	bin      string // the ollama binary
	model    string // the GGUF file to import
	name     string // the model's name in Ollama
	cpu      int    // the CPU Ollama is pinned to (-1: not pinned)
	labCPUs  string // taskset list for Caddy and the load generator ("": not pinned)
	parallel int    // OLLAMA_NUM_PARALLEL: the batch slots
	maxQueue int    // OLLAMA_MAX_QUEUE
	tokens   int    // max_tokens (and the model's num_predict)
	// capacity, when > 0, is taken as the server's capacity instead of
	// measuring it.
	capacity   float64
	measureFor time.Duration
	slo        time.Duration // end to end
	// adaptive lists the module's set-ups: "defaults" or lines inside its
	// adaptive_throttle block, separated by ";".
	adaptive string
}

func (o *ollamaOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.upstream, "upstream", "llmsim", "llmsim (every simulated scenario) or ollama (the step scenario against a real Ollama server; needs -ollama-bin and -model)")
	fs.StringVar(&o.bin, "ollama-bin", ".tmp/ollama", "with -upstream ollama: the ollama binary (lab/ollama-build.sh)")
	fs.StringVar(&o.model, "model", ".tmp/tiny.gguf", "with -upstream ollama: the GGUF model to import (go run ./cmd/tinygguf)")
	fs.StringVar(&o.name, "ollama-model-name", "tiny", "with -upstream ollama: the model's name in Ollama")
	fs.IntVar(&o.cpu, "ollama-cpu", runtime.NumCPU()-1, "with -upstream ollama: the CPU Ollama is pinned to with taskset (-1: not pinned)")
	fs.StringVar(&o.labCPUs, "lab-cpus", "", "with -upstream ollama: taskset CPU list for Caddy and the load generator (default: every CPU but -ollama-cpu)")
	fs.IntVar(&o.parallel, "ollama-parallel", 4, "with -upstream ollama: OLLAMA_NUM_PARALLEL, the server's batch slots")
	fs.IntVar(&o.maxQueue, "ollama-max-queue", 512, "with -upstream ollama: OLLAMA_MAX_QUEUE (Ollama's default); beyond it Ollama answers 503")
	fs.IntVar(&o.tokens, "ollama-tokens", 32, "with -upstream ollama: max_tokens of every request (and the model's num_predict)")
	fs.Float64Var(&o.capacity, "ollama-capacity", 0, "with -upstream ollama: the capacity in req/s (0: measure it first, at full parallel)")
	fs.DurationVar(&o.measureFor, "ollama-measure", 30*time.Second, "with -upstream ollama: how long to measure the capacity")
	fs.DurationVar(&o.slo, "ollama-slo", time.Second, "with -upstream ollama: the SLO, end to end (the module's set-ups with latency { slo } state it)")
	fs.StringVar(&o.adaptive, "ollama-adaptive", "defaults;latency { slo 1s };concurrency { max_wait 300ms }",
		`with -upstream ollama: the module's set-ups, ";"-separated: "defaults" or lines for its adaptive_throttle block`)
}

// check refuses options -upstream ollama cannot run with.
func (o ollamaOptions) check() error {
	switch {
	case o.parallel < 1:
		return fmt.Errorf("-ollama-parallel %d: must be ≥ 1", o.parallel)
	case o.maxQueue < 1:
		return fmt.Errorf("-ollama-max-queue %d: must be ≥ 1", o.maxQueue)
	case o.tokens < 1:
		return fmt.Errorf("-ollama-tokens %d: must be ≥ 1", o.tokens)
	case o.capacity < 0:
		return fmt.Errorf("-ollama-capacity %v: must be ≥ 0", o.capacity)
	case o.slo <= 0:
		return fmt.Errorf("-ollama-slo %v: must be > 0", o.slo)
	case o.cpu >= runtime.NumCPU():
		return fmt.Errorf("-ollama-cpu %d: this machine has CPUs 0 to %d", o.cpu, runtime.NumCPU()-1)
	case o.name == "" || strings.ContainsAny(o.name, " \t\n"):
		return fmt.Errorf("-ollama-model-name %q: want one word", o.name)
	}
	if _, err := o.adaptiveSetups(); err != nil {
		return err
	}
	return nil
}

// adaptiveSetup is one of the module's set-ups: its name in the tables
// and the lines of its adaptive_throttle block ("" for the defaults).
type adaptiveSetup struct {
	Name, Lines string
}

// adaptiveSetups parses -ollama-adaptive. The first set-up at defaults is
// named "adaptive", as in the simulated scenarios; the others
// "adaptive_throttle (<lines>)". Every name starts with "adaptive".
func (o ollamaOptions) adaptiveSetups() ([]adaptiveSetup, error) {
	var out []adaptiveSetup
	seen := map[string]bool{}
	for _, part := range strings.Split(o.adaptive, ";") {
		lines := strings.TrimSpace(part)
		if lines == "" {
			continue
		}
		// Lines may hold newlines (one directive a line); the name is one line.
		s := adaptiveSetup{Name: "adaptive_throttle (" + strings.ReplaceAll(lines, "\n", "; ") + ")", Lines: lines}
		if lines == "defaults" {
			s = adaptiveSetup{Name: setupAdaptive}
		}
		if strings.Count(lines, "{") != strings.Count(lines, "}") {
			return nil, fmt.Errorf("-ollama-adaptive %q: unbalanced braces", lines)
		}
		if seen[s.Name] {
			return nil, fmt.Errorf("-ollama-adaptive: %q twice", lines)
		}
		seen[s.Name] = true
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, errors.New(`-ollama-adaptive: no set-up (want "defaults" or lines for the adaptive_throttle block)`)
	}
	return out, nil
}

// otherCPUs is the taskset list of every CPU of n but cpu ("" when that
// leaves none or cpu is not pinned).
func otherCPUs(n, cpu int) string {
	if cpu < 0 {
		return ""
	}
	var parts []string
	for i := range n {
		if i != cpu {
			parts = append(parts, strconv.Itoa(i))
		}
	}
	return strings.Join(parts, ",")
}

// pinned is bin with args run under taskset -c cpus, or as is when cpus
// is "".
func pinned(cpus, bin string, args ...string) (string, []string) {
	if cpus == "" {
		return bin, args
	}
	return "taskset", append([]string{"-c", cpus, bin}, args...)
}

// ollamaServeEnv is the environment of `ollama serve`: everything under
// home, listening on addr, o.parallel slots, the model kept loaded.
func ollamaServeEnv(o ollamaOptions, addr, home string) []string {
	return []string{
		"HOME=" + home,
		"OLLAMA_HOST=" + addr,
		"OLLAMA_MODELS=" + filepath.Join(home, "models"),
		"OLLAMA_NUM_PARALLEL=" + strconv.Itoa(o.parallel),
		"OLLAMA_MAX_QUEUE=" + strconv.Itoa(o.maxQueue),
		"OLLAMA_MAX_LOADED_MODELS=1",
		"OLLAMA_KEEP_ALIVE=-1",
		"OLLAMA_NOHISTORY=1",
	}
}

// modelfile imports gguf (an absolute path) with one thread per request
// batch and answers of at most tokens tokens. The context holds the
// lab's prompt (a few tokens) and the answer with room to spare.
func modelfile(gguf string, tokens int) string {
	return fmt.Sprintf("FROM %s\nPARAMETER num_thread 1\nPARAMETER num_predict %d\nPARAMETER num_ctx %d\n",
		gguf, tokens, max(256, 4*tokens))
}

// ollamaChatBody is the load generator's request (internal/loadgen's
// chatBody with its default prompt), to measure the capacity with.
func ollamaChatBody(model string, tokens int) []byte {
	b, _ := json.Marshal(map[string]any{
		"model":      model,
		"messages":   []map[string]string{{"role": "user", "content": strings.Repeat("x", loadgen.DefaultPromptChars)}},
		"stream":     true,
		"max_tokens": tokens,
	})
	return b
}

// ollamaLoadArgs are the load generator's flags for sc against e: the
// lab's, with the model's name and max_tokens (there is no llmsim to poll).
func ollamaLoadArgs(sc scenario, e env, o ollamaOptions, jsonPath string) []string {
	cfg := loadConfig(sc, e)
	cfg.Upstream = ""
	return append(loadArgs(cfg, jsonPath), "-model", o.name, "-max-tokens", strconv.Itoa(o.tokens))
}

// ollamaScenario is the step scenario against a server of capacity req/s
// with slots slots: 0.5× for 40 s, 3× for 40 s, 0.5× for 30 s, the SLO
// end to end, a 15 s client timeout.
func ollamaScenario(capacity float64, slots int, slo time.Duration, smoke bool) scenario {
	warm, peak, tail := 40*time.Second, 40*time.Second, 30*time.Second
	timeout := 15 * time.Second
	if smoke {
		warm, peak, tail, timeout = 3*time.Second, 4*time.Second, 3*time.Second, 5*time.Second
	}
	sc := scenario{
		Name: "ollama-step",
		Title: fmt.Sprintf("Ollama, step overload: %.1f → %.1f req/s (3× capacity) for %v, then back; SLO %v end to end",
			capacity/2, 3*capacity, peak, slo),
		Capacity: capacity, WindowCapacity: capacity, Slots: slots,
		Profile: loadgen.Profile{Kind: loadgen.Step, Base: round1(capacity / 2), Peak: round1(3 * capacity),
			Duration: warm + peak + tail, StepAt: warm, StepFor: peak},
		Mix: loadgen.DefaultMix, SLO: loadgen.SLO{Total: slo}, Timeout: timeout,
		GoodputRef: 1, InflightN: defaultInflight(slots),
	}
	sc.WindowFrom, sc.WindowTo, sc.OverloadEnds = warm, warm+peak, true
	sc.CalmTo = calmUntil(sc)
	return sc
}

// capacityRun is what measureCapacity saw.
type capacityRun struct {
	Clients      int     `json:"clients"`
	Seconds      float64 `json:"seconds"`
	Answers      int     `json:"answers"`
	RPS          float64 `json:"req_per_s"`
	MeanAnswerS  float64 `json:"mean_answer_s"`
	TokensPerAns float64 `json:"tokens_per_answer"`
}

// measureCapacity keeps clients requests in flight against url (a chat
// completions endpoint) for d, each sent as soon as the previous one of
// its client ends, and counts the complete streamed answers: the server's
// answers per second with its batch full.
func measureCapacity(ctx context.Context, url string, body []byte, clients int, d time.Duration) (capacityRun, error) {
	ctx, cancel := context.WithTimeout(ctx, d+time.Minute)
	defer cancel()
	var (
		mu      sync.Mutex
		answers int
		tokens  int
		busy    time.Duration
		firstE  error
	)
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for time.Now().Before(end) {
				t0 := time.Now()
				n, err := streamChat(ctx, url, body)
				took := time.Since(t0)
				mu.Lock()
				if err != nil {
					if firstE == nil {
						firstE = err
					}
					mu.Unlock()
					return
				}
				answers++
				tokens += n
				busy += took
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	r := capacityRun{Clients: clients, Seconds: elapsed.Seconds(), Answers: answers}
	if firstE != nil {
		return r, fmt.Errorf("measuring the capacity: %w", firstE)
	}
	if answers == 0 {
		return r, errors.New("measuring the capacity: no answer")
	}
	r.RPS = float64(answers) / elapsed.Seconds()
	r.MeanAnswerS = busy.Seconds() / float64(answers)
	r.TokensPerAns = float64(tokens) / float64(answers)
	return r, nil
}

// streamChat sends one streaming chat completion and reads it to [DONE];
// it returns the chunks that carried text.
func streamChat(ctx context.Context, url string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return 0, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(b))
	}
	sc := bufio.NewScanner(resp.Body)
	n := 0
	for sc.Scan() {
		data, ok := bytes.CutPrefix(sc.Bytes(), []byte("data:"))
		if !ok {
			continue
		}
		data = bytes.TrimSpace(data)
		if string(data) == "[DONE]" {
			return n, nil
		}
		var c struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
		}
		if json.Unmarshal(data, &c) == nil && len(c.Choices) > 0 && c.Choices[0].Delta.Content != "" {
			n++
		}
	}
	if err := sc.Err(); err != nil {
		return n, err
	}
	return n, errors.New("stream ended without [DONE]")
}

// ollamaServer is a running `ollama serve`.
type ollamaServer struct {
	url  string // http://127.0.0.1:port
	proc *proc
	env  []string
}

// startOllama starts the server pinned to o.cpu, imports the model and
// loads it; dir holds its home, the Modelfile and the logs.
func startOllama(ctx context.Context, o ollamaOptions, dir string, stdout io.Writer) (*ollamaServer, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	home := filepath.Join(dir, "ollama-home")
	if err := os.MkdirAll(home, 0o755); err != nil {
		return nil, err
	}
	env := ollamaServeEnv(o, hostPort(port), home)
	cpus := ""
	if o.cpu >= 0 {
		cpus = strconv.Itoa(o.cpu)
	}
	bin, args := pinned(cpus, o.bin, "serve")
	p, err := startProc("ollama", dir, bin, args, env)
	if err != nil {
		return nil, err
	}
	s := &ollamaServer{url: "http://" + hostPort(port), proc: p, env: env}
	if err := waitReady(ctx, s.url+"/api/version", p, 30*time.Second); err != nil {
		s.stop()
		return nil, err
	}
	mf := filepath.Join(dir, "Modelfile")
	if err := os.WriteFile(mf, []byte(modelfile(o.model, o.tokens)), 0o644); err != nil {
		s.stop()
		return nil, err
	}
	fmt.Fprintf(stdout, "lab: ollama create %s -f %s\n", o.name, mf)
	cctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	create := exec.CommandContext(cctx, o.bin, "create", o.name, "-f", mf)
	create.Env = append(os.Environ(), env...)
	if out, err := create.CombinedOutput(); err != nil {
		s.stop()
		return nil, fmt.Errorf("ollama create: %v\n%s", err, lastLines(string(out), 10, 2000))
	}
	// An empty prompt loads the model and answers nothing.
	fmt.Fprintf(stdout, "lab: loading %s (keep_alive -1)\n", o.name)
	if err := postJSON(cctx, s.url+"/api/generate", map[string]any{"model": o.name, "keep_alive": -1}); err != nil {
		s.stop()
		return nil, fmt.Errorf("loading the model: %w", err)
	}
	return s, nil
}

func (s *ollamaServer) stop() { s.proc.stop(10 * time.Second) }

// chatURL is the OpenAI-compatible endpoint, the one the load uses.
func (s *ollamaServer) chatURL() string { return s.url + loadgen.DefaultChatPath }

// postJSON posts v and wants a 200.
func postJSON(ctx context.Context, url string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(body))
	}
	return nil
}

// waitIdle waits until one request answers within 1.5× the mean answer
// at full parallel: what a set-up left queued in the server is gone.
func (s *ollamaServer) waitIdle(ctx context.Context, body []byte, answer time.Duration, most time.Duration) error {
	deadline := time.Now().Add(most)
	for time.Now().Before(deadline) {
		t0 := time.Now()
		_, err := streamChat(ctx, s.chatURL(), body)
		if err == nil && time.Since(t0) <= answer*3/2 {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(time.Second)
	}
	return fmt.Errorf("ollama still busy after %v", most)
}

// caddyBlock lays out lines written on one line ("latency { slo 1s }")
// as the Caddyfile wants them, one directive a line and every "{" ending
// its line, indented by depth under indent.
func caddyBlock(lines, indent string) string {
	s := strings.NewReplacer("{", "{\n", "}", "\n}\n").Replace(lines)
	var out []string
	depth := 0
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		if l == "}" {
			depth = max(0, depth-1)
		}
		out = append(out, indent+strings.Repeat("\t", depth)+l)
		if strings.HasSuffix(l, "{") {
			depth++
		}
	}
	return strings.Join(out, "\n")
}

// ollamaCaddyVars fill lab/ollama-adaptive.Caddyfile.tmpl.
type ollamaCaddyVars struct {
	Admin    string
	Port     int
	Upstream string
	Lines    string // inside adaptive_throttle, laid out (caddyBlock); "" for its defaults
}

// startOllamaSetup starts one set-up in front of the Ollama server at
// upstream (host:port): the peer's limiter when it has one, then Caddy
// pinned to cpus. lines are the module's (adaptive set-ups only).
func startOllamaSetup(ctx context.Context, b bins, labDir, dir, setup, lines, upstream, cpus string, sc scenario) (e *env, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var stops []func()
	stopAll := inReverse(&stops)
	defer func() {
		if err != nil {
			stopAll()
		}
	}()
	ollamaURL := "http://" + upstream
	lim, upstream, stop, err := servePeer(setup, upstream, sc)
	if err != nil {
		return nil, err
	}
	stops = append(stops, stop)
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	adminPort, err := freePort()
	if err != nil {
		return nil, err
	}
	adaptive := strings.HasPrefix(setup, setupAdaptive)
	cfgPath := filepath.Join(dir, "Caddyfile")
	if adaptive {
		err = renderCaddyfile(filepath.Join(labDir, "ollama-adaptive.Caddyfile.tmpl"), cfgPath,
			ollamaCaddyVars{Admin: hostPort(adminPort), Port: port, Upstream: upstream, Lines: caddyBlock(lines, "\t\t")})
	} else {
		err = renderCaddyfile(filepath.Join(labDir, "plain.Caddyfile.tmpl"), cfgPath,
			caddyVars{Admin: hostPort(adminPort), Port: port, Upstream: upstream})
	}
	if err != nil {
		return nil, err
	}
	bin, args := pinned(cpus, b.caddy, "run", "--config", cfgPath, "--adapter", "caddyfile")
	cad, status, err := startCaddy(ctx, dir, bin, args, rulesOffOf(setup), "http://"+hostPort(adminPort), adaptive)
	if err != nil {
		return nil, err
	}
	stops = append(stops, func() { cad.stop(5 * time.Second) })
	e = &env{Setup: setup, Target: "http://" + hostPort(port), Upstream: ollamaURL, ThrottleStatus: status, peer: lim, stop: stopAll}
	if err := waitReady(ctx, e.Target+"/api/version", cad, 10*time.Second); err != nil {
		return nil, err
	}
	return e, nil
}

// planned is one set-up of an Ollama run: its name, and the lines of the
// module's block for the module's set-ups.
type planned struct{ name, lines string }

// ollamaPlan is what an Ollama run plays, in order: the peers -setups
// names, the module's -ollama-adaptive set-ups, and one more per item of
// -rules-off, the first of those with the item's rules off. It returns
// the module's set-ups too.
func ollamaPlan(o options) ([]planned, []adaptiveSetup, error) {
	setups, err := o.ollama.adaptiveSetups()
	if err != nil {
		return nil, nil, err
	}
	for _, item := range strings.Fields(o.rulesOff) {
		if _, err := admission.ParseRulesOff(item); err != nil {
			return nil, nil, fmt.Errorf("-rules-off: %w", err)
		}
		setups = append(setups, adaptiveSetup{Name: adaptiveWithout + item, Lines: setups[0].Lines})
	}
	chosen, err := chooseSetups(o.setups, "")
	if err != nil {
		return nil, nil, err
	}
	var plan []planned
	for _, p := range peers {
		if slices.Contains(chosen, p) {
			plan = append(plan, planned{p, ""})
		}
	}
	for _, s := range setups {
		plan = append(plan, planned{s.Name, s.Lines})
	}
	return plan, setups, nil
}

// runOllama is the lab with -upstream ollama: start the server, measure
// its capacity, play the step scenario against each set-up in turn, and
// write results/ollama-step.{md,png,json}.
func runOllama(ctx context.Context, o options, root string, stdout, stderr io.Writer) (err error) {
	oo := o.ollama
	if err := oo.check(); err != nil {
		return err
	}
	plan, setups, err := ollamaPlan(o)
	if err != nil {
		return err
	}
	for _, p := range []*string{&oo.bin, &oo.model} {
		if !filepath.IsAbs(*p) {
			*p = filepath.Join(root, *p)
		}
	}
	if _, err := os.Stat(oo.bin); err != nil {
		return fmt.Errorf("-ollama-bin: %w (build it with lab/ollama-build.sh)", err)
	}
	if _, err := os.Stat(oo.model); err != nil {
		return fmt.Errorf("-model: %w (write one with go run ./cmd/tinygguf -out %s)", err, oo.model)
	}
	cpus := oo.labCPUs
	if cpus == "" {
		cpus = otherCPUs(runtime.NumCPU(), oo.cpu)
	}
	started := time.Now()
	tmp, err := os.MkdirTemp("", "adaptivethrottle-lab-ollama-")
	if err != nil {
		return err
	}
	defer func() {
		if o.keep || err != nil {
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
	srv, err := startOllama(ctx, oo, tmp, stdout)
	if err != nil {
		return err
	}
	defer srv.stop()
	body := ollamaChatBody(oo.name, oo.tokens)
	// Warm up, then measure (or take) the capacity.
	if _, err := measureCapacity(ctx, srv.chatURL(), body, oo.parallel, 3*time.Second); err != nil {
		return err
	}
	measure := oo.measureFor
	if o.smoke {
		measure = 3 * time.Second
	}
	fmt.Fprintf(stdout, "lab: measuring Ollama's capacity: %d requests in flight for %v\n", oo.parallel, measure)
	cr, err := measureCapacity(ctx, srv.chatURL(), body, oo.parallel, measure)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "lab: Ollama serves %.2f req/s at %d in flight, %.3f s per answer, %.1f tokens per answer\n",
		cr.RPS, cr.Clients, cr.MeanAnswerS, cr.TokensPerAns)
	capacity := cr.RPS
	if oo.capacity > 0 {
		capacity = oo.capacity
	}
	sc := ollamaScenario(capacity, oo.parallel, oo.slo, o.smoke)
	machine := machineInfo()
	answer := time.Duration(cr.MeanAnswerS * float64(time.Second))

	var outs []outcome
	for i, p := range plan {
		if err := ctx.Err(); err != nil {
			return err
		}
		dir := filepath.Join(tmp, sc.Name, fmt.Sprintf("%d-%s", i, strings.Fields(p.name)[0]))
		fmt.Fprintf(stdout, "lab: %s — %s: load for %v (+ up to %v drain)\n", sc.Name, setupTitle(p.name, sc), sc.Profile.Duration, sc.Timeout)
		e, err := startOllamaSetup(ctx, b, filepath.Join(root, "lab"), dir, p.name, p.lines, strings.TrimPrefix(srv.url, "http://"), cpus, sc)
		if err != nil {
			return fmt.Errorf("set-up %s: %w", p.name, err)
		}
		load := func(ctx context.Context, e env) (*loadgen.Result, error) {
			jsonPath := filepath.Join(dir, "loadgen.json")
			bin, args := pinned(cpus, b.loadgen, ollamaLoadArgs(sc, e, oo, jsonPath)...)
			lp, err := startProc("loadgen", dir, bin, args, nil)
			if err != nil {
				return nil, err
			}
			if err := lp.wait(ctx); err != nil {
				return nil, fmt.Errorf("loadgen: %v (see %s)", err, lp.log)
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
		got, err := playAll(ctx, sc, []*env{e}, load)
		e.stop()
		if err != nil {
			return err
		}
		out := got[0]
		s := out.Res.Overall
		fmt.Fprintf(stdout, "lab: %s/%s: sent %d, OK within SLO %s, shed %d, high %s, medium %s in the window, goodput %.2f of capacity\n",
			sc.Name, p.name, s.Sent, pct(s.SLOAttainment), s.Shed(), pct(out.Window.High.SLOAttainment), pct(out.Window.Medium.SLOAttainment), out.GoodputRatio)
		outs = append(outs, out)
		if i < len(plan)-1 {
			if err := srv.waitIdle(ctx, body, answer, 2*sc.Timeout); err != nil {
				return err
			}
		}
	}
	var md strings.Builder
	writeOllamaMarkdown(&md, sc, oo, cr, outs, setups, machine)
	fmt.Fprintf(&md, "\n![%s](%s.png)\n", sc.Title, sc.Name)
	if err := os.WriteFile(filepath.Join(o.out, sc.Name+".md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	if err := writeOutcomesJSON(filepath.Join(o.out, sc.Name+".json"), sc, outs, nil); err != nil {
		return err
	}
	cj, _ := json.MarshalIndent(cr, "", " ")
	if err := os.WriteFile(filepath.Join(o.out, sc.Name+"-capacity.json"), append(cj, '\n'), 0o644); err != nil {
		return err
	}
	// The plot last, and not fatal: the tables and JSON are the results.
	if err := safePlot(filepath.Join(o.out, sc.Name+".png"), sc, outs); err != nil {
		fmt.Fprintf(stderr, "lab: %s: no plot: %v\n", sc.Name, err)
	}
	for _, s := range setups {
		var buf strings.Builder
		printTargets(&buf, sc, evalTargets(sc, asAdaptive(outs, s.Name), nil))
		fmt.Fprintf(stdout, "lab: targets for %s:\n%s", s.Name, buf.String())
	}
	fmt.Fprintf(stdout, "lab: done in %s; table and plot in %s\n", time.Since(started).Round(time.Second), o.out)
	return nil
}

// safePlot is writePlot with a panic of the plotting library (a log axis
// with no positive value) returned as an error.
func safePlot(path string, sc scenario, outs []outcome) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("plotting: %v", r)
		}
	}()
	return writePlot(path, sc, outs)
}

// asAdaptive is the peers' outcomes and the module's set-up name, renamed
// "adaptive" so that evalTargets checks it.
func asAdaptive(outs []outcome, name string) []outcome {
	var r []outcome
	for _, o := range outs {
		switch {
		case o.Setup == name:
			o.Setup = setupAdaptive
			r = append(r, o)
		case !strings.HasPrefix(o.Setup, setupAdaptive):
			r = append(r, o)
		}
	}
	return r
}

// writeOllamaMarkdown writes the Ollama run's tables: how it was set up,
// the comparison in the window, the whole run per priority, and the
// targets for each of the module's set-ups.
func writeOllamaMarkdown(w io.Writer, sc scenario, o ollamaOptions, cr capacityRun, outs []outcome, setups []adaptiveSetup, machine string) {
	p := sc.Profile
	fmt.Fprintf(w, "## %s\n\n", sc.Title)
	fmt.Fprintf(w, "Upstream: Ollama (lab/ollama-build.sh, CPU only) serving `%s`, a random-weight llama written by cmd/tinygguf, on one CPU (taskset -c %d), "+
		"OLLAMA_NUM_PARALLEL=%d, OLLAMA_MAX_QUEUE=%d, OLLAMA_KEEP_ALIVE=-1, num_thread 1, %d-token answers (max_tokens). ",
		filepath.Base(o.model), o.cpu, o.parallel, o.maxQueue, o.tokens)
	fmt.Fprintf(w, "Capacity measured first with %d requests in flight for %.0f s: %.2f req/s, %.3f s per answer, %.1f tokens per answer",
		cr.Clients, cr.Seconds, cr.RPS, cr.MeanAnswerS, cr.TokensPerAns)
	if o.capacity > 0 {
		fmt.Fprintf(w, " (the run takes %.2f req/s, -ollama-capacity)", o.capacity)
	}
	fmt.Fprintf(w, ". Load: %s, %v, uniform arrivals, X-Priority mix %s, seed 1, streaming (/v1/chat/completions). "+
		"SLO: 200 with a complete stream within %v of sending. Client timeout %v. Window: %.1f–%.1f s. "+
		"The set-ups run one after the other against the same server, each once it is idle again. %s\n\n",
		p.Kind, p.Duration, sc.Mix, sc.SLO.Total, sc.Timeout, sc.WindowFrom.Seconds(), sc.WindowTo.Seconds(), machine)

	fmt.Fprintln(w, "In the window: SLO attainment by priority, goodput (answers within the SLO completed in the window ÷ capacity), every complete answer however late (served ÷ capacity), and answer times of the OK answers sent in it.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| set-up | high | medium | low | high+medium | goodput ÷ capacity | served ÷ capacity | total p50 / p99 | refused 429/503 | Ollama 503 | timeouts |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, o := range outs {
		wd := o.Window
		s := wd.Overall
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | **%.2f** | %.2f | %s / %s | %d/%d | %d | %d |\n", setupTitle(o.Setup, sc),
			pct(wd.High.SLOAttainment), pct(wd.Medium.SLOAttainment), pct(wd.Low.SLOAttainment), pct(wd.HighMedium.SLOAttainment),
			o.GoodputRatio, o.ServedRatio, secs(s.TotalP50), secs(s.TotalP99),
			s.Shed429RA+s.Shed429, s.Shed503RA+s.Shed503, s.Upstream5xx, s.Timeouts)
	}

	fmt.Fprintln(w, "\nWhole run, per priority (counts; 429+RA = 429 with Retry-After; 5xx = Ollama's own 503 at a full queue):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| set-up | priority | sent | OK | OK ≤ SLO | 429+RA | 429 | 503+RA | 503 | 5xx | timeout | error | total p50 | total p99 |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, o := range outs {
		for _, pr := range loadgen.Priorities {
			s := o.Res.ByPriority(pr)
			fmt.Fprintf(w, "| %s | %s | %d | %d | %d | %d | %d | %d | %d | %d | %d | %d | %s | %s |\n",
				o.Setup, pr, s.Sent, s.OK, s.OKWithinSLO, s.Shed429RA, s.Shed429, s.Shed503RA, s.Shed503,
				s.Upstream5xx+s.OtherStatus, s.Timeouts, s.NetErrors+s.Broken+s.Overflow, secs(s.TotalP50), secs(s.TotalP99))
		}
	}
	for _, s := range setups {
		ts := evalTargets(sc, asAdaptive(outs, s.Name), nil)
		if len(ts) == 0 {
			continue
		}
		fmt.Fprintf(w, "\nTargets, %s (a missed target is a finding, not a failed run):\n\n", setupTitle(s.Name, sc))
		fmt.Fprintln(w, "| target | want | got | margin | |")
		fmt.Fprintln(w, "|---|---|---|--:|---|")
		for _, t := range ts {
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", t.What, t.Want, t.Got, t.Margin, t.mark())
		}
	}
	for _, o := range outs {
		r := o.Res
		if r.LateMaxMS > 100 || r.PollErrors > 0 {
			fmt.Fprintf(w, "\nNote (%s): send lateness p99 %.0f ms, max %.0f ms; %d failed polls.\n", o.Setup, r.LateP99MS, r.LateMaxMS, r.PollErrors)
		}
	}
}
