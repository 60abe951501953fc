package node

import (
	"fmt"

	"github.com/hashicorp/raft"
)

// usableSnapshots is the snapshot store as Raft sees it: it lists only the
// snapshots Raft could start from, given where the log begins.
//
// Why: at start hashicorp/raft restores the newest snapshot that opens and
// restores, falling back to older ones, then replays the log from the
// snapshot on. When the newest snapshot is damaged (a failed checksum) and
// the log was compacted past the older ones, the fallback leaves a gap
// between the snapshot and the log: the library panics on the missing
// entry. With no snapshot at all and a compacted log, it replays the log
// onto an empty state machine until it meets the same gap. Listing only
// snapshots from which the log continues turns both into a clear refusal
// to start ("failed to load any existing snapshots", or the error below)
// instead of a panic, and never lets a start from an incomplete history
// through.
type usableSnapshots struct {
	raft.SnapshotStore
	logs raft.LogStore
}

// errLogGap: no snapshot on disk reaches the start of the log.
type errLogGap struct {
	first   uint64 // the log's first index
	newest  uint64 // the newest snapshot's index, 0 for none
	entries int    // snapshots on disk
}

func (e *errLogGap) Error() string {
	if e.entries == 0 {
		return fmt.Sprintf("the Raft log starts at index %d but there is no snapshot for the entries before it: "+
			"this data directory cannot be recovered on its own (a snapshot file was lost); "+
			"remove the member, empty its data directory and add it back (docs/operations.md)", e.first)
	}
	return fmt.Sprintf("the Raft log starts at index %d, after the newest snapshot (index %d): "+
		"this data directory cannot be recovered on its own; remove the member, empty its data directory "+
		"and add it back (docs/operations.md)", e.first, e.newest)
}

func (s *usableSnapshots) List() ([]*raft.SnapshotMeta, error) {
	metas, err := s.SnapshotStore.List()
	if err != nil {
		return nil, err
	}
	first, err := s.logs.FirstIndex()
	if err != nil {
		return nil, err
	}
	if first <= 1 {
		// The log is empty or starts at the beginning: any snapshot, or
		// none, leaves no gap.
		return metas, nil
	}
	usable := make([]*raft.SnapshotMeta, 0, len(metas))
	for _, m := range metas {
		if m.Index+1 >= first {
			usable = append(usable, m)
		}
	}
	if len(usable) == 0 {
		e := &errLogGap{first: first, entries: len(metas)}
		if len(metas) > 0 {
			e.newest = metas[0].Index
		}
		return nil, e
	}
	return usable, nil
}
