package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/internal/ports"
	"github.com/memdbd/memdbd/store"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := ports.Free("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

type testCluster struct {
	t     *testing.T
	cfgs  []Config
	nodes []*Node
}

// startCluster starts n nodes over real TCP and real disks.
func startCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	return startClusterWith(t, n, nil)
}

// startClusterWith is startCluster with each node's config passed through
// adjust first.
func startClusterWith(t *testing.T, n int, adjust func(*Config)) *testCluster {
	t.Helper()
	c := &testCluster{t: t}
	var peers []Peer
	for i := 0; i < n; i++ {
		cfg := DefaultConfig()
		cfg.ID = fmt.Sprintf("n%d", i+1)
		cfg.DataDir = t.TempDir()
		cfg.RaftBind = freeAddr(t)
		cfg.ClientAdvertise = fmt.Sprintf("127.0.0.1:%d", 1000+i)
		cfg.HeartbeatTimeout = 200 * time.Millisecond
		cfg.ElectionTimeout = 200 * time.Millisecond
		cfg.LeaderLeaseTimeout = 100 * time.Millisecond
		cfg.SnapshotThreshold = 64
		cfg.TrailingLogs = 16
		cfg.SnapshotInterval = 50 * time.Millisecond
		cfg.Logger = slog.New(slog.DiscardHandler)
		if adjust != nil {
			adjust(&cfg)
		}
		peers = append(peers, Peer{ID: cfg.ID, RaftAddr: cfg.RaftBind})
		c.cfgs = append(c.cfgs, cfg)
	}
	for i := range c.cfgs {
		c.cfgs[i].InitialCluster = peers
		c.start(i)
	}
	t.Cleanup(func() {
		for _, nd := range c.nodes {
			if nd != nil {
				_ = nd.Close(context.Background())
			}
		}
	})
	return c
}

func (c *testCluster) start(i int) {
	c.t.Helper()
	nd, err := Open(c.cfgs[i])
	if err != nil {
		c.t.Fatal(err)
	}
	for len(c.nodes) <= i {
		c.nodes = append(c.nodes, nil)
	}
	c.nodes[i] = nd
}

