package node

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// heldStore is an in-memory log store whose appends wait for a release,
// standing in for a slow disk. It records the size of every append.
type heldStore struct {
	*raft.InmemStore
	hold    chan struct{} // each append waits for a release
	freed   chan struct{} // closed: appends no longer wait
	once    sync.Once
	mu      sync.Mutex
	batches []int
	firsts  []uint64 // first index of every append, in the order written
	fail    error
}

func newHeldStore() *heldStore {
	return &heldStore{InmemStore: raft.NewInmemStore(), hold: make(chan struct{}), freed: make(chan struct{})}
}

func (s *heldStore) StoreLogs(logs []*raft.Log) error {
	select {
	case <-s.hold:
	case <-s.freed:
	}
	s.mu.Lock()
	s.batches = append(s.batches, len(logs))
	s.firsts = append(s.firsts, logs[0].Index)
	err := s.fail
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return s.InmemStore.StoreLogs(logs)
}

func (s *heldStore) release() { s.hold <- struct{}{} }

// closeHeld lets every append through and closes l.
func closeHeld(t *testing.T, s *heldStore, l *parallelLog) {
	s.once.Do(func() { close(s.freed) })
	if err := l.Close(); err != nil {
		t.Error(err)
	}
}

// noFailure is an onFail for tests in which no write fails.
func noFailure(t *testing.T) func(error) {
	return func(err error) { t.Errorf("unexpected failure: %v", err) }
}

// durableThenHeld appends 1..durable and waits until they are written,
// then appends durable+1..held, which stay queued until the next release.
func durableThenHeld(t *testing.T, st *heldStore, l *parallelLog, durable, held uint64) {
	t.Helper()
	go st.release()
	if err := l.StoreLogs(entries(1, durable)); err != nil {
		t.Fatal(err)
	}
	if err := l.waitDurable(durable); err != nil {
		t.Fatal(err)
	}
	if err := l.StoreLogs(entries(durable+1, held)); err != nil {
		t.Fatal(err)
	}
}

func entries(from, to uint64) []*raft.Log {
	var out []*raft.Log
	for i := from; i <= to; i++ {
		out = append(out, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: []byte{byte(i)}})
	}
	return out
}

func storedLast(t *testing.T, s raft.LogStore) uint64 {
	t.Helper()
	last, err := s.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	return last
}

// waitFor polls cond for up to ten seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestParallelLogLeaderAppendReturnsBeforeDisk(t *testing.T) {
	st := newHeldStore()
	var leader atomic.Bool
	leader.Store(true)
	l := newParallelLog(st, leader.Load, noFailure(t))
	defer closeHeld(t, st, l)

	if err := l.StoreLogs(entries(1, 3)); err != nil {
		t.Fatal(err)
	}
	// Not on "disk" yet, but visible to Raft.
	if got := storedLast(t, st.InmemStore); got != 0 {
		t.Fatalf("store holds up to %d before the write was released", got)
	}
	if got := storedLast(t, l); got != 3 {
		t.Fatalf("LastIndex = %d, want 3", got)
	}
	if first, _ := l.FirstIndex(); first != 1 {
		t.Fatalf("FirstIndex = %d, want 1", first)
	}
	var e raft.Log
	if err := l.GetLog(2, &e); err != nil || e.Index != 2 || e.Data[0] != 2 {
		t.Fatalf("GetLog(2) = %+v, %v", e, err)
	}
	// Nothing at or above the first pending entry counts as durable.
	if got := l.durableBound(10); got != 0 {
		t.Fatalf("durableBound(10) = %d with 1..3 pending, want 0", got)
	}
	waited := make(chan error, 1)
	go func() { waited <- l.waitDurable(3) }()
	select {
	case err := <-waited:
		t.Fatalf("waitDurable returned %v before the write completed", err)
	case <-time.After(20 * time.Millisecond):
	}
	st.release()
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	if got := storedLast(t, st.InmemStore); got != 3 {
		t.Fatalf("store holds up to %d, want 3", got)
	}
	if got := l.durableBound(10); got != 10 {
		t.Fatalf("durableBound(10) = %d with nothing pending, want 10", got)
	}
}

func TestParallelLogFollowerAppendIsDurableOnReturn(t *testing.T) {
	st := newHeldStore()
	l := newParallelLog(st, func() bool { return false }, noFailure(t))
	defer closeHeld(t, st, l)

	done := make(chan error, 1)
	go func() { done <- l.StoreLogs(entries(1, 2)) }()
	select {
	case err := <-done:
		t.Fatalf("a follower's append returned (%v) before it was written", err)
	case <-time.After(20 * time.Millisecond):
	}
	st.release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := storedLast(t, st.InmemStore); got != 2 {
		t.Fatalf("store holds up to %d, want 2", got)
	}
}

