// Package sensors reads the hardware and the servers: GPU memory through
// NVML (nvml.go, behind the cgo build constraint) or the nvidia-smi binary
// (nvidiasmi.go), and a model server's or exporter's gauge from its
// Prometheus text page (prometheus.go). Each is a Source, which turns what
// it reads into Devices.
//
// A Sensor samples one Source on its own timer, off any request path: it
// bounds every read by a timeout, abandons a read that ignores its
// deadline (counting it hung and starting no other while it lasts),
// selects and aggregates the devices, and publishes a Reading, which goes
// stale when no good sample follows. A source that fails, hangs or prints
// garbage gives an unavailable Reading with the reason.
//
// Nothing here judges a reading: the GPU level (levels/gpu) holds the
// threshold, the learned memory floor and the hysteresis.
package sensors
