package sensors

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Gauge names what to read from a Prometheus text page.
type Gauge struct {
	// Metric is a 0–1 gauge, a count judged as a fraction of MetricMax, or
	// used memory when PairKind is set.
	Metric string
	// PairKind is "" (no pair), "total" or "free": how PairMetric relates
	// to Metric.
	PairKind   string
	PairMetric string
	// MetricMax: Metric is a count (requests waiting) read as a fraction
	// of this many. 0: Metric is a 0–1 gauge (or a pair).
	MetricMax float64
	// Labels keeps only the series whose labels equal these (an absent
	// label reads as "", as in PromQL).
	Labels map[string]string
}

// PrometheusConfig is a Prometheus source: which pages, which gauge.
type PrometheusConfig struct {
	URLs []string // the /metrics pages, scraped at once at every read
	Gauge
	Timeout time.Duration // per scrape; 0: the read's context alone bounds it
	MaxBody int64         // a larger page fails the read; 0: DefaultMaxBody
}

// DefaultMaxBody is the largest metrics page read by default.
const DefaultMaxBody = 4 << 20

// promSource scrapes model-server or exporter /metrics pages.
type promSource struct {
	cfg    PrometheusConfig
	client *http.Client
	tr     *http.Transport
}

// NewPrometheus is a source that scrapes cfg.URLs for cfg.Metric (and its
// pair).
func NewPrometheus(cfg PrometheusConfig) Source {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // a scrape goes straight to the server, as Prometheus does
	tr.MaxIdleConnsPerHost = 2
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	return &promSource{cfg: cfg, tr: tr, client: &http.Client{Transport: tr, Timeout: cfg.Timeout}}
}

func (p *promSource) Name() string { return "prometheus" }

func (p *promSource) Close() error {
	p.tr.CloseIdleConnections()
	return nil
}

// Read scrapes every URL at once; any endpoint failing fails the read.
func (p *promSource) Read(ctx context.Context) ([]Device, error) {
	devs := make([][]Device, len(p.cfg.URLs))
	errs := make([]error, len(p.cfg.URLs))
	var wg sync.WaitGroup
	for i, u := range p.cfg.URLs {
		wg.Go(func() { devs[i], errs[i] = p.scrape(ctx, u) })
	}
	wg.Wait()
	var all []Device
	for i, u := range p.cfg.URLs {
		if errs[i] != nil {
			return nil, fmt.Errorf("%s: %w", u, errs[i])
		}
		all = append(all, devs[i]...)
	}
	return all, nil
}

func (p *promSource) scrape(ctx context.Context, u string) ([]Device, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := p.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) { // it repeats the URL we name anyway
			err = ue.Err
		}
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		if m := trimMsg(msg); m != "" {
			return nil, fmt.Errorf("HTTP %s: %s", resp.Status, m)
		}
		return nil, fmt.Errorf("HTTP %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, p.cfg.MaxBody+1))
	if err != nil {
		return nil, fmt.Errorf("reading body: %w", err)
	}
	if int64(len(body)) > p.cfg.MaxBody {
		return nil, fmt.Errorf("body larger than %d bytes", p.cfg.MaxBody)
	}
	devs, err := ParseMetrics(body, p.cfg.Gauge)
	for i := range devs {
		devs[i].Origin = u
	}
	return devs, err
}

// renamed lists metric names servers have changed, to say so when one is missing.
var renamed = map[string]string{
	"vllm:gpu_cache_usage_perc": "vllm:kv_cache_usage_perc",
	"vllm:kv_cache_usage_perc":  "vllm:gpu_cache_usage_perc",
}

// ParseMetrics finds g.Metric (and g.PairMetric) in a Prometheus text
// page and makes one Device per series that passes g.Labels. A series it
// cannot use (NaN, no pair) comes back with Err set; a page without the
// metric is an error.
func ParseMetrics(body []byte, g Gauge) (devs []Device, err error) {
	defer func() { // the parser reads untrusted input: never let it take us down
		if r := recover(); r != nil {
			devs, err = nil, fmt.Errorf("parsing metrics: %v", r)
		}
	}()
	names := []string{g.Metric, renamed[g.Metric]}
	if g.PairKind != "" {
		names = append(names, g.PairMetric)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(linesFor(body, names)))
	if err != nil {
		return nil, fmt.Errorf("parsing metrics: %w", err)
	}
	series, err := findSeries(fams, g.Metric, g.Labels)
	if err != nil {
		return nil, err
	}
	var pairs map[string]float64
	if g.PairKind != "" {
		ps, err := findSeries(fams, g.PairMetric, g.Labels)
		if err != nil {
			return nil, err
		}
		pairs = make(map[string]float64, len(ps))
		for _, s := range ps {
			pairs[s.labels] = s.value
		}
	}
	scale := unitScale(g.Metric)
	for _, s := range series {
		d := Device{ID: s.labels, Index: -1, UUID: s.label("UUID")}
		if d.UUID == "" {
			d.UUID = s.label("uuid")
		}
		if g := s.label("gpu"); g != "" {
			d.ID = g
			if n, err := strconv.Atoi(g); err == nil && n >= 0 {
				d.Index = n
			}
		}
		if s.ts != 0 {
			d.Timestamp = time.UnixMilli(s.ts)
		}
		if !finite(s.value) || s.value < 0 {
			d.Err = fmt.Sprintf("%s is %v", g.Metric, s.value)
			devs = append(devs, d)
			continue
		}
		d.Used, d.Total = s.value, 1
		if g.MetricMax > 0 { // a count, as a fraction of its max
			d.Total = g.MetricMax
		}
		if g.PairKind != "" {
			pv, ok := pairs[s.labels]
			switch {
			case !ok:
				d.Err = fmt.Sprintf("no %s series with labels %s", g.PairMetric, s.labels)
			case !finite(pv) || pv < 0:
				d.Err = fmt.Sprintf("%s is %v", g.PairMetric, pv)
			case g.PairKind == "free":
				d.Used, d.Total = s.value*scale, (s.value+pv)*scale
			default:
				d.Used, d.Total = s.value*scale, pv*scale
			}
			switch {
			case d.Err != "":
			case !finite(d.Used) || !finite(d.Total):
				d.Err = fmt.Sprintf("%s/%s out of range", g.Metric, g.PairMetric)
			case d.Total <= 0:
				d.Err = fmt.Sprintf("total memory is %v", d.Total)
			}
		}
		devs = append(devs, d)
	}
	return devs, nil
}

