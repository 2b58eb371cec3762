//go:build !cgo

package sensors

import (
	"context"
	"testing"
	"time"
)

func TestOpenNVMLWithoutCgo(t *testing.T) {
	src, err := OpenNVML()
	if src != nil || err == nil || err.Error() != "NVML needs a cgo build" {
		t.Fatalf("%v %v", src, err)
	}
	r := NewSensor(Unavailable("nvml", err), cfgFor(time.Second)).SampleOnce(context.Background(), t0)
	if r.Available || r.Reason != "nvml: NVML needs a cgo build" {
		t.Fatalf("%+v", r)
	}
}
