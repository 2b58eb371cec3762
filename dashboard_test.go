package adaptivethrottle

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ai-guardian/adaptivethrottle/breaker"
	"github.com/ai-guardian/adaptivethrottle/priority"
	"github.com/ai-guardian/adaptivethrottle/throttle"
)

// The dashboard is checked against the module's own collector so that a
// renamed metric, label or label value breaks this test, not the dashboard
// silently showing "No data".

const dashboardFile = "dashboards/adaptive-throttle.json"

// exportedLabels is the bounded label set the module promises (README, "Prometheus metrics").
var exportedLabels = []string{"name", "level", "cause", "priority", "decision", "state", "sensor", "upstream"}

// notOnDashboard lists exported metrics the dashboard may leave out, each
// with its reason. Empty: the dashboard shows every metric.
var notOnDashboard = map[string]string{}

// --- the Grafana JSON model, only the parts checked here ---

type grafanaDashboard struct {
	SchemaVersion int            `json:"schemaVersion"`
	Title         string         `json:"title"`
	UID           string         `json:"uid"`
	Panels        []grafanaPanel `json:"panels"`
	Inputs        []grafanaInput `json:"__inputs"`
	Templating    struct {
		List []grafanaVar `json:"list"`
	} `json:"templating"`
}

type grafanaInput struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	PluginID string `json:"pluginId"`
}

type grafanaPanel struct {
	ID          int             `json:"id"`
	Type        string          `json:"type"`
	Title       string          `json:"title"`
	Description string          `json:"description"`
	Collapsed   bool            `json:"collapsed"`
	Datasource  json.RawMessage `json:"datasource"`
	Targets     []grafanaTarget `json:"targets"`
	Panels      []grafanaPanel  `json:"panels"` // a collapsed row's children
	GridPos     struct{ X, Y, W, H int }
	FieldConfig struct {
		Defaults struct {
			Unit string `json:"unit"`
		} `json:"defaults"`
		Overrides []struct {
			Matcher struct {
				ID      string `json:"id"`
				Options string `json:"options"`
			} `json:"matcher"`
			Properties []struct {
				ID    string          `json:"id"`
				Value json.RawMessage `json:"value"`
			} `json:"properties"`
		} `json:"overrides"`
	} `json:"fieldConfig"`
}

type grafanaTarget struct {
	RefID        string          `json:"refId"`
	Expr         string          `json:"expr"`
	LegendFormat string          `json:"legendFormat"`
	Datasource   json.RawMessage `json:"datasource"`
}

type grafanaVar struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"` // a string, or {"query": "..."} in newer Grafana
	Datasource json.RawMessage `json:"datasource"`
	Multi      bool            `json:"multi"`
	IncludeAll bool            `json:"includeAll"`
}

type dsRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

func loadDashboard(t *testing.T) grafanaDashboard {
	t.Helper()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(raw) {
		t.Fatalf("%s is not valid JSON", dashboardFile)
	}
	var d grafanaDashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// walkPanels visits every panel, rows' nested children included, with a
// path naming it for error messages.
func walkPanels(ps []grafanaPanel, parent string, fn func(p grafanaPanel, path string)) {
	for i, p := range ps {
		path := fmt.Sprintf("%spanels[%d] %q", parent, i, p.Title)
		fn(p, path)
		walkPanels(p.Panels, path+" > ", fn)
	}
}

// varQuery returns a templating variable's query text in either form.
func varQuery(v grafanaVar) string {
	var s string
	if json.Unmarshal(v.Query, &s) == nil {
		return s
	}
	var o struct {
		Query string `json:"query"`
	}
	_ = json.Unmarshal(v.Query, &o)
	return o.Query
}

// --- what the module exports ---

// describedLabels maps every metric theCollector describes to its
// variable labels, read from prometheus.Desc.String().
func describedLabels(t *testing.T) map[string][]string {
	t.Helper()
	ch := make(chan *prometheus.Desc)
	go func() {
		theCollector.Describe(ch)
		close(ch)
	}()
	re := regexp.MustCompile(`^Desc\{fqName: "([^"]*)".*variableLabels: \{([^}]*)\}\}$`)
	out := map[string][]string{}
	for d := range ch {
		m := re.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read desc %s", d)
		}
		var labels []string
		for l := range strings.SplitSeq(m[2], ",") {
			if l = strings.TrimSuffix(strings.TrimPrefix(l, "c("), ")"); l != "" {
				labels = append(labels, l)
			}
		}
		out[m[1]] = labels
	}
	return out
}

