package client_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/memdbd/memdbd/internal/leakcheck"
	"github.com/memdbd/memdbd/internal/testcluster"
)

// endpoints of the 3-node cluster shared by the examples and tests of this
// package: real Raft over loopback, real disks, real gRPC servers.
var endpoints []string

func TestMain(m *testing.M) {
	tb := &testcluster.MainTB{}
	code := func() (code int) {
		defer func() {
			if r := recover(); r != nil {
				fmt.Fprintln(os.Stderr, "starting the test cluster:", r)
				code = 1
			}
		}()
		endpoints = testcluster.Start(tb, 3, testcluster.Options{}).Endpoints()
		return m.Run()
	}()
	tb.Close()
	// Every goroutine of the clients, servers and nodes must be gone.
	if err := leakcheck.Find(); err != nil && code == 0 {
		fmt.Fprintln(os.Stderr, "leaked goroutines:", err)
		code = 1
	}
	os.Exit(code)
}
