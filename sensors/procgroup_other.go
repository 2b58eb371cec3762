//go:build !unix

package sensors

import "os/exec"

// killGroup keeps exec's default: kill the process itself on cancel.
func killGroup(cmd *exec.Cmd) {}