// knownValues returns the values a label takes on a metric, as the
// collector writes them; nil where any value is possible (name).
func knownValues(metric, label string) []string {
	var vs []string
	switch label {
	case "decision":
		for v := range priority.Verdicts {
			vs = append(vs, priority.Verdict(v).String())
		}
	case "level":
		return levelNames[:]
	case "cause":
		for c := range throttle.Causes {
			vs = append(vs, throttle.CauseName(c))
		}
	case "priority":
		for p := range priority.Count {
			vs = append(vs, priority.Priority(p).String())
		}
	case "state":
		if metric == metricsPrefix+"override" {
			return overrideStates[:]
		}
		for _, s := range []breaker.State{breaker.Closed, breaker.Open, breaker.HalfOpen} {
			vs = append(vs, s.String())
		}
	case "sensor":
		vs = []string{"gpu"} // the only sensor collect reports
	}
	return vs
}

// resolveMetric maps a name used in a query to the exported metric: the
// name itself, or, for a histogram/summary series, the name less
// _bucket/_sum/_count when that suffix is not part of an exported name.
func resolveMetric(name string, exported map[string][]string) (string, bool) {
	if _, ok := exported[name]; ok {
		return name, true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suf); ok {
			if _, ok := exported[base]; ok {
				return base, true
			}
		}
	}
	return "", false
}

// --- a small PromQL scanner: selectors, matchers, grouping labels ---

type promMatcher struct{ Key, Op, Value string }

type promSelector struct {
	Metric   string
	Matchers []promMatcher
}

type promQuery struct {
	Selectors []promSelector
	Grouping  []string // labels in by / without / on / ignoring / group_left / group_right
}

// promWords are PromQL keywords and aggregations that may stand without
// a following "(": any other bare identifier would be a metric name.
var promWords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true, "inf": true, "nan": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"sum": true, "min": true, "max": true, "avg": true, "count": true, "stddev": true, "stdvar": true, "group": true,
	"topk": true, "bottomk": true, "quantile": true, "count_values": true, "limitk": true, "limit_ratio": true,
}

var groupingWords = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}

