package fsm

import (
	"testing"

	"go.uber.org/goleak"
)

// No test of the state machine may leave a goroutine behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
