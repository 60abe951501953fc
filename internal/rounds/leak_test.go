package rounds

import (
	"testing"

	"github.com/memdbd/memdbd/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }
