// Package e2e tests the memdbd binary as its users run it: three separate
// OS processes on loopback, each with its own data directory, talking Raft
// and gRPC over real sockets, killed with SIGKILL and stopped with SIGTERM.
//
// TestMain builds ./cmd/memdbd once. Every test starts its own cluster with
// fast timers and a low snapshot threshold, so that elections and log
// compaction happen within seconds. Each node's stderr goes to a log file
// whose tail is printed when a test fails.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/client"
	"github.com/memdbd/memdbd/internal/childproc"
)

// memdbdBin is the binary built by TestMain.
var memdbdBin string

// moduleRoot is the directory of this module's go.mod.
var moduleRoot string

const modulePath = "github.com/memdbd/memdbd"

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	root, err := findModuleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	moduleRoot = root
	dir, err := os.MkdirTemp("", "memdbd-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	memdbdBin = filepath.Join(dir, "memdbd")
	goTool := "go"
	if p := filepath.Join(os.Getenv("GOROOT"), "bin", "go"); os.Getenv("GOROOT") != "" {
		if _, err := os.Stat(p); err == nil {
			goTool = p
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, goTool, "build", "-o", memdbdBin, "./cmd/memdbd")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: building memdbd: %v\n%s", err, out)
		return 1
	}
	code := m.Run()
	killAllProcs()
	return code
}

// findModuleRoot walks up from the working directory (the package
// directory under go test) to this module's go.mod.
func findModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				f := strings.Fields(line)
				if len(f) == 2 && f[0] == "module" && f[1] == modulePath {
					return dir, nil
				}
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of module %s above the working directory", modulePath)
		}
		dir = parent
	}
}

// Every process started by any test, so that TestMain can kill leftovers.
var (
	allProcsMu sync.Mutex
	allProcs   = map[*os.Process]bool{}
)

func killAllProcs() {
	allProcsMu.Lock()
	defer allProcsMu.Unlock()
	for p := range allProcs {
		_ = p.Kill()
	}
}

// Timers and limits every node runs with. The snapshot interval is how
// often Raft checks the threshold; its default (30s) would hide snapshots.
var baseFlags = []string{
	"--heartbeat-timeout", "300ms",
	"--election-timeout", "300ms",
	"--leader-lease-timeout", "150ms",
	"--snapshot-threshold", "64",
	"--trailing-logs", "32",
	"--snapshot-interval", "200ms",
	"--shutdown-timeout", "5s",
	"--log-level", "info",
}

const (
	trailingLogs      = 32
	snapshotThreshold = 64
	// shutdownBound is --shutdown-timeout.
	shutdownBound = 5 * time.Second
)

// node is one memdbd process (running or not) and everything needed to
// start it again with the same flags.
type node struct {
	idx        int
	id         string
	dataDir    string
	clientAddr string
	raftAddr   string
	logPath    string
	args       []string
	// bin, when set, is the binary this node runs (a rolling upgrade swaps
	// it); memdbdBin otherwise.
	bin string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	state   *os.ProcessState
	waitErr error
	starts  int
}

// pid is the process id of the running node.
func (n *node) pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd.Process.Pid
}

func (n *node) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// cluster is a set of memdbd processes bootstrapped together.
type cluster struct {
	t     *testing.T
	nodes []*node
	ctx   context.Context // the test's overall deadline

	connMu sync.Mutex
	conns  map[string]*grpc.ClientConn
	// creds, when set, replace plaintext on the harness's own connections
	// (a cluster serving TLS).
	creds credentials.TransportCredentials
}

// testDeadline bounds every test.
const testDeadline = 60 * time.Second

