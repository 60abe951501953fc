package fsm

import (
	"cmp"
	"encoding/binary"
	"slices"
	"sync"

	"github.com/cespare/xxhash/v2"

	"github.com/memdbd/memdbd/store"
)

// Checkpoint is the state hash of the replicated state as of a revision
// every replica passes through: the state after every log entry up to
// and including Revision. Replicas compare their checkpoints to detect
// divergence (a damaged disk, memory or a bug) without stopping.
type Checkpoint struct {
	Revision uint64
	Hash     uint64
}

// keptCheckpoints bounds the checkpoints a state machine remembers, and
// maxHashing the hashes it computes at once.
const (
	keptCheckpoints = 16
	maxHashing      = 4
)

// checkpoints records the newest checkpoints; hashes are computed off the
// apply path.
type checkpoints struct {
	mu   sync.Mutex
	list []Checkpoint // oldest first
}

func (c *checkpoints) add(cp Checkpoint) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.list = append(c.list, cp)
	// Hashes finish in any order; the list stays in revision order.
	slices.SortFunc(c.list, func(a, b Checkpoint) int { return cmp.Compare(a.Revision, b.Revision) })
	if n := len(c.list); n > keptCheckpoints {
		c.list = append(c.list[:0:0], c.list[n-keptCheckpoints:]...)
	}
}

// Checkpoints returns the recorded checkpoints, oldest first.
func (f *FSM) Checkpoints() []Checkpoint {
	f.ckpts.mu.Lock()
	defer f.ckpts.mu.Unlock()
	return append([]Checkpoint(nil), f.ckpts.list...)
}

// checkpointAt reports the checkpoint revision the apply of an entry at
// index crosses, coming from last: the revision just before the first
// multiple of HashEvery in (last, index], or 0 when it crosses none.
//
// Why this point: not every index reaches the state machine (Raft keeps
// its no-op entries to itself), so "the state at index k" is taken as the
// state after every entry up to k, which every replica holds at the moment
// it applies the first entry after k: at that moment nothing it has not
// applied lies at or below k. A replica that skipped past the point by
// installing a snapshot records no checkpoint there.
func (f *FSM) checkpointAt(last, index uint64) uint64 {
	k := f.cfg.HashEvery
	if k == 0 || index/k == last/k || index < k {
		return 0
	}
	return index/k*k - 1
}

// recordCheckpoint captures the state as of rev, which the caller has just
// committed, and hashes it in the background: the view is an immutable
// copy, and the session table is encoded here, on the apply goroutine
// that owns it.
//
// At most maxHashing hashes run at once, each holding its view (and so
// the rows since replaced) in memory: beyond that (a large state and
// checkpoints close together), a checkpoint is skipped rather than
// letting hashes and the memory they pin pile up. The other replicas may
// record it; the ones after it are compared as usual.
func (f *FSM) recordCheckpoint(rev uint64) {
	select {
	case f.hashing <- struct{}{}:
	default:
		f.log.Debug("fsm: state checkpoint skipped: earlier hashes are still running", "revision", rev)
		return
	}
	view := f.store.View()
	_, sessions, err := encodeSessions(f.sessions)
	if err != nil {
		<-f.hashing
		f.log.Error("fsm: state checkpoint not recorded", "revision", rev, "err", err)
		return
	}
	members, err := f.members.Load().encode()
	if err == nil {
		var auth []byte
		if auth, err = f.auth.Load().encode(); err == nil {
			members = append(members, auth...)
		}
	}
	if err != nil {
		<-f.hashing
		f.log.Error("fsm: state checkpoint not recorded", "revision", rev, "err", err)
		return
	}
	f.ckptWG.Add(1)
	go func() {
		defer f.ckptWG.Done()
		f.ckpts.add(Checkpoint{Revision: rev, Hash: stateHash(view, members, sessions)})
		<-f.hashing
	}()
}

// stateHash is the XXH64 digest of a state: the store's content, the
// member registry followed by the access-control record (nothing for a
// cluster that never used access control, so that the hash is what it
// was before there was any) and the session table.
func stateHash(view *store.View, members []byte, sessions [][]byte) uint64 {
	h := xxhash.New()
	_, _ = h.Write(binary.BigEndian.AppendUint64(nil, view.Hash()))
	_, _ = h.Write(binary.AppendUvarint(nil, uint64(len(members))))
	_, _ = h.Write(members)
	for _, s := range sessions {
		_, _ = h.Write(binary.AppendUvarint(nil, uint64(len(s))))
		_, _ = h.Write(s)
	}
	return h.Sum64()
}