// linesFor keeps only the lines about the named metrics (their samples,
// HELP and TYPE), so a malformed line elsewhere on a large page cannot blind
// the sensor, and parsing costs little however many histograms the page has.
func linesFor(body []byte, names []string) []byte {
	out := make([]byte, 0, 1024)
	for len(body) > 0 {
		line, rest, _ := bytes.Cut(body, []byte("\n"))
		body = rest
		if lineAbout(line, names) {
			out = append(append(out, line...), '\n')
		}
	}
	return out
}

func lineAbout(line []byte, names []string) bool {
	line = bytes.TrimLeft(line, " \t")
	if bytes.HasPrefix(line, []byte("#")) {
		f := bytes.Fields(line)
		if len(f) < 3 || !bytes.Equal(f[0], []byte("#")) || !(bytes.Equal(f[1], []byte("HELP")) || bytes.Equal(f[1], []byte("TYPE"))) {
			return false
		}
		for _, n := range names {
			if n != "" && string(f[2]) == n {
				return true
			}
		}
		return false
	}
	for _, n := range names {
		if n != "" && len(line) > len(n) && string(line[:len(n)]) == n {
			switch line[len(n)] {
			case '{', ' ', '\t', '_': // a sample, or a histogram's _bucket/_sum/_count
				return true
			}
		}
	}
	return false
}

// unitScale turns DCGM's framebuffer MiB into bytes, like the other
// sources; other pairs keep their own unit (only their ratio matters).
func unitScale(metric string) float64 {
	if strings.HasPrefix(metric, "DCGM_FI_DEV_FB_") {
		return MiB
	}
	return 1
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

type series struct {
	labels string // canonical {a="b",c="d"}, sorted
	pairs  []*dto.LabelPair
	value  float64
	ts     int64
}

func (s series) label(name string) string {
	for _, p := range s.pairs {
		if p.GetName() == name {
			return p.GetValue()
		}
	}
	return ""
}

// findSeries returns the samples of name whose labels pass filter (an absent
// label reads as "", as in PromQL), saying why when there are none.
func findSeries(fams map[string]*dto.MetricFamily, name string, filter map[string]string) ([]series, error) {
	mf, ok := fams[name]
	if !ok {
		if alt := renamed[name]; alt != "" && fams[alt] != nil {
			return nil, fmt.Errorf("metric %s not found, but %s is: the server renamed it; set metric %s", name, alt, alt)
		}
		return nil, fmt.Errorf("metric %s not found (did the server rename it? vLLM renamed vllm:gpu_cache_usage_perc to vllm:kv_cache_usage_perc)", name)
	}
	var out []series
	var other string
	for _, m := range mf.GetMetric() {
		s := series{pairs: m.GetLabel(), ts: m.GetTimestampMs()}
		switch {
		case m.Gauge != nil:
			s.value = m.Gauge.GetValue()
		case m.Untyped != nil:
			s.value = m.Untyped.GetValue()
		case m.Counter != nil:
			s.value = m.Counter.GetValue()
		default:
			return nil, fmt.Errorf("metric %s is a %s; want a gauge", name, strings.ToLower(mf.GetType().String()))
		}
		s.labels = labelString(s.pairs)
		if !matches(s, filter) {
			other = s.labels
			continue
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("metric %s has no series with labels %s (one it has: %s)", name, filterString(filter), clip(other))
	}
	return out, nil
}

func matches(s series, filter map[string]string) bool {
	for k, v := range filter {
		if s.label(k) != v {
			return false
		}
	}
	return true
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func labelString(pairs []*dto.LabelPair) string {
	parts := make([]string, 0, len(pairs))
	for _, p := range pairs {
		parts = append(parts, p.GetName()+`="`+labelEscaper.Replace(p.GetValue())+`"`)
	}
	slices.Sort(parts)
	return "{" + strings.Join(parts, ",") + "}"
}

func filterString(filter map[string]string) string {
	pairs := make([]*dto.LabelPair, 0, len(filter))
	for k, v := range filter {
		pairs = append(pairs, &dto.LabelPair{Name: &k, Value: &v})
	}
	return labelString(pairs)
}