func isIdentStart(c byte) bool {
	return c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isIdent(c byte) bool { return isIdentStart(c) || (c >= '0' && c <= '9') }

type promScanner struct {
	s string
	i int
}

func (p *promScanner) ws() {
	for p.i < len(p.s) && strings.IndexByte(" \t\r\n", p.s[p.i]) >= 0 {
		p.i++
	}
}

func (p *promScanner) ident() string {
	start := p.i
	if p.i < len(p.s) && isIdentStart(p.s[p.i]) {
		for p.i < len(p.s) && isIdent(p.s[p.i]) {
			p.i++
		}
	}
	return p.s[start:p.i]
}

func (p *promScanner) peek() byte {
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

// str reads a quoted string literal at p.i and returns its value.
func (p *promScanner) str() (string, error) {
	start, q := p.i, p.peek()
	if q != '"' && q != '\'' && q != '`' {
		return "", fmt.Errorf("offset %d: want a string", p.i)
	}
	for p.i++; p.i < len(p.s) && p.s[p.i] != q; p.i++ {
		if p.s[p.i] == '\\' && q != '`' {
			p.i++
		}
	}
	if p.i >= len(p.s) {
		return "", fmt.Errorf("offset %d: unterminated string", start)
	}
	p.i++
	lit := p.s[start:p.i]
	if q == '\'' {
		lit = `"` + strings.ReplaceAll(lit[1:len(lit)-1], `"`, `\"`) + `"`
	}
	v, err := strconv.Unquote(lit)
	if err != nil {
		return "", fmt.Errorf("offset %d: %v", start, err)
	}
	return v, nil
}

// matchers reads {k op "v", ...} starting at "{".
func (p *promScanner) matchers() ([]promMatcher, error) {
	var ms []promMatcher
	p.i++ // {
	for {
		p.ws()
		if p.peek() == '}' {
			p.i++
			return ms, nil
		}
		k := p.ident()
		if k == "" {
			return nil, fmt.Errorf("offset %d: want a label name", p.i)
		}
		p.ws()
		var op string
		for _, o := range []string{"=~", "!~", "!=", "="} {
			if strings.HasPrefix(p.s[p.i:], o) {
				op = o
				break
			}
		}
		if op == "" {
			return nil, fmt.Errorf("offset %d: want a matcher operator after %q", p.i, k)
		}
		p.i += len(op)
		p.ws()
		v, err := p.str()
		if err != nil {
			return nil, err
		}
		ms = append(ms, promMatcher{k, op, v})
		p.ws()
		switch p.peek() {
		case ',':
			p.i++
		case '}':
		default:
			return nil, fmt.Errorf("offset %d: want , or } in a selector", p.i)
		}
	}
}

// labelList reads (a, b, ...) starting at "(".
func (p *promScanner) labelList() ([]string, error) {
	var ls []string
	p.i++ // (
	for {
		p.ws()
		if p.peek() == ')' {
			p.i++
			return ls, nil
		}
		l := p.ident()
		if l == "" {
			return nil, fmt.Errorf("offset %d: want a label name in a grouping list", p.i)
		}
		ls = append(ls, l)
		p.ws()
		switch p.peek() {
		case ',':
			p.i++
		case ')':
		default:
			return nil, fmt.Errorf("offset %d: want , or ) in a grouping list", p.i)
		}
	}
}

// parsePromQL finds every selector and grouping label in expr. Metrics
// outside prefix, selectors without a metric name and bare unknown
// identifiers are errors: nothing the dashboard queries goes unchecked.
func parsePromQL(expr, prefix string) (promQuery, error) {
	var q promQuery
	p := &promScanner{s: expr}
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			if _, err := p.str(); err != nil {
				return q, err
			}
		case c == '[': // range or subquery: durations and Grafana variables
			end := strings.IndexByte(p.s[p.i:], ']')
			if end < 0 {
				return q, fmt.Errorf("offset %d: unterminated [", p.i)
			}
			p.i += end + 1
		case c == '#':
			for p.i < len(p.s) && p.s[p.i] != '\n' {
				p.i++
			}
		case c == '$': // a Grafana variable outside a string
			p.i++
			p.ident()
		case c >= '0' && c <= '9' || c == '.':
			for p.i < len(p.s) && (isIdent(p.s[p.i]) || p.s[p.i] == '.') {
				p.i++
			}
		case c == '{':
			return q, fmt.Errorf("offset %d: selector without a metric name", p.i)
		case isIdentStart(c):
			at := p.i
			id := p.ident()
			p.ws()
			next := p.peek()
			switch {
			case groupingWords[id]:
				if next == '(' {
					ls, err := p.labelList()
					if err != nil {
						return q, err
					}
					q.Grouping = append(q.Grouping, ls...)
				}
			case strings.HasPrefix(id, prefix):
				sel := promSelector{Metric: id}
				if next == '{' {
					ms, err := p.matchers()
					if err != nil {
						return q, err
					}
					sel.Matchers = ms
				}
				q.Selectors = append(q.Selectors, sel)
			case next == '{':
				return q, fmt.Errorf("offset %d: metric %q is not the module's (%s*)", at, id, prefix)
			case next != '(' && !promWords[strings.ToLower(id)]:
				return q, fmt.Errorf("offset %d: unknown identifier %q (a metric outside %s*?)", at, id, prefix)
			}
		default:
			p.i++
		}
	}
	return q, nil
}

var labelValuesQuery = regexp.MustCompile(`^\s*label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$`)

var legendLabel = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)

// dashboardQuery is one query of the dashboard with where it comes from.
type dashboardQuery struct {
	where, expr, legend string
	panel               bool // a panel's target (must honour $name)
}

func dashboardQueries(t *testing.T, d grafanaDashboard) []dashboardQuery {
	t.Helper()
	var qs []dashboardQuery
	walkPanels(d.Panels, "", func(p grafanaPanel, path string) {
		for _, tg := range p.Targets {
			qs = append(qs, dashboardQuery{where: path + " target " + tg.RefID, expr: tg.Expr, legend: tg.LegendFormat, panel: true})
		}
	})
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := labelValuesQuery.FindStringSubmatch(varQuery(v))
		if m == nil {
			t.Errorf("variable %q: query %q is not label_values(<selector>, <label>)", v.Name, varQuery(v))
			continue
		}
		qs = append(qs, dashboardQuery{where: "variable " + v.Name, expr: fmt.Sprintf("sum by (%s) (%s)", m[2], m[1])})
	}
	return qs
}

// --- the tests ---

