package node

import (
	"testing"

	"github.com/hashicorp/raft"
)

func TestClosingStable(t *testing.T) {
	s := &closingStable{StableStore: raft.NewInmemStore()}
	if err := s.SetUint64([]byte("CurrentTerm"), 3); err != nil {
		t.Fatal(err)
	}
	if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != 3 {
		t.Fatalf("before close: %d, %v", v, err)
	}
	closed := false
	s.close(func() { closed = true })
	if !closed {
		t.Fatal("close did not run the closer")
	}
	// A late term write from a heartbeat handler is dropped, not an error
	// (raft panics on one); reads fail.
	if err := s.SetUint64([]byte("CurrentTerm"), 4); err != nil {
		t.Fatalf("write after close: %v", err)
	}
	if err := s.Set([]byte("LastVoteCand"), []byte("n2")); err != nil {
		t.Fatalf("write after close: %v", err)
	}
	if _, err := s.GetUint64([]byte("CurrentTerm")); err == nil {
		t.Fatal("read after close succeeded")
	}
	if _, err := s.Get([]byte("LastVoteCand")); err == nil {
		t.Fatal("read after close succeeded")
	}
}
