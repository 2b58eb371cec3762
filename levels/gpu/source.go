package gpu

import (
	"context"
	"fmt"
	"os/exec"
)

// Source reads every device it can see. Read must honour ctx (deadline) where it can.
type Source interface {
	Name() string // "nvidia-smi", "nvml", "prometheus"
	Read(ctx context.Context) ([]Device, error)
	Close() error
}

// Open builds the Source that cfg names (defaulting and validating cfg).
//
// "auto" is NVML when the library loads (cgo build), else nvidia-smi when
// found, else (nil, warning, nil): off, with the warning saying why.
// "off" is (nil, "", nil). An explicitly named nvml or nvidia-smi that cannot
// work here gives a source whose every Read fails with the reason, plus a
// warning, so a host without a driver does not stop Caddy; with on_error
// shed it is an error instead: the user asked to fail closed, so fail loudly.
func Open(cfg Config) (src Source, warning string, err error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, "", err
	}
	switch cfg.Source {
	case "prometheus":
		return NewPrometheus(cfg), "", nil
	case "nvml":
		s, err := openNVML()
		if err != nil {
			return unavailable("nvml", err, cfg)
		}
		return s, "", nil
	case "nvidia-smi":
		path, err := exec.LookPath(cfg.Path)
		if err != nil {
			return unavailable("nvidia-smi", err, cfg)
		}
		return NewNvidiaSMI(path), "", nil
	case "auto":
		s, nerr := openNVML()
		if nerr == nil {
			return s, "", nil
		}
		path, serr := exec.LookPath(cfg.Path)
		if serr == nil {
			return NewNvidiaSMI(path), "", nil
		}
		return nil, fmt.Sprintf("gpu sensor off: NVML: %v; nvidia-smi: %v", nerr, serr), nil
	}
	return nil, "", nil // off
}

func unavailable(name string, err error, cfg Config) (Source, string, error) {
	if cfg.OnError == "shed" {
		return nil, "", fmt.Errorf("gpu source %s: %w (on_error shed: refusing to start blind)", name, err)
	}
	return &unavailableSource{name: name, err: err},
		fmt.Sprintf("gpu source %s unavailable: %v; readings will report it (on_error allow)", name, err), nil
}

// unavailableSource stands in for a source that cannot work on this host.
type unavailableSource struct {
	name string
	err  error
}

func (u *unavailableSource) Name() string { return u.name }
func (u *unavailableSource) Close() error { return nil }
func (u *unavailableSource) Read(context.Context) ([]Device, error) {
	return nil, u.err
}
