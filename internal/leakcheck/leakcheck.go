// Package leakcheck fails a test binary that leaves goroutines behind.
// It wraps goleak with a longer grace period than goleak's own (about two
// seconds): goroutines of closed connections and stopped servers can take
// longer to finish on a loaded two-core machine, and a slow exit is not a
// leak.
package leakcheck

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Grace is how long leftover goroutines are given to finish.
const Grace = 15 * time.Second

// Find reports goroutines still running after Grace.
func Find() error {
	deadline := time.Now().Add(Grace)
	for {
		err := goleak.Find()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Main runs the tests, then fails the binary if goroutines leaked.
func Main(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := Find(); err != nil {
			fmt.Fprintln(os.Stderr, "leaked goroutines:", err)
			code = 1
		}
	}
	os.Exit(code)
}
