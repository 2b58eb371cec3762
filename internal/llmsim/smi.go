package llmsim

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// smiInterval is how often SMIFile is rewritten; the stand-in nvidia-smi
// treats a file older than 5 s as a dead driver.
const smiInterval = 100 * time.Millisecond

// smiLine is what `nvidia-smi --query-gpu=index,uuid,memory.used,memory.total
// --format=csv,noheader,nounits` prints for this one simulated GPU.
func (s *Server) smiLine() string {
	used := s.sched.snapshot().MemUsed
	return fmt.Sprintf("0, %s, %d, %d\n", GPUUUID, used/MiB, s.cfg.TotalMemory/MiB)
}

func (s *Server) smiLoop() {
	defer s.bg.Done()
	t := time.NewTicker(smiInterval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			s.writeSMI()
		}
	}
}

// writeSMI replaces SMIFile atomically (temp file in the same directory,
// then rename) so a reader never sees half a line. Errors are kept for
// /admin/state rather than logged every 100 ms.
func (s *Server) writeSMI() {
	err := writeFileAtomic(s.cfg.SMIFile, []byte(s.smiLine()))
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	s.smiMu.Lock()
	s.smiErr = msg
	s.smiMu.Unlock()
}

func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Chmod(tmp, 0o644)
	}
	if werr == nil {
		werr = os.Rename(tmp, path)
	}
	if werr != nil {
		_ = os.Remove(tmp)
	}
	return werr
}
