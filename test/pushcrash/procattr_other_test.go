//go:build !linux

package pushcrash

import "syscall"

func childProcAttr() *syscall.SysProcAttr { return nil }
