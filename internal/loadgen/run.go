package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config is one run.
type Config struct {
	Target   string // base URL (the chat path is added) or a full URL
	Profile  Profile
	Arrivals Arrivals
	Mix      Mix
	Seed     uint64
	SLO      SLO

	Timeout     time.Duration // per request; default 30s
	Drain       time.Duration // after the last send, wait at most this for answers; default Timeout
	MaxInFlight int           // hard cap; requests beyond it are "client overflow"; default 4096
	Stream      bool
	PromptChars int // default 256 (about 64 prompt tokens)
	MaxTokens   int // 0: let the server choose
	// Sizes, when not empty, draws each request's max_tokens from a
	// seeded mix instead of MaxTokens (heterogeneous answer lengths).
	Sizes Sizes
	Model string

	// Upstream is llmsim's base URL: polled at /admin/state each second,
	// and, for the capacity-drop profile, told at Profile.DropAt to run
	// DropTo slots (POST /admin/slots). Empty: neither.
	Upstream string
	DropTo   int
	// ThrottleStatus is the full URL of Caddy's /throttle/status, polled
	// each second; ThrottleInstance picks the instance (default: first).
	ThrottleStatus   string
	ThrottleInstance string

	KeepRecords bool         // put every request in Result.Records
	Client      *http.Client // nil: a client tuned for many concurrent streams
	Log         io.Writer    // poll and drop errors, at most one line each kind; nil: discarded
	// Live, when not nil, gets a header and then one line a second while
	// the run goes on: sent, passed and shed by priority, failures, the
	// upstream's queue and the throttle's tripped levels (see live.go).
	Live io.Writer
}

// Defaults for Config's zero fields.
const (
	DefaultTimeout     = 30 * time.Second
	DefaultMaxInFlight = 4096
	DefaultPromptChars = 256
	DefaultModel       = "demo-llm"
	DefaultChatPath    = "/v1/chat/completions"
)

// Event is something the generator did to the system during the run.
type Event struct {
	T    float64 `json:"t"`
	What string  `json:"what"`
}

// Result is a finished run.
type Result struct {
	Target    string    `json:"target"`
	Profile   Profile   `json:"profile"`
	Arrivals  Arrivals  `json:"arrivals"`
	Mix       Mix       `json:"mix"`
	Sizes     Sizes     `json:"sizes,omitempty"`
	Seed      uint64    `json:"seed"`
	SLO       SLO       `json:"slo"`
	Start     time.Time `json:"start"`
	DurationS float64   `json:"duration_s"` // the profile's length: goodput's denominator
	ElapsedS  float64   `json:"elapsed_s"`  // until the last answer or the drain ended
	// LateP99MS and LateMaxMS: how far behind schedule sends left; large
	// values mean the generator itself was starved of CPU.
	LateP99MS  float64  `json:"late_p99_ms"`
	LateMaxMS  float64  `json:"late_max_ms"`
	Overall    Stats    `json:"overall"`
	High       Stats    `json:"high"`
	Medium     Stats    `json:"medium"`
	Low        Stats    `json:"low"`
	Series     []Second `json:"series"`
	Polls      []Poll   `json:"polls,omitempty"`
	Events     []Event  `json:"events,omitempty"`
	Records    []Record `json:"records,omitempty"`
	PollErrors int      `json:"poll_errors,omitempty"`
}

// ByPriority returns the stats of one priority.
func (r *Result) ByPriority(p Priority) Stats {
	switch p {
	case High:
		return r.High
	case Medium:
		return r.Medium
	}
	return r.Low
}

