//go:build linux

package e2e

import "syscall"

// procAttr makes a node die with the test binary (a timeout panic runs no
// cleanups), so that no memdbd outlives the test run.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
