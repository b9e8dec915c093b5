//go:build unix && !linux

package podrunner

import "syscall"

// procAttr: without a parent-death signal outside Linux, Stop must run to end the processes.
func procAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
