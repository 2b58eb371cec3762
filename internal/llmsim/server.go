package llmsim

import (
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Server is the simulated inference server. It is an http.Handler; mount it
// on any listener (httptest, http.Server).
type Server struct {
	cfg   Config
	sched *scheduler
	start time.Time

	faultMu sync.Mutex
	fault   Fault

	ids       atomic.Uint64
	done      chan struct{} // closed by Close: ends waits, sleeps and hangs
	closeOnce sync.Once
	bg        sync.WaitGroup // the nvidia-smi file writer

	smiMu  sync.Mutex
	smiErr string // last error writing SMIFile, for /admin/state
}

// New starts a simulator with cfg (zero fields take the defaults). When
// cfg.SMIFile is set it begins rewriting that file at once.
func New(cfg Config) *Server {
	cfg = cfg.withDefaults()
	s := &Server{cfg: cfg, sched: newScheduler(cfg), start: time.Now(), done: make(chan struct{})}
	if cfg.SMIFile != "" {
		s.writeSMI()
		s.bg.Add(1)
		go s.smiLoop()
	}
	return s
}

// Config returns the effective configuration, defaults filled in.
func (s *Server) Config() Config { return s.cfg }

// Close ends every wait, hang and generation in progress, stops the
// nvidia-smi writer and removes its file, so that the stand-in nvidia-smi
// fails as it would once the driver is gone. Safe to call twice.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.done)
		s.bg.Wait()
		if s.cfg.SMIFile != "" {
			_ = os.Remove(s.cfg.SMIFile)
		}
	})
}

// SetSlots changes the batch size mid-run (e.g. half when a GPU drops out).
// Sequences above the new size finish; none start until the batch is under
// it. Negative n is treated as 0 (nothing runs, everything queues).
func (s *Server) SetSlots(n int) { s.sched.setSlots(max(0, n)) }

// SetFault makes the server misbehave; the zero Fault restores health.
func (s *Server) SetFault(f Fault) {
	s.faultMu.Lock()
	s.fault = f
	s.faultMu.Unlock()
}

func (s *Server) currentFault() Fault {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	return s.fault
}

// ServeHTTP routes. Faults apply to the inference endpoints and /health,
// never to /metrics or /admin/, so a test can always clear them.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if strings.HasPrefix(p, "/v1/") || p == "/health" {
		if !s.applyFault(w, r) {
			return
		}
	}
	switch p {
	case "/v1/chat/completions":
		s.onlyMethod(w, r, http.MethodPost, func() { s.handleGenerate(w, r, true) })
	case "/v1/completions":
		s.onlyMethod(w, r, http.MethodPost, func() { s.handleGenerate(w, r, false) })
	case "/v1/models":
		s.onlyMethod(w, r, http.MethodGet, func() { s.handleModels(w) })
	case "/health":
		s.onlyMethod(w, r, http.MethodGet, func() { w.WriteHeader(http.StatusOK) })
	case "/metrics":
		s.onlyMethod(w, r, http.MethodGet, func() { s.handleMetrics(w) })
	case "/admin/state":
		s.onlyMethod(w, r, http.MethodGet, func() { writeJSON(w, http.StatusOK, s.State()) })
	case "/admin/slots":
		s.onlyMethod(w, r, http.MethodPost, func() { s.handleAdminSlots(w, r) })
	case "/admin/fault":
		s.onlyMethod(w, r, http.MethodPost, func() { s.handleAdminFault(w, r) })
	case "/admin/nvidia-smi":
		s.onlyMethod(w, r, http.MethodGet, func() {
			w.Header().Set("Content-Type", "text/csv; charset=utf-8")
			_, _ = w.Write([]byte(s.smiLine()))
		})
	default:
		writeError(w, http.StatusNotFound, "no route for "+r.Method+" "+p)
	}
}

// onlyMethod runs h for method m (HEAD too, for GET) and answers 405
// otherwise.
func (s *Server) onlyMethod(w http.ResponseWriter, r *http.Request, m string, h func()) {
	if r.Method == m || (m == http.MethodGet && r.Method == http.MethodHead) {
		h()
		return
	}
	w.Header().Set("Allow", m)
	writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed; use "+m)
}

func (s *Server) handleModels(w http.ResponseWriter) {
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	writeJSON(w, http.StatusOK, struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{"list", []model{{s.cfg.ModelName, "model", s.start.Unix(), "llmsim"}}})
}