func TestDashboardIsWellFormed(t *testing.T) {
	d := loadDashboard(t)
	if d.SchemaVersion < 39 {
		t.Errorf("schemaVersion %d, want >= 39", d.SchemaVersion)
	}
	if d.Title == "" || d.UID == "" {
		t.Errorf("title %q, uid %q: both needed", d.Title, d.UID)
	}
	if !slices.ContainsFunc(d.Inputs, func(in grafanaInput) bool {
		return in.Name == "DS_PROMETHEUS" && in.Type == "datasource" && in.PluginID == "prometheus"
	}) {
		t.Error("__inputs lacks the DS_PROMETHEUS prometheus datasource input")
	}

	vars := map[string]grafanaVar{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if v, ok := vars["datasource"]; !ok || v.Type != "datasource" || varQuery(v) != "prometheus" {
		t.Errorf("templating needs a datasource variable of type prometheus, have %+v", v)
	}
	if _, ok := vars["instance"]; ok {
		t.Error(`templating has an "instance" variable: the throttle's label is name (instance is Prometheus's target label)`)
	}
	inst, ok := vars["name"]
	if !ok || inst.Type != "query" || !inst.Multi || !inst.IncludeAll {
		t.Errorf("templating needs a multi-select name query variable with All, have %+v", inst)
	}
	if got, want := varQuery(inst), "label_values("+metricsPrefix+"shedding, name)"; got != want {
		t.Errorf("name variable query %q, want %q", got, want)
	}
	checkDS := func(where string, raw json.RawMessage) {
		var ds dsRef
		if len(raw) == 0 || json.Unmarshal(raw, &ds) != nil || ds.Type != "prometheus" || ds.UID != "${datasource}" {
			t.Errorf("%s: datasource %s, want {type: prometheus, uid: ${datasource}}", where, strings.Join(strings.Fields(string(raw)), " "))
		}
	}
	checkDS("variable name", inst.Datasource)

	ids := map[int]string{}
	var n int
	walkPanels(d.Panels, "", func(p grafanaPanel, path string) {
		n++
		if p.Title == "" {
			t.Errorf("%s: no title", path)
		}
		if prev, dup := ids[p.ID]; dup || p.ID == 0 {
			t.Errorf("%s: id %d missing or shared with %s", path, p.ID, prev)
		}
		ids[p.ID] = path
		if g := p.GridPos; g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("%s: gridPos %+v outside the 24-column grid", path, g)
		}
		if p.Type == "row" { // a row only groups; it queries nothing
			if len(p.Targets) > 0 {
				t.Errorf("%s: a row with targets", path)
			}
			return
		}
		checkDS(path, p.Datasource)
		if len(p.Targets) == 0 {
			t.Errorf("%s: no targets", path)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("%s: refId %q missing or repeated", path, tg.RefID)
			}
			refs[tg.RefID] = true
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("%s target %s: empty expr", path, tg.RefID)
			}
			if len(tg.Datasource) > 0 {
				checkDS(path+" target "+tg.RefID, tg.Datasource)
			}
		}
	})
	if n < 10 {
		t.Errorf("only %d panels walked", n)
	}
}

func TestDashboardQueriesUseExportedMetrics(t *testing.T) {
	exported := describedLabels(t)
	for _, name := range MetricNames {
		if _, ok := exported[name]; !ok {
			t.Errorf("MetricNames has %s but theCollector does not describe it", name)
		}
	}
	if len(exported) != len(MetricNames) {
		t.Errorf("theCollector describes %d metrics, MetricNames lists %d", len(exported), len(MetricNames))
	}
	for name, labels := range exported {
		for _, l := range labels {
			if !slices.Contains(exportedLabels, l) {
				t.Errorf("%s has label %q outside the bounded set %v", name, l, exportedLabels)
			}
		}
	}

	qs := dashboardQueries(t, loadDashboard(t))
	for _, dq := range qs {
		q, err := parsePromQL(dq.expr, metricsPrefix)
		if err != nil {
			t.Errorf("%s: %q: %v", dq.where, dq.expr, err)
			continue
		}
		if len(q.Selectors) == 0 {
			t.Errorf("%s: %q queries none of the module's metrics", dq.where, dq.expr)
		}
		union := map[string]bool{}
		for _, sel := range q.Selectors {
			name, ok := resolveMetric(sel.Metric, exported)
			if !ok {
				t.Errorf("%s: metric %s is not exported (MetricNames)", dq.where, sel.Metric)
				continue
			}
			labels := exported[name]
			for _, l := range labels {
				union[l] = true
			}
			honoursInstance := false
			for _, m := range sel.Matchers {
				if !slices.Contains(labels, m.Key) {
					t.Errorf("%s: %s has no label %q (it has %v)", dq.where, name, m.Key, labels)
					continue
				}
				if m.Key == nameLabel && m.Op == "=~" && m.Value == "$name" {
					honoursInstance = true
				}
				checkMatcherValue(t, dq.where, name, m)
			}
			if dq.panel && !honoursInstance {
				t.Errorf(`%s: %s is not filtered by name=~"$name"`, dq.where, sel.Metric)
			}
		}
		for _, l := range q.Grouping {
			if !union[l] {
				t.Errorf("%s: groups by %q, which none of its metrics has", dq.where, l)
			}
		}
		for _, m := range legendLabel.FindAllStringSubmatch(dq.legend, -1) {
			if !union[m[1]] {
				t.Errorf("%s: legend uses {{%s}}, which none of its metrics has", dq.where, m[1])
			}
		}
	}
}

