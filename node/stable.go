package node

import (
	"errors"
	"sync"

	"github.com/hashicorp/raft"
)

// closingStable guards Raft's stable store (term and vote) across
// shutdown.
//
// Why: hashicorp/raft handles heartbeats on the transport's connection
// goroutines, which outlive Raft's Shutdown. A heartbeat from a newer term
// that passed Raft's shutdown check just before the node closed its stores
// records the term and, when the store is closed, raft panics ("failed to
// save current term: database not open"). It happens when a leader hands
// over leadership on its way out, and crashed a test run.
//
// Close waits for calls in progress. A term write that arrives after it
// is dropped: only that heartbeat path can still write then (votes are
// written by Raft's main loop, which has stopped), the node answers
// nothing else, and the next start reads the term from disk. Reads after
// Close fail.
type closingStable struct {
	raft.StableStore
	mu     sync.RWMutex
	closed bool
}

var errStableClosed = errors.New("raft stable store closed")

func (s *closingStable) Set(k, v []byte) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil
	}
	return s.StableStore.Set(k, v)
}

func (s *closingStable) SetUint64(k []byte, v uint64) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil
	}
	return s.StableStore.SetUint64(k, v)
}

func (s *closingStable) Get(k []byte) ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, errStableClosed
	}
	return s.StableStore.Get(k)
}

func (s *closingStable) GetUint64(k []byte) (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, errStableClosed
	}
	return s.StableStore.GetUint64(k)
}

// close marks the store closed once no call is in progress; then fn
// closes what lies beneath.
func (s *closingStable) close(fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	fn()
}
