//go:build !linux

package embedpg

import (
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// setParentDeathSignal is a no-op: only Linux can kill postgres when we die; a leftover is detected on next Start.
func setParentDeathSignal(*syscall.SysProcAttr) {}

// isPostgresProcess reports whether pid runs a postgres binary; true when unsure, to err on the safe side.
func isPostgresProcess(pid int) bool {
	out, err := exec.Command("ps", "-o", "comm=", "-p", strconv.Itoa(pid)).Output()
	if err != nil {
		return true
	}
	return strings.HasPrefix(filepath.Base(strings.TrimSpace(string(out))), "postgres")
}
