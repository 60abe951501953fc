package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	"github.com/memdbd/memdbd/fsm"
	"github.com/memdbd/memdbd/internal/rounds"
	"github.com/memdbd/memdbd/watch"
)

// Node is one running cluster member.
type Node struct {
	cfg  Config
	log  *slog.Logger
	fsm  *fsm.FSM
	raft *raft.Raft
	bolt *raftboltdb.BoltStore
	// wal is the Raft log when the data directory keeps it in the WAL
	// (logKind); nil with raft-boltdb, where bolt holds the log too.
	wal     *walStore
	logKind string
	// stable is bolt as Raft's stable store, safe to close (stable.go).
	stable *closingStable
	// plog is the log store with the leader's parallel append
	// (logstore.go); nil when Config.ParallelAppend is off.
	plog  *parallelLog
	trans *raft.NetworkTransport
	peers *peerMux // the Raft port's stream layer; PeerListener, DialPeer
	snaps *raft.FileSnapshotStore
	token []byte

	// confirm confirms leadership in rounds shared by concurrent reads.
	confirm *rounds.Group[uint64]
	pending chan struct{} // semaphore: writes proposed and not yet done

	// readyTerm is the term in which this node, as leader, applied its
	// first entry; linearizable reads need readyTerm == current term.
	readyTerm atomic.Uint64
	readyMu   sync.Mutex
	readyCh   chan struct{} // closed when readyTerm changes
	// leadershipRounds counts rounds confirming leadership (confirmRound) for
	// read indexes; readShortcuts the read indexes given without one
	// (ReadIndexFor).
	leadershipRounds, readShortcuts atomic.Uint64

	// lease lets the leader skip the round (lease.go); leaseReads counts
	// the read indexes it gave under one, leaseProbes the rounds of probes.
	lease                   leases
	leaseReads, leaseProbes atomic.Uint64

	// watches receives every applied change; watch streams read from it.
	watches *watch.Hub

	notifyCh chan bool
	hadState bool
	stop     chan struct{}
	raftDown chan struct{} // closed once Raft has shut down (releaseAtShutdown)
	wg       sync.WaitGroup
	closed   atomic.Bool
}

// testWrapLogStore, when set (by tests only), wraps each node's log store,
// to stand in for a slow disk.
var testWrapLogStore func(id string, s raft.LogStore) raft.LogStore