func (c *Config) fill() error {
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Drain == 0 {
		c.Drain = c.Timeout
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.PromptChars == 0 {
		c.PromptChars = DefaultPromptChars
	}
	if c.Model == "" {
		c.Model = DefaultModel
	}
	if c.Arrivals == "" {
		c.Arrivals = Uniform
	}
	if c.Mix == (Mix{}) {
		c.Mix = DefaultMix
	}
	switch {
	case c.Timeout < 0 || c.Drain < 0:
		return errors.New("loadgen: timeout and drain must be > 0")
	case c.MaxInFlight < 0:
		return errors.New("loadgen: max in-flight must be > 0")
	case c.PromptChars < 0 || c.MaxTokens < 0:
		return errors.New("loadgen: prompt chars and max tokens must be ≥ 0")
	case c.Profile.Kind == CapacityDrop && c.Upstream == "":
		return errors.New("loadgen: the capacity-drop profile needs the upstream's URL (llmsim) to cut its slots")
	case c.DropTo < 0:
		return errors.New("loadgen: drop-to must be ≥ 0")
	}
	for _, u := range []*string{&c.Upstream, &c.ThrottleStatus} {
		if *u == "" {
			continue
		}
		if _, err := checkURL(*u); err != nil {
			return err
		}
		*u = strings.TrimRight(*u, "/")
	}
	return nil
}

// checkURL accepts absolute http(s) URLs only.
func checkURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("loadgen: URL %q: %v", s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("loadgen: URL %q: want http:// or https:// with a host", s)
	}
	return u, nil
}

// TargetURL is the URL requests go to: Target itself when it names a path,
// else Target plus the chat completions path.
func TargetURL(target string) (string, error) {
	u, err := checkURL(target)
	if err != nil {
		return "", err
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = DefaultChatPath
	}
	return u.String(), nil
}

// newClient allows as many connections as streams in flight: an open-loop
// generator must never queue behind its own connection pool.
func newClient(maxInFlight int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        maxInFlight,
		MaxIdleConnsPerHost: maxInFlight,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
	}}
}

// Run plays the plan against the target and sums it up. It returns when
// every answer is in or the drain time after the last send has passed;
// cancelling ctx stops sending and abandons requests in flight.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	target, err := TargetURL(cfg.Target)
	if err != nil {
		return nil, err
	}
	plan, err := PlanSized(cfg.Profile, cfg.Arrivals, cfg.Mix, cfg.Sizes, cfg.Seed)
	if err != nil {
		return nil, err
	}
	client := cfg.Client
	if client == nil {
		client = newClient(cfg.MaxInFlight)
		defer client.CloseIdleConnections()
	}
	logw := cfg.Log
	if logw == nil {
		logw = io.Discard
	}
	req := &requester{client: client, url: target, stream: cfg.Stream, timeout: cfg.Timeout, slo: cfg.SLO,
		bodies: map[int][]byte{0: chatBody(cfg.Model, cfg.PromptChars, cfg.MaxTokens, cfg.Stream)}}
	for _, z := range cfg.Sizes {
		req.bodies[z.MaxTokens] = chatBody(cfg.Model, cfg.PromptChars, z.MaxTokens, cfg.Stream)
	}

	res := &Result{Target: target, Profile: cfg.Profile, Arrivals: cfg.Arrivals, Mix: cfg.Mix, Sizes: cfg.Sizes, Seed: cfg.Seed,
		SLO: cfg.SLO, DurationS: cfg.Profile.Duration.Seconds()}
	recs := make([]Record, len(plan))
	late := make([]float64, 0, len(plan))

	// Requests outlive the send loop by at most the drain time, then
	// reqCtx is cancelled with errDrained.
	reqCtx, cancelReqs := context.WithCancelCause(ctx)
	defer cancelReqs(nil)
	var (
		inflight atomic.Int64
		wg       sync.WaitGroup
		counts   liveCounts
	)
	start := time.Now()
	res.Start = start

	pollCtx, stopPoll := context.WithCancel(ctx)
	pollDone := make(chan struct{})
	var polls []Poll
	var pollErrs int
	var onPoll func(Poll)
	if cfg.Live != nil {
		onPoll = newLiveView(cfg.Live, cfg, &counts).observe
	}
	go func() {
		defer close(pollDone)
		polls, pollErrs = poller(pollCtx, client, cfg, start, logw, onPoll)
	}()
	var events []Event
	var eventsMu sync.Mutex
	if cfg.Profile.Kind == CapacityDrop {
		t := time.AfterFunc(cfg.Profile.DropAt, func() {
			what := dropSlots(reqCtx, client, cfg.Upstream, cfg.DropTo)
			eventsMu.Lock()
			events = append(events, Event{T: time.Since(start).Seconds(), What: what})
			eventsMu.Unlock()
		})
		defer t.Stop()
	}

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	sent := 0
send:
	for i, p := range plan {
		if d := time.Until(start.Add(p.At)); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				break send
			}
		}
		sent = i + 1
		now := time.Since(start)
		late = append(late, ms(now-p.At))
		counts.sent[p.Priority].Add(1)
		if inflight.Load() >= int64(cfg.MaxInFlight) {
			recs[i] = Record{AtMS: ms(p.At), SentMS: ms(now), Priority: p.Priority, Class: ClassOverflow, MaxTokens: p.MaxTokens}
			counts.answered(p.Priority, ClassOverflow)
			continue
		}
		inflight.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer inflight.Add(-1)
			r := req.do(reqCtx, p.Priority, p.MaxTokens)
			r.AtMS, r.SentMS = ms(p.At), ms(now)
			recs[i] = r
			counts.answered(p.Priority, r.Class)
		}()
	}
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()
	select {
	case <-allDone:
	case <-time.After(cfg.Drain):
		cancelReqs(errDrained) // requests still out count as timeouts
		<-allDone
	case <-ctx.Done():
		<-allDone
	}
	recs = recs[:sent] // only now: the request goroutines write into recs
	res.ElapsedS = time.Since(start).Seconds()
	stopPoll()
	<-pollDone

	res.Polls, res.PollErrors = polls, pollErrs
	eventsMu.Lock()
	res.Events = events
	eventsMu.Unlock()
	res.LateP99MS, res.LateMaxMS = Percentile(late, 99), Percentile(late, 100)
	summarizeInto(res, recs)
	res.Series = BuildSeries(recs, polls, int(res.DurationS+0.999))
	if cfg.KeepRecords {
		res.Records = recs
	}
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("loadgen: run interrupted after %.1fs: %w", res.ElapsedS, err)
	}
	return res, nil
}

