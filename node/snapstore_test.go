package node

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/memdbd/memdbd/fsm"
)

// validSnapshot returns the bytes of a snapshot of an empty state machine.
func validSnapshot(t *testing.T) []byte {
	t.Helper()
	cfg := fsm.DefaultConfig()
	cfg.Logger = slog.New(slog.DiscardHandler)
	f, err := fsm.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink bufSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	return sink.Bytes()
}

// poisonedSnapshot returns the start of a snapshot whose first record
// announces more bytes than a reader accepts, as a session record of 512
// MiB did, followed by filler.
func poisonedSnapshot() []byte {
	b := append([]byte("MEMDBSNP"), 0, 0, 0, 1)
	b = append(b, 1) // meta record
	b = binary.AppendUvarint(b, 512<<20)
	return append(b, make([]byte, 4096)...)
}

type bufSink struct{ bytes.Buffer }

func (s *bufSink) ID() string    { return "buf" }
func (s *bufSink) Cancel() error { return nil }
func (s *bufSink) Close() error  { return nil }

// logLines is a slog handler that keeps the messages it is given.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) Enabled(context.Context, slog.Level) bool { return true }
func (l *logLines) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.lines = append(l.lines, r.Message)
	l.mu.Unlock()
	return nil
}
func (l *logLines) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logLines) WithGroup(string) slog.Handler      { return l }

// count returns how many messages start with prefix.
func (l *logLines) count(prefix string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.lines {
		if strings.HasPrefix(m, prefix) {
			n++
		}
	}
	return n
}

func testSnapshotStore(t *testing.T, retain int) (*checkedSnapshots, string, *logLines) {
	t.Helper()
	dir := t.TempDir()
	store, err := raft.NewFileSnapshotStoreWithLogger(dir, retain, newHclog(slog.New(slog.DiscardHandler), "snapshots"))
	if err != nil {
		t.Fatal(err)
	}
	lines := &logLines{}
	return newCheckedSnapshots(store, dir, slog.New(lines)), dir, lines
}

func createSink(t *testing.T, s raft.SnapshotStore, index uint64) raft.SnapshotSink {
	t.Helper()
	_, trans := raft.NewInmemTransport("")
	sink, err := s.Create(raft.SnapshotVersionMax, index, 1, raft.Configuration{}, 1, trans)
	if err != nil {
		t.Fatal(err)
	}
	return sink
}