// Appends queued while a write is in progress go to disk together, in
// order.
func TestParallelLogGroupsQueuedAppends(t *testing.T) {
	st := newHeldStore()
	l := newParallelLog(st, func() bool { return true }, noFailure(t))
	defer closeHeld(t, st, l)

	if err := l.StoreLogs(entries(1, 1)); err != nil {
		t.Fatal(err)
	}
	// The writer has taken entry 1 and waits on the disk.
	waitFor(t, "the writer to take the first append", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.writing) == 1
	})
	for i := uint64(2); i <= 5; i++ {
		if err := l.StoreLogs(entries(i, i)); err != nil {
			t.Fatal(err)
		}
	}
	st.release()
	st.release()
	if err := l.waitDurable(5); err != nil {
		t.Fatal(err)
	}
	st.mu.Lock()
	batches := append([]int(nil), st.batches...)
	st.mu.Unlock()
	if len(batches) != 2 || batches[0] != 1 || batches[1] != 4 {
		t.Fatalf("appends written in batches %v, want [1 4]", batches)
	}
	for i := uint64(1); i <= 5; i++ {
		var e raft.Log
		if err := st.InmemStore.GetLog(i, &e); err != nil || e.Data[0] != byte(i) {
			t.Fatalf("entry %d on disk: %+v, %v", i, e, err)
		}
	}
}

// A leader that steps down and must drop a conflicting suffix: the
// truncation waits for the queued write, so the write cannot land after
// it and resurrect the dropped entries.
func TestParallelLogTruncationWaitsForQueuedWrites(t *testing.T) {
	st := newHeldStore()
	var leader atomic.Bool
	leader.Store(true)
	l := newParallelLog(st, leader.Load, noFailure(t))
	defer closeHeld(t, st, l)

	go st.release()
	if err := l.StoreLogs(entries(1, 2)); err != nil {
		t.Fatal(err)
	}
	if err := l.waitDurable(2); err != nil {
		t.Fatal(err)
	}
	if err := l.StoreLogs(entries(3, 5)); err != nil {
		t.Fatal(err)
	}
	leader.Store(false)
	deleted := make(chan error, 1)
	go func() { deleted <- l.DeleteRange(3, 5) }()
	select {
	case err := <-deleted:
		t.Fatalf("truncation ran (%v) while entries 3..5 were still queued", err)
	case <-time.After(20 * time.Millisecond):
	}
	st.release()
	if err := <-deleted; err != nil {
		t.Fatal(err)
	}
	if got := storedLast(t, l); got != 2 {
		t.Fatalf("LastIndex after truncation = %d, want 2", got)
	}
	// The new leader's entries follow, written before the call returns.
	go st.release()
	if err := l.StoreLogs([]*raft.Log{{Index: 3, Term: 2, Type: raft.LogCommand}}); err != nil {
		t.Fatal(err)
	}
	var e raft.Log
	if err := st.InmemStore.GetLog(3, &e); err != nil || e.Term != 2 {
		t.Fatalf("entry 3 on disk: %+v, %v; want the new leader's (term 2)", e, err)
	}
}

// Compaction of old entries does not wait for the leader's newest appends.
func TestParallelLogCompactionDoesNotWaitForNewAppends(t *testing.T) {
	st := newHeldStore()
	l := newParallelLog(st, func() bool { return true }, noFailure(t))
	defer closeHeld(t, st, l)

	durableThenHeld(t, st, l, 10, 12)
	done := make(chan error, 1)
	go func() { done <- l.DeleteRange(1, 5) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("compaction of 1..5 waited for the append of 11..12")
	}
	if first, _ := l.FirstIndex(); first != 6 {
		t.Fatalf("FirstIndex = %d, want 6", first)
	}
}

func TestParallelLogWriteFailureIsFinal(t *testing.T) {
	st := newHeldStore()
	st.fail = errors.New("disk gone")
	failed := make(chan error, 1)
	l := newParallelLog(st, func() bool { return true }, func(err error) { failed <- err })

	if err := l.StoreLogs(entries(1, 1)); err != nil {
		t.Fatal(err)
	}
	st.release()
	if err := <-failed; err == nil || err.Error() != "disk gone" {
		t.Fatalf("onFail got %v", err)
	}
	if err := l.waitDurable(1); err == nil {
		t.Fatal("waitDurable succeeded for an entry whose write failed")
	}
	if got := l.durableBound(5); got != 0 {
		t.Fatalf("durableBound(5) = %d after the write of entry 1 failed, want 0", got)
	}
	if err := l.StoreLogs(entries(2, 2)); err == nil {
		t.Fatal("an append after a failed write was accepted")
	}
	if err := l.Close(); err == nil {
		t.Fatal("Close hid the write failure")
	}
}

