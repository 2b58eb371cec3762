package sensors

import (
	"context"
	"time"
)

// Source reads every device it can see. Read must honour ctx (deadline)
// where it can; a Sensor abandons a read that does not.
type Source interface {
	Name() string // "nvidia-smi", "nvml", "prometheus"
	Read(ctx context.Context) ([]Device, error)
	Close() error
}

// MiB is the unit nvidia-smi and DCGM report memory in.
const MiB = 1 << 20

// Device is one GPU (or one model-server gauge) as a source saw it.
type Device struct {
	ID    string  // what `devices` selects on: the index as a string ("0"), also matched against UUID
	Index int     // -1 when unknown
	UUID  string  // "" when unknown
	Used  float64 // bytes (nvml, nvidia-smi in MiB*1MiB, DCGM MiB*1MiB), or the gauge value for ratio metrics
	Total float64 // bytes, or 1 for a ratio gauge

	// Err says why this one device could not be read ("memory.used is [N/A]").
	// A broken device fails a sample only when it is selected, so one lost
	// GPU does not blind a gateway that watches another.
	Err string
	// Origin is the endpoint the device came from (prometheus); "" otherwise.
	Origin string
	// Timestamp is the sample time the source itself reported (a Prometheus
	// sample timestamp); zero when the source gave none.
	Timestamp time.Time
}

// Ratio is Used/Total, 0 if Total<=0.
func (d Device) Ratio() float64 {
	if d.Total <= 0 {
		return 0
	}
	return d.Used / d.Total
}

// Unavailable is a source whose every Read fails with err: it stands in
// for a source that cannot work on this host, so that its readings say why.
func Unavailable(name string, err error) Source { return &unavailableSource{name: name, err: err} }

type unavailableSource struct {
	name string
	err  error
}

func (u *unavailableSource) Name() string { return u.name }
func (u *unavailableSource) Close() error { return nil }
func (u *unavailableSource) Read(context.Context) ([]Device, error) {
	return nil, u.err
}