// checkMatcherValue fails a matcher that can select no series the
// collector writes (a renamed decision or level, a typo in a regex).
func checkMatcherValue(t *testing.T, where, metric string, m promMatcher) {
	t.Helper()
	known := knownValues(metric, m.Key)
	if known == nil || strings.Contains(m.Value, "$") {
		return
	}
	switch m.Op {
	case "=":
		if !slices.Contains(known, m.Value) {
			t.Errorf("%s: %s{%s=%q}: no such value, have %v", where, metric, m.Key, m.Value, known)
		}
	case "=~":
		re, err := regexp.Compile("^(?:" + m.Value + ")$")
		if err != nil {
			t.Errorf("%s: %s{%s=~%q}: %v", where, metric, m.Key, m.Value, err)
			return
		}
		if !slices.ContainsFunc(known, re.MatchString) {
			t.Errorf("%s: %s{%s=~%q} matches none of %v", where, metric, m.Key, m.Value, known)
		}
	}
}

func TestDashboardCoversEveryMetric(t *testing.T) {
	exported := describedLabels(t)
	used := map[string]bool{}
	for _, dq := range dashboardQueries(t, loadDashboard(t)) {
		if !dq.panel {
			continue
		}
		q, err := parsePromQL(dq.expr, metricsPrefix)
		if err != nil {
			continue // reported by TestDashboardQueriesUseExportedMetrics
		}
		for _, sel := range q.Selectors {
			if name, ok := resolveMetric(sel.Metric, exported); ok {
				used[name] = true
			}
		}
	}
	for _, name := range MetricNames {
		_, excused := notOnDashboard[name]
		switch {
		case !used[name] && !excused:
			t.Errorf("no panel shows %s", name)
		case used[name] && excused:
			t.Errorf("%s is shown, drop it from notOnDashboard", name)
		}
	}
	for name := range notOnDashboard {
		if !slices.Contains(MetricNames, name) {
			t.Errorf("notOnDashboard names %s, which is not exported", name)
		}
	}
}

// unitSuffixes maps a metric name's unit suffix to the Grafana unit a panel
// showing it must use.
var unitSuffixes = []struct{ suffix, unit string }{
	{"_requests_per_second", "reqps"},
	{"_ratio", "percentunit"},
	{"_seconds", "s"},
}

// TestDashboardUnits checks each panel showing a gauge with a unit in its
// name (qps_requests_per_second, gpu_ratio, latency_seconds, …) is in
// that unit, and that every such gauge is shown somewhere.
func TestDashboardUnits(t *testing.T) {
	seen := map[string]bool{}
	walkPanels(loadDashboard(t).Panels, "", func(p grafanaPanel, path string) {
		for _, tg := range p.Targets {
			q, err := parsePromQL(tg.Expr, metricsPrefix)
			if err != nil || strings.Contains(tg.Expr, "rate(") {
				continue // a rate is per second of its own; checked elsewhere
			}
			for _, sel := range q.Selectors {
				for _, us := range unitSuffixes {
					if strings.HasSuffix(sel.Metric, us.suffix) {
						seen[sel.Metric] = true
						if p.FieldConfig.Defaults.Unit != us.unit {
							t.Errorf("%s: %s in unit %q, want %q", path, sel.Metric, p.FieldConfig.Defaults.Unit, us.unit)
						}
					}
				}
			}
		}
	})
	for _, name := range MetricNames {
		for _, us := range unitSuffixes {
			if strings.HasSuffix(name, us.suffix) && !seen[name] {
				t.Errorf("no panel shows %s in %s", name, us.unit)
			}
		}
	}
}

