//go:build linux

package controllers_test

import "syscall"

// childProcAttr makes the kernel SIGKILL a broker if the test process dies first (a timeout, a
// panic), so no broker outlives its test.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
