//go:build !cgo

package sensors

import "errors"

// OpenNVML fails: go-nvml is cgo, so a CGO_ENABLED=0 build has no NVML.
func OpenNVML() (Source, error) { return nil, errors.New("NVML needs a cgo build") }
