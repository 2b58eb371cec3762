//go:build unix

package sensors

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
)

// killGroup runs cmd in its own process group and kills the whole group on
// cancel, so a wrapper script's children die with it instead of lingering.
func killGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if errors.Is(err, syscall.ESRCH) {
			return os.ErrProcessDone
		}
		return err
	}
}
