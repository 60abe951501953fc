//go:build !linux

package childproc

import "syscall"

// Attr is nil where the kernel has no parent-death signal: a harness
// killed without running its cleanups leaves its children behind.
func Attr() *syscall.SysProcAttr { return nil }