// freeAddrs returns n distinct free loopback addresses, all held open
// together and then closed. The ports are taken below the kernel's
// ephemeral range when it is known: a port from that range, free now, may
// become the source port of some outgoing connection while its node is
// down, and the node could not bind it again on restart.
func freeAddrs(t testing.TB, n int) []string {
	t.Helper()
	lo := ephemeralLow()
	var ls []net.Listener
	var out []string
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for tries := 0; len(out) < n; tries++ {
		addr := "127.0.0.1:0"
		if lo > 12000 && tries < 1000 {
			addr = fmt.Sprintf("127.0.0.1:%d", 10000+rand.IntN(lo-10000))
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			if addr == "127.0.0.1:0" {
				t.Fatal(err)
			}
			continue
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	return out
}

// ephemeralLow is the lowest port the kernel hands out for outgoing
// connections and port 0, or 0 when unknown.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	lo, _ := strconv.Atoi(f[0])
	return lo
}

// newCluster starts n nodes bootstrapped as one cluster, with extra flags
// on every node, and waits until a leader is elected and every node has
// registered its client address.
func newCluster(t *testing.T, n int, extra ...string) *cluster {
	t.Helper()
	return newClusterSeeded(t, n, nil, extra...)
}

// newClusterSeeded is newCluster with a hook that runs for each node, with
// its flags decided, before it first starts (to seed its data dir).
func newClusterSeeded(t *testing.T, n int, seed func(nd *node), extra ...string) *cluster {
	t.Helper()
	return newClusterWith(t, n, seed, nil, extra...)
}

// newClusterWith is newClusterSeeded whose harness connects with creds
// (plaintext when nil).
func newClusterWith(t *testing.T, n int, seed func(nd *node), creds credentials.TransportCredentials, extra ...string) *cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	c := &cluster{t: t, ctx: ctx, conns: map[string]*grpc.ClientConn{}, creds: creds}
	addrs := freeAddrs(t, 2*n)
	logDir := t.TempDir()
	var initial []string
	for i := 0; i < n; i++ {
		nd := &node{idx: i, id: fmt.Sprintf("n%d", i+1), dataDir: t.TempDir(),
			clientAddr: addrs[2*i], raftAddr: addrs[2*i+1]}
		nd.logPath = filepath.Join(logDir, nd.id+".log")
		initial = append(initial, nd.id+"="+nd.raftAddr)
		c.nodes = append(c.nodes, nd)
	}
	for _, nd := range c.nodes {
		nd.args = append([]string{
			"--node-id", nd.id, "--data-dir", nd.dataDir,
			"--client-addr", nd.clientAddr, "--raft-addr", nd.raftAddr,
			"--initial-cluster", strings.Join(initial, ","),
		}, append(append([]string(nil), baseFlags...), extra...)...)
	}
	t.Cleanup(func() {
		for _, nd := range c.nodes {
			if nd.running() {
				c.kill(nd.idx)
			}
		}
		c.connMu.Lock()
		for _, cc := range c.conns {
			_ = cc.Close()
		}
		c.connMu.Unlock()
		cancel()
		if t.Failed() {
			c.dumpLogs()
		}
	})
	if seed != nil {
		for _, nd := range c.nodes {
			seed(nd)
		}
	}
	for i := range c.nodes {
		c.start(i)
	}
	c.waitReady(15*time.Second, nil)
	return c
}

