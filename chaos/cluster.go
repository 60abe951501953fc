package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/client"
	"github.com/memdbd/memdbd/internal/childproc"
	"github.com/memdbd/memdbd/internal/ports"
)

// ClusterConfig describes the cluster under test.
type ClusterConfig struct {
	// Binary is the memdbd executable.
	Binary string
	// Dir holds the nodes' data directories and logs.
	Dir string
	// Nodes in the cluster (3).
	Nodes int
	// ElectionTimeout is used for the heartbeat and election timeouts; the
	// leader lease is half of it.
	ElectionTimeout time.Duration
	// SnapshotThreshold and TrailingLogs are kept low so snapshots happen
	// all the time.
	SnapshotThreshold, TrailingLogs int
	// Direct runs without proxies (for benchmarks): nodes talk to each
	// other and to clients directly, and network faults are unavailable.
	Direct bool
	// ExtraArgs are appended to every node's command line.
	ExtraArgs []string
	// Root, when set, turns access control on: the cluster bootstraps the
	// user root with this password (--bootstrap-root-password-file), and
	// the harness's own calls identify as root.
	Root *client.Credentials
}

type procNode struct {
	idx                      int
	id, ip                   string
	clientAddr, clientListen string // proxy address (advertised), real listen address
	raftAddr, raftListen     string // proxy address (advertised), real listen address
	dataDir, logPath         string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	paused bool
}

// Cluster is a running cluster of memdbd processes behind fault proxies.
type Cluster struct {
	cfg           ClusterConfig
	nodes         []*procNode
	rules         *rules
	peerProxies   []*peerProxy
	clientProxies []*clientProxy
}

// freePort returns a free TCP address on ip, never the same twice.
func freePort(ip string) (string, error) { return ports.Free(ip) }

// nodeIP is node i's loopback address, from which it dials its peers.
func nodeIP(i int) string { return fmt.Sprintf("127.0.0.%d", 11+i) }

// StartCluster builds the proxies and starts every node.
func StartCluster(cfg ClusterConfig) (*Cluster, error) {
	c := &Cluster{cfg: cfg, rules: newRules()}
	if cfg.Root != nil {
		if err := os.WriteFile(filepath.Join(cfg.Dir, "root.password"), []byte(cfg.Root.Password+"\n"), 0o600); err != nil {
			return nil, err
		}
	}
	nodeOf := func(ip string) int {
		for i := 0; i < cfg.Nodes; i++ {
			if nodeIP(i) == ip {
				return i
			}
		}
		return -1
	}
	var peers []string
	for i := 0; i < cfg.Nodes; i++ {
		n := &procNode{idx: i, id: fmt.Sprintf("n%d", i+1), ip: nodeIP(i)}
		var err error
		for _, p := range []*string{&n.clientAddr, &n.clientListen, &n.raftListen} {
			if *p, err = freePort("127.0.0.1"); err != nil {
				return nil, err
			}
		}
		n.dataDir = filepath.Join(cfg.Dir, n.id)
		n.logPath = filepath.Join(cfg.Dir, n.id+".log")
		if cfg.Direct {
			n.raftAddr, n.clientAddr, n.ip = n.raftListen, n.clientListen, ""
			c.nodes = append(c.nodes, n)
			peers = append(peers, n.id+"="+n.raftAddr)
			continue
		}
		if n.raftAddr, err = freePort(n.ip); err != nil {
			return nil, fmt.Errorf("loopback address %s: %w", n.ip, err)
		}
		pp, err := newPeerProxy(n.raftAddr, n.raftListen, i, c.rules, nodeOf)
		if err != nil {
			return nil, err
		}
		cp, err := newClientProxy(n.clientAddr, n.clientListen)
		if err != nil {
			return nil, err
		}
		c.nodes = append(c.nodes, n)
		c.peerProxies = append(c.peerProxies, pp)
		c.clientProxies = append(c.clientProxies, cp)
		peers = append(peers, n.id+"="+n.raftAddr)
	}
	initial := strings.Join(peers, ",")
	for i := range c.nodes {
		if err := c.Start(i, initial); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

func (c *Cluster) args(n *procNode, initial string) []string {
	et := c.cfg.ElectionTimeout
	args := []string{
		"--node-id", n.id, "--data-dir", n.dataDir,
		"--client-addr", n.clientListen, "--client-advertise", n.clientAddr,
		"--raft-addr", n.raftListen, "--raft-advertise", n.raftAddr,
		"--initial-cluster", initial,
		"--heartbeat-timeout", et.String(), "--election-timeout", et.String(), "--leader-lease-timeout", (et / 2).String(),
		"--snapshot-threshold", fmt.Sprint(c.cfg.SnapshotThreshold), "--trailing-logs", fmt.Sprint(c.cfg.TrailingLogs),
		"--snapshot-interval", "500ms", "--shutdown-timeout", "3s", "--log-level", "info",
		// State checkpoints often and compared every second: the
		// consistency check runs through every fault, and a member that
		// reports a divergence fails the run (Converged).
		"--hash-check-entries", "500", "--consistency-check-interval", "1s",
	}
	if n.ip != "" {
		args = append(args, "--raft-source-addr", n.ip)
	}
	if c.cfg.Root != nil {
		args = append(args, "--bootstrap-root-password-file", filepath.Join(c.cfg.Dir, "root.password"))
	}
	return append(args, c.cfg.ExtraArgs...)
}

// dialOptions are the harness's dial options: plaintext, as root when
// access control is on.
func dialOptions(root *client.Credentials) []grpc.DialOption {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if root != nil {
		opts = append(opts, grpc.WithPerRPCCredentials(root.PerRPC()))
	}
	return opts
}

// StartJoining starts node i on an empty data dir, joining the cluster
// through the member at joinAddr (as a non-voter when asked).
func (c *Cluster) StartJoining(i int, joinAddr string, nonVoter bool) error {
	extra := []string{"--join", joinAddr}
	if nonVoter {
		extra = append(extra, "--non-voter")
	}
	return c.start(i, "", extra)
}

// Wipe removes node i's data directory (the node must be stopped).
func (c *Cluster) Wipe(i int) error { return os.RemoveAll(c.nodes[i].dataDir) }

// admin returns a cluster admin client for node i (direct, no proxies).
func (c *Cluster) admin(i int) (pb.ClusterServiceClient, func(), error) {
	conn, err := grpc.NewClient(c.nodes[i].clientListen, dialOptions(c.cfg.Root)...)
	if err != nil {
		return nil, nil, err
	}
	return pb.NewClusterServiceClient(conn), func() { _ = conn.Close() }, nil
}

// Start starts node i (again, on its data).
func (c *Cluster) Start(i int, initial string) error { return c.start(i, initial, nil) }

func (c *Cluster) start(i int, initial string, joinArgs []string) error {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		return nil
	}
	if initial == "" {
		var peers []string
		for _, m := range c.nodes {
			peers = append(peers, m.id+"="+m.raftAddr)
		}
		initial = strings.Join(peers, ",")
	}
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	args := c.args(n, initial)
	if joinArgs != nil {
		// A joining node must not bootstrap: drop --initial-cluster.
		for k := 0; k < len(args); k++ {
			if args[k] == "--initial-cluster" {
				args = append(args[:k:k], args[k+2:]...)
				break
			}
		}
		args = append(args, joinArgs...)
	}
	cmd := exec.Command(c.cfg.Binary, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = childproc.Attr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting %s: %w", n.id, err)
	}
	n.cmd, n.exited, n.paused = cmd, make(chan struct{}), false
	exited := n.exited
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(exited)
	}()
	return nil
}