// Open starts a node: it opens (or creates) the data directory, starts
// Raft, and bootstraps a new cluster when the directory is new and an
// initial cluster is given. A node with neither data nor an initial cluster
// waits to be added to a cluster (see the server's Join).
func Open(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.Default()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data dir: %w", err)
	}
	wcfg := cfg.Watch
	wcfg.Logger = lg.With("component", "watch")
	hub, err := watch.NewHub(wcfg, 0)
	if err != nil {
		return nil, err
	}
	fcfg := cfg.FSM
	fcfg.Logger = lg.With("component", "fsm")
	fcfg.Changes = hub
	f, err := fsm.New(fcfg)
	if err != nil {
		hub.Close()
		return nil, err
	}
	n := &Node{cfg: cfg, log: lg, fsm: f, watches: hub, pending: make(chan struct{}, cfg.MaxPendingWrites),
		readyCh: make(chan struct{}), notifyCh: make(chan bool, 16), stop: make(chan struct{}),
		raftDown: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			n.closeStores()
			hub.Close()
		}
	}()

	// 1. The log and the stable store. The stable store (term, vote) is
	// always raft-boltdb (raft.db); the log is the WAL (wal/) or, for
	// directories created with it, raft-boltdb too (logkind.go).
	kind, err := chooseLogStore(cfg.DataDir, cfg.LogStore)
	if err != nil {
		return nil, err
	}
	n.logKind = kind
	//
	// The free-page list is not written on every commit (NoFreelistSync) and
	// is kept as a hash map: an append then writes only the pages it
	// changed plus the meta page, and the raft loop, which waits for this
	// commit before it sends anything to followers, gets to the next batch
	// sooner. The price is a scan of the file on open to rebuild the list,
	// bounded because the log is truncated after every snapshot. etcd runs
	// its bbolt backend the same way.
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	n.bolt, err = raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.DataDir, "raft.db"),
		BoltOptions: &bbolt.Options{Timeout: time.Second, NoFreelistSync: true, FreelistType: bbolt.FreelistMapType}})
	if err != nil {
		return nil, fmt.Errorf("opening raft log %s: %w", filepath.Join(cfg.DataDir, "raft.db"), err)
	}
	var store raft.LogStore = n.bolt
	if kind == LogStoreWAL {
		if n.wal, err = openWAL(cfg.DataDir, lg); err != nil {
			return nil, err
		}
		store = n.wal
	}
	if testWrapLogStore != nil {
		store = testWrapLogStore(cfg.ID, store)
	}
	var raftp atomic.Pointer[raft.Raft]
	if cfg.ParallelAppend {
		n.plog = newParallelLog(store, func() bool {
			r := raftp.Load()
			return r != nil && r.State() == raft.Leader
		}, func(err error) {
			// As hashicorp/raft does when its log fails: what reached the
			// disk is unknown, so the process must not go on.
			lg.Error("raft log write failed; stopping", "err", err)
			panic(fmt.Sprintf("raft log write failed: %v", err))
		})
		store = n.plog
	}
	logs, err := raft.NewLogCache(1024, store)
	if err != nil {
		return nil, err
	}
	// 2. Snapshots: files under DataDir/snapshots, a few kept, each checked
	// as it is written (snapstore.go).
	if err := removeTempSnapshots(cfg.DataDir, lg); err != nil {
		return nil, err
	}
	n.snaps, err = raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, cfg.RetainSnapshots, newHclog(lg, "snapshots"))
	if err != nil {
		return nil, fmt.Errorf("opening snapshot store: %w", err)
	}
	checked := newCheckedSnapshots(n.snaps, cfg.DataDir, lg.With("component", "snapshots"))
	// 3. Identity: refuse a data dir of another node or cluster.
	n.stable = &closingStable{StableStore: n.bolt}
	hasState, err := raft.HasExistingState(logs, n.stable, n.snaps)
	if err != nil {
		return nil, err
	}
	if len(cfg.InitialCluster) > 0 {
		n.token = clusterToken(cfg.InitialCluster)
	}
	idt, err := checkIdentity(cfg.DataDir, cfg.ID, n.token, !hasState, kind)
	if err != nil {
		return nil, err
	}
	if n.token == nil {
		n.token = idt.ClusterToken
	}
	n.hadState = hasState
	if err := waitOutPromises(cfg, lg); err != nil {
		return nil, fmt.Errorf("read lease: %w", err)
	}
	// 4. The transport, on its own port.
	adv, err := net.ResolveTCPAddr("tcp", cfg.raftAdvertise())
	if err != nil {
		return nil, fmt.Errorf("raft advertise address %q: %w", cfg.raftAdvertise(), err)
	}
	stream, err := newStreamLayer(cfg.RaftBind, adv, cfg.RaftSourceAddr, cfg.RaftTLS)
	if err != nil {
		return nil, fmt.Errorf("raft transport on %s: %w", cfg.RaftBind, err)
	}
	// The port also carries the members' peer service (mux.go).
	n.peers = newPeerMux(stream, lg, firstByteTimeout)
	nt := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: n.peers, MaxPool: 3, Timeout: 10 * time.Second, Logger: newHclog(lg, "transport"),
	})
	n.trans = nt
	var rtrans raft.Transport = nt // what Raft sends through
	if n.plog != nil {
		rtrans = &commitCapTransport{NetworkTransport: nt, log: n.plog}
	}
	// 5. Raft itself.
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.MaxAppendEntries = cfg.MaxAppendEntries
	// The apply channel stays unbuffered (BatchApplyCh off). Concurrent
	// writes are batched into one log append either way: the leader loop
	// takes every Apply blocked on the channel, up to MaxAppendEntries,
	// before it dispatches (no difference in alternating 64-writer runs).
	// Unbuffered, Apply's timeout bounds the wait for the leader loop, and
	// no entry waits in a queue Raft abandons when it shuts down.
	rc.BatchApplyCh = false
	// Replication timings only in their labelled form: the legacy copy with
	// the peer's id in the metric name doubles the cost of each sample.
	rc.NoLegacyTelemetry = true
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.TrailingLogs = cfg.TrailingLogs
	rc.NotifyCh = n.notifyCh
	rc.Logger = newHclog(lg, "raft")
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("raft config: %w", err)
	}
	var rfsm raft.BatchingFSM = f
	if n.plog != nil {
		rfsm = gatedFSM{FSM: f, log: n.plog}
	}
	n.raft, err = raft.NewRaft(rc, snapshotFSM{BatchingFSM: rfsm, snaps: checked}, logs, n.stable,
		&usableSnapshots{SnapshotStore: checked, logs: logs}, rtrans)
	if err != nil {
		// The library's words when every snapshot it was offered failed
		// to open or restore; usableSnapshots offered only those the log
		// continues from.
		if strings.Contains(err.Error(), "failed to load any existing snapshots") {
			return nil, fmt.Errorf("starting raft: %w (the log above says why each failed), and the Raft log does not reach back "+
				"before them: this data directory cannot be recovered on its own; remove the member, empty its data directory "+
				"and add it back (docs/operations.md, damaged data)", err)
		}
		return nil, fmt.Errorf("starting raft: %w", err)
	}
	raftp.Store(n.raft)
	// A round asks the other voters with a deadline (confirmRound).
	n.confirm = &rounds.Group[uint64]{WG: &n.wg, Do: n.confirmRound}
	// 6. Bootstrap a new cluster, once.
	switch {
	case !hasState && len(cfg.InitialCluster) > 0:
		var servers []raft.Server
		for _, p := range cfg.InitialCluster {
			servers = append(servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.RaftAddr), Suffrage: raft.Voter})
		}
		if err := n.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			_ = n.raft.Shutdown().Error()
			return nil, fmt.Errorf("bootstrapping: %w", err)
		}
		lg.Info("bootstrapped a new cluster", "members", len(servers))
	case hasState:
		lg.Info("restarted on existing data", "data_dir", cfg.DataDir)
	default:
		lg.Info("no data and no initial cluster: waiting to be added to a cluster")
	}
	n.wg.Add(3)
	if cfg.ReadLease {
		n.wg.Add(1)
		go n.everyWhileLeader(cfg.HeartbeatTimeout/5, n.renewLease)
	}
	go n.watchLeadership()
	go n.everyWhileLeader(cfg.TickInterval, n.tick)
	go n.everyWhileLeader(cfg.ExpireInterval, n.expireDue)
	ok = true
	return n, nil
}