// dumpLogs prints the tail of every node's log.
func (c *cluster) dumpLogs() {
	for _, nd := range c.nodes {
		b, err := os.ReadFile(nd.logPath)
		if err != nil {
			c.t.Logf("---- %s: no log: %v", nd.id, err)
			continue
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(lines) > 60 {
			lines = lines[len(lines)-60:]
		}
		nd.mu.Lock()
		st := "never exited"
		if nd.state != nil {
			st = nd.state.String()
		}
		nd.mu.Unlock()
		c.t.Logf("---- %s (%s, client %s, raft %s, last exit: %s) log tail:\n%s", nd.id, nd.logPath, nd.clientAddr, nd.raftAddr, st, strings.Join(lines, "\n"))
	}
}

// start starts node i with its flags (the same on every start); its
// output is appended to its log file.
func (c *cluster) start(i int) {
	c.t.Helper()
	nd := c.nodes[i]
	if nd.running() {
		c.t.Fatalf("start %s: already running", nd.id)
	}
	f, err := os.OpenFile(nd.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	nd.mu.Lock()
	nd.starts++
	fmt.Fprintf(f, "==== e2e: start #%d of %s at %s\n", nd.starts, nd.id, time.Now().Format(time.RFC3339Nano))
	nd.mu.Unlock()
	bin := memdbdBin
	if nd.bin != "" {
		bin = nd.bin
	}
	cmd := exec.Command(bin, nd.args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = childproc.Attr()
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("start %s: %v", nd.id, err)
	}
	allProcsMu.Lock()
	allProcs[cmd.Process] = true
	allProcsMu.Unlock()
	done := make(chan struct{})
	nd.mu.Lock()
	nd.cmd, nd.done, nd.state, nd.waitErr = cmd, done, nil, nil
	nd.mu.Unlock()
	go func() {
		err := cmd.Wait()
		allProcsMu.Lock()
		delete(allProcs, cmd.Process)
		allProcsMu.Unlock()
		nd.mu.Lock()
		nd.state, nd.waitErr = cmd.ProcessState, err
		nd.mu.Unlock()
		close(done)
	}()
}

// signal sends sig to node i and waits (bounded) for it to exit. It
// returns the exit code (-1 when killed by a signal) and how long the
// process took to exit after the signal.
func (c *cluster) signal(i int, sig syscall.Signal, bound time.Duration) (int, time.Duration) {
	c.t.Helper()
	nd := c.nodes[i]
	nd.mu.Lock()
	cmd, done := nd.cmd, nd.done
	nd.mu.Unlock()
	if cmd == nil {
		c.t.Fatalf("%s was never started", nd.id)
	}
	start := time.Now()
	if sig != 0 {
		if err := cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
			c.t.Fatalf("signal %v to %s: %v", sig, nd.id, err)
		}
	}
	select {
	case <-done:
	case <-time.After(bound):
		_ = cmd.Process.Kill()
		<-done
		c.t.Fatalf("%s did not exit within %v of %v", nd.id, bound, sig)
	}
	took := time.Since(start)
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.state.ExitCode(), took
}

// sendSignal sends sig to node i without waiting.
func (c *cluster) sendSignal(i int, sig syscall.Signal) {
	c.t.Helper()
	nd := c.nodes[i]
	nd.mu.Lock()
	cmd := nd.cmd
	nd.mu.Unlock()
	if err := cmd.Process.Signal(sig); err != nil {
		c.t.Fatalf("signal %v to %s: %v", sig, nd.id, err)
	}
}

// waitExit waits (bounded) for node i to exit and returns its exit code
// and how long the wait took.
func (c *cluster) waitExit(i int, bound time.Duration) (int, time.Duration) {
	c.t.Helper()
	return c.signal(i, 0, bound)
}

// stop sends SIGTERM to node i and waits for it to exit.
func (c *cluster) stop(i int) (int, time.Duration) {
	c.t.Helper()
	return c.signal(i, syscall.SIGTERM, shutdownBound+10*time.Second)
}

// kill sends SIGKILL to node i and waits for it to exit.
func (c *cluster) kill(i int) {
	c.t.Helper()
	c.signal(i, syscall.SIGKILL, 10*time.Second)
}

// logSize is the current size of node i's log, to look at what it writes
// after this point.
func (c *cluster) logSize(i int) int64 {
	st, err := os.Stat(c.nodes[i].logPath)
	if err != nil {
		return 0
	}
	return st.Size()
}

// logSince returns node i's log from byte offset off.
func (c *cluster) logSince(i int, off int64) string {
	b, err := os.ReadFile(c.nodes[i].logPath)
	if err != nil || int64(len(b)) < off {
		return ""
	}
	return string(b[off:])
}

// dialOptions are plaintext with a short reconnect backoff: the default
// (up to two minutes) would leave a connection to a restarted node idle
// long after it is back.
func dialOptions(extra ...grpc.DialOption) []grpc.DialOption {
	return append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 300 * time.Millisecond},
			MinConnectTimeout: 2 * time.Second,
		}),
	}, extra...)
}

// conn returns a raw gRPC connection to node i (shared, kept across
// restarts).
func (c *cluster) conn(i int) *grpc.ClientConn {
	c.t.Helper()
	addr := c.nodes[i].clientAddr
	c.connMu.Lock()
	defer c.connMu.Unlock()
	if cc, ok := c.conns[addr]; ok {
		return cc
	}
	var opts []grpc.DialOption
	if c.creds != nil {
		opts = append(opts, grpc.WithTransportCredentials(c.creds))
	}
	cc, err := grpc.NewClient(addr, dialOptions(opts...)...)
	if err != nil {
		c.t.Fatal(err)
	}
	c.conns[addr] = cc
	return cc
}