// snapshotDirs lists the entries of the snapshot directory.
func snapshotDirs(t *testing.T, dataDir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dataDir, "snapshots"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// An unreadable snapshot is refused while it is written: the writes fail
// once the check sees the fault, nothing is renamed into place, and the
// snapshots already there are not reaped for it.
func TestCheckedSinkRefusesUnreadableSnapshot(t *testing.T) {
	s, dir, lines := testSnapshotStore(t, 1)
	good := createSink(t, s, 10)
	if _, err := good.Write(validSnapshot(t)); err != nil {
		t.Fatal(err)
	}
	if err := good.Close(); err != nil {
		t.Fatalf("closing a valid snapshot: %v", err)
	}

	// As hashicorp/raft's installSnapshot: copy, and cancel on an error.
	bad := createSink(t, s, 20)
	chunk := poisonedSnapshot()
	var werr error
	writes := 0
	for ; writes < 100 && werr == nil; writes++ {
		_, werr = bad.Write(chunk)
	}
	if werr == nil || !errors.Is(werr, fsm.ErrSnapshotCorrupt) || writes > 2 {
		t.Fatalf("after %d writes: %v; want a refusal at the second write at the latest", writes, werr)
	}
	if err := bad.Cancel(); err != nil {
		t.Fatal(err)
	}
	metas, _ := s.List()
	if names := snapshotDirs(t, dir); len(metas) != 1 || metas[0].Index != 10 || len(names) != 1 {
		t.Fatalf("left on disk: %v, listed %d", names, len(metas))
	}
	if lines.count("snapshot refused") != 1 {
		t.Fatalf("refusal logged %d times", lines.count("snapshot refused"))
	}

	// A stream that ends early is refused at Close, which removes it.
	short := createSink(t, s, 30)
	valid := validSnapshot(t)
	if _, err := short.Write(valid[:len(valid)-2]); err != nil {
		t.Fatal(err)
	}
	if err := short.Close(); err == nil || !errors.Is(err, fsm.ErrSnapshotCorrupt) {
		t.Fatalf("closing a truncated snapshot: %v", err)
	}
	metas, _ = s.List()
	if names := snapshotDirs(t, dir); len(metas) != 1 || metas[0].Index != 10 || len(names) != 1 {
		t.Fatalf("left on disk: %v", names)
	}
}

// fakeFSM restores with a chosen error and snapshots a valid empty state.
type fakeFSM struct {
	raft.BatchingFSM // nil: only Snapshot and Restore are called
	restoreErr       error
	snapshot         []byte
}

func (f *fakeFSM) Restore(rc io.ReadCloser) error {
	_, _ = io.Copy(io.Discard, rc)
	_ = rc.Close()
	return f.restoreErr
}

func (f *fakeFSM) Snapshot() (raft.FSMSnapshot, error) { return rawSnapshot(f.snapshot), nil }

type rawSnapshot []byte

func (r rawSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(r); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}
func (rawSnapshot) Release() {}

// A snapshot received from a leader that fails to restore is removed;
// one this member wrote is not, and neither is one that restored.
func TestFailedRestoreRemovesReceivedSnapshot(t *testing.T) {
	s, dir, lines := testSnapshotStore(t, 3)
	inner := &fakeFSM{snapshot: validSnapshot(t)}
	f := snapshotFSM{BatchingFSM: inner, snaps: s}
	restore := func(id string) error {
		t.Helper()
		_, rc, err := s.Open(id)
		if err != nil {
			t.Fatal(err)
		}
		return f.Restore(rc)
	}
	receive := func(index uint64) string {
		t.Helper()
		sink := createSink(t, s, index)
		if _, err := sink.Write(inner.snapshot); err != nil {
			t.Fatal(err)
		}
		if err := sink.Close(); err != nil {
			t.Fatal(err)
		}
		return sink.ID()
	}

	// This member's own snapshot, then a failed restore: kept.
	snap, _ := f.Snapshot()
	local := createSink(t, s, 5)
	if err := snap.Persist(local); err != nil {
		t.Fatal(err)
	}
	inner.restoreErr = errors.New("state hash mismatch")
	if err := restore(local.ID()); err == nil {
		t.Fatal("restore did not fail")
	}
	if _, err := os.Stat(filepath.Join(dir, "snapshots", local.ID())); err != nil {
		t.Fatalf("this member's snapshot was removed: %v", err)
	}

	// Received and restored: kept.
	inner.restoreErr = nil
	ok := receive(10)
	if err := restore(ok); err != nil {
		t.Fatal(err)
	}
	// Received and not restored: removed.
	inner.restoreErr = errors.New("state hash mismatch")
	bad := receive(20)
	if err := restore(bad); err == nil {
		t.Fatal("restore did not fail")
	}
	names := snapshotDirs(t, dir)
	if len(names) != 2 || strings.Contains(strings.Join(names, " "), bad) {
		t.Fatalf("on disk after a failed restore: %v (removed should be %s)", names, bad)
	}
	if lines.count("a snapshot sent by the leader could not be restored") != 1 {
		t.Fatal("the removal was not logged")
	}
}

// Unfinished snapshots of an earlier run are removed at start; finished
// ones stay.
func TestRemoveTempSnapshots(t *testing.T) {
	s, dir, _ := testSnapshotStore(t, 3)
	done := createSink(t, s, 10)
	if _, err := done.Write(validSnapshot(t)); err != nil {
		t.Fatal(err)
	}
	if err := done.Close(); err != nil {
		t.Fatal(err)
	}
	crashed := createSink(t, s, 20) // never closed: a crash while writing
	defer crashed.Cancel()          // its goroutine; the directory is gone by then
	tmp := filepath.Join(dir, "snapshots", "1-30-1000.tmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "state.bin"), make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	lines := &logLines{}
	if err := removeTempSnapshots(dir, slog.New(lines)); err != nil {
		t.Fatal(err)
	}
	if names := snapshotDirs(t, dir); len(names) != 1 || names[0] != done.ID() {
		t.Fatalf("left: %v, want only %s", names, done.ID())
	}
	if lines.count("removed an unfinished snapshot") != 2 {
		t.Fatalf("logged %d removals, want 2", lines.count("removed an unfinished snapshot"))
	}
	if err := removeTempSnapshots(t.TempDir(), slog.New(lines)); err != nil {
		t.Fatalf("a data directory without snapshots: %v", err)
	}
}

// A leader whose newest snapshot is unreadable (written by a version
// without the writer's checks) sends it to a follower that needs it. The
// follower refuses each copy without keeping it, the leader's backoff
// spaces the tries, the follower keeps following, and it catches up from
// the leader's next snapshot.
func TestFollowerRefusesUnreadableSnapshot(t *testing.T) {
	var mu sync.Mutex
	handlers := map[string]*logLines{}
	c := startClusterWith(t, 3, func(cfg *Config) {
		mu.Lock()
		defer mu.Unlock()
		handlers[cfg.ID] = &logLines{}
		cfg.Logger = slog.New(handlers[cfg.ID])
	})
	leader := c.leader()
	mustApply(t, leader, createKV())
	fi := 0
	for i, nd := range c.nodes {
		if nd != leader {
			fi = i
		}
	}
	follower := c.nodes[fi]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := follower.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		mustApply(t, leader, upsertKV(fmt.Sprint("k", i), int64(i)))
	}
	if _, err := leader.TakeSnapshot(ctx); err != nil {
		t.Fatal(err)
	}
	// No more snapshots on the leader until the poisoned one was tried.
	if err := leader.ReloadSnapshots(1<<40, time.Second, 16); err != nil {
		t.Fatal(err)
	}
	metas, err := leader.snaps.List()
	if err != nil || len(metas) == 0 {
		t.Fatalf("leader snapshots: %v, %v", metas, err)
	}
	m := metas[0]
	time.Sleep(2 * time.Millisecond) // a later id for the same index
	_, trans := raft.NewInmemTransport("")
	sink, err := leader.snaps.Create(raft.SnapshotVersionMax, m.Index, m.Term, m.Configuration, m.ConfigurationIndex, trans)
	if err != nil {
		t.Fatal(err)
	}
	for range 64 { // 256 KiB, past the follower's first check
		if _, err := sink.Write(poisonedSnapshot()); err != nil {
			t.Fatal(err)
		}
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	if metas, _ := leader.snaps.List(); metas[0].ID != sink.ID() {
		t.Fatalf("the poisoned snapshot is not the leader's newest: %s", metas[0].ID)
	}

	term := leader.Term()
	c.start(fi)
	follower = c.nodes[fi]
	lines := handlers[follower.ID()]
	// The leader's backoff counts the appends that failed while the
	// follower was down too, so the first tries may take a few seconds.
	waitUntil(t, 30*time.Second, "two refused snapshots", func() bool { return lines.count("snapshot refused") >= 2 })
	before := lines.count("snapshot refused")
	const window = 3 * time.Second
	time.Sleep(window)
	refused := lines.count("snapshot refused") - before
	// At most about ten tries in three seconds when the backoff starts
	// from 10 ms; a tight loop would be hundreds.
	if refused > 12 {
		t.Fatalf("%d refusals in %v; want them spaced by the leader's backoff", refused, window)
	}
	if leader.Term() != term || !leader.IsLeader() || follower.IsLeader() {
		t.Fatalf("leadership changed while the follower refused snapshots (term %d, was %d)", leader.Term(), term)
	}
	t.Logf("%d refusals in the %v after the first %d", refused, window, before)
	for _, name := range snapshotDirs(t, c.cfgs[fi].DataDir) {
		if strings.HasSuffix(name, ".tmp") || strings.Contains(name, fmt.Sprintf("-%d-", m.Index)) {
			t.Fatalf("the follower kept %s", name)
		}
	}

	// A readable snapshot newer than the poisoned one heals it.
	if err := leader.ReloadSnapshots(64, 50*time.Millisecond, 16); err != nil {
		t.Fatal(err)
	}
	last := mustApply(t, leader, upsertKV("last", 1))
	if _, err := leader.TakeSnapshot(ctx); err != nil {
		t.Fatal(err)
	}
	if err := follower.WaitApplied(ctx, last.Revision); err != nil {
		t.Fatalf("the follower did not catch up: %v", err)
	}
	lt, _ := leader.FSM().Store().View().Table("kv")
	ft, err := follower.FSM().Store().View().Table("kv")
	if err != nil || lt.Rows != ft.Rows || ft.Rows != 201 {
		t.Fatalf("rows: leader %d, follower %d (%v); want 201", lt.Rows, ft.Rows, err)
	}
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
