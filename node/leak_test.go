package node

import (
	"testing"

	"github.com/memdbd/memdbd/internal/leakcheck"
)

// Every goroutine a node starts must be gone once it is closed.
func TestMain(m *testing.M) { leakcheck.Main(m) }
