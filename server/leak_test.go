package server_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine of the servers and nodes the tests start must be gone
// once they are stopped.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
