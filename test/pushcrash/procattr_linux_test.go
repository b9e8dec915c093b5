//go:build linux

package pushcrash

import "syscall"

// childProcAttr makes the kernel SIGKILL a child if the test process dies first, so no broker or
// sink outlives its test.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
