package node

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine a node starts must be gone once it is closed.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
