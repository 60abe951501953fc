package node

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/memdbd/memdbd/fsm"
)

// checkedSnapshots is the file snapshot store with two guards against an
// unreadable snapshot, whether this member wrote it or a leader sent it.
//
// What hashicorp/raft (v1.7.3) does without them, on a follower sent a
// snapshot it cannot restore: installSnapshot streams it into a new
// snapshot (a directory named term-index-millis.tmp), closes the sink,
// which renames it into place and deletes the oldest snapshots beyond the
// retained number, and only then asks the state machine to restore it.
// When the restore fails, the RPC fails, but the snapshot stays on disk as
// the newest, and it has pushed out a readable one. The leader counts a
// failed send like a failed append and waits before the next (10 ms,
// doubling from the third failure, at most 10.24 s: replicateTo's
// backoff), then sends the same snapshot again. So each try wrote a whole
// snapshot to the follower's disk, and within a few tries the retained
// snapshots were all copies of the unreadable one; a restart then found
// nothing it could start from.
//
// The guards:
//   - Every sink is checked as it is written (fsm.CheckSnapshot, on a
//     goroutine fed through a pipe): a write fails as soon as the stream
//     is seen to be unreadable, so Raft cancels the sink (the temporary
//     directory is removed) and nothing is renamed into place or reaped.
//     A leader's send fails, and its backoff applies.
//   - A snapshot received from a leader that passed the check but still
//     failed to restore (what only loading sees: rows against their
//     tables, the state hash) is removed (restored).
//
// With them, at most the retained snapshots and the ones being written
// are on disk whatever a leader sends.
type checkedSnapshots struct {
	raft.SnapshotStore
	dir string // the store's directory, DataDir/snapshots
	log *slog.Logger

	mu sync.Mutex
	// received is the id of the last snapshot a leader sent, closed and
	// not yet restored.
	received string
}

func newCheckedSnapshots(store raft.SnapshotStore, dataDir string, lg *slog.Logger) *checkedSnapshots {
	return &checkedSnapshots{SnapshotStore: store, dir: filepath.Join(dataDir, "snapshots"), log: lg}
}

// Create starts a snapshot whose bytes are checked as they are written.
func (s *checkedSnapshots) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.SnapshotStore.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	return newCheckedSink(sink, s), nil
}

// restored takes note of the outcome of a restore. The state machine
// restores a snapshot received from a leader right after its sink was
// closed; when that fails, the snapshot is removed: it is of no use, and
// kept it would be the newest on disk, the first tried at the next start.
func (s *checkedSnapshots) restored(err error) {
	s.mu.Lock()
	id := s.received
	s.received = ""
	s.mu.Unlock()
	if err == nil || id == "" {
		return
	}
	path := filepath.Join(s.dir, id)
	if rmErr := os.RemoveAll(path); rmErr != nil {
		s.log.Error("a snapshot sent by the leader could not be restored, nor removed", "id", id, "err", err, "remove_err", rmErr)
		return
	}
	s.log.Error("a snapshot sent by the leader could not be restored; removed it, the state is unchanged", "id", id, "err", err)
}

func (s *checkedSnapshots) setReceived(id string) {
	s.mu.Lock()
	s.received = id
	s.mu.Unlock()
}

// errSinkCancelled ends the check of a cancelled sink.
var errSinkCancelled = errors.New("snapshot cancelled")

// checkedSink is a snapshot sink whose bytes also go to fsm.CheckSnapshot.
type checkedSink struct {
	raft.SnapshotSink
	store   *checkedSnapshots
	pw      *io.PipeWriter
	verdict chan error // the check's result, sent once
	// local: this member's state machine writes the sink (localSnapshot),
	// rather than a leader's InstallSnapshot. Set before the first write,
	// on the goroutine that writes and closes it.
	local   bool
	written int64

	once sync.Once
	err  error // the check's result, once finished
}