func (c *cluster) data(i int) pb.DataServiceClient     { return pb.NewDataServiceClient(c.conn(i)) }
func (c *cluster) schema(i int) pb.SchemaServiceClient { return pb.NewSchemaServiceClient(c.conn(i)) }

// status asks node i for its Status, within a second.
func (c *cluster) status(i int) (*pb.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(c.ctx, time.Second)
	defer cancel()
	return pb.NewClusterServiceClient(c.conn(i)).Status(ctx, &pb.StatusRequest{})
}

// leader returns the index of the leader every running node agrees on
// (not one of exclude), or an error saying why there is none.
func (c *cluster) leader(exclude map[int]bool) (int, error) {
	leader := -1
	var sts []*pb.StatusResponse
	var idx []int
	for i, nd := range c.nodes {
		if !nd.running() {
			continue
		}
		st, err := c.status(i)
		if err != nil {
			return -1, fmt.Errorf("status of %s: %w", nd.id, err)
		}
		if st.Role == "Leader" {
			if leader >= 0 {
				return -1, fmt.Errorf("two leaders: %s and %s", c.nodes[leader].id, nd.id)
			}
			leader = i
		}
		sts = append(sts, st)
		idx = append(idx, i)
	}
	if leader < 0 {
		return -1, errors.New("no running node is leader")
	}
	if exclude[leader] {
		return -1, fmt.Errorf("the leader is still %s", c.nodes[leader].id)
	}
	for k, st := range sts {
		if st.LeaderId != c.nodes[leader].id || st.LeaderAddr != c.nodes[leader].clientAddr {
			return -1, fmt.Errorf("%s sees leader %q at %q, not %s", c.nodes[idx[k]].id, st.LeaderId, st.LeaderAddr, c.nodes[leader].id)
		}
	}
	return leader, nil
}

// waitLeader waits until the running nodes agree on a leader not in
// exclude, and returns it.
func (c *cluster) waitLeader(timeout time.Duration, exclude map[int]bool) int {
	c.t.Helper()
	var l int
	waitFor(c.t, timeout, "an agreed leader", func() error {
		var err error
		l, err = c.leader(exclude)
		return err
	})
	return l
}

// waitReady waits for an agreed leader and for every running node to be
// registered (its client address known to the cluster), so that followers
// can forward and clients discover every member.
func (c *cluster) waitReady(timeout time.Duration, exclude map[int]bool) int {
	c.t.Helper()
	var l int
	waitFor(c.t, timeout, "a leader and every running member registered", func() error {
		var err error
		if l, err = c.leader(exclude); err != nil {
			return err
		}
		// Each member answers Members from its own state: ask them all.
		for _, asked := range c.nodes {
			if !asked.running() {
				continue
			}
			ctx, cancel := context.WithTimeout(c.ctx, time.Second)
			ms, err := pb.NewClusterServiceClient(c.conn(asked.idx)).Members(ctx, &pb.MembersRequest{})
			cancel()
			if err != nil {
				return err
			}
			reg := map[string]string{}
			for _, m := range ms.Members {
				reg[m.Id] = m.ClientAddr
			}
			for _, nd := range c.nodes {
				if nd.running() && reg[nd.id] != nd.clientAddr {
					return fmt.Errorf("%s knows %s at %q, want %s", asked.id, nd.id, reg[nd.id], nd.clientAddr)
				}
			}
		}
		return nil
	})
	return l
}

// waitConverged waits until every running node reports the same applied
// revision and the same state hash (XXH64 of every schema and row), and
// returns them.
func (c *cluster) waitConverged(timeout time.Duration) (uint64, uint64) {
	c.t.Helper()
	var rev, hash uint64
	waitFor(c.t, timeout, "every replica at the same revision with the same state hash", func() error {
		var seen []string
		rev, hash = 0, 0
		for i, nd := range c.nodes {
			if !nd.running() {
				continue
			}
			ctx, cancel := context.WithTimeout(c.ctx, 2*time.Second)
			st, err := pb.NewClusterServiceClient(c.conn(i)).Status(ctx, &pb.StatusRequest{IncludeStateHash: true})
			cancel()
			if err != nil {
				return err
			}
			r := st.GetHeader().GetRevision()
			seen = append(seen, fmt.Sprintf("%s@%d=%016x", nd.id, r, st.StateHash))
			if rev == 0 {
				rev, hash = r, st.StateHash
			} else if r != rev || st.StateHash != hash {
				return fmt.Errorf("replicas differ: %s", strings.Join(seen, " "))
			}
		}
		return nil
	})
	return rev, hash
}

