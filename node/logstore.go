package node

import (
	"errors"
	"sync"

	"github.com/hashicorp/raft"
)

// parallelLog lets the leader replicate an entry while it is still being
// written to its own disk, as the Raft thesis describes (section 10.2.1)
// and etcd does.
//
// Why: hashicorp/raft appends a batch to the leader's log (one bbolt
// commit, two fdatasyncs) before it sends the batch to anyone, and each
// follower appends it again before answering, so a write waits for two
// disk commits in a row. Here the leader's append is queued to a writer
// goroutine and returns at once; the leader sends the entries while the
// writer commits them, and a write waits for the slower of the two
// instead of their sum.
//
// What keeps it safe: Raft counts the leader's own copy towards the
// majority as soon as the append returns, so "committed" may, for a
// moment, mean one durable copy (a follower's) plus one in the leader's
// memory. Nothing observable may depend on such an entry until the
// leader's copy is durable too:
//
//   - the state machine does not apply it (gatedFSM waits), so no client
//     is answered and no read sees it;
//   - followers are not told it is committed (commitCapTransport lowers
//     the commit index in outgoing appends), so they do not apply it
//     either;
//   - the read index is capped the same way (Node.ReadIndex).
//
// If the leader crashes before its write completes, the entry may be lost,
// but then nobody has seen it and no client has been answered, which Raft
// permits. On followers nothing changes: their appends are written before
// StoreLogs returns, because their answer to the leader is the promise
// that the entry is on their disk.
//
// All writes, asynchronous or not, go through the one writing slot in
// order (the writer goroutine's, or a follower's append written by its
// caller when nothing is queued ahead of it), so the file always holds a
// prefix of what Raft appended. The
// queue needs no bound of its own: every client write in it is held in
// the state machine until it is durable, and the node admits at most
// MaxPendingWrites of those.
type parallelLog struct {
	store raft.LogStore
	// async reports whether an append may return before it is durable: the
	// caller is the leader's dispatch. Raft's main goroutine is the only
	// one that appends, and it sets the state before a follower append, so
	// the answer is stable for the duration of the call.
	async func() bool
	// onFail is called once if a write fails. The node cannot tell what
	// reached the disk then, and stops (a failed fsync is not retried).
	onFail func(error)

	mu      sync.Mutex
	changed *sync.Cond // signalled when queued/writing change or on close
	queued  []*raft.Log
	writing []*raft.Log
	err     error
	failed  uint64 // first index of the write that failed, with err
	closed  bool
	done    chan struct{}
}

var errLogClosed = errors.New("raft log store closed")

func newParallelLog(store raft.LogStore, async func() bool, onFail func(error)) *parallelLog {
	l := &parallelLog{store: store, async: async, onFail: onFail, done: make(chan struct{})}
	l.changed = sync.NewCond(&l.mu)
	go l.writer()
	return l
}

// writer commits what is queued, all of it in one store call (group
// commit), in the order it was appended.
func (l *parallelLog) writer() {
	defer close(l.done)
	for {
		l.mu.Lock()
		// A follower's direct write (StoreLogs) may hold the writing slot.
		for (len(l.queued) == 0 || len(l.writing) > 0) && !l.closed {
			l.changed.Wait()
		}
		for len(l.writing) > 0 { // closing: let a direct write finish
			l.changed.Wait()
		}
		if len(l.queued) == 0 {
			l.mu.Unlock()
			return
		}
		l.writing, l.queued = l.queued, nil
		batch := l.writing
		l.mu.Unlock()

		if err := l.write(batch); err != nil {
			return
		}
	}
}

// write commits batch, which the caller has just moved to l.writing, and
// frees the writing slot. A failure is final: it is recorded, whatever is
// queued is dropped, onFail runs and the error is returned.
func (l *parallelLog) write(batch []*raft.Log) error {
	err := l.store.StoreLogs(batch)

	l.mu.Lock()
	l.writing = nil
	if err != nil && l.err == nil {
		l.err, l.failed = err, batch[0].Index
		// Whatever is still queued will never be written.
		l.queued = nil
	}
	if err != nil {
		err = l.err
	}
	l.changed.Broadcast()
	l.mu.Unlock()
	if err != nil {
		l.onFail(err)
	}
	return err
}