// TestMetricNamesCarryUnits pins the naming: no gauge mixes units under one
// name (the old level_value / level_threshold), and rates say so.
func TestMetricNamesCarryUnits(t *testing.T) {
	for _, name := range MetricNames {
		short := strings.TrimPrefix(name, metricsPrefix)
		switch {
		case strings.HasPrefix(short, "level_") && short != "level_tripped" && short != "level_transitions_total":
			t.Errorf("%s: a level's value or threshold gets a metric of its own, in its unit", name)
		case strings.Contains(short, "rate") && !strings.HasSuffix(short, "_requests_per_second"):
			t.Errorf("%s: a rate's name ends in _requests_per_second", name)
		case strings.Contains(short, "baseline") && !strings.HasSuffix(short, "_requests_per_second"):
			t.Errorf("%s: the baseline is a rate; its name ends in _requests_per_second", name)
		}
	}
	for _, level := range levelNames {
		n := 0
		for _, name := range MetricNames {
			if strings.HasPrefix(name, metricsPrefix+level+"_") && !strings.Contains(name, "threshold") &&
				!strings.Contains(name, "baseline") && !strings.Contains(name, "history") {
				n++
			}
		}
		if n != 1 {
			t.Errorf("level %s: %d value metrics, want 1", level, n)
		}
	}
}

// fixedRange finds a range selector with a literal duration ([5m]).
var fixedRange = regexp.MustCompile(`\[\s*[0-9]+[smhdwy][^\]]*\]`)

// TestDashboardWindowsFollowTheStep: a range or offset of a fixed length
// evaluated at every step slides (increase(...[5m]) counts each trip in
// every step for five minutes, in fractions); windows follow Grafana's
// $__rate_interval, $__interval or $__range instead.
func TestDashboardWindowsFollowTheStep(t *testing.T) {
	walkPanels(loadDashboard(t).Panels, "", func(p grafanaPanel, path string) {
		for _, tg := range p.Targets {
			if fixedRange.MatchString(tg.Expr) || regexp.MustCompile(`offset\s+[0-9]`).MatchString(tg.Expr) {
				t.Errorf("%s target %s: a fixed window in %q", path, tg.RefID, tg.Expr)
			}
			if strings.Contains(tg.Expr, "increase(") {
				t.Errorf("%s target %s: increase() extrapolates, a count reads as a fraction: %q", path, tg.RefID, tg.Expr)
			}
		}
	})
}

// learnedThresholds are the thresholds the collector leaves out until they
// are learned; the dashboard says "learning" for each instead.
var learnedThresholds = []string{metricsPrefix + "qps_threshold_requests_per_second", metricsPrefix + "latency_threshold_seconds"}

