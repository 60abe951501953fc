package node

import (
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/memdbd/memdbd/fsm"
	"github.com/memdbd/memdbd/watch"
)

// Peer is one member of an initial cluster: its id and Raft address.
type Peer struct {
	ID       string
	RaftAddr string
}

// ParsePeers parses "id=host:port,id=host:port".
func ParsePeers(s string) ([]Peer, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []Peer
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		id, addr, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("initial cluster entry %q: want id=host:port", part)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("initial cluster entry %q: %v", part, err)
		}
		if seen[id] {
			return nil, fmt.Errorf("initial cluster lists node %q twice", id)
		}
		seen[id] = true
		out = append(out, Peer{ID: id, RaftAddr: addr})
	}
	return out, nil
}

// clusterToken digests an initial member list, independent of its order.
// Members that bootstrapped from different lists register different
// tokens, which the state machine refuses.
func clusterToken(peers []Peer) []byte {
	parts := make([]string, len(peers))
	for i, p := range peers {
		parts[i] = p.ID + "=" + p.RaftAddr
	}
	sort.Strings(parts)
	sum := sha256.Sum256([]byte(strings.Join(parts, ",")))
	return sum[:16]
}

// RaftTLS is the TLS configuration of the Raft port.
type RaftTLS struct{ Server, Client *tls.Config }

// Config configures a node. Durations are wall-clock.
type Config struct {
	// ID is the node's unique, stable id in the cluster.
	ID string
	// DataDir holds the Raft log, snapshots and the node's identity file.
	DataDir string
	// RaftBind is the address the Raft transport listens on.
	RaftBind string
	// RaftAdvertise is the address peers use to reach this node's Raft
	// transport; RaftBind when empty.
	RaftAdvertise string
	// RaftSourceAddr, when set, is the IP address outgoing Raft connections
	// leave from.
	RaftSourceAddr string
	// RaftTLS, when set, secures the Raft port with mutual TLS: the
	// listener serves RaftTLS.Server (which should require and verify
	// client certificates) and connections to peers use RaftTLS.Client,
	// with the peer's host as the name its certificate must carry.
	RaftTLS *RaftTLS
	// ClientAdvertise is the address clients and peers use for this node's
	// gRPC API; registered in the cluster for leader forwarding.
	ClientAdvertise string
	// InitialCluster, on a node with no data, bootstraps a new cluster of
	// these members (this node among them). Ignored once the node has data.
	InitialCluster []Peer
	// Version is reported to the cluster when the node registers.
	Version string

	// HeartbeatTimeout: a follower that hears nothing from the leader for
	// this long starts an election.
	HeartbeatTimeout time.Duration
	// ElectionTimeout: a candidate that wins no election in this long
	// starts another.
	ElectionTimeout time.Duration
	// LeaderLeaseTimeout: a leader that cannot reach a quorum for this
	// long steps down. At most HeartbeatTimeout.
	LeaderLeaseTimeout time.Duration
	// CommitTimeout: the longest a follower waits for new entries before
	// the leader sends a heartbeat carrying the commit index.
	CommitTimeout time.Duration
	// MaxAppendEntries bounds the entries per replication message and per
	// batch handed to the state machine.
	MaxAppendEntries int
	// ParallelAppend lets the leader send entries to followers while it
	// writes them to its own disk (logstore.go); a write then waits for
	// the slower of the two instead of both in a row.
	ParallelAppend bool
	// LogStore is where the Raft log is kept: LogStoreWAL (hashicorp/raft-wal,
	// one fsync per append) or LogStoreBolt (raft-boltdb, the only store
	// before; two). Empty: what the data directory was created with, WAL
	// for a new one. A data directory keeps the store it was created with
	// (node.json); another is refused (migrate-log moves it).
	LogStore string
	// ReadLease lets the leader serve linearizable reads without a round
	// of heartbeats while followers have promised not to elect another
	// leader (lease.go). It assumes the members' clocks run at nearly the
	// same rate (within 10% of each other); not that they agree.
	ReadLease bool
	// SnapshotThreshold: entries since the last snapshot that trigger one.
	SnapshotThreshold uint64
	// SnapshotInterval: how often the threshold is checked.
	SnapshotInterval time.Duration
	// TrailingLogs: entries kept after a snapshot, so a slightly lagging
	// follower catches up from the log rather than a snapshot.
	TrailingLogs uint64
	// RetainSnapshots: snapshot files kept on disk.
	RetainSnapshots int
	// MaxPendingWrites bounds writes proposed and not yet applied; more are
	// refused at once with ErrOverloaded.
	MaxPendingWrites int
	// TickInterval: how often the leader appends a tick, which advances log
	// time for session expiry when there are no writes.
	TickInterval time.Duration
	// ExpireInterval: how often the leader looks for expired rows and
	// proposes their deletion. Reads hide expired rows at once; this bounds
	// how long they stay in memory and when watchers see the delete.
	ExpireInterval time.Duration
	// FSM configures the state machine; its session settings must be equal
	// on every node.
	FSM fsm.Config
	// Watch bounds the change history and the watchers' queues.
	Watch watch.Config
	// Logger receives the node's logs.
	Logger *slog.Logger
}

