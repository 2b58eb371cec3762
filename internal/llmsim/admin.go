package llmsim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// maxSlots bounds /admin/slots so a typo cannot ask for a million goroutines'
// worth of batch.
const maxSlots = 4096

// State is the /admin/state snapshot.
type State struct {
	Model         string    `json:"model"`
	Slots         int       `json:"slots"`
	Running       int       `json:"running"`
	Waiting       int       `json:"waiting"`
	MemoryUsed    int64     `json:"memory_used_bytes"`
	MemoryTotal   int64     `json:"memory_total_bytes"`
	MemoryUsedMiB int64     `json:"memory_used_mib"`
	KVCacheUsage  float64   `json:"kv_cache_usage"`
	OOMs          int64     `json:"ooms"`
	Rejected      int64     `json:"rejected"`
	Served        int64     `json:"served"`
	Cancelled     int64     `json:"cancelled"`
	CapacityRPS   float64   `json:"capacity_rps"` // at the configured (not current) slots
	Fault         faultJSON `json:"fault"`
	SMIError      string    `json:"smi_error,omitempty"`
	Time          time.Time `json:"time"`
}

// State returns a consistent snapshot of the scheduler and the fault.
func (s *Server) State() State {
	snap := s.sched.snapshot()
	s.smiMu.Lock()
	smiErr := s.smiErr
	s.smiMu.Unlock()
	return State{
		Model: s.cfg.ModelName, Slots: snap.Slots, Running: snap.Running, Waiting: snap.Waiting,
		MemoryUsed: snap.MemUsed, MemoryTotal: s.cfg.TotalMemory, MemoryUsedMiB: snap.MemUsed / MiB,
		KVCacheUsage: s.cfg.KVCacheUsage(snap.MemUsed),
		OOMs:         snap.OOMs, Rejected: snap.Rejected, Served: snap.Served, Cancelled: snap.Canceled,
		CapacityRPS: s.cfg.Capacity(), Fault: toFaultJSON(s.currentFault()), SMIError: smiErr,
		Time: time.Now(),
	}
}

// faultJSON is Fault on the wire: delay as a Go duration string.
type faultJSON struct {
	Status int    `json:"status,omitempty"`
	Delay  string `json:"delay,omitempty"`
	Hang   bool   `json:"hang,omitempty"`
	Reset  bool   `json:"reset,omitempty"`
}

func toFaultJSON(f Fault) faultJSON {
	j := faultJSON{Status: f.Status, Hang: f.Hang, Reset: f.Reset}
	if f.Delay > 0 {
		j.Delay = f.Delay.String()
	}
	return j
}

// parseFault checks a faultJSON; {} is the healthy zero Fault.
func parseFault(j faultJSON) (Fault, error) {
	f := Fault{Status: j.Status, Hang: j.Hang, Reset: j.Reset}
	if j.Status != 0 && (j.Status < 400 || j.Status > 599) {
		return f, fmt.Errorf("status %d: must be an HTTP error status, 400–599", j.Status)
	}
	if j.Delay != "" {
		d, err := time.ParseDuration(j.Delay)
		if err != nil {
			return f, fmt.Errorf("delay %q: %v", j.Delay, err)
		}
		if d < 0 {
			return f, fmt.Errorf("delay %q: must be ≥ 0", j.Delay)
		}
		f.Delay = d
	}
	return f, nil
}

// decodeStrict reads one JSON object, refusing unknown fields and trailing
// data so that a typo in a test's request fails loudly.
func decodeStrict(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("invalid JSON body: %v", err)
	}
	if dec.More() {
		return fmt.Errorf("invalid JSON body: trailing data after the object")
	}
	return nil
}

func (s *Server) handleAdminSlots(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Slots *int `json:"slots"`
	}
	if err := decodeStrict(w, r, &body); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if body.Slots == nil {
		writeError(w, http.StatusBadRequest, `missing "slots"`)
		return
	}
	if n := *body.Slots; n < 0 || n > maxSlots {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("slots %d: must be in [0, %d]", n, maxSlots))
		return
	}
	s.SetSlots(*body.Slots)
	writeJSON(w, http.StatusOK, s.State())
}

func (s *Server) handleAdminFault(w http.ResponseWriter, r *http.Request) {
	var j faultJSON
	if err := decodeStrict(w, r, &j); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	f, err := parseFault(j)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.SetFault(f)
	writeJSON(w, http.StatusOK, s.State())
}