// leader waits for a ready leader.
func (c *testCluster) leader() *Node {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, nd := range c.nodes {
			if nd == nil || nd.closed.Load() || !nd.IsLeader() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := nd.ReadIndex(ctx)
			cancel()
			if err == nil {
				return nd
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatal("no leader within 10s")
	return nil
}

func upsertKV(k string, v int64) *cmdpb.Envelope {
	return &cmdpb.Envelope{Command: &cmdpb.Envelope_Txn{Txn: &cmdpb.Txn{Then: []*pb.Op{{Op: &pb.Op_Upsert{Upsert: &pb.UpsertOp{
		Table: "kv", Fields: map[string]*pb.Value{"k": {Kind: &pb.Value_StringValue{StringValue: k}}, "v": {Kind: &pb.Value_IntValue{IntValue: v}}},
	}}}}}}}
}

func createKV() *cmdpb.Envelope {
	return &cmdpb.Envelope{Command: &cmdpb.Envelope_CreateTable{CreateTable: &pb.TableSchema{
		Name: "kv", PrimaryKey: "k", Fields: []*pb.FieldSchema{{Name: "k", Type: pb.FieldType_FIELD_TYPE_STRING}},
	}}}
}

func mustApply(t *testing.T, nd *Node, env *cmdpb.Envelope) *cmdpb.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := nd.Apply(ctx, env)
	if err != nil {
		t.Fatal(err)
	}
	if res.ErrorReason != "" {
		t.Fatalf("%s: %s", res.ErrorReason, res.ErrorMessage)
	}
	return res
}

func TestClusterReplicatesAndReadsLinearizably(t *testing.T) {
	c := startCluster(t, 3)
	l := c.leader()
	mustApply(t, l, createKV())
	var last uint64
	for i := 0; i < 200; i++ {
		last = mustApply(t, l, upsertKV(fmt.Sprintf("k%03d", i), int64(i))).Revision
	}
	// Followers refuse to propose and name the leader.
	for _, nd := range c.nodes {
		if nd == l {
			continue
		}
		_, err := nd.Apply(context.Background(), upsertKV("x", 1))
		var nl *NotLeaderError
		if !errors.As(err, &nl) || nl.LeaderID != l.ID() || nl.LeaderAddr != l.cfg.ClientAdvertise {
			t.Fatalf("follower Apply: %v", err)
		}
		// A read index from the leader, waited for on the follower, shows
		// every acknowledged write.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		idx, err := l.ReadIndex(ctx)
		if err != nil || idx < last {
			t.Fatalf("read index %d (%v), last write %d", idx, err, last)
		}
		if err := nd.WaitApplied(ctx, idx); err != nil {
			t.Fatal(err)
		}
		cancel()
		row, ok, err := nd.FSM().Store().View().Get("kv", store.String("k199"))
		if err != nil || !ok {
			t.Fatalf("follower missing k199: %v", err)
		}
		if v, _ := row.Get("v"); v.AsInt() != 199 {
			t.Fatalf("follower has v=%v", v)
		}
	}
	// Snapshots were taken (threshold 64) and logs compacted.
	deadline := time.Now().Add(5 * time.Second)
	for {
		snaps, _ := l.snaps.List()
		if len(snaps) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no snapshot taken")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Every member registered itself... the leader at least.
	if _, ok := l.FSM().Member(l.ID()); !ok {
		t.Fatal("leader not registered")
	}
}

func TestLeaderFailoverAndRestart(t *testing.T) {
	c := startCluster(t, 3)
	l := c.leader()
	mustApply(t, l, createKV())
	for i := 0; i < 100; i++ {
		mustApply(t, l, upsertKV(fmt.Sprintf("a%03d", i), int64(i)))
	}
	idx := 0
	for i, nd := range c.nodes {
		if nd == l {
			idx = i
		}
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	l2 := c.leader()
	if l2 == l {
		t.Fatal("closed node still leader")
	}
	for i := 0; i < 150; i++ {
		mustApply(t, l2, upsertKV(fmt.Sprintf("b%03d", i), int64(i)))
	}
	// The old leader restarts on its data with the same config and catches
	// up (through a snapshot: it missed more than the trailing logs).
	c.start(idx)
	back := c.nodes[idx]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ri, err := c.leader().ReadIndex(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := back.WaitApplied(ctx, ri); err != nil {
		t.Fatalf("restarted node did not catch up: %v", err)
	}
	n, _ := back.FSM().Store().View().Count("kv", store.ScanOptions{})
	if n != 250 {
		t.Fatalf("restarted node has %d rows, want 250", n)
	}
}

func TestDataDirIdentity(t *testing.T) {
	c := startCluster(t, 1)
	c.leader()
	cfg := c.cfgs[0]
	_ = c.nodes[0].Close(context.Background())
	c.nodes[0] = nil
	other := cfg
	other.ID = "intruder"
	other.InitialCluster = []Peer{{ID: "intruder", RaftAddr: cfg.RaftBind}}
	if _, err := Open(other); err == nil || !errContains(err, "belongs to node") {
		t.Fatalf("foreign node id: %v", err)
	}
	diff := cfg
	diff.InitialCluster = append([]Peer{}, cfg.InitialCluster...)
	diff.InitialCluster = append(diff.InitialCluster, Peer{ID: "n9", RaftAddr: "127.0.0.1:1"})
	if _, err := Open(diff); err == nil || !errContains(err, "different --initial-cluster") {
		t.Fatalf("other cluster: %v", err)
	}
}

func errContains(err error, s string) bool {
	return err != nil && strings.Contains(err.Error(), s)
}

func TestConfigValidation(t *testing.T) {
	base := DefaultConfig()
	base.ID, base.DataDir, base.RaftBind, base.ClientAdvertise = "n1", "/tmp/x", "127.0.0.1:1", "127.0.0.1:2"
	if err := base.Validate(); err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(*Config){
		"node id":          func(c *Config) { c.ID = "" },
		"data dir":         func(c *Config) { c.DataDir = "" },
		"election timeout": func(c *Config) { c.ElectionTimeout = c.HeartbeatTimeout / 2 },
		"lease timeout":    func(c *Config) { c.LeaderLeaseTimeout = 2 * c.HeartbeatTimeout },
		"does not list":    func(c *Config) { c.InitialCluster = []Peer{{ID: "n2", RaftAddr: "127.0.0.1:3"}} },
		"Raft address":     func(c *Config) { c.InitialCluster = []Peer{{ID: "n1", RaftAddr: "127.0.0.1:3"}} },
	}
	for want, mut := range cases {
		c := base
		mut(&c)
		if err := c.Validate(); !errContains(err, want) {
			t.Errorf("%s: got %v", want, err)
		}
	}
	if _, err := ParsePeers("n1=127.0.0.1:1,n1=127.0.0.1:2"); !errContains(err, "twice") {
		t.Errorf("duplicate peer: %v", err)
	}
	if _, err := ParsePeers("n1"); !errContains(err, "id=host:port") {
		t.Errorf("bad peer: %v", err)
	}
}

// A follower's read-index request counts as its acknowledgement of the
// leader's term only when the two are a majority of the voters and the
// term is the leader's current one; anything else takes a round of
// heartbeats, and either way the index covers every acknowledged write.
func TestReadIndexForSkipsTheRoundOnlyForAMajorityInTheLeadersTerm(t *testing.T) {
	c := startCluster(t, 3)
	l := c.leader()
	mustApply(t, l, createKV())
	var last uint64
	for i := 0; i < 20; i++ {
		last = mustApply(t, l, upsertKV(fmt.Sprintf("k%02d", i), int64(i))).Revision
	}
	term := l.Term()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	check := func(from string, term uint64, wantShortcut bool) {
		t.Helper()
		rounds0, short0 := l.ReadIndexCounts()
		idx, err := l.ReadIndexFor(ctx, from, term)
		if err != nil || idx < last {
			t.Fatalf("ReadIndexFor(%q, %d) = %d, %v; want at least %d", from, term, idx, err, last)
		}
		rounds1, short1 := l.ReadIndexCounts()
		if got := short1 == short0+1 && rounds1 == rounds0; got != wantShortcut {
			t.Fatalf("ReadIndexFor(%q, %d): shortcuts %d->%d, rounds %d->%d; want shortcut %v", from, term, short0, short1, rounds0, rounds1, wantShortcut)
		}
		if !wantShortcut && (short1 != short0 || rounds1 != rounds0+1) {
			t.Fatalf("ReadIndexFor(%q, %d): shortcuts %d->%d, rounds %d->%d; want one round", from, term, short0, short1, rounds0, rounds1)
		}
	}
	for _, nd := range c.nodes {
		if nd != l {
			check(nd.ID(), term, true)
			check(nd.ID(), term-1, false) // asked before this leader's term
			check(nd.ID(), term+1, false) // a term this leader is not in
			check(nd.ID(), 0, false)      // an older member that sends no term
		}
	}
	check(l.ID(), term, false) // itself: not a second voter
	check("n9", term, false)   // not a member

	// A deposed leader answers NotLeader, whatever the follower says.
	old := l
	if err := old.TransferLeadership(ctx); err != nil {
		t.Fatal(err)
	}
	nl := c.leader()
	if nl == old {
		t.Fatal("leadership did not move")
	}
	var f *Node
	for _, nd := range c.nodes {
		if nd != old && nd != nl {
			f = nd
		}
	}
	// Not leader: whether it has heard of the new one yet (NotLeader) or
	// not (NoLeader).
	if _, err := old.ReadIndexFor(ctx, f.ID(), term); !errors.Is(err, ErrNotLeader) && !errors.Is(err, ErrNoLeader) {
		t.Fatalf("deposed leader's ReadIndexFor: %v, want ErrNotLeader or ErrNoLeader", err)
	}
}

// With five voters a leader and one follower are no majority: every read
// index takes a round.
func TestReadIndexForTakesARoundInFiveVoterClusters(t *testing.T) {
	c := startCluster(t, 5)
	l := c.leader()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, nd := range c.nodes {
		if nd == l {
			continue
		}
		_, short0 := l.ReadIndexCounts()
		if _, err := l.ReadIndexFor(ctx, nd.ID(), l.Term()); err != nil {
			t.Fatal(err)
		}
		if _, short1 := l.ReadIndexCounts(); short1 != short0 {
			t.Fatalf("read index for %s without a round in a five-voter cluster", nd.ID())
		}
	}
}

// A leader closed while writes and leadership checks stream in answers
// every one of them and leaves no goroutine waiting on a Raft future:
// hashicorp/raft never answers a request still queued for its main loop
// when it shuts down, so Close must keep none queued there.
func TestCloseUnderLoadLeavesNothingWaiting(t *testing.T) {
	for round := range 3 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			c := startClusterWith(t, 3, func(cfg *Config) {
				cfg.ReadLease = false // every linearizable read takes a round
				// The leader's loop writes each batch before it takes the
				// next, so that requests queue for it.
				cfg.ParallelAppend = round%2 == 1
			})
			l := c.leader()
			mustApply(t, l, createKV())
			stop := make(chan struct{})
			done := make(chan struct{})
			const workers = 48
			for w := range workers {
				go func() {
					defer func() { done <- struct{}{} }()
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
						var err error
						if w%4 == 0 {
							_, err = l.ReadIndex(ctx)
						} else {
							_, err = l.Apply(ctx, upsertKV(fmt.Sprintf("w%d-%d", w, i), int64(i)))
						}
						cancel()
						if err != nil {
							return
						}
					}
				}()
			}
			time.Sleep(300 * time.Millisecond)
			// An expired context: Close starts the transfer and goes on
			// to shut Raft down while the writes are still queued.
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			closed := make(chan error, 1)
			go func() { closed <- l.Close(ctx) }()
			select {
			case <-closed:
			case <-time.After(10 * time.Second):
				t.Fatal("Close did not return within 10s")
			}
			close(stop)
			for range workers {
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					t.Fatal("a writer or reader was still waiting 10s after Close")
				}
			}
			deadline := time.Now().Add(5 * time.Second)
			for {
				stuck := waitingOnRaft()
				if stuck == "" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("goroutines still wait on the closed node's Raft:\n%s", stuck)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// waitingOnRaft returns the stacks of goroutines that wait for an Apply's
// future or run leadership checks (only the closed leader had any).
func waitingOnRaft() string {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "node.(*Node).Apply.func") || strings.Contains(g, "rounds.(*Group[...]).run") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}