// DefaultConfig returns settings suited to a LAN: a failed leader is
// detected within about half a second.
func DefaultConfig() Config {
	return Config{
		HeartbeatTimeout:   500 * time.Millisecond,
		ElectionTimeout:    500 * time.Millisecond,
		LeaderLeaseTimeout: 250 * time.Millisecond,
		CommitTimeout:      20 * time.Millisecond,
		MaxAppendEntries:   256,
		ParallelAppend:     true,
		ReadLease:          true,
		SnapshotThreshold:  16384,
		SnapshotInterval:   30 * time.Second,
		TrailingLogs:       10240,
		RetainSnapshots:    3,
		MaxPendingWrites:   8192,
		TickInterval:       time.Minute,
		ExpireInterval:     100 * time.Millisecond,
		FSM:                defaultFSMConfig(),
		Watch:              watch.DefaultConfig(),
	}
}

// defaultFSMConfig is the state machine's settings with a state
// checkpoint every 50,000 entries: about every 5-10 s under a heavy write
// load, at the cost of hashing the whole state once each time, off the
// apply path (65 ms of one core for a million rows, BenchmarkHash1MRows
// in store).
func defaultFSMConfig() fsm.Config {
	c := fsm.DefaultConfig()
	c.HashEvery = 50_000
	return c
}

// Validate checks the settings against each other; errors name the
// setting.
func (c Config) Validate() error {
	switch {
	case c.ID == "":
		return fmt.Errorf("node id is required")
	case c.LogStore != "" && c.LogStore != LogStoreWAL && c.LogStore != LogStoreBolt:
		return fmt.Errorf("raft log store %q: wal or boltdb", c.LogStore)
	case len(c.ID) > 64:
		return fmt.Errorf("node id %q is longer than 64 bytes", c.ID)
	case c.DataDir == "":
		return fmt.Errorf("data dir is required")
	case c.RaftBind == "":
		return fmt.Errorf("raft address is required")
	case c.ClientAdvertise == "":
		return fmt.Errorf("client advertise address is required")
	case c.RaftTLS != nil && (c.RaftTLS.Server == nil || c.RaftTLS.Client == nil):
		return fmt.Errorf("raft TLS needs both a server and a client configuration")
	case c.HeartbeatTimeout < 5*time.Millisecond:
		return fmt.Errorf("heartbeat timeout %v is below 5ms", c.HeartbeatTimeout)
	case c.ElectionTimeout < c.HeartbeatTimeout:
		return fmt.Errorf("election timeout %v must be at least the heartbeat timeout %v", c.ElectionTimeout, c.HeartbeatTimeout)
	case c.LeaderLeaseTimeout <= 0 || c.LeaderLeaseTimeout > c.HeartbeatTimeout:
		return fmt.Errorf("leader lease timeout %v must be positive and at most the heartbeat timeout %v", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	case c.CommitTimeout <= 0:
		return fmt.Errorf("commit timeout must be positive")
	case c.MaxAppendEntries < 1 || c.MaxAppendEntries > 1024:
		return fmt.Errorf("max append entries %d must be 1 to 1024", c.MaxAppendEntries)
	case c.SnapshotThreshold < 1:
		return fmt.Errorf("snapshot threshold must be at least 1")
	case c.SnapshotInterval < 10*time.Millisecond:
		return fmt.Errorf("snapshot interval %v is below 10ms", c.SnapshotInterval)
	case c.RetainSnapshots < 1:
		return fmt.Errorf("retain snapshots must be at least 1")
	case c.MaxPendingWrites < 1:
		return fmt.Errorf("max pending writes must be at least 1")
	case c.TickInterval < time.Second:
		return fmt.Errorf("tick interval %v is below 1s", c.TickInterval)
	case c.ExpireInterval < 10*time.Millisecond:
		return fmt.Errorf("expire interval %v is below 10ms", c.ExpireInterval)
	}
	if err := c.Watch.Validate(); err != nil {
		return err
	}
	if len(c.InitialCluster) > 0 {
		found := false
		for _, p := range c.InitialCluster {
			if p.ID == c.ID {
				found = true
				if p.RaftAddr != c.raftAdvertise() {
					return fmt.Errorf("initial cluster gives node %s the Raft address %s, but it advertises %s", c.ID, p.RaftAddr, c.raftAdvertise())
				}
			}
		}
		if !found {
			return fmt.Errorf("initial cluster does not list this node (%s)", c.ID)
		}
	}
	return c.FSM.Validate()
}

func (c Config) raftAdvertise() string {
	if c.RaftAdvertise != "" {
		return c.RaftAdvertise
	}
	return c.RaftBind
}
