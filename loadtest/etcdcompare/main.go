// Command etcdcompare measures memdbd against etcd v3.7 on the same
// machine in the same run: it starts a 3-member etcd cluster (three
// processes running go.etcd.io/etcd/server/v3/embed with its defaults:
// data on disk, fsync on) and a 3-node memdbd cluster, drives both with
// the same loadtest workloads and parameters, row by row (etcd, then
// memdbd, then memdbd without request batching), and prints memdbd/etcd
// ratios. It is a module of its own so that memdbd
// never depends on etcd.
//
// Each row runs once per client-object count in -conns (default 1 and
// 8): with 1, all callers share one client object per side, as both SDKs
// recommend for a process; with 8, the callers are spread over eight
// independent client objects (each its own connections, and for memdbd
// its own request batching), as with eight processes. etcd's client sends
// every call as its own RPC either way; memdbd's SDK sends concurrent
// calls of one client object together, so it gains from sharing one and
// the two tables differ.
//
//	cd loadtest/etcdcompare && go run . -duration 10s
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/memdbd/memdbd/chaos"
	"github.com/memdbd/memdbd/internal/childproc"
	"github.com/memdbd/memdbd/internal/ports"
	"github.com/memdbd/memdbd/loadtest"
)

// row is one comparison: a workload, a client count and a routing.
type row struct {
	workload string
	clients  int
	leader   bool // all requests to the leader only
}

func (r row) String() string {
	route := "spread"
	if r.leader {
		route = "leader"
	}
	return fmt.Sprintf("%-10s c=%-3d %s", r.workload, r.clients, route)
}

var rows = []row{
	{"write", 1, false}, {"write", 16, false}, {"write", 64, false}, {"write", 256, false},
	{"read", 64, false}, {"read", 64, true},
	{"stale-read", 64, false}, {"stale-read", 64, true},
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "etcd-node" {
		if err := runEtcdNode(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "etcdcompare:", err)
		os.Exit(1)
	}
}

func freeAddr() string {
	addr, err := ports.Free("127.0.0.1")
	if err != nil {
		panic(err)
	}
	return addr
}