// others returns the node indexes other than these.
func (c *cluster) others(not ...int) []int {
	var out []int
	for i := range c.nodes {
		skip := false
		for _, n := range not {
			skip = skip || n == i
		}
		if !skip {
			out = append(out, i)
		}
	}
	return out
}

func (c *cluster) endpoints() []string {
	var out []string
	for _, nd := range c.nodes {
		out = append(out, nd.clientAddr)
	}
	return out
}

// client returns an SDK client of the given endpoints (all members when
// none), closed at the end of the test.
func (c *cluster) client(eps ...string) *client.Client {
	c.t.Helper()
	if len(eps) == 0 {
		eps = c.endpoints()
	}
	return newSDKClient(c.t, c.ctx, client.Config{Endpoints: eps, DialOptions: dialOptions()})
}

func newSDKClient(t *testing.T, parent context.Context, cfg client.Config) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(parent, 5*time.Second)
	defer cancel()
	cl, err := client.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// callCtx is a context for one call: bounded by d and by the test.
func (c *cluster) callCtx(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.ctx, d)
}

// waitFor polls cond until it returns nil, failing the test with cond's
// last error when timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// snapshotIndexes lists the indexes of the snapshots in node i's data dir
// (directories named term-index-millis under snapshots/).
func (c *cluster) snapshotIndexes(i int) []uint64 {
	ents, _ := os.ReadDir(filepath.Join(c.nodes[i].dataDir, "snapshots"))
	var out []uint64
	for _, e := range ents {
		if !e.IsDir() || strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		parts := strings.Split(e.Name(), "-")
		if len(parts) != 3 {
			continue
		}
		if idx, err := strconv.ParseUint(parts[1], 10, 64); err == nil {
			out = append(out, idx)
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a] < out[b] })
	return out
}

var compactRE = regexp.MustCompile(`msg="compacting logs".* to=(\d+)`)

// compactedThrough returns the highest log index node i has logged as
// compacted away (0 when none).
func (c *cluster) compactedThrough(i int) uint64 {
	f, err := os.Open(c.nodes[i].logPath)
	if err != nil {
		return 0
	}
	defer f.Close()
	var max uint64
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if m := compactRE.FindStringSubmatch(sc.Text()); m != nil {
			if v, _ := strconv.ParseUint(m[1], 10, 64); v > max {
				max = v
			}
		}
	}
	return max
}

// errorInfo returns the memdb ErrorInfo reason of a gRPC error.
func errorReason(err error) string {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.Domain == pb.ErrorDomain {
			return ei.Reason
		}
	}
	return ""
}

// checkCode fails unless err is a gRPC error with this code and (when
// non-empty) memdb reason.
func checkCode(t testing.TB, what string, err error, code codes.Code, reason string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: succeeded, want %v %s", what, code, reason)
		return
	}
	var ce *client.Error
	gotCode, gotReason := status.Code(err), errorReason(err)
	if errors.As(err, &ce) {
		gotCode, gotReason = ce.Code, ce.Reason
	}
	if gotCode != code || (reason != "" && gotReason != reason) {
		t.Errorf("%s: got %v %q (%v), want %v %q", what, gotCode, gotReason, err, code, reason)
	}
}

// kvSchema is the table most tests use.
func kvSchema(name string) client.TableSchema {
	return client.TableSchema{Name: name, PrimaryKey: "k", Fields: []client.FieldSchema{
		{Name: "k", Type: client.TypeString}, {Name: "n", Type: client.TypeInt}, {Name: "s", Type: client.TypeString}}}
}

func (c *cluster) createTable(cl *client.Client, s client.TableSchema) uint64 {
	c.t.Helper()
	ctx, cancel := c.callCtx(10 * time.Second)
	defer cancel()
	rev, err := cl.CreateTable(ctx, s)
	if err != nil {
		c.t.Fatalf("create table %s: %v", s.Name, err)
	}
	return rev
}

