package store

import (
	"testing"

	"go.uber.org/goleak"
)

// No test of the store may leave a goroutine behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
