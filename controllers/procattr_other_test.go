//go:build !linux

package controllers_test

import "syscall"

func childProcAttr() *syscall.SysProcAttr { return nil }