// pbString and pbInt build wire values.
func pbString(s string) *pb.Value { return &pb.Value{Kind: &pb.Value_StringValue{StringValue: s}} }
func pbInt(n int64) *pb.Value     { return &pb.Value{Kind: &pb.Value_IntValue{IntValue: n}} }

// staleAt is a stale read that waits for revision rev on the serving node.
func staleAt(rev uint64) *pb.ReadOptions {
	return &pb.ReadOptions{Consistency: pb.Consistency_CONSISTENCY_STALE, MinRevision: rev}
}

// scanNode reads every row of a table from node i (all pages, one
// revision) with these read options.
func (c *cluster) scanNode(i int, table string, ro *pb.ReadOptions) (map[string]*pb.Row, *pb.ResponseHeader, error) {
	ctx, cancel := c.callCtx(10 * time.Second)
	defer cancel()
	out := map[string]*pb.Row{}
	var first *pb.ResponseHeader
	var token []byte
	for {
		r, err := c.data(i).Scan(ctx, &pb.ScanRequest{Table: table, Limit: 500, PageToken: token, Read: ro})
		if err != nil {
			return nil, nil, err
		}
		if first == nil {
			first = r.Header
		}
		for _, row := range r.Rows {
			k := row.Fields["k"].GetStringValue()
			if _, dup := out[k]; dup {
				return nil, nil, fmt.Errorf("scan returned key %q twice", k)
			}
			out[k] = row
		}
		if len(r.NextPageToken) == 0 {
			return out, first, nil
		}
		token = r.NextPageToken
	}
}

// writeLoad runs writers that insert unique keys through the SDK and
// records which inserts were acknowledged and which failed.
type writeLoad struct {
	cancel context.CancelFunc
	stopCh chan struct{}
	wg     sync.WaitGroup

	mu        sync.Mutex
	acks      []ack
	failures  []failure
	attempted map[string]bool
}

type ack struct {
	key  string
	at   time.Time
	meta client.Meta
}

type failure struct {
	key string
	at  time.Time
	err error
}

// startLoad starts workers that each insert prefix-w<worker>-<i> into
// table, pausing between writes, each call bounded by callTimeout.
func startLoad(parent context.Context, cl *client.Client, table, prefix string, workers int, pause, callTimeout time.Duration) *writeLoad {
	ctx, cancel := context.WithCancel(parent)
	w := &writeLoad{cancel: cancel, stopCh: make(chan struct{}), attempted: map[string]bool{}}
	for g := 0; g < workers; g++ {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-w.stopCh:
					return
				case <-ctx.Done():
					return
				default:
				}
				key := fmt.Sprintf("%s-w%d-%06d", prefix, g, i)
				w.mu.Lock()
				w.attempted[key] = true
				w.mu.Unlock()
				cctx, ccancel := context.WithTimeout(ctx, callTimeout)
				meta, err := cl.Insert(cctx, table, client.Fields{"k": client.String(key), "n": client.Int(int64(i))})
				ccancel()
				now := time.Now()
				w.mu.Lock()
				if err == nil {
					w.acks = append(w.acks, ack{key, now, meta})
				} else if ctx.Err() == nil {
					w.failures = append(w.failures, failure{key, now, err})
				}
				w.mu.Unlock()
				if pause > 0 {
					select {
					case <-time.After(pause):
					case <-ctx.Done():
					case <-w.stopCh:
					}
				}
			}
		}()
	}
	return w
}

// stop lets in-flight writes finish, then stops the workers.
func (w *writeLoad) stop() {
	close(w.stopCh)
	w.wg.Wait()
	w.cancel()
}

// abort cancels in-flight writes (their outcome stays unknown) and stops
// the workers.
func (w *writeLoad) abort() {
	w.cancel()
	w.wg.Wait()
}

func (w *writeLoad) ackCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acks)
}

// acksAfter counts the writes acknowledged after t.
func (w *writeLoad) acksAfter(t time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, a := range w.acks {
		if a.at.After(t) {
			n++
		}
	}
	return n
}

