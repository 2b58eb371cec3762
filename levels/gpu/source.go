package gpu

import (
	"fmt"
	"os/exec"

	"github.com/ai-guardian/adaptivethrottle/sensors"
)

// Open builds the sensors.Source that cfg names (defaulting and validating
// cfg).
//
// "auto" is NVML when the library loads (cgo build), else nvidia-smi when
// found, else (nil, warning, nil): off, with the warning saying why.
// "off" is (nil, "", nil). An explicitly named nvml or nvidia-smi that cannot
// work here gives a source whose every Read fails with the reason, plus a
// warning, so a host without a driver does not stop Caddy; with on_error
// shed it is an error instead: the user asked to fail closed, so fail loudly.
func Open(cfg Config) (src sensors.Source, warning string, err error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, "", err
	}
	switch cfg.Source {
	case "prometheus":
		return sensors.NewPrometheus(cfg.prometheus()), "", nil
	case "nvml":
		s, err := sensors.OpenNVML()
		if err != nil {
			return unavailable("nvml", err, cfg)
		}
		return s, "", nil
	case "nvidia-smi":
		path, err := exec.LookPath(cfg.Path)
		if err != nil {
			return unavailable("nvidia-smi", err, cfg)
		}
		return sensors.NewNvidiaSMI(path), "", nil
	case "auto":
		s, nerr := sensors.OpenNVML()
		if nerr == nil {
			return s, "", nil
		}
		path, serr := exec.LookPath(cfg.Path)
		if serr == nil {
			return sensors.NewNvidiaSMI(path), "", nil
		}
		return nil, fmt.Sprintf("gpu sensor off: NVML: %v; nvidia-smi: %v", nerr, serr), nil
	}
	return nil, "", nil // off
}

func unavailable(name string, err error, cfg Config) (sensors.Source, string, error) {
	if cfg.OnError == "shed" {
		return nil, "", fmt.Errorf("gpu source %s: %w (on_error shed: refusing to start blind)", name, err)
	}
	return sensors.Unavailable(name, err),
		fmt.Sprintf("gpu source %s unavailable: %v; readings will report it (on_error allow)", name, err), nil
}

// sensor is how the level's sensor samples the source.
func (c Config) sensor() sensors.Config {
	return sensors.Config{Interval: c.Interval.D(), Timeout: c.Timeout.D(), StaleAfter: c.StaleAfter.D(),
		Devices: c.Devices, Aggregate: c.Aggregate}
}

// prometheus is the prometheus source's pages and gauge.
func (c Config) prometheus() sensors.PrometheusConfig {
	return sensors.PrometheusConfig{URLs: c.URLs, Timeout: c.Timeout.D(), Gauge: sensors.Gauge{
		Metric: c.Metric, PairKind: c.PairKind, PairMetric: c.PairMetric, MetricMax: c.MetricMax, Labels: c.Labels}}
}