// TestDashboardShowsLearning: for each learned threshold a stat panel falls
// back to -1 when it is absent and maps -1 to "learning".
func TestDashboardShowsLearning(t *testing.T) {
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Type        string          `json:"type"`
			Title       string          `json:"title"`
			Targets     []grafanaTarget `json:"targets"`
			FieldConfig struct {
				Defaults struct {
					Mappings []struct {
						Type    string `json:"type"`
						Options map[string]struct {
							Text string `json:"text"`
						} `json:"options"`
					} `json:"mappings"`
				} `json:"defaults"`
			} `json:"fieldConfig"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	for _, metric := range learnedThresholds {
		found := false
		for _, p := range d.Panels {
			if p.Type != "stat" || len(p.Targets) != 1 {
				continue
			}
			e := p.Targets[0].Expr
			if !strings.HasPrefix(e, "max by (name) ("+metric+"{") || !strings.HasSuffix(e, " * 0 - 1") || !strings.Contains(e, " or ") {
				continue
			}
			for _, m := range p.FieldConfig.Defaults.Mappings {
				if m.Type == "value" && m.Options["-1"].Text == "learning" {
					found = true
				}
			}
		}
		if !found {
			t.Errorf(`no stat panel shows %s, or "learning" (-1) when it is absent`, metric)
		}
	}
}

// TestDashboardQueryParser pins the scanner the checks above rely on.
func TestDashboardQueryParser(t *testing.T) {
	const px = "caddy_adaptive_throttle_"
	cases := []struct {
		expr     string
		metrics  []string
		keys     []string
		grouping []string
		err      string
	}{
		{expr: `sum by (priority) (rate(caddy_adaptive_throttle_requests_total{name=~"$name",decision=~"shed.*"}[1m]))`,
			metrics: []string{px + "requests_total"}, keys: []string{"name", "decision"}, grouping: []string{"priority"}},
		{expr: `sum by (name) (x_y{a="1"})`, err: "is not the module's"},
		{expr: `{__name__="caddy_adaptive_throttle_shedding"}`, err: "without a metric name"},
		{expr: `up + caddy_adaptive_throttle_shedding`, err: "unknown identifier"},
		{expr: `caddy_adaptive_throttle_a{b="x\"}"} / on(instance) group_left(level) caddy_adaptive_throttle_c offset 5m`,
			metrics: []string{px + "a", px + "c"}, keys: []string{"b"}, grouping: []string{"instance", "level"}},
		{expr: `increase(caddy_adaptive_throttle_b_count{ x != 'y' }[$__range]) * 2e3`,
			metrics: []string{px + "b_count"}, keys: []string{"x"}},
		{expr: `caddy_adaptive_throttle_a{b}`, err: "matcher operator"},
		{expr: `caddy_adaptive_throttle_a{b="x`, err: "unterminated string"},
	}
	for _, c := range cases {
		q, err := parsePromQL(c.expr, px)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: err %v, want %q", c.expr, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.expr, err)
			continue
		}
		var metrics, keys []string
		for _, s := range q.Selectors {
			metrics = append(metrics, s.Metric)
			for _, m := range s.Matchers {
				keys = append(keys, m.Key)
			}
		}
		if !slices.Equal(metrics, c.metrics) || !slices.Equal(keys, c.keys) || !slices.Equal(q.Grouping, c.grouping) {
			t.Errorf("%q: metrics %v keys %v grouping %v, want %v %v %v", c.expr, metrics, keys, q.Grouping, c.metrics, c.keys, c.grouping)
		}
	}

	exported := map[string][]string{px + "h": nil, px + "n_count": nil}
	for name, want := range map[string]string{
		px + "h":        px + "h",
		px + "h_bucket": px + "h",
		px + "h_sum":    px + "h",
		px + "h_count":  px + "h",
		px + "n_count":  px + "n_count", // the suffix is part of the exported name: kept
		px + "n":        "",
		px + "h_total":  "",
	} {
		got, ok := resolveMetric(name, exported)
		if got != want || ok != (want != "") {
			t.Errorf("resolveMetric(%s) = %q, %v; want %q", name, got, ok, want)
		}
	}
}

// checkedLabels are the labels whose values texts name: a description or
// help text that names one must name what the code emits, no more, no
// fewer. vocabulary is what counts as naming one (a level's text that
// names a cause that is no level, such as circuit, is wrong too).
var checkedLabels = []string{"decision", "cause", "level"}

func vocabulary(label string) []string {
	switch label {
	case "decision":
		return knownValues(metricsPrefix+"requests_total", "decision")
	case "cause", "level":
		return knownValues(metricsPrefix+"shed_total", "cause") // the levels and the other causes
	}
	return knownValues("", label)
}

// namedIn returns the values of vs that text names as whole words (a
// value's neighbours are no letter, digit, _ or -).
func namedIn(text string, vs []string) []string {
	var out []string
	for _, v := range vs {
		if regexp.MustCompile(`(^|[^A-Za-z0-9_-])` + regexp.QuoteMeta(v) + `($|[^A-Za-z0-9_-])`).MatchString(text) {
			out = append(out, v)
		}
	}
	return out
}

// decisionLike finds words spelt like a decision (pass_…, shed_…).
var decisionLike = regexp.MustCompile(`\b(?:pass|shed)_[a-z_]+\b`)

// unknownDecisions returns the decision-like words of text that are no
// decision the code has.
func unknownDecisions(text string) []string {
	var out []string
	for _, w := range decisionLike.FindAllString(text, -1) {
		if !slices.Contains(vocabulary("decision"), w) {
			out = append(out, w)
		}
	}
	return out
}

// selectedValues returns the values of label that sel can select.
func selectedValues(sel promSelector, metric, label string) []string {
	vs := knownValues(metric, label)
	for _, m := range sel.Matchers {
		if m.Key != label {
			continue
		}
		re := regexp.MustCompile("^(?:" + m.Value + ")$")
		vs = slices.DeleteFunc(slices.Clone(vs), func(v string) bool {
			switch m.Op {
			case "=":
				return v != m.Value
			case "!=":
				return v == m.Value
			case "=~":
				return !re.MatchString(v)
			}
			return re.MatchString(v)
		})
	}
	return vs
}

