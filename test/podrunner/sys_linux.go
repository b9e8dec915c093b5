package podrunner

import "syscall"

// procAttr puts a container process in its own process group (so it can be signalled as a whole,
// and a Ctrl-C on the terminal reaches the runner only) and kills it when the runner dies.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
