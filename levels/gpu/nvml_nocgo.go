//go:build !cgo

package gpu

import "errors"

// openNVML: go-nvml is cgo, so a CGO_ENABLED=0 build has no NVML.
func openNVML() (Source, error) { return nil, errors.New("NVML needs a cgo build") }
