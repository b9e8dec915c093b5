//go:build !linux

package crash

import "syscall"

func childProcAttr() *syscall.SysProcAttr { return nil }