// Kill sends SIGKILL to node i and waits for it to die.
func (c *Cluster) Kill(i int) { c.signalAndWait(i, syscall.SIGKILL) }

// Stop sends SIGTERM to node i and waits for it to exit.
func (c *Cluster) Stop(i int) { c.signalAndWait(i, syscall.SIGTERM) }

func (c *Cluster) signalAndWait(i int, sig syscall.Signal) {
	n := c.nodes[i]
	n.mu.Lock()
	cmd, exited, paused := n.cmd, n.exited, n.paused
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	if paused && sig != syscall.SIGKILL {
		_ = cmd.Process.Signal(syscall.SIGCONT)
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
	n.mu.Lock()
	n.cmd, n.paused = nil, false
	n.mu.Unlock()
}

// Pause stops node i with SIGSTOP; Resume continues it.
func (c *Cluster) Pause(i int) {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil && !n.paused {
		_ = n.cmd.Process.Signal(syscall.SIGSTOP)
		n.paused = true
	}
}

// Resume continues a paused node.
func (c *Cluster) Resume(i int) {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil && n.paused {
		_ = n.cmd.Process.Signal(syscall.SIGCONT)
		n.paused = false
	}
}

// Running reports whether node i has a live process.
func (c *Cluster) Running(i int) bool {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.exited:
		n.cmd = nil
		return false
	default:
		return true
	}
}

// Endpoints are the client proxies, which clients use.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, n.clientAddr)
	}
	return out
}

// SetRule sets the rule for bytes sent from node `from` to node `to`.
func (c *Cluster) SetRule(from, to int, r Rule) {
	c.rules.set(from, to, r)
	for _, p := range c.peerProxies {
		p.cut()
	}
}

// Partition cuts every link between the groups (both directions).
func (c *Cluster) Partition(groups ...[]int) {
	group := map[int]int{}
	for g, members := range groups {
		for _, m := range members {
			group[m] = g
		}
	}
	for i := range c.nodes {
		for j := range c.nodes {
			if i != j && group[i] != group[j] {
				c.rules.set(i, j, Rule{Drop: true})
			}
		}
	}
	for _, p := range c.peerProxies {
		p.cut()
	}
}

// HealNetwork removes every peer rule.
func (c *Cluster) HealNetwork() { c.rules.healAll() }