func TestParallelLogCloseWritesQueued(t *testing.T) {
	st := newHeldStore()
	l := newParallelLog(st, func() bool { return true }, noFailure(t))
	if err := l.StoreLogs(entries(1, 4)); err != nil {
		t.Fatal(err)
	}
	go st.release()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := storedLast(t, st.InmemStore); got != 4 {
		t.Fatalf("store holds up to %d after Close, want 4", got)
	}
	if err := l.StoreLogs(entries(5, 5)); !errors.Is(err, errLogClosed) {
		t.Fatalf("append after Close: %v, want errLogClosed", err)
	}
}

// fakePipeline records the requests it is given.
type fakePipeline struct {
	raft.AppendPipeline
	sent []uint64
}

func (p *fakePipeline) AppendEntries(args *raft.AppendEntriesRequest, _ *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	p.sent = append(p.sent, args.LeaderCommitIndex)
	return nil, nil
}

func TestCommitIndexSentToFollowersIsCappedAtTheDurableEntry(t *testing.T) {
	st := newHeldStore()
	l := newParallelLog(st, func() bool { return true }, noFailure(t))
	defer closeHeld(t, st, l)

	durableThenHeld(t, st, l, 4, 8)
	fp := &fakePipeline{}
	p := &commitCapPipeline{AppendPipeline: fp, log: l}
	for _, commit := range []uint64{0, 3, 4, 7} {
		if _, err := p.AppendEntries(&raft.AppendEntriesRequest{LeaderCommitIndex: commit}, nil); err != nil {
			t.Fatal(err)
		}
	}
	want := []uint64{0, 3, 4, 4}
	for i := range want {
		if fp.sent[i] != want[i] {
			t.Fatalf("commit indexes sent %v, want %v", fp.sent, want)
		}
	}
}

func TestParallelLogFollowerWriteFailureIsFinal(t *testing.T) {
	st := newHeldStore()
	st.fail = errors.New("disk gone")
	failed := make(chan error, 1)
	l := newParallelLog(st, func() bool { return false }, func(err error) { failed <- err })

	go st.release()
	if err := l.StoreLogs(entries(1, 1)); err == nil {
		t.Fatal("a follower's failed append reported success")
	}
	if err := <-failed; err == nil {
		t.Fatal("onFail was not told")
	}
	if err := l.StoreLogs(entries(2, 2)); err == nil {
		t.Fatal("an append after a failed write was accepted")
	}
	_ = l.Close()
}

// A node that was leader a moment ago has a write of its own still on the
// way to disk when its first append as a follower arrives: that append
// must wait behind it, not take the direct path and overtake it.
func TestParallelLogFollowerAppendWaitsBehindALeadersWrite(t *testing.T) {
	st := newHeldStore()
	var leader atomic.Bool
	leader.Store(true)
	l := newParallelLog(st, leader.Load, noFailure(t))
	defer closeHeld(t, st, l)

	if err := l.StoreLogs(entries(1, 1)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the writer to take the leader's append", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.writing) == 1
	})
	leader.Store(false)
	done := make(chan error, 1)
	go func() { done <- l.StoreLogs(entries(2, 2)) }()
	select {
	case err := <-done:
		t.Fatalf("the follower's append returned (%v) while the leader's write ahead of it was on the way", err)
	case <-time.After(20 * time.Millisecond):
	}
	st.release() // entry 1
	st.release() // entry 2
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st.mu.Lock()
	firsts := append([]uint64(nil), st.firsts...)
	st.mu.Unlock()
	if len(firsts) != 2 || firsts[0] != 1 || firsts[1] != 2 {
		t.Fatalf("appends written starting at %v, want [1 2]", firsts)
	}
}

// With nothing ahead of it, a follower's append is written by the caller
// and the writer goroutine stays out of the way until it is done.
func TestParallelLogFollowerDirectWriteKeepsTheWriterOut(t *testing.T) {
	st := newHeldStore()
	l := newParallelLog(st, func() bool { return false }, noFailure(t))
	defer closeHeld(t, st, l)

	done := make(chan error, 1)
	go func() { done <- l.StoreLogs(entries(1, 3)) }()
	waitFor(t, "the direct write to hold the writing slot", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.writing) == 3
	})
	if got := l.durableBound(3); got != 0 {
		t.Fatalf("durableBound(3) = %d during the write, want 0", got)
	}
	st.release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := l.durableBound(3); got != 3 {
		t.Fatalf("durableBound(3) = %d after the write, want 3", got)
	}
}