func summarizeInto(res *Result, recs []Record) {
	res.Overall = Summarize(recs, res.DurationS)
	var by [numPriorities][]Record
	for _, r := range recs {
		by[r.Priority] = append(by[r.Priority], r)
	}
	res.High = Summarize(by[High], res.DurationS)
	res.Medium = Summarize(by[Medium], res.DurationS)
	res.Low = Summarize(by[Low], res.DurationS)
}

// dropSlots tells llmsim to run n slots; it returns what happened, for the
// events list.
func dropSlots(ctx context.Context, c *http.Client, upstream string, n int) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	body := fmt.Sprintf(`{"slots":%d}`, n)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, upstream+"/admin/slots", bytes.NewReader([]byte(body)))
	if err != nil {
		return "capacity drop failed: " + err.Error()
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return "capacity drop failed: " + err.Error()
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxPollBody))
	if resp.StatusCode != http.StatusOK {
		return "capacity drop failed: " + resp.Status
	}
	return fmt.Sprintf("upstream slots set to %d", n)
}

// poller looks at the upstream and the throttle once a second until ctx
// ends, and hands each round to onPoll (the live view) when not nil, even
// with nothing to poll. It logs the first error of each kind and counts the
// rest.
func poller(ctx context.Context, c *http.Client, cfg Config, start time.Time, logw io.Writer, onPoll func(Poll)) ([]Poll, int) {
	if cfg.Upstream == "" && cfg.ThrottleStatus == "" && onPoll == nil {
		return nil, 0
	}
	var (
		polls              []Poll
		errs               int
		loggedUp, loggedTh bool
	)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		p := Poll{T: time.Since(start).Seconds()}
		if cfg.Upstream != "" {
			u, err := pollUpstream(ctx, c, cfg.Upstream)
			if err != nil && ctx.Err() == nil {
				errs++
				if !loggedUp {
					fmt.Fprintf(logw, "loadgen: polling the upstream: %v (further errors counted only)\n", err)
					loggedUp = true
				}
			}
			p.Upstream = u
		}
		if cfg.ThrottleStatus != "" {
			t, err := pollThrottle(ctx, c, cfg.ThrottleStatus, cfg.ThrottleInstance)
			if err != nil && ctx.Err() == nil {
				errs++
				if !loggedTh {
					fmt.Fprintf(logw, "loadgen: polling the throttle: %v (further errors counted only)\n", err)
					loggedTh = true
				}
			}
			p.Throttle = t
		}
		if p.Upstream != nil || p.Throttle != nil {
			polls = append(polls, p)
		}
		if onPoll != nil && ctx.Err() == nil {
			onPoll(p)
		}
		select {
		case <-ctx.Done():
			return polls, errs
		case <-tick.C:
		}
	}
}
