package cluster

import "syscall"

// childAttr makes a child process die with its parent (the controller manager never outlives a
// test binary or the dev program, even when they are killed).
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
