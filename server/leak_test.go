package server_test

import (
	"testing"

	"github.com/memdbd/memdbd/internal/leakcheck"
)

// Every goroutine of the servers and nodes the tests start must be gone
// once they are stopped.
func TestMain(m *testing.M) { leakcheck.Main(m) }