// FSM returns the state machine.
func (n *Node) FSM() *fsm.FSM { return n.fsm }

// ID returns the node id.
func (n *Node) ID() string { return n.cfg.ID }

// ClusterToken returns the digest of the initial member list this node
// bootstrapped with, or nil.
func (n *Node) ClusterToken() []byte { return n.token }

// Config returns the node's configuration.
func (n *Node) Config() Config { return n.cfg }

func (n *Node) closeStores() {
	if n.trans != nil {
		_ = n.trans.Close()
	}
	if n.plog != nil {
		// Raft has stopped: write what the leader still had queued.
		if err := n.plog.Close(); err != nil {
			n.log.Error("closing the raft log", "err", err)
		}
	}
	if n.stable != nil {
		n.stable.close(func() { _ = n.bolt.Close() })
	} else if n.bolt != nil {
		_ = n.bolt.Close() // Open failed before Raft saw the store
	}
	if n.wal != nil {
		if err := n.wal.Close(); err != nil {
			n.log.Error("closing the raft log", "err", err)
		}
	}
}

// watchLeadership reacts to leadership changes: a new leader applies a
// tick of its term (readiness) and registers itself.
func (n *Node) watchLeadership() {
	defer n.wg.Done()
	for {
		select {
		case <-n.stop:
			return
		case isLeader := <-n.notifyCh:
			term := n.raft.CurrentTerm()
			if !isLeader {
				n.log.Info("lost leadership", "term", term)
				continue
			}
			n.log.Info("became leader", "term", term)
			n.becomeReady(term)
		}
	}
}

// becomeReady applies an entry of the new term and, once applied, marks
// the node ready for linearizable reads in that term.
func (n *Node) becomeReady(term uint64) {
	for attempt := 0; ; attempt++ {
		if n.raft.State() != raft.Leader || n.raft.CurrentTerm() != term {
			return
		}
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 4*n.cfg.ElectionTimeout)
		_, err := n.Apply(ctx, &cmdpb.Envelope{Command: &cmdpb.Envelope_Tick{Tick: &cmdpb.Tick{}}})
		cancel()
		if err == nil {
			if n.raft.CurrentTerm() == term {
				n.setReady(term)
				n.log.Info("leader ready", "term", term, "took", time.Since(start))
				n.registerSelf(term)
			}
			return
		}
		n.log.Warn("leader could not apply its first entry", "term", term, "attempt", attempt, "err", err)
		select {
		case <-n.stop:
			return
		case <-time.After(n.cfg.HeartbeatTimeout / 4):
		}
	}
}