func newCheckedSink(sink raft.SnapshotSink, store *checkedSnapshots) *checkedSink {
	pr, pw := io.Pipe()
	c := &checkedSink{SnapshotSink: sink, store: store, pw: pw, verdict: make(chan error, 1)}
	go func() {
		err := fsm.CheckSnapshot(pr)
		if err != nil {
			// Fails the pending and later writes: nothing more reaches
			// the disk.
			pr.CloseWithError(err)
		}
		c.verdict <- err
	}()
	return c
}

// Write passes p to the check, then to the file: once the check has
// failed, nothing more is written.
func (c *checkedSink) Write(p []byte) (int, error) {
	if _, err := c.pw.Write(p); err != nil {
		return 0, fmt.Errorf("snapshot %s refused: %w", c.ID(), c.result(err))
	}
	n, err := c.SnapshotSink.Write(p)
	c.written += int64(n)
	return n, err
}

// result waits for the check to finish and returns its verdict (or
// cause, when the check saw no fault: the pipe was closed early).
func (c *checkedSink) result(cause error) error {
	c.once.Do(func() {
		_ = c.pw.CloseWithError(cause)
		c.err = <-c.verdict
		if c.err != nil && !errors.Is(c.err, errSinkCancelled) {
			c.store.log.Error("snapshot refused: it would not be readable; nothing was kept",
				"id", c.ID(), "local", c.local, "bytes_written", c.written, "err", c.err)
		}
	})
	if c.err != nil {
		return c.err
	}
	return cause
}

// Close finishes the check and, when it passed, the snapshot; when it
// failed, the snapshot is cancelled (its temporary directory removed)
// and Close fails.
func (c *checkedSink) Close() error {
	if err := c.result(nil); err != nil {
		_ = c.SnapshotSink.Cancel()
		return fmt.Errorf("snapshot %s would not be readable: %w", c.ID(), err)
	}
	if err := c.SnapshotSink.Close(); err != nil {
		return err
	}
	if !c.local {
		c.store.setReceived(c.ID())
	}
	return nil
}

// Cancel abandons the snapshot.
func (c *checkedSink) Cancel() error {
	_ = c.result(errSinkCancelled)
	return c.SnapshotSink.Cancel()
}

// snapshotFSM is the state machine as Raft sees it, telling the snapshot
// store which sinks it writes itself and how restores end.
type snapshotFSM struct {
	raft.BatchingFSM
	snaps *checkedSnapshots
}

func (f snapshotFSM) Snapshot() (raft.FSMSnapshot, error) {
	s, err := f.BatchingFSM.Snapshot()
	if err != nil {
		return nil, err
	}
	return localSnapshot{s}, nil
}

func (f snapshotFSM) Restore(rc io.ReadCloser) error {
	err := f.BatchingFSM.Restore(rc)
	f.snaps.restored(err)
	return err
}

// localSnapshot marks the sink it persists to as written by this member.
type localSnapshot struct{ raft.FSMSnapshot }

func (s localSnapshot) Persist(sink raft.SnapshotSink) error {
	if c, ok := sink.(*checkedSink); ok {
		c.local = true
	}
	return s.FSMSnapshot.Persist(sink)
}

// removeTempSnapshots removes the temporary snapshot directories (name
// ending in .tmp) a process stopped while writing a snapshot left behind:
// hashicorp/raft skips them and never removes them, so each crash during
// a snapshot or an install would keep one for good. It runs before Raft
// starts, with the data directory locked (the log's file lock), so no
// snapshot is being written.
func removeTempSnapshots(dataDir string, lg *slog.Logger) error {
	dir := filepath.Join(dataDir, "snapshots")
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing snapshots: %w", err)
	}
	for _, e := range ents {
		if !e.IsDir() || !strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("removing the unfinished snapshot %s: %w", e.Name(), err)
		}
		lg.Warn("removed an unfinished snapshot left by an earlier run", "dir", e.Name())
	}
	return nil
}