// startEtcd runs three etcd members as processes of this binary.
func startEtcd(dir string) (endpoints []string, stop func(), err error) {
	self, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	var names, curls, purls []string
	for i := 0; i < 3; i++ {
		names = append(names, fmt.Sprintf("e%d", i+1))
		curls = append(curls, "http://"+freeAddr())
		purls = append(purls, "http://"+freeAddr())
	}
	var initial []string
	for i := range names {
		initial = append(initial, names[i]+"="+purls[i])
	}
	var cmds []*exec.Cmd
	stop = func() {
		for _, c := range cmds {
			_ = c.Process.Signal(syscall.SIGTERM)
		}
		for _, c := range cmds {
			_ = c.Wait()
		}
	}
	for i := range names {
		logf, err := os.Create(filepath.Join(dir, names[i]+".log"))
		if err != nil {
			stop()
			return nil, nil, err
		}
		c := exec.Command(self, "etcd-node", names[i], filepath.Join(dir, names[i]), curls[i], purls[i], strings.Join(initial, ","))
		c.Stdout, c.Stderr = logf, logf
		c.SysProcAttr = childproc.Attr()
		if err := c.Start(); err != nil {
			stop()
			return nil, nil, err
		}
		cmds = append(cmds, c)
		endpoints = append(endpoints, strings.TrimPrefix(curls[i], "http://"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		if _, err := etcdLeader(ctx, endpoints); err == nil {
			return endpoints, stop, nil
		}
		select {
		case <-ctx.Done():
			stop()
			return nil, nil, fmt.Errorf("etcd cluster did not elect a leader")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

type measured struct {
	Row    string           `json:"row"`
	Conns  int              `json:"client_objects"`
	Etcd   *loadtest.Result `json:"etcd"`
	Memdbd *loadtest.Result `json:"memdbd"`
	// MemdbdUnbatched: the SDK with request batching off, every call its
	// own RPC as with etcd's client.
	MemdbdUnbatched *loadtest.Result `json:"memdbd_unbatched,omitempty"`
}

func run() error {
	var (
		duration = flag.Duration("duration", 8*time.Second, "measured phase per row")
		warmup   = flag.Duration("warmup", 2*time.Second, "warm-up per row")
		keys     = flag.Int("keys", 10000, "key space")
		valSize  = flag.Int("value-size", 256, "bytes per value")
		out      = flag.String("out", "", "write all results as JSON to this file")
		only     = flag.String("rows", "", "comma-separated row numbers to run (default all)")
		unbatch  = flag.Bool("unbatched", true, "also run memdbd with the SDK's request batching off")
		connList = flag.String("conns", "1,8", "comma-separated client-object counts per side; every row runs with each (capped at the row's callers)")
	)
	flag.Parse()
	dir, err := os.MkdirTemp("", "etcdcompare")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	selected := rows
	if *only != "" {
		selected = nil
		for _, s := range strings.Split(*only, ",") {
			var i int
			if _, err := fmt.Sscan(s, &i); err != nil || i < 0 || i >= len(rows) {
				return fmt.Errorf("-rows: %q is not a row number 0..%d", s, len(rows)-1)
			}
			selected = append(selected, rows[i])
		}
	}
	var connCounts []int
	for _, s := range strings.Split(*connList, ",") {
		var n int
		if _, err := fmt.Sscan(s, &n); err != nil || n < 1 {
			return fmt.Errorf("-conns: %q is not a positive count", s)
		}
		connCounts = append(connCounts, n)
	}
	ctx := context.Background()
	cfg := func(r row) loadtest.Config {
		return loadtest.Config{Clients: r.clients, Warmup: *warmup, Duration: *duration, Keys: *keys, ValueSize: *valSize, Seed: 1}
	}

	// Both clusters run for the whole comparison and each row is measured
	// on etcd and on memdbd back to back (then memdbd unbatched), so that
	// the machine's mood, which drifts over minutes on a shared host,
	// weighs on numerator and denominator alike. The cluster not under
	// load idles (heartbeats only).
	eps, stopEtcd, err := startEtcd(dir)
	if err != nil {
		return err
	}
	defer stopEtcd()
	leader, err := etcdLeader(ctx, eps)
	if err != nil {
		return err
	}
	wd, _ := os.Getwd()
	root, err := chaos.ModuleRoot(filepath.Join(wd, "..", ".."))
	if err != nil {
		return err
	}
	bin, err := chaos.BuildBinary(root, dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "cluster"), 0o755); err != nil {
		return err
	}
	// memdbd with its default settings.
	cl, err := chaos.StartCluster(chaos.ClusterConfig{Binary: bin, Dir: filepath.Join(dir, "cluster"), Nodes: 3,
		ElectionTimeout: 500 * time.Millisecond, SnapshotThreshold: 16384, TrailingLogs: 10240, Direct: true})
	if err != nil {
		return err
	}
	defer cl.Close()
	var leaderAddr string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if l := cl.Leader(ctx); l >= 0 {
			leaderAddr = cl.Endpoints()[l]
			break
		}
	}
	if leaderAddr == "" {
		return fmt.Errorf("memdbd cluster has no leader")
	}
	modes := []bool{false}
	if *unbatch {
		modes = append(modes, true)
	}
	// measure loads one target with one row's workload, after writing the
	// key space (within a minute) when setup is set; it closes the target.
	measure := func(label string, t loadtest.Target, setup bool, r row) (*loadtest.Result, error) {
		defer t.Close()
		if setup {
			sctx, cancel := context.WithTimeout(ctx, time.Minute)
			err := t.Setup(sctx, *keys, make([]byte, *valSize))
			cancel()
			if err != nil {
				return nil, err
			}
		}
		w, _ := loadtest.NewWorkload(r.workload, *keys, false, 0)
		res, err := loadtest.Run(ctx, cfg(r), t, w)
		if err == nil {
			fmt.Fprintf(os.Stderr, "%-18s %s x%d: %.0f ops/s p50 %v p99 %v errors %d\n", label, r, t.Conns(), res.Throughput, res.Latency.P50, res.Latency.P99, res.Errors)
		}
		return res, err
	}
	var results []measured
	setup := true // the first row of each cluster writes its key space
	type rowConns struct {
		r     row
		conns int
	}
	done := map[rowConns]bool{}
	for _, nc := range connCounts {
		for _, r := range selected {
			m := measured{Row: r.String(), Conns: min(r.clients, nc)}
			k := rowConns{r, m.Conns}
			if done[k] {
				continue // fewer callers than client objects: measured already
			}
			done[k] = true
			targets := eps
			if r.leader || r.workload == "write" {
				// etcd at its best: its benchmark tool sends writes to the
				// leader (--target-leader), sparing the hop a follower
				// would forward them over.
				targets = []string{leader}
			}
			et, err := newEtcdTarget(targets, m.Conns)
			if err != nil {
				return err
			}
			if m.Etcd, err = measure("etcd", et, setup, r); err != nil {
				return err
			}
			for _, noBatching := range modes {
				targets, only := cl.Endpoints(), false
				if r.leader {
					targets, only = []string{leaderAddr}, true
				}
				sctx, cancel := context.WithTimeout(ctx, time.Minute)
				mt, err := loadtest.NewMemdbTarget(sctx, targets, m.Conns, only, noBatching)
				cancel()
				if err != nil {
					return err
				}
				label := "memdbd"
				if noBatching {
					label = "memdbd (unbatched)"
				}
				res, err := measure(label, mt, setup && !noBatching, r)
				if err != nil {
					return err
				}
				if noBatching {
					m.MemdbdUnbatched = res
				} else {
					m.Memdbd = res
				}
			}
			setup = false
			results = append(results, m)
		}
	}

	fmt.Printf("%-26s %7s %12s %12s %8s %10s %10s %8s %10s %10s %8s %12s\n", "workload", "clients", "etcd ops/s", "memdbd", "ratio",
		"etcd p50", "memdbd", "ratio", "etcd p99", "memdbd", "ratio", "unbatched")
	for _, m := range results {
		e, d := m.Etcd, m.Memdbd
		unb := "-"
		if u := m.MemdbdUnbatched; u != nil {
			unb = fmt.Sprintf("%.2fx", u.Throughput/max(e.Throughput, 1))
		}
		fmt.Printf("%-26s %7d %12.0f %12.0f %7.2fx %10v %10v %7.2fx %10v %10v %7.2fx %12s\n", m.Row, m.Conns,
			e.Throughput, d.Throughput, d.Throughput/max(e.Throughput, 1),
			e.Latency.P50, d.Latency.P50, ratio(d.Latency.P50, e.Latency.P50),
			e.Latency.P99, d.Latency.P99, ratio(d.Latency.P99, e.Latency.P99), unb)
	}
	fmt.Println("throughput ratio: memdbd/etcd, higher is better; latency ratio: memdbd/etcd, lower is better;")
	fmt.Println("unbatched: throughput ratio with the SDK's request batching off;")
	fmt.Println("clients: client objects per side the row's callers share (1: one per process, as both SDKs recommend)")
	if *out != "" {
		b, _ := json.MarshalIndent(results, "", "  ")
		return os.WriteFile(*out, b, 0o644)
	}
	return nil
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}