// registerSelf records this leader's client address in the cluster, so
// that followers can forward to it. Followers register through the
// server, which forwards to the leader.
func (n *Node) registerSelf(term uint64) {
	if n.Registered() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*n.cfg.ElectionTimeout)
	defer cancel()
	res, err := n.Apply(ctx, n.RegistrationCommand())
	if err == nil {
		err = fsm.ResultError(res)
	}
	if err != nil {
		n.log.Error("member registration failed", "term", term, "err", err)
	}
}

// RegistrationCommand returns the command that registers this node.
func (n *Node) RegistrationCommand() *cmdpb.Envelope {
	return &cmdpb.Envelope{Command: &cmdpb.Envelope_RegisterMember{RegisterMember: &cmdpb.RegisterMember{
		NodeId: n.cfg.ID, ClientAddr: n.cfg.ClientAdvertise, RaftAddr: n.cfg.raftAdvertise(),
		ClusterToken: n.token, Version: n.cfg.Version, MaxCommandVersion: fsm.MaxCommandVersion,
	}}}
}

// Registered reports whether the cluster knows this node's current
// addresses.
func (n *Node) Registered() bool {
	m, ok := n.fsm.Member(n.cfg.ID)
	return ok && m.ClientAddr == n.cfg.ClientAdvertise && m.Version == n.cfg.Version && m.MaxCommandVersion == fsm.MaxCommandVersion
}

// FeatureLevel is the highest command format every member applies: the
// lowest MaxCommandVersion among the voters and the registered non-voters,
// 0 while a voter has not registered. A command format newer than this
// must not be proposed. Non-voters count once registered, so that a read
// replica left on an older version is not halted by the newer format;
// one that has not registered yet (it just joined) does not hold the
// level back.
func (n *Node) FeatureLevel() uint32 {
	f := n.raft.GetConfiguration() // answered from a copy, without the Raft loop
	if f.Error() != nil {
		return 0
	}
	_, level := n.voterAndLevel(f.Configuration().Servers)
	return level
}

// voterAndLevel derives this node's suffrage and the feature level from a
// configuration.
func (n *Node) voterAndLevel(servers []raft.Server) (voter bool, level uint32) {
	first := true
	for _, s := range servers {
		if string(s.ID) == n.cfg.ID {
			voter = s.Suffrage == raft.Voter
		}
		m, ok := n.fsm.Member(string(s.ID))
		switch {
		case !ok && s.Suffrage != raft.Voter: // a non-voter not registered yet
		case !ok:
			level, first = 0, false
		case first || m.MaxCommandVersion < level:
			level, first = m.MaxCommandVersion, false
		}
	}
	return voter, level
}

func (n *Node) setReady(term uint64) {
	n.readyMu.Lock()
	n.readyTerm.Store(term)
	close(n.readyCh)
	n.readyCh = make(chan struct{})
	n.readyMu.Unlock()
}

// everyWhileLeader calls fn every interval while this node leads, until
// the node closes (the tick, the expiry sweep, read-lease renewal).
func (n *Node) everyWhileLeader(interval time.Duration, fn func()) {
	defer n.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		if n.raft.State() == raft.Leader {
			fn()
		}
	}
}

// tick appends a tick, so that log time advances (session expiry) when
// there are no writes.
func (n *Node) tick() {
	ctx, cancel := context.WithTimeout(context.Background(), 4*n.cfg.ElectionTimeout)
	defer cancel()
	if _, err := n.Apply(ctx, &cmdpb.Envelope{Command: &cmdpb.Envelope_Tick{Tick: &cmdpb.Tick{}}}); err != nil {
		n.log.Debug("tick failed", "err", err)
	}
}

// IsLeader reports whether this node believes it is the leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the known leader's id and client address ("" if not
// registered yet); empty id when no leader is known.
func (n *Node) Leader() (id, clientAddr string) {
	_, lid := n.raft.LeaderWithID()
	if lid == "" {
		return "", ""
	}
	m, _ := n.fsm.Member(string(lid))
	return string(lid), m.ClientAddr
}

