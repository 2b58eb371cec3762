//go:build !cgo

package gpu

import (
	"context"
	"testing"
	"time"
)

func TestOpenNVMLWithoutCgo(t *testing.T) {
	src, warn, err := Open(Config{Source: "nvml"})
	if err != nil || src == nil || src.Name() != "nvml" {
		t.Fatalf("%v %q %v", src, warn, err)
	}
	mustContain(t, warn, "NVML needs a cgo build")
	r := NewSensor(src, cfgFor(time.Second)).SampleOnce(context.Background(), t0)
	if r.Available || r.Reason != "nvml: NVML needs a cgo build" {
		t.Fatalf("%+v", r)
	}
	if _, _, err := Open(Config{Source: "nvml", OnError: "shed"}); err == nil {
		t.Fatal("nvml + on_error shed in a cgo-less build must fail at start")
	}
}
