package main

import (
	"fmt"
	"image/color"
	"math"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/ai-guardian/adaptivethrottle/internal/loadgen"
)

var (
	colSent    = color.RGBA{140, 140, 140, 255}
	colServed  = color.RGBA{31, 119, 180, 255}
	colGood    = color.RGBA{44, 160, 44, 255}
	colShed    = color.RGBA{255, 127, 14, 255}
	colOOM     = color.RGBA{214, 39, 40, 255}
	colTimeout = color.RGBA{148, 103, 189, 255}
	colMarker  = color.RGBA{90, 90, 90, 255}
)

// gpuThreshold is adaptive_throttle's default GPU threshold, drawn on the
// KV-cache gauge it reads.
const gpuThreshold = 0.75

// writePlot draws one PNG for the scenario: a column per set-up; rows for
// requests/s (tokens/s when answer lengths are mixed), p99 TTFB, GPU
// memory, and the limit: each limiter's limit and what it had in flight,
// with the upstream's queue; under the module's, its tripped levels.
func writePlot(path string, sc scenario, outs []outcome) error {
	const rows = 5
	cols := len(outs)
	if cols == 0 {
		return fmt.Errorf("plot %s: no outcomes", path)
	}
	grid := make([][]*plot.Plot, rows)
	for r := range grid {
		grid[r] = make([]*plot.Plot, cols)
	}
	// Shared ranges so the columns compare at a glance; headroom above the
	// rates keeps the legend off the lines.
	xmax, rateMax, concMax := 0.0, 1.0, float64(sc.Slots)
	for _, o := range outs {
		xmax = math.Max(xmax, float64(len(o.Res.Series)))
		for _, s := range o.Res.Series {
			if sc.tokens() {
				rateMax = math.Max(rateMax, float64(max(s.AskedTokens, s.ServedTokens, s.ShedTokens)))
			} else {
				rateMax = math.Max(rateMax, float64(max(s.Sent, s.Served, s.Shed, s.OOM)))
			}
		}
		for _, p := range o.Peer {
			concMax = math.Max(concMax, float64(max(p.Limit, p.Peak)))
		}
		for _, s := range o.Res.Series {
			if s.Limit != nil {
				concMax = math.Max(concMax, float64(max(*s.Limit, *s.InFlight)))
			}
		}
	}
	concMax = math.Min(concMax, 4*float64(sc.Slots)+float64(sc.InflightN)) // a queue of hundreds would flatten the rest
	for c, o := range outs {
		var err error
		if grid[0][c], err = ratePlot(sc, o, xmax, rateMax*1.5); err != nil {
			return err
		}
		if grid[1][c], err = ttfbPlot(sc, o, xmax); err != nil {
			return err
		}
		if len(sc.Pool) > 0 {
			if grid[2][c], err = poolKVPlot(sc, o, xmax); err != nil {
				return err
			}
			if grid[3][c], err = poolLoadPlot(sc, o, xmax); err != nil {
				return err
			}
		} else {
			if grid[2][c], err = memPlot(sc, o, xmax); err != nil {
				return err
			}
			if grid[3][c], err = concurrencyPlot(sc, o, xmax, concMax*1.3); err != nil {
				return err
			}
		}
		if moduleSetup(o.Setup) {
			if grid[4][c], err = levelsPlot(sc, o, xmax); err != nil {
				return err
			}
		}
	}
	img := vgimg.NewWith(vgimg.UseWH(20*vg.Inch, 16*vg.Inch), vgimg.UseDPI(96))
	dc := draw.New(img)
	dc.FillText(draw.TextStyle{Color: color.Black, Font: font.From(plot.DefaultFont, 16), XAlign: draw.XCenter,
		YAlign: draw.YTop, Handler: plot.DefaultTextHandler}, vg.Point{X: dc.Center().X, Y: dc.Max.Y - 0.1*vg.Inch}, sc.Title)
	body := draw.Crop(dc, 0, 0, 0, -0.4*vg.Inch)
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 4,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 3}
	canvases := plot.Align(grid, tiles, body)
	for r := range grid {
		for c := range grid[r] {
			if grid[r][c] != nil {
				grid[r][c].Draw(canvases[r][c])
			}
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func newPlot(title, ylabel string, xmax float64) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(11)
	p.Y.Label.Text = ylabel
	p.X.Label.Text = "seconds"
	p.X.Min, p.X.Max = 0, xmax
	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.TextStyle.Font.Size = vg.Points(8)
	p.Legend.ThumbnailWidth = vg.Points(12)
	p.Add(plotter.NewGrid())
	return p
}

// addLine adds a solid line (dashed when dash) with a legend entry.
func addLine(p *plot.Plot, name string, xys plotter.XYs, c color.Color, dash bool) error {
	if len(xys) == 0 {
		return nil
	}
	l, err := plotter.NewLine(xys)
	if err != nil {
		return err
	}
	l.Color = c
	l.Width = vg.Points(1.3)
	if dash {
		l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	}
	p.Add(l)
	if name != "" {
		p.Legend.Add(name, l)
	}
	return nil
}

// markers draws the window's edges (onset and load drop, or the capacity
// drop) as thin vertical lines from ymin to ymax.
func markers(p *plot.Plot, sc scenario, ymin, ymax float64) error {
	for _, t := range []float64{sc.WindowFrom.Seconds(), sc.WindowTo.Seconds()} {
		if t <= 0 || t >= sc.Profile.Duration.Seconds() {
			continue
		}
		l, err := plotter.NewLine(plotter.XYs{{X: t, Y: ymin}, {X: t, Y: ymax}})
		if err != nil {
			return err
		}
		l.Color, l.Width, l.Dashes = colMarker, vg.Points(0.7), []vg.Length{vg.Points(2), vg.Points(2)}
		p.Add(l)
	}
	return nil
}

func series(o outcome, f func(loadgen.Second) (float64, bool)) plotter.XYs {
	var xys plotter.XYs
	for _, s := range o.Res.Series {
		if y, ok := f(s); ok {
			xys = append(xys, plotter.XY{X: float64(s.T) + 0.5, Y: y})
		}
	}
	return xys
}

func count(f func(loadgen.Second) int) func(loadgen.Second) (float64, bool) {
	return func(s loadgen.Second) (float64, bool) { return float64(f(s)), true }
}

func ratePlot(sc scenario, o outcome, xmax, ymax float64) (*plot.Plot, error) {
	if sc.tokens() {
		return tokenPlot(sc, o, xmax, ymax)
	}
	p := newPlot(setupTitle(o.Setup, sc), "requests/s", xmax)
	p.Y.Min, p.Y.Max = 0, ymax
	for _, l := range []struct {
		name string
		f    func(loadgen.Second) int
		c    color.Color
	}{
		{"sent", func(s loadgen.Second) int { return s.Sent }, colSent},
		{"served (200, done)", func(s loadgen.Second) int { return s.Served }, colServed},
		{"served within SLO", func(s loadgen.Second) int { return s.Good }, colGood},
		{"shed (429/503)", func(s loadgen.Second) int { return s.Shed }, colShed},
		{"upstream OOM", func(s loadgen.Second) int { return s.OOM }, colOOM},
		{"timeout", func(s loadgen.Second) int { return s.Timeouts }, colTimeout},
	} {
		if err := addLine(p, l.name, series(o, count(l.f)), l.c, false); err != nil {
			return nil, err
		}
	}
	if err := addLine(p, "capacity", capacitySteps(sc, xmax), color.Black, true); err != nil {
		return nil, err
	}
	return p, markers(p, sc, 0, ymax)
}

func ttfbPlot(sc scenario, o outcome, xmax float64) (*plot.Plot, error) {
	p := newPlot("", "p99 TTFB of served (s, log)", xmax)
	p.Y.Scale, p.Y.Tick.Marker = plot.LogScale{}, plot.LogTicks{Prec: -1}
	lo, hi := 0.01, math.Max(60, sc.Timeout.Seconds()*1.5)
	p.Y.Min, p.Y.Max = lo, hi
	xys := series(o, func(s loadgen.Second) (float64, bool) {
		return math.Min(math.Max(s.TTFBP99/1000, lo), hi), s.TTFBP99 > 0
	})
	if err := addLine(p, "p99 TTFB (by send second)", xys, colServed, false); err != nil {
		return nil, err
	}
	// The objective's line: on TTFB, or on the whole answer (which bounds
	// its first byte too).
	slo, name := sc.SLO.TTFB, fmt.Sprintf("SLO %v", sc.SLO.TTFB)
	if slo <= 0 {
		slo, name = sc.SLO.Total, fmt.Sprintf("SLO %v (whole answer)", sc.SLO.Total)
	}
	if slo > 0 {
		y := slo.Seconds()
		if err := addLine(p, name, plotter.XYs{{X: 0, Y: y}, {X: xmax, Y: y}}, colOOM, true); err != nil {
			return nil, err
		}
	}
	return p, markers(p, sc, lo, hi)
}

func memPlot(sc scenario, o outcome, xmax float64) (*plot.Plot, error) {
	p := newPlot("", "GPU memory (fraction)", xmax)
	p.Y.Min, p.Y.Max = 0, 1.05
	mem := series(o, func(s loadgen.Second) (float64, bool) {
		if s.GPUMemory == nil {
			return 0, false
		}
		return *s.GPUMemory, true
	})
	kv := series(o, func(s loadgen.Second) (float64, bool) {
		if s.KVCache == nil {
			return 0, false
		}
		return *s.KVCache, true
	})
	if err := addLine(p, "memory used / total", mem, colServed, false); err != nil {
		return nil, err
	}
	if err := addLine(p, "vllm:kv_cache_usage_perc", kv, colShed, false); err != nil {
		return nil, err
	}
	if err := addLine(p, "module threshold 75%", plotter.XYs{{X: 0, Y: gpuThreshold}, {X: xmax, Y: gpuThreshold}}, colOOM, true); err != nil {
		return nil, err
	}
	return p, markers(p, sc, 0, 1.05)
}

// levelsPlot shows, per second, which of the module's levels were tripped
// (a dot on that level's row) and whether it was shedding.
func levelsPlot(sc scenario, o outcome, xmax float64) (*plot.Plot, error) {
	p := newPlot("adaptive_throttle state (1 s polls)", "", xmax)
	names := []string{"shedding", "qps", "gpu", "latency", "circuit"}
	p.Y.Min, p.Y.Max = -0.5, float64(len(names))-0.5
	ticks := make([]plot.Tick, len(names))
	for i, n := range names {
		ticks[i] = plot.Tick{Value: float64(i), Label: n}
	}
	p.Y.Tick.Marker = plot.ConstantTicks(ticks)
	p.Legend = plot.NewLegend()
	cols := []color.Color{colShed, colServed, colGood, colTimeout, colOOM}
	for i, n := range names {
		var xys plotter.XYs
		for _, s := range o.Res.Series {
			on := false
			if i == 0 {
				on = s.Shedding != nil && *s.Shedding
			}
			for _, t := range s.Tripped {
				if t == n {
					on = true
				}
			}
			if on {
				xys = append(xys, plotter.XY{X: float64(s.T) + 0.5, Y: float64(i)})
			}
		}
		if len(xys) == 0 {
			continue
		}
		sc, err := plotter.NewScatter(xys)
		if err != nil {
			return nil, err
		}
		sc.GlyphStyle.Color = cols[i]
		sc.GlyphStyle.Shape = draw.BoxGlyph{}
		sc.GlyphStyle.Radius = vg.Points(2.5)
		p.Add(sc)
	}
	return p, markers(p, sc, -0.5, float64(len(names))-0.5)
}

// tokenPlot is ratePlot in tokens, for answers of mixed lengths: asked
// (max_tokens) and refused by the second sent, served and served within
// the SLO (completion tokens) by the second done.
func tokenPlot(sc scenario, o outcome, xmax, ymax float64) (*plot.Plot, error) {
	p := newPlot(setupTitle(o.Setup, sc), "tokens/s", xmax)
	p.Y.Min, p.Y.Max = 0, ymax
	for _, l := range []struct {
		name string
		f    func(loadgen.Second) int
		c    color.Color
	}{
		{"asked (max_tokens sent)", func(s loadgen.Second) int { return s.AskedTokens }, colSent},
		{"served tokens", func(s loadgen.Second) int { return s.ServedTokens }, colServed},
		{"served within SLO", func(s loadgen.Second) int { return s.GoodTokens }, colGood},
		{"refused (max_tokens)", func(s loadgen.Second) int { return s.ShedTokens }, colShed},
	} {
		if err := addLine(p, l.name, series(o, count(l.f)), l.c, false); err != nil {
			return nil, err
		}
	}
	if err := addLine(p, "capacity", plotter.XYs{{X: 0, Y: sc.TokenCapacity}, {X: xmax, Y: sc.TokenCapacity}}, color.Black, true); err != nil {
		return nil, err
	}
	return p, markers(p, sc, 0, ymax)
}

// concurrencyPlot shows a limiter's limit and what it had in flight each
// second (a peer's most in flight; the module's at its poll, with high's
// reserve), and the upstream's queue (requests waiting for a batch slot).
func concurrencyPlot(sc scenario, o outcome, xmax, ymax float64) (*plot.Plot, error) {
	title := "upstream queue (1 s polls)"
	if len(o.Peer) > 0 || isAdaptive(o.Setup) {
		title = "limit, in flight and upstream queue (1 s)"
	}
	p := newPlot(title, "requests", xmax)
	p.Y.Min, p.Y.Max = 0, ymax
	var limit, peak, reserve plotter.XYs
	inflight := "most in flight"
	for _, s := range o.Peer {
		limit = append(limit, plotter.XY{X: s.T, Y: math.Min(float64(s.Limit), ymax)})
		peak = append(peak, plotter.XY{X: s.T, Y: math.Min(float64(s.Peak), ymax)})
	}
	for _, s := range o.Res.Series {
		if s.Limit == nil {
			continue
		}
		inflight = "in flight"
		x := float64(s.T) + 0.5
		limit = append(limit, plotter.XY{X: x, Y: math.Min(float64(*s.Limit), ymax)})
		peak = append(peak, plotter.XY{X: x, Y: math.Min(float64(*s.InFlight), ymax)})
		reserve = append(reserve, plotter.XY{X: x, Y: math.Min(float64(*s.Reserve), ymax)})
	}
	if err := addLine(p, "limit", limit, colShed, false); err != nil {
		return nil, err
	}
	if err := addLine(p, inflight, peak, colServed, false); err != nil {
		return nil, err
	}
	if err := addLine(p, "high's reserve", reserve, colGood, false); err != nil {
		return nil, err
	}
	waiting := series(o, func(s loadgen.Second) (float64, bool) {
		if s.Waiting == nil {
			return 0, false
		}
		return math.Min(float64(*s.Waiting), ymax), true
	})
	if err := addLine(p, "upstream queue (capped)", waiting, colTimeout, false); err != nil {
		return nil, err
	}
	if err := addLine(p, fmt.Sprintf("batch slots %d", sc.Slots), plotter.XYs{{X: 0, Y: float64(sc.Slots)}, {X: xmax, Y: float64(sc.Slots)}}, color.Black, true); err != nil {
		return nil, err
	}
	return p, markers(p, sc, 0, ymax)
}

// capacitySteps is the capacity over time as a step line to xmax.
func capacitySteps(sc scenario, xmax float64) plotter.XYs {
	c := sc.capacityAt(0)
	xys := plotter.XYs{{X: 0, Y: c}}
	for t := scanStep; t.Seconds() < xmax && t < sc.Profile.Duration; t += scanStep {
		if v := sc.capacityAt(t); v != c {
			xys = append(xys, plotter.XY{X: t.Seconds(), Y: c}, plotter.XY{X: t.Seconds(), Y: v})
			c = v
		}
	}
	return append(xys, plotter.XY{X: xmax, Y: c})
}

var upstreamColors = []color.Color{colServed, colShed, colGood, colTimeout, colOOM, colSent}

// poolLine is one value of every upstream over a pool run, a line each.
func poolLines(p *plot.Plot, o outcome, label string, f func(upstreamLook) (float64, bool)) error {
	if o.Pool == nil || len(o.Pool.Samples) == 0 {
		return nil
	}
	n := len(o.Pool.Samples[0].Upstreams)
	for i := range n {
		var xys plotter.XYs
		for _, s := range o.Pool.Samples {
			if i < len(s.Upstreams) {
				if y, ok := f(s.Upstreams[i]); ok {
					xys = append(xys, plotter.XY{X: s.T, Y: y})
				}
			}
		}
		if err := addLine(p, fmt.Sprintf("#%d %s", i+1, label), xys, upstreamColors[i%len(upstreamColors)], false); err != nil {
			return err
		}
	}
	return nil
}

// poolKVPlot is each upstream's vllm:kv_cache_usage_perc.
func poolKVPlot(sc scenario, o outcome, xmax float64) (*plot.Plot, error) {
	p := newPlot("KV-cache use per upstream (1 s)", "vllm:kv_cache_usage_perc", xmax)
	p.Y.Min, p.Y.Max = 0, 1.05
	if err := poolLines(p, o, "KV", func(u upstreamLook) (float64, bool) { return u.KV, u.Up }); err != nil {
		return nil, err
	}
	return p, markers(p, sc, 0, 1.05)
}

// poolLoadPlot is each upstream's requests running and waiting, and its
// slots (dashed), once a second; a dead upstream drops to 0.
func poolLoadPlot(sc scenario, o outcome, xmax float64) (*plot.Plot, error) {
	p := newPlot("per upstream: running + waiting, and slots (dashed)", "requests", xmax)
	top := 0.0
	for _, u := range sc.Pool {
		top = math.Max(top, float64(u.Slots))
	}
	ymax := 4 * top
	p.Y.Min, p.Y.Max = 0, ymax
	if err := poolLines(p, o, "running + waiting", func(u upstreamLook) (float64, bool) {
		return math.Min(float64(u.Running+u.Waiting), ymax), true
	}); err != nil {
		return nil, err
	}
	if o.Pool != nil {
		for i := range sc.Pool {
			var xys plotter.XYs
			for _, s := range o.Pool.Samples {
				if i < len(s.Upstreams) {
					xys = append(xys, plotter.XY{X: s.T, Y: float64(s.Upstreams[i].Slots)})
				}
			}
			if err := addLine(p, "", xys, upstreamColors[i%len(upstreamColors)], true); err != nil {
				return nil, err
			}
		}
	}
	// The module's learned limit per upstream (the policy's set-up).
	if err := poolLimitLines(p, o, ymax); err != nil {
		return nil, err
	}
	return p, markers(p, sc, 0, ymax)
}

// poolLimitLines draws, dotted, each upstream's limit as the module
// learned it, where status listed the pool's upstreams.
func poolLimitLines(p *plot.Plot, o outcome, ymax float64) error {
	if o.Pool == nil || len(o.Pool.Samples) == 0 {
		return nil
	}
	for i := range len(o.Pool.Samples[0].Upstreams) {
		var xys plotter.XYs
		for _, s := range o.Pool.Samples {
			if i < len(s.Upstreams) && s.Upstreams[i].Limit != nil {
				xys = append(xys, plotter.XY{X: s.T, Y: math.Min(float64(*s.Upstreams[i].Limit), ymax)})
			}
		}
		if len(xys) == 0 {
			continue
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return err
		}
		l.Color, l.Width, l.Dashes = upstreamColors[i%len(upstreamColors)], vg.Points(1), []vg.Length{vg.Points(1), vg.Points(2)}
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("#%d module's limit (dotted)", i+1), l)
	}
	return nil
}