func (n *Node) notLeader() error {
	id, addr := n.Leader()
	return &NotLeaderError{LeaderID: id, LeaderAddr: addr}
}

// Apply proposes a command and waits for its result. Only the leader may
// propose; others get a *NotLeaderError. The context's deadline bounds the
// wait: past it the outcome is unknown (ErrOutcomeUnknown), and a retry
// with the same session sequence is safe.
func (n *Node) Apply(ctx context.Context, env *cmdpb.Envelope) (*cmdpb.Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if n.closed.Load() {
		return nil, ErrShutdown
	}
	if n.raft.State() != raft.Leader {
		return nil, n.notLeader()
	}
	// The feature level costs a copy of the configuration: asked only of
	// commands whose format depends on it.
	var lvl uint32
	if v := fsm.RequiredVersion(env); v > 1 || env.Session != nil {
		lvl = n.FeatureLevel()
		switch {
		case v <= 1: // any level applies it; the level only picks the session rules (fsm.Encode)
		case lvl == 0:
			return nil, fmt.Errorf("%w: this command needs command format %d and a voter has not registered its own yet; retry shortly", ErrLevelUnknown, v)
		case v > lvl:
			return nil, fmt.Errorf("%w: this command needs every voter to apply command format %d; the cluster's feature level is %d (finish the rolling upgrade first)",
				ErrFeatureLevel, v, lvl)
		}
	}
	select {
	case n.pending <- struct{}{}:
	default:
		return nil, fmt.Errorf("%w: %d writes pending", ErrOverloaded, cap(n.pending))
	}
	data, err := fsm.Encode(env, time.Now(), lvl)
	if err != nil {
		<-n.pending
		return nil, err
	}
	timeout := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	fut := n.raft.Apply(data, timeout)
	releaseAtShutdown(fut, n.raftDown)
	type outcome struct {
		res interface{}
		err error
	}
	done := make(chan outcome, 1)
	// The future has no context; a goroutine waits for it so that the caller
	// can leave at its deadline. Raft resolves every future within the
	// leader lease (or at shutdown), which bounds the goroutine.
	go func() {
		err := fut.Error()
		var res interface{}
		if err == nil {
			res = fut.Response()
		}
		<-n.pending
		done <- outcome{res, err}
	}()
	select {
	case o := <-done:
		if o.err != nil {
			return nil, n.mapApplyError(o.err)
		}
		res, ok := o.res.(*cmdpb.Result)
		if !ok {
			return nil, fmt.Errorf("state machine returned %T", o.res)
		}
		return res, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %v", ErrOutcomeUnknown, ctx.Err())
	}
}

func (n *Node) mapApplyError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		// Not appended: certainly not applied.
		return n.notLeader()
	case errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("%w: leadership lost while the write was in flight: %w", ErrOutcomeUnknown, n.notLeader())
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("%w: the log did not accept the write in time", ErrOverloaded)
	case errors.Is(err, raft.ErrRaftShutdown):
		// Raft shut down with the entry queued or in flight: it may have
		// been committed.
		return fmt.Errorf("%w: the node shut down with the write in flight: %w", ErrOutcomeUnknown, ErrShutdown)
	}
	return err
}

// ReadIndex returns the index a linearizable read must observe: the commit
// index at the time of the call, once a lease or a round of questions to
// the other voters (lease.go, confirmRound) confirmed this node still
// leads. Leader only.
func (n *Node) ReadIndex(ctx context.Context) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := n.waitReady(ctx); err != nil {
		return 0, err
	}
	term := n.raft.CurrentTerm()
	idx := n.raft.CommitIndex()
	if n.plog != nil {
		// An entry committed but not yet on this leader's disk is not
		// visible anywhere yet (logstore.go); a read need not wait for it.
		idx = n.plog.durableBound(idx)
	}
	if n.cfg.ReadLease && n.leaseHeld() {
		n.leaseReads.Add(1)
		return idx, nil
	}
	confirmed, err := n.confirm.Get(ctx)
	if err != nil {
		return 0, err
	}
	if confirmed != term || n.readyTerm.Load() != term {
		// Re-elected in between: another leader may have acknowledged
		// writes in a term between the two, which idx does not cover.
		return 0, fmt.Errorf("%w: this node's term changed from %d to %d during the read", ErrNoLeader, term, confirmed)
	}
	return idx, nil
}