func (w *writeLoad) snapshot() ([]ack, []failure, map[string]bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	att := make(map[string]bool, len(w.attempted))
	for k := range w.attempted {
		att[k] = true
	}
	return append([]ack(nil), w.acks...), append([]failure(nil), w.failures...), att
}

// waitAcks waits until at least n writes were acknowledged after t.
func (w *writeLoad) waitAcks(tb testing.TB, timeout time.Duration, after time.Time, n int) {
	tb.Helper()
	waitFor(tb, timeout, fmt.Sprintf("%d writes acknowledged", n), func() error {
		if got := w.acksAfter(after); got < n {
			_, fs, _ := w.snapshot()
			last := "none"
			if len(fs) > 0 {
				last = fs[len(fs)-1].err.Error()
			}
			return fmt.Errorf("%d acknowledged so far; %d failures, last: %s", got, len(fs), last)
		}
		return nil
	})
}

// proxy forwards TCP connections from a local listener to target. Armed,
// it stops forwarding the target's bytes to the client (they are counted
// and dropped) until cut closes every connection.
type proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	pairs map[net.Conn]net.Conn

	dropReplies atomic.Bool
	dropped     atomic.Int64 // reply bytes dropped while armed
	upBytes     atomic.Int64 // client-to-target bytes forwarded
	accepted    atomic.Int64
	wg          sync.WaitGroup
}

func startProxy(t testing.TB, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, pairs: map[net.Conn]net.Conn{}}
	p.wg.Add(1)
	go p.acceptLoop()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		cc, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", p.target, 2*time.Second)
		if err != nil {
			_ = cc.Close()
			continue
		}
		p.accepted.Add(1)
		p.mu.Lock()
		p.pairs[cc] = up
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { // client -> target
			defer p.wg.Done()
			buf := make([]byte, 32<<10)
			for {
				n, err := cc.Read(buf)
				if n > 0 {
					p.upBytes.Add(int64(n))
					if _, werr := up.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			_ = up.Close()
			_ = cc.Close()
		}()
		go func() { // target -> client
			defer p.wg.Done()
			buf := make([]byte, 32<<10)
			for {
				n, err := up.Read(buf)
				if n > 0 {
					if p.dropReplies.Load() {
						p.dropped.Add(int64(n))
					} else if _, werr := cc.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			_ = up.Close()
			_ = cc.Close()
		}()
	}
}

// arm starts dropping replies.
func (p *proxy) arm() {
	p.dropped.Store(0)
	p.dropReplies.Store(true)
}

// cut closes every connection, then forwards normally again: a client
// sees its connection break without the reply it was waiting for.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for cc, up := range p.pairs {
		_ = cc.Close()
		_ = up.Close()
		delete(p.pairs, cc)
	}
	p.dropReplies.Store(false)
}

func (p *proxy) close() {
	_ = p.ln.Close()
	p.cut()
	p.wg.Wait()
}

// retryLog is a slog handler that records the client's retry decisions.
type retryLog struct {
	mu   *sync.Mutex
	recs *[]string
}

func newRetryLog() retryLog { return retryLog{mu: &sync.Mutex{}, recs: new([]string)} }

func (h retryLog) Enabled(context.Context, slog.Level) bool { return true }
func (h retryLog) Handle(_ context.Context, r slog.Record) error {
	var b bytes.Buffer
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	h.mu.Lock()
	*h.recs = append(*h.recs, b.String())
	h.mu.Unlock()
	return nil
}
func (h retryLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h retryLog) WithGroup(string) slog.Handler      { return h }

// retries returns the recorded "retrying" decisions from index from on.
func (h retryLog) retries(from int) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range (*h.recs)[min(from, len(*h.recs)):] {
		if strings.HasPrefix(r, "retrying") {
			out = append(out, r)
		}
	}
	return out
}

func (h retryLog) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(*h.recs)
}

// runBinary runs memdbd with args to completion (bounded by timeout) and
// returns its exit code and combined output.
func runBinary(t testing.TB, timeout time.Duration, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, memdbdBin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("memdbd %s did not exit within %v; output:\n%s", strings.Join(args, " "), timeout, out.String())
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("running memdbd: %v", err)
	}
	return cmd.ProcessState.ExitCode(), out.String()
}