// A panel's description that names decisions, causes or levels names
// exactly those its queries can show, as the code emits them: a decision
// added to the code and left out of the text, or a text that keeps one
// the code no longer has, fails here.
func TestDashboardDescriptionsNameWhatTheQueriesShow(t *testing.T) {
	exported := describedLabels(t)
	walkPanels(loadDashboard(t).Panels, "", func(p grafanaPanel, path string) {
		if bad := unknownDecisions(p.Description); len(bad) > 0 {
			t.Errorf("%s: the description names %v, which are no decisions", path, bad)
		}
		for _, label := range checkedLabels {
			shown := map[string]bool{}
			for _, tg := range p.Targets {
				q, err := parsePromQL(tg.Expr, metricsPrefix)
				if err != nil {
					continue // reported by TestDashboardQueriesUseExportedMetrics
				}
				for _, sel := range q.Selectors {
					name, ok := resolveMetric(sel.Metric, exported)
					if !ok || !slices.Contains(exported[name], label) {
						continue
					}
					for _, v := range selectedValues(sel, name, label) {
						shown[v] = true
					}
				}
			}
			named := namedIn(p.Description, vocabulary(label))
			if len(shown) == 0 || len(named) == 0 {
				continue
			}
			for v := range shown {
				if !slices.Contains(named, v) {
					t.Errorf("%s: the description names %ss but not %q, which the panel shows", path, label, v)
				}
			}
			for _, v := range named {
				if !shown[v] {
					t.Errorf("%s: the description names %s %q, which the panel does not show", path, label, v)
				}
			}
		}
	})
}

// What a description says of the drawing is drawn: a series on the right
// axis, a dashed or a dotted line, each by a field override; and an
// override that draws one is described.
func TestDashboardDescriptionsMatchTheDrawing(t *testing.T) {
	walkPanels(loadDashboard(t).Panels, "", func(p grafanaPanel, path string) {
		if p.Type != "timeseries" {
			return
		}
		drawn := map[string]bool{}
		for _, o := range p.FieldConfig.Overrides {
			for _, prop := range o.Properties {
				switch prop.ID {
				case "custom.axisPlacement":
					drawn["right axis"] = drawn["right axis"] || string(prop.Value) == `"right"`
				case "custom.lineStyle":
					var ls struct{ Fill string }
					_ = json.Unmarshal(prop.Value, &ls)
					drawn["dashed"] = drawn["dashed"] || ls.Fill == "dash"
					drawn["dotted"] = drawn["dotted"] || ls.Fill == "dot"
				}
			}
		}
		for _, claim := range []string{"right axis", "dashed", "dotted"} {
			said := strings.Contains(p.Description, claim)
			switch {
			case said && !drawn[claim]:
				t.Errorf("%s: the description promises %s, which no override draws", path, claim)
			case !said && drawn[claim]:
				t.Errorf("%s: an override draws %s, which the description does not say", path, claim)
			}
		}
	})
}

// firstScreen is how many grid rows a dashboard shows before scrolling
// (30 px each on a 1080p screen, less the header).
const firstScreen = 24

// The concurrency limit is the core mechanism: the limit, what is in
// flight and what waits are on the first screen, outside any row.
func TestDashboardFirstScreenShowsTheLimit(t *testing.T) {
	d := loadDashboard(t)
	for _, metric := range []string{"concurrency_limit", "in_flight", "queued"} {
		found := false
		for _, p := range d.Panels { // top level: not inside a collapsed row
			if p.Type == "row" || p.GridPos.Y+p.GridPos.H > firstScreen {
				continue
			}
			for _, tg := range p.Targets {
				if q, err := parsePromQL(tg.Expr, metricsPrefix); err == nil &&
					slices.ContainsFunc(q.Selectors, func(s promSelector) bool { return s.Metric == metricsPrefix+metric }) {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("%s%s is not on the first screen (a top-level panel ending by row %d)", metricsPrefix, metric, firstScreen)
		}
	}
}

// staleWords are words for what the module does not do, each with what it
// does instead: a text that uses one describes a mechanism that is gone.
var staleWords = map[string]string{
	"token bucket": "the medium lane paces medium into free slots at the rate its share of the limit turns over; beyond it medium waits for a slot",
	"token-bucket": "as token bucket",
	"utilisation":  "the GPU level reads memory in use / total or the model server's saturation gauge, never utilisation",
	"utilization":  "as utilisation",
}

func TestDashboardUsesNoStaleWords(t *testing.T) {
	walkPanels(loadDashboard(t).Panels, "", func(p grafanaPanel, path string) {
		for w, why := range staleWords {
			if strings.Contains(strings.ToLower(p.Title+" "+p.Description), w) {
				t.Errorf("%s says %q: %s", path, w, why)
			}
		}
	})
}