// ReadIndexFor is ReadIndex for reads that arrived at follower from, which
// asked in its Raft term term (read after those reads arrived).
//
// Why no round of heartbeats when this leader and that follower make a
// majority of the latest configuration's voters (every cluster of three or
// fewer voters), and the follower asked in this leader's current term: the
// request itself is the follower's acknowledgement of this term, given
// after the reads arrived. A round proves exactly that: a majority (the
// leader and one follower) was in this leader's term after the reads
// arrived, so neither had voted in a later election and no later leader
// could have acknowledged a write before the reads. The follower's term
// goes up before it votes in a later term (hashicorp/raft raises it and
// persists it before answering a vote request), and this leader's term is
// read on both sides of its state, so the checks cannot pass for a term
// either node had already left. Anything else (an older or newer term, a
// bigger cluster, a follower not among the voters) takes the round.
//
// This halves the work of a linearizable read served by a follower (one
// RPC to the leader instead of that plus a heartbeat to each follower) and
// takes a round trip off its latency.
func (n *Node) ReadIndexFor(ctx context.Context, from string, term uint64) (uint64, error) {
	if term == 0 || !n.majorityWith(from) {
		return n.ReadIndex(ctx)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := n.waitReady(ctx); err != nil {
		return 0, err
	}
	before := n.raft.CurrentTerm()
	idx := n.raft.CommitIndex()
	if n.plog != nil {
		idx = n.plog.durableBound(idx)
	}
	// readyTerm too: waitReady's term, not a later one it may have been
	// re-elected in since.
	if before != term || n.readyTerm.Load() != term || n.raft.State() != raft.Leader || n.raft.CurrentTerm() != term {
		return n.ReadIndex(ctx)
	}
	n.readShortcuts.Add(1)
	return idx, nil
}

// majorityWith reports whether this node and member id, both voters, are a
// majority of the latest configuration's voters.
func (n *Node) majorityWith(id string) bool {
	if id == "" || id == n.cfg.ID {
		return false
	}
	voters, self, peer := 0, false, false
	for _, s := range n.raft.GetConfiguration().Configuration().Servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		voters++
		switch string(s.ID) {
		case n.cfg.ID:
			self = true
		case id:
			peer = true
		}
	}
	return self && peer && 2 >= voters/2+1
}

// ReadIndexCounts returns how many rounds (confirmRound) this node ran to
// confirm its leadership for read indexes, and how many read indexes it
// gave followers without one (ReadIndexFor).
func (n *Node) ReadIndexCounts() (rounds, shortcuts uint64) {
	return n.leadershipRounds.Load(), n.readShortcuts.Load()
}

// waitReady waits until this leader has applied an entry of its term.
func (n *Node) waitReady(ctx context.Context) error {
	for {
		if n.raft.State() != raft.Leader {
			return n.notLeader()
		}
		n.readyMu.Lock()
		ch := n.readyCh
		ready := n.readyTerm.Load() == n.raft.CurrentTerm()
		n.readyMu.Unlock()
		if ready {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%w: %v", ErrNotReady, ctx.Err())
		case <-time.After(n.cfg.HeartbeatTimeout):
			// Re-check: leadership may have been lost without a new term yet.
		}
	}
}

// WaitApplied waits until the state machine has applied index.
func (n *Node) WaitApplied(ctx context.Context, index uint64) error {
	for {
		if n.fsm.Applied() >= index {
			return nil
		}
		ch := n.fsm.AppliedCh()
		if n.fsm.Applied() >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-n.stop:
			return ErrShutdown
		}
	}
}

// LastContact returns how long ago this node heard from a leader; zero
// for the leader itself.
func (n *Node) LastContact() time.Duration {
	if n.raft.State() == raft.Leader {
		return 0
	}
	lc := n.raft.LastContact()
	if lc.IsZero() {
		return time.Duration(1<<63 - 1)
	}
	return time.Since(lc)
}

// AddVoter adds a voting member (leader only).
func (n *Node) AddVoter(ctx context.Context, id, raftAddr string) error {
	if n.raft.State() != raft.Leader {
		return n.notLeader()
	}
	timeout := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	start := time.Now()
	if err := n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, timeout).Error(); err != nil {
		return n.mapApplyError(err)
	}
	n.log.Info("voter added", "id", id, "raft_addr", raftAddr, "took", time.Since(start))
	return nil
}

