package node

import (
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// blockingLogs is an in-memory log store whose StoreLogs can be made to
// wait, so that the Raft main loop stops taking requests.
type blockingLogs struct {
	*raft.InmemStore
	mu      sync.Mutex
	armed   bool
	entered chan struct{}
	release chan struct{}
}

func (b *blockingLogs) StoreLogs(logs []*raft.Log) error {
	b.mu.Lock()
	armed := b.armed
	b.armed = false
	b.mu.Unlock()
	if armed {
		close(b.entered)
		<-b.release
	}
	return b.InmemStore.StoreLogs(logs)
}

type nopFSM struct{}

func (nopFSM) Apply(*raft.Log) interface{}         { return nil }
func (nopFSM) Snapshot() (raft.FSMSnapshot, error) { return nil, errors.New("no snapshots") }
func (nopFSM) Restore(io.ReadCloser) error         { return nil }

// An Apply queued behind the main loop when Raft shuts down is never
// answered by hashicorp/raft; releaseAtShutdown makes it answer
// ErrRaftShutdown once the node's channel closes. The Raft here is a
// single in-memory member: what is tested is the library's future, not
// replication.
func TestFuturesAreReleasedAtShutdown(t *testing.T) {
	logs := &blockingLogs{InmemStore: raft.NewInmemStore(), entered: make(chan struct{}), release: make(chan struct{})}
	cfg := raft.DefaultConfig()
	cfg.LocalID = "a"
	cfg.HeartbeatTimeout = 50 * time.Millisecond
	cfg.ElectionTimeout = 50 * time.Millisecond
	cfg.LeaderLeaseTimeout = 50 * time.Millisecond
	cfg.BatchApplyCh = true // lets an Apply wait in the queue while the loop is busy
	cfg.LogOutput = io.Discard
	addr, trans := raft.NewInmemTransport("a")
	snaps := raft.NewInmemSnapshotStore()
	if err := raft.BootstrapCluster(cfg, logs, logs, snaps, trans, raft.Configuration{Servers: []raft.Server{{ID: "a", Address: addr}}}); err != nil {
		t.Fatal(err)
	}
	r, err := raft.NewRaft(cfg, nopFSM{}, logs, logs, snaps, trans)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.State() != raft.Leader || r.Barrier(time.Second).Error() != nil {
		if time.Now().After(deadline) {
			t.Fatal("no leader within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}

	logs.mu.Lock()
	logs.armed = true
	logs.mu.Unlock()
	first := r.Apply([]byte("1"), time.Second)
	<-logs.entered // the main loop is inside StoreLogs
	queued := r.Apply([]byte("2"), time.Second)
	down := make(chan struct{})
	if !releaseAtShutdown(queued, down) {
		t.Fatal("releaseAtShutdown found no ShutdownCh in the Apply future: the hashicorp/raft version changed; see future.go")
	}
	if !releaseAtShutdown(r.VerifyLeader(), down) {
		t.Fatal("releaseAtShutdown found no ShutdownCh in the VerifyLeader future")
	}
	shut := r.Shutdown()
	close(logs.release)
	if err := shut.Error(); err != nil {
		t.Fatal(err)
	}
	_ = first.Error() // in flight when the loop ended: answered by Raft

	answered := make(chan error, 1)
	go func() { answered <- queued.Error() }()
	select {
	case err := <-answered:
		t.Fatalf("Raft answered the queued Apply itself (%v): the library no longer leaves it waiting, and releaseAtShutdown may be unnecessary", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(down)
	select {
	case err := <-answered:
		if !errors.Is(err, raft.ErrRaftShutdown) {
			t.Fatalf("released Apply: %v, want ErrRaftShutdown", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the queued Apply was not released when the channel closed")
	}
}
