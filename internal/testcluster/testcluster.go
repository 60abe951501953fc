// Package testcluster runs a memdbd cluster inside a test process: real
// Raft over loopback TCP, real disks under the test's temp dir, real gRPC
// servers. Tests of the server and the client SDK use it; the tests of the
// memdbd binary itself (package e2e) run separate processes instead.
package testcluster

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/memdbd/memdbd/internal/ports"
	"github.com/memdbd/memdbd/node"
	"github.com/memdbd/memdbd/server"
)

// TB is the part of TB the cluster needs, so that a TestMain can
// run a cluster for runnable examples (see MainTB).
type TB interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	TempDir() string
	Cleanup(func())
}

// MainTB is a TB for TestMain: failures panic, cleanups run at Close.
type MainTB struct {
	dirs     []string
	cleanups []func()
}

func (m *MainTB) Helper()                           {}
func (m *MainTB) Fatal(args ...any)                 { panic(fmt.Sprint(args...)) }
func (m *MainTB) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
func (m *MainTB) Cleanup(f func())                  { m.cleanups = append(m.cleanups, f) }
func (m *MainTB) TempDir() string {
	d, err := os.MkdirTemp("", "memdbd-test")
	if err != nil {
		panic(err)
	}
	m.dirs = append(m.dirs, d)
	return d
}

// Close runs the cleanups in reverse order and removes the temp dirs.
func (m *MainTB) Close() {
	for i := len(m.cleanups) - 1; i >= 0; i-- {
		m.cleanups[i]()
	}
	for _, d := range m.dirs {
		_ = os.RemoveAll(d)
	}
}

// Member is one running (or stopped) member.
type Member struct {
	NodeCfg   node.Config
	ServerCfg server.Config
	Addr      string // client gRPC address
	Node      *node.Node
	Server    *server.Server
	lis       net.Listener
}

// Cluster is a set of members.
type Cluster struct {
	t       TB
	Members []*Member
}

// Options tune a test cluster.
type Options struct {
	// Tune changes each node's config before start.
	Tune func(*node.Config)
	// TuneServer changes each server's config before start.
	TuneServer func(*server.Config)
}

func freeAddr(t TB) string {
	t.Helper()
	addr, err := ports.Free("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// Start starts n members bootstrapped as one cluster with fast timers,
// and waits until a leader is ready. They are stopped when the test ends.
func Start(t TB, n int, opts Options) *Cluster {
	t.Helper()
	c := &Cluster{t: t}
	var peers []node.Peer
	for i := 0; i < n; i++ {
		m := &Member{Addr: freeAddr(t)}
		nc := node.DefaultConfig()
		nc.ID = fmt.Sprintf("n%d", i+1)
		nc.DataDir = t.TempDir()
		nc.RaftBind = freeAddr(t)
		nc.ClientAdvertise = m.Addr
		nc.HeartbeatTimeout, nc.ElectionTimeout, nc.LeaderLeaseTimeout = 200*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
		nc.Logger = slog.New(slog.DiscardHandler)
		if opts.Tune != nil {
			opts.Tune(&nc)
		}
		sc := server.DefaultConfig()
		sc.NodeID = nc.ID
		sc.Logger = nc.Logger
		if opts.TuneServer != nil {
			opts.TuneServer(&sc)
		}
		m.NodeCfg, m.ServerCfg = nc, sc
		peers = append(peers, node.Peer{ID: nc.ID, RaftAddr: nc.RaftBind})
		c.Members = append(c.Members, m)
	}
	for i, m := range c.Members {
		m.NodeCfg.InitialCluster = peers
		c.StartMember(i)
	}
	t.Cleanup(func() {
		for i := range c.Members {
			c.StopMember(i)
		}
	})
	c.WaitReady()
	return c
}

// Endpoints returns the members' client addresses.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.Members {
		out = append(out, m.Addr)
	}
	return out
}

// StartMember starts (or restarts, on its data) member i.
func (c *Cluster) StartMember(i int) {
	c.t.Helper()
	m := c.Members[i]
	nd, err := node.Open(m.NodeCfg)
	if err != nil {
		c.t.Fatalf("starting %s: %v", m.NodeCfg.ID, err)
	}
	srv, err := server.New(m.ServerCfg, nd)
	if err != nil {
		c.t.Fatal(err)
	}
	var lis net.Listener
	for try := 0; ; try++ {
		if lis, err = net.Listen("tcp", m.Addr); err == nil || try > 50 {
			break
		}
		time.Sleep(20 * time.Millisecond) // the old listener's port is being released
	}
	if err != nil {
		c.t.Fatal(err)
	}
	m.Node, m.Server, m.lis = nd, srv, lis
	go func() { _ = srv.Serve(lis) }()
}

// StopMember stops member i cleanly (leadership transfer, drain, close).
func (c *Cluster) StopMember(i int) {
	m := c.Members[i]
	if m.Node == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = m.Node.TransferLeadership(ctx)
	m.Server.Stop(ctx)
	_ = m.Node.Close(ctx)
	m.Node, m.Server = nil, nil
}

// Leader returns the index of the member that leads and is ready.
func (c *Cluster) Leader() int {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for i, m := range c.Members {
			if m.Node == nil || !m.Node.IsLeader() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := m.Node.ReadIndex(ctx)
			cancel()
			if err == nil {
				return i
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatal("no ready leader within 30s")
	return -1
}

// WaitReady waits for a ready leader and for every running member to be
// registered (so followers can forward).
func (c *Cluster) WaitReady() {
	c.t.Helper()
	c.Leader()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		all := true
		for _, m := range c.Members {
			if m.Node != nil && !m.Node.Registered() {
				all = false
			}
		}
		if all {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatal("members not registered within 30s")
}

// AddNode starts one more node with no data and no initial cluster: it
// waits to be added (through ClusterService.Join). It returns its index.
func (c *Cluster) AddNode() int {
	c.t.Helper()
	base := c.Members[0]
	m := &Member{Addr: freeAddr(c.t)}
	nc, sc := base.NodeCfg, base.ServerCfg
	nc.ID = fmt.Sprintf("n%d", len(c.Members)+1)
	nc.DataDir = c.t.TempDir()
	nc.RaftBind = freeAddr(c.t)
	nc.ClientAdvertise = m.Addr
	nc.InitialCluster = nil
	sc.NodeID = nc.ID
	m.NodeCfg, m.ServerCfg = nc, sc
	c.Members = append(c.Members, m)
	c.StartMember(len(c.Members) - 1)
	return len(c.Members) - 1
}