// Status is what a node knows about itself and the cluster.
type Status struct {
	ID           string
	State        string
	Term         uint64
	LeaderID     string
	LeaderAddr   string
	CommitIndex  uint64
	AppliedIndex uint64
	LastContact  time.Duration
	Servers      []raft.Server
	// Voter: this node votes in the configuration it knows.
	Voter bool
	// FeatureLevel: see Node.FeatureLevel.
	FeatureLevel uint32
	// LogPending: entries this node appended as leader that are not on its
	// disk yet (logstore.go); applied and acknowledged once they are.
	LogPending int
}

// Status reports the node's Raft state.
func (n *Node) Status() Status {
	lid, laddr := n.Leader()
	st := Status{ID: n.cfg.ID, State: n.raft.State().String(), Term: n.raft.CurrentTerm(), LeaderID: lid, LeaderAddr: laddr,
		CommitIndex: n.raft.CommitIndex(), AppliedIndex: n.fsm.Applied(), LastContact: n.LastContact()}
	if n.plog != nil {
		st.LogPending = n.plog.pending()
	}
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		st.Servers = f.Configuration().Servers
	}
	st.Voter, st.FeatureLevel = n.voterAndLevel(st.Servers)
	return st
}

// HadState reports whether the node started on a data directory that
// already held Raft state.
func (n *Node) HadState() bool { return n.hadState }

// TransferLeadership hands leadership to the most up-to-date follower, if
// this node leads a cluster of more than one voter. Bounded by ctx.
func (n *Node) TransferLeadership(ctx context.Context) error {
	if n.raft.State() != raft.Leader || len(n.Status().Servers) < 2 {
		return nil
	}
	start := time.Now()
	n.stopLeases()
	fut := n.raft.LeadershipTransfer()
	releaseAtShutdown(fut, n.raftDown)
	done := make(chan error, 1)
	go func() { done <- fut.Error() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("leadership transfer: %w", err)
		}
		n.log.Info("leadership transferred", "took", time.Since(start))
		return nil
	case <-ctx.Done():
		return fmt.Errorf("leadership transfer did not finish in time: %w", ctx.Err())
	}
}

// Close stops the node: a leader first hands leadership to the most
// up-to-date follower (bounded by ctx), then Raft and the stores close.
func (n *Node) Close(ctx context.Context) error {
	if !n.closed.CompareAndSwap(false, true) {
		return nil
	}
	if err := n.TransferLeadership(ctx); err != nil {
		n.log.Warn("closing without a leadership transfer", "err", err)
	}
	close(n.stop)
	err := n.raft.Shutdown().Error()
	// Raft has answered every request it will answer; release the waiters
	// of the rest (releaseAtShutdown).
	close(n.raftDown)
	n.wg.Wait()
	n.closeStores()
	n.watches.Close()
	return err
}

// Watches returns the hub watch streams are served from.
func (n *Node) Watches() *watch.Hub { return n.watches }

// Now returns the time reads hide expired rows at: this node's clock, but
// never earlier than the log time it has applied (a node whose clock is
// behind the leader's still hides what the log already treats as expired).
func (n *Node) Now() int64 { return max(time.Now().UnixNano(), n.fsm.LogTime()) }

// expireBatch bounds the keys of one Expire command.
const expireBatch = 1000

// expireDue proposes the deletion of expired rows, in batches (the
// leader calls it every ExpireInterval). Expiry is decided here, by the
// leader's clock, and carried out by the log: replicas never delete on
// their own clocks, so every replica deletes the same rows at the same
// revision.
func (n *Node) expireDue() {
	// A bounded number of rounds per call keeps a mass expiry from
	// starving shutdown; the rest waits for the next call.
	for range 10 {
		exp := n.fsm.Store().View().Expired(n.Now(), expireBatch)
		if len(exp) == 0 {
			return
		}
		for table, keys := range exp {
			bkeys := make([][]byte, len(keys))
			for i, k := range keys {
				bkeys[i] = []byte(k)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 4*n.cfg.ElectionTimeout)
			res, err := n.Apply(ctx, &cmdpb.Envelope{Command: &cmdpb.Envelope_Expire{Expire: &cmdpb.Expire{Table: table, Keys: bkeys}}})
			cancel()
			if err == nil {
				err = fsm.ResultError(res)
			}
			if err != nil {
				n.log.Debug("expiring rows failed; will retry", "table", table, "rows", len(keys), "err", err)
				return
			}
		}
	}
}