// firstPendingLocked is the lowest index not yet durable, or 0.
func (l *parallelLog) firstPendingLocked() uint64 {
	if len(l.writing) > 0 {
		return l.writing[0].Index
	}
	if len(l.queued) > 0 {
		return l.queued[0].Index
	}
	return 0
}

// waitDurable waits until every appended entry at or below index is on
// disk. It returns the write error if one happened.
func (l *parallelLog) waitDurable(index uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		if l.err != nil {
			return l.err
		}
		if f := l.firstPendingLocked(); f == 0 || f > index {
			return nil
		}
		l.changed.Wait()
	}
}

// pending counts the entries appended and not yet on disk.
func (l *parallelLog) pending() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.queued) + len(l.writing)
}

// durableBound caps index at the last entry known to be on disk.
func (l *parallelLog) durableBound(index uint64) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.firstPendingLocked()
	if l.err != nil {
		f = l.failed
	}
	if f != 0 && f <= index {
		return f - 1
	}
	return index
}

func (l *parallelLog) StoreLog(log *raft.Log) error { return l.StoreLogs([]*raft.Log{log}) }

// IsMonotonic passes on whether the store refuses gaps (raft-wal does):
// Raft then empties the log after installing a snapshot rather than
// leave entries before it that the next append would not follow.
func (l *parallelLog) IsMonotonic() bool {
	m, ok := l.store.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}

func (l *parallelLog) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	l.mu.Lock()
	switch {
	case l.err != nil:
		err := l.err
		l.mu.Unlock()
		return err
	case l.closed:
		l.mu.Unlock()
		return errLogClosed
	}
	async := l.async()
	if !async && len(l.queued) == 0 && len(l.writing) == 0 {
		// A follower's append with nothing ahead of it: write it here
		// rather than hand it to the writer goroutine and wait to be woken.
		// Why: the append is the follower's whole answer time, and the two
		// goroutine switches cost two thread wake-ups when the other
		// processor is idle. The writing slot keeps the writer out, so
		// order and the single-writer rule hold as before.
		l.writing = logs
		l.mu.Unlock()
		return l.write(logs)
	}
	l.queued = append(l.queued, logs...)
	l.changed.Broadcast()
	l.mu.Unlock()
	if async {
		return nil
	}
	return l.waitDurable(logs[len(logs)-1].Index)
}

// pendingLocked finds a queued or in-progress entry.
func (l *parallelLog) pendingLocked(index uint64) *raft.Log {
	for _, s := range [2][]*raft.Log{l.writing, l.queued} {
		if len(s) > 0 && index >= s[0].Index && index <= s[len(s)-1].Index {
			// Appends are contiguous within a queue; search to be safe.
			for _, e := range s {
				if e.Index == index {
					return e
				}
			}
		}
	}
	return nil
}

func (l *parallelLog) GetLog(index uint64, out *raft.Log) error {
	l.mu.Lock()
	if e := l.pendingLocked(index); e != nil {
		*out = *e
		l.mu.Unlock()
		return nil
	}
	l.mu.Unlock()
	return l.store.GetLog(index, out)
}

func (l *parallelLog) FirstIndex() (uint64, error) {
	first, err := l.store.FirstIndex()
	if err != nil || first != 0 {
		return first, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.firstPendingLocked(), nil
}

func (l *parallelLog) LastIndex() (uint64, error) {
	l.mu.Lock()
	var last uint64
	if n := len(l.queued); n > 0 {
		last = l.queued[n-1].Index
	} else if n := len(l.writing); n > 0 {
		last = l.writing[n-1].Index
	}
	l.mu.Unlock()
	if last != 0 {
		return last, nil
	}
	return l.store.LastIndex()
}

// DeleteRange first lets pending appends in the range reach the disk, so
// that a truncation (a follower dropping a conflicting suffix) is not
// undone by a write still in the queue. Compaction of old entries does not
// wait for newer appends.
func (l *parallelLog) DeleteRange(min, max uint64) error {
	if err := l.waitDurable(max); err != nil {
		return err
	}
	// The store itself serializes this with the writer's appends (bbolt
	// runs one write transaction at a time).
	return l.store.DeleteRange(min, max)
}

// Close writes what is queued and stops the writer. The store beneath
// stays open.
func (l *parallelLog) Close() error {
	l.mu.Lock()
	l.closed = true
	l.changed.Broadcast()
	l.mu.Unlock()
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}
