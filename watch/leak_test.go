package watch

import (
	"testing"

	"github.com/memdbd/memdbd/internal/leakcheck"
)

// No test of the store may leave a goroutine behind.
func TestMain(m *testing.M) { leakcheck.Main(m) }