// LoseReplies makes node i's client proxy lose its next n replies.
func (c *Cluster) LoseReplies(i, n int) {
	if i < len(c.clientProxies) {
		c.clientProxies[i].loseNextReplies(n)
	}
}

// LostReplies counts the replies the client proxies lost.
func (c *Cluster) LostReplies() int64 {
	var n int64
	for _, p := range c.clientProxies {
		n += p.lost.Load()
	}
	return n
}

// status asks node i (directly, bypassing the proxies).
func (c *Cluster) status(ctx context.Context, i int, hash bool) (*pb.StatusResponse, error) {
	conn, err := grpc.NewClient(c.nodes[i].clientListen, dialOptions(c.cfg.Root)...)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return pb.NewClusterServiceClient(conn).Status(ctx, &pb.StatusRequest{IncludeStateHash: hash})
}

// Leader returns the node that currently leads (highest term wins), or -1.
func (c *Cluster) Leader(ctx context.Context) int {
	best, term := -1, uint64(0)
	for i := range c.nodes {
		if !c.Running(i) || c.isPaused(i) {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		st, err := c.status(cctx, i, false)
		cancel()
		if err == nil && st.Role == "Leader" && st.Term >= term {
			best, term = i, st.Term
		}
	}
	return best
}

func (c *Cluster) isPaused(i int) bool {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.paused
}

// NodeID returns node i's id.
func (c *Cluster) NodeID(i int) string { return c.nodes[i].id }

// TransferLeadership asks the leader to hand over to the most up-to-date
// follower.
func (c *Cluster) TransferLeadership(ctx context.Context, leader int) error {
	conn, err := grpc.NewClient(c.nodes[leader].clientListen, dialOptions(c.cfg.Root)...)
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = pb.NewClusterServiceClient(conn).TransferLeadership(ctx, &pb.TransferLeadershipRequest{})
	return err
}

// Converged waits until every node reports the same revision and state
// hash, and returns them; an error says how they differ, or names a node
// whose consistency check reported a divergence.
func (c *Cluster) Converged(ctx context.Context) (uint64, uint64, error) {
	return converged(ctx, len(c.nodes), func(i int) string { return c.nodes[i].id },
		func(ctx context.Context, i int) (*pb.StatusResponse, error) { return c.status(ctx, i, true) })
}

// converged is Converged over n members named by name and asked by status.
func converged(ctx context.Context, n int, name func(int) string, status func(context.Context, int) (*pb.StatusResponse, error)) (uint64, uint64, error) {
	var last string
	for {
		revs := make([]uint64, n)
		hashes := make([]uint64, n)
		ok := true
		for i := 0; i < n; i++ {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			st, err := status(cctx, i)
			cancel()
			if err != nil {
				ok = false
				last = fmt.Sprintf("%s: %v", name(i), err)
				break
			}
			if st.Divergence != "" {
				return 0, 0, fmt.Errorf("%s reports its state diverged: %s", name(i), st.Divergence)
			}
			revs[i], hashes[i] = st.Header.Revision, st.StateHash
		}
		if ok {
			same := true
			for i := range revs {
				same = same && revs[i] == revs[0]
			}
			if same {
				for i := range hashes {
					if hashes[i] != hashes[0] {
						return revs[0], 0, fmt.Errorf("replicas at revision %d have different state hashes %x", revs[0], hashes)
					}
				}
				return revs[0], hashes[0], nil
			}
			last = fmt.Sprintf("revisions %v", revs)
		}
		select {
		case <-ctx.Done():
			return 0, 0, fmt.Errorf("replicas did not converge: %s", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Close stops everything.
func (c *Cluster) Close() {
	for i := range c.nodes {
		c.Resume(i)
		c.Kill(i)
	}
	for _, p := range c.peerProxies {
		p.close()
	}
	for _, p := range c.clientProxies {
		p.close()
	}
}

// LogTail returns the last lines of node i's log.
func (c *Cluster) LogTail(i, lines int) string {
	b, err := os.ReadFile(c.nodes[i].logPath)
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// BuildBinary builds memdbd into dir and returns its path.
func BuildBinary(moduleRoot, dir string) (string, error) {
	out := filepath.Join(dir, "memdbd")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/memdbd")
	cmd.Dir = moduleRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building memdbd: %v\n%s", err, b)
	}
	return out, nil
}

// ModuleRoot finds the directory holding go.mod, from dir upwards.
func ModuleRoot(dir string) (string, error) {
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found")
		}
		dir = parent
	}
}

// LogLines returns up to max log lines, of every node, that contain s.
func (c *Cluster) LogLines(s string, max int) []string {
	var out []string
	for _, nd := range c.nodes {
		b, err := os.ReadFile(nd.logPath)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, s) && len(out) < max {
				out = append(out, nd.id+": "+line)
			}
		}
	}
	return out
}

// CountLog counts the lines containing s in every node's log.
func (c *Cluster) CountLog(s string) int {
	n := 0
	for _, nd := range c.nodes {
		b, err := os.ReadFile(nd.logPath)
		if err == nil {
			n += strings.Count(string(b), s)
		}
	}
	return n
}
