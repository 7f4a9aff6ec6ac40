package embedpg

import (
	"os"
	"strconv"
	"strings"
	"syscall"
)

// setParentDeathSignal makes the kernel fast-shutdown postgres if our process dies without calling Stop.
// (Go applies it after the uid switch, so the Credential change does not clear it.)
func setParentDeathSignal(attr *syscall.SysProcAttr) { attr.Pdeathsig = syscall.SIGINT }

// isPostgresProcess reports whether pid runs a postgres binary; true when unsure, to err on the safe side.
func isPostgresProcess(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return true
	}
	return strings.HasPrefix(strings.TrimSpace(string(b)), "postgres")
}
