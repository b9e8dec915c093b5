//go:build linux

package crash

import "syscall"

// childProcAttr makes the kernel SIGKILL the broker if the test process dies first (a test
// timeout, a panic), so no broker outlives its test.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
