package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/hashicorp/raft"

	"github.com/memdbd/memdbd/fsm"
)

// TakeSnapshot snapshots the state machine now and returns the snapshot's
// Raft index. With nothing new since the last snapshot it returns that
// one's index.
func (n *Node) TakeSnapshot(ctx context.Context) (uint64, error) {
	fut := n.raft.Snapshot()
	releaseAtShutdown(fut, n.raftDown)
	done := make(chan error, 1)
	go func() { done <- fut.Error() }()
	select {
	case err := <-done:
		if errors.Is(err, raft.ErrNothingNewToSnapshot) {
			idx, _, ok := n.LastSnapshot()
			if ok {
				return idx, nil
			}
		}
		if err != nil {
			return 0, fmt.Errorf("snapshot: %w", err)
		}
		meta, rc, err := fut.Open()
		if err != nil {
			return 0, err
		}
		_ = rc.Close()
		return meta.Index, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Backup takes a fresh snapshot (or reuses the newest when nothing is new)
// and opens it: a consistent copy of the whole state at one revision, in
// the checksummed snapshot format, taken without stopping writes.
func (n *Node) Backup(ctx context.Context) (*raft.SnapshotMeta, io.ReadCloser, error) {
	if _, err := n.TakeSnapshot(ctx); err != nil {
		return nil, nil, err
	}
	metas, err := n.snaps.List()
	if err != nil || len(metas) == 0 {
		return nil, nil, fmt.Errorf("no snapshot to back up: %v", err)
	}
	// The copy leaves out the access-control record (fsm.StripAuth), so
	// its size is known before it is made: the snapshot's, less that
	// record.
	_, probe, err := n.snaps.Open(metas[0].ID)
	if err != nil {
		return nil, nil, err
	}
	authBytes, err := fsm.AuthRecordBytes(probe)
	_ = probe.Close()
	if err != nil {
		return nil, nil, err
	}
	meta, rc, err := n.snaps.Open(metas[0].ID)
	if err != nil {
		return nil, nil, err
	}
	out := *meta
	out.Size -= authBytes
	pr, pw := io.Pipe()
	go func() {
		// Ends when the copy is done or the reader is closed (the write
		// then fails).
		defer rc.Close()
		pw.CloseWithError(fsm.StripAuth(rc, pw))
	}()
	return &out, pr, nil
}

// Seed prepares an empty data directory to start a new cluster from a
// backup: it checks the backup completely (checksum, framing, state hash)
// and writes it as the node's first snapshot, with the new cluster's
// members as its configuration. Every member of the new cluster is seeded
// from the same backup and then started with the same --initial-cluster.
// It returns the revision the cluster starts from.
func Seed(cfg Config, backup string) (uint64, error) {
	if len(cfg.InitialCluster) == 0 {
		return 0, errors.New("restore needs --initial-cluster: the members of the new cluster")
	}
	if err := cfg.Validate(); err != nil {
		return 0, err
	}
	if ents, err := os.ReadDir(cfg.DataDir); err == nil && len(ents) > 0 {
		return 0, fmt.Errorf("data dir %s is not empty; restore seeds a new node only", cfg.DataDir)
	}
	// 1. Verify: restore into a scratch state machine.
	f, err := os.Open(backup)
	if err != nil {
		return 0, err
	}
	fcfg := cfg.FSM
	fcfg.Logger = cfg.Logger
	check, err := fsm.New(fcfg)
	if err != nil {
		f.Close()
		return 0, err
	}
	if err := check.Restore(f); err != nil {
		return 0, fmt.Errorf("backup %s is not usable: %w", backup, err)
	}
	rev := check.Store().View().Revision()
	if rev == 0 {
		rev = 1
	}
	// 2. Write it as the first snapshot, with the new configuration.
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return 0, err
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, cfg.RetainSnapshots, newHclog(cfg.Logger, "snapshots"))
	if err != nil {
		return 0, err
	}
	var servers []raft.Server
	for _, p := range cfg.InitialCluster {
		servers = append(servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.RaftAddr), Suffrage: raft.Voter})
	}
	// Create encodes the legacy peer list through a transport; any will do.
	_, trans := raft.NewInmemTransport(raft.ServerAddress(cfg.raftAdvertise()))
	sink, err := snaps.Create(raft.SnapshotVersionMax, rev, 1, raft.Configuration{Servers: servers}, rev, trans)
	if err != nil {
		return 0, err
	}
	// The backup's member registry describes the old cluster (its
	// addresses, its bootstrap token): the new members register afresh.
	check.ResetMembers()
	check.ResetAuth()
	snap, err := check.Snapshot()
	if err != nil {
		_ = sink.Cancel()
		return 0, err
	}
	if err := snap.Persist(sink); err != nil {
		return 0, fmt.Errorf("writing the seed snapshot: %w", err)
	}
	snap.Release()
	// 3. The identity, as a bootstrapped node of this cluster would have.
	logStore := cfg.LogStore
	if logStore == "" {
		logStore = LogStoreWAL
	}
	if _, err := checkIdentity(cfg.DataDir, cfg.ID, clusterToken(cfg.InitialCluster), true, logStore); err != nil {
		return 0, err
	}
	return rev, nil
}
