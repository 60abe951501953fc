//go:build linux

package childproc

import "syscall"

// Attr makes a child process receive SIGKILL when the harness that started
// it dies, however it dies (kill, Ctrl-C, a test timeout's panic, which
// runs no cleanups). The signal follows the starting thread, which the Go
// runtime keeps for the life of the process unless a goroutine locked to
// it exits.
func Attr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
