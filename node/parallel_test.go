package node

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// stallableStore holds a node's log appends while stalled, as a disk that
// has stopped answering would.
type stallableStore struct {
	raft.LogStore
	mu      sync.Mutex
	stalled chan struct{} // non-nil: appends wait until it is closed
}

func (s *stallableStore) StoreLogs(logs []*raft.Log) error {
	s.mu.Lock()
	ch := s.stalled
	s.mu.Unlock()
	if ch != nil {
		<-ch
	}
	return s.LogStore.StoreLogs(logs)
}

func (s *stallableStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

func (s *stallableStore) stall() func() {
	ch := make(chan struct{})
	s.mu.Lock()
	s.stalled = ch
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		s.stalled = nil
		s.mu.Unlock()
		close(ch)
	}
}

// With real Raft over TCP: while the leader's own copy of an entry is not
// on its disk, Raft counts the entry committed (the followers have it),
// yet no member applies it, the read index stays below it and the write
// is not acknowledged. Once the leader's write completes, everything
// follows.
func TestEntryIsHeldBackUntilTheLeadersCopyIsDurable(t *testing.T) {
	var mu sync.Mutex
	stores := map[string]*stallableStore{}
	testWrapLogStore = func(id string, s raft.LogStore) raft.LogStore {
		mu.Lock()
		defer mu.Unlock()
		st := &stallableStore{LogStore: s}
		stores[id] = st
		return st
	}
	defer func() { testWrapLogStore = nil }()

	c := startCluster(t, 3)
	l := c.leader()
	mustApply(t, l, createKV())
	mustApply(t, l, upsertKV("a", 1))
	var followers []*Node
	for _, nd := range c.nodes {
		if nd != l {
			followers = append(followers, nd)
		}
	}
	before := l.raft.LastIndex()
	// Every member has applied everything so far.
	waitFor(t, "all members to apply the writes so far", func() bool {
		for _, nd := range c.nodes {
			if nd.fsm.Applied() < before {
				return false
			}
		}
		return true
	})

	mu.Lock()
	release := stores[l.cfg.ID].stall()
	mu.Unlock()
	released := false
	defer func() {
		if !released {
			release()
		}
	}()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := l.Apply(ctx, upsertKV("a", 2))
		done <- err
	}()
	entry := before + 1
	waitFor(t, "the followers to store the entry and the leader to count it committed", func() bool {
		for _, f := range followers {
			if f.raft.LastIndex() < entry {
				return false
			}
		}
		return l.raft.CommitIndex() >= entry
	})
	// Give anything that would wrongly act on it time to do so.
	time.Sleep(200 * time.Millisecond)
	for _, nd := range c.nodes {
		if got := nd.fsm.Applied(); got >= entry {
			t.Fatalf("%s applied index %d, including entry %d whose leader copy is not on disk", nd.cfg.ID, got, entry)
		}
	}
	select {
	case err := <-done:
		t.Fatalf("the write was answered (%v) before the leader's copy was on disk", err)
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	idx, err := l.ReadIndex(ctx)
	cancel()
	if err != nil || idx >= entry {
		t.Fatalf("ReadIndex = %d, %v; want below %d", idx, err, entry)
	}

	if n := l.Status().LogPending; n < 1 {
		t.Fatalf("Status().LogPending = %d while the leader's write is stalled", n)
	}

	release()
	released = true
	if err := <-done; err != nil {
		t.Fatalf("the write failed after the leader's disk caught up: %v", err)
	}
	waitFor(t, "every member to apply the entry", func() bool {
		for _, nd := range c.nodes {
			if nd.fsm.Applied() < entry {
				return false
			}
		}
		return true
	})
	if n := l.Status().LogPending; n != 0 {
		t.Fatalf("Status().LogPending = %d after the write completed", n)
	}
}