// Term returns the current Raft term; cheap.
func (n *Node) Term() uint64 { return n.raft.CurrentTerm() }

// TransferLeadershipTo hands leadership to the named member (or to the
// most up-to-date follower when id is empty). Leader only; bounded by ctx.
func (n *Node) TransferLeadershipTo(ctx context.Context, id string) error {
	if n.raft.State() != raft.Leader {
		return n.notLeader()
	}
	var fut raft.Future
	if id == "" {
		n.stopLeases()
		fut = n.raft.LeadershipTransfer()
	} else {
		var addr raft.ServerAddress
		for _, s := range n.Status().Servers {
			if string(s.ID) == id {
				addr = s.Address
			}
		}
		if addr == "" {
			return fmt.Errorf("%w: no member %q", errUnknownMember, id)
		}
		n.stopLeases()
		fut = n.raft.LeadershipTransferToServer(raft.ServerID(id), addr)
	}
	releaseAtShutdown(fut, n.raftDown)
	done := make(chan error, 1)
	go func() { done <- fut.Error() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("leadership transfer: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("leadership transfer did not finish in time: %w", ctx.Err())
	}
}

// AddNonvoter adds a non-voting member, which replicates the log and
// serves stale reads but does not count for quorum (leader only).
func (n *Node) AddNonvoter(ctx context.Context, id, raftAddr string) error {
	if n.raft.State() != raft.Leader {
		return n.notLeader()
	}
	start := time.Now()
	if err := n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, timeoutOf(ctx)).Error(); err != nil {
		return n.mapApplyError(err)
	}
	n.log.Info("non-voting member added", "id", id, "raft_addr", raftAddr, "took", time.Since(start))
	return nil
}

// RemoveMember removes a member from the configuration (leader only).
func (n *Node) RemoveMember(ctx context.Context, id string) error {
	if n.raft.State() != raft.Leader {
		return n.notLeader()
	}
	start := time.Now()
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, timeoutOf(ctx)).Error(); err != nil {
		return n.mapApplyError(err)
	}
	n.log.Info("member removed", "id", id, "took", time.Since(start))
	return nil
}

func timeoutOf(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return time.Until(dl)
	}
	return 10 * time.Second
}

// Voter reports whether this node is a voter in the configuration it
// knows.
func (n *Node) Voter() bool { return n.Status().Voter }

// LastSnapshot returns the index and creation time of the newest snapshot
// on disk.
func (n *Node) LastSnapshot() (uint64, time.Time, bool) {
	idx, at, _, ok := n.LastSnapshotInfo()
	return idx, at, ok
}

// LastSnapshotInfo is LastSnapshot with the snapshot's size in bytes.
func (n *Node) LastSnapshotInfo() (uint64, time.Time, int64, bool) {
	metas, err := n.snaps.List()
	if err != nil || len(metas) == 0 {
		return 0, time.Time{}, 0, false
	}
	m := metas[0]
	// File snapshot ids are term-index-unixmillis.
	var at time.Time
	if i := strings.LastIndexByte(m.ID, '-'); i >= 0 {
		if ms, err := strconv.ParseInt(m.ID[i+1:], 10, 64); err == nil {
			at = time.UnixMilli(ms)
		}
	}
	return m.Index, at, m.Size, true
}

// ReloadSnapshots changes the snapshot threshold, interval and trailing
// logs of the running node (Raft's reloadable configuration).
func (n *Node) ReloadSnapshots(threshold uint64, interval time.Duration, trailing uint64) error {
	rc := n.raft.ReloadableConfig()
	rc.SnapshotThreshold, rc.SnapshotInterval, rc.TrailingLogs = threshold, interval, trailing
	return n.raft.ReloadConfig(rc)
}

// SnapshotSettings returns the snapshot threshold and trailing logs in
// force (they change with ReloadSnapshots).
func (n *Node) SnapshotSettings() (threshold, trailing uint64) {
	rc := n.raft.ReloadableConfig()
	return rc.SnapshotThreshold, rc.TrailingLogs
}
