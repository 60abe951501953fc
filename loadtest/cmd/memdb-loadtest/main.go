// Command memdb-loadtest puts a bounded load on a memdbd cluster and
// reports throughput, latency percentiles, errors by code, a JSON result
// and an HTML timeline. With -spawn it starts its own 3-node cluster on
// loopback, which also makes the failover scenario possible (-failover-at).
//
//	go run ./loadtest/cmd/memdb-loadtest -spawn -workload write -clients 64 -duration 20s
//	go run ./loadtest/cmd/memdb-loadtest -spawn -workload write -clients 32 -duration 15s -failover-at 5s -failover kill
//	go run ./loadtest/cmd/memdb-loadtest -endpoints 127.0.0.1:7001 -workload mixed -read-ratio 0.9 -rate 5000
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"sort"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/chaos"
	"github.com/memdbd/memdbd/client"
	"github.com/memdbd/memdbd/internal/tlsconf"
	"github.com/memdbd/memdbd/loadtest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "memdb-loadtest:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		endpoints  = flag.String("endpoints", "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003", "cluster members (ignored with -spawn)")
		spawn      = flag.Bool("spawn", false, "start a local 3-node cluster (data in a temp dir) and load it")
		binary     = flag.String("binary", "", "memdbd binary for -spawn (default: build it)")
		workload   = flag.String("workload", "write", "write, insert, read, stale-read, mixed, scan or txn")
		readRatio  = flag.Float64("read-ratio", 0.9, "mixed: fraction of reads")
		keys       = flag.Int("keys", 10000, "key space")
		zipf       = flag.Bool("zipf", false, "zipfian keys (s=1.1) instead of uniform")
		valueSize  = flag.Int("value-size", 256, "bytes per value")
		clients    = flag.Int("clients", 16, "concurrent workers")
		conns      = flag.Int("conns", 4, "client connections the workers share")
		noBatching = flag.Bool("no-batching", false, "send every Get and Upsert as its own RPC (the SDK otherwise batches concurrent ones)")
		rate       = flag.Float64("rate", 0, "open loop at this many ops/s (0: closed loop)")
		warmup     = flag.Duration("warmup", 2*time.Second, "warm-up, not measured")
		duration   = flag.Duration("duration", 10*time.Second, "measured phase")
		requests   = flag.Int64("requests", 0, "stop after this many measured requests (0: by duration)")
		timeout    = flag.Duration("timeout", 5*time.Second, "per-request deadline")
		seed       = flag.Uint64("seed", 1, "random seed")
		jsonOut    = flag.String("json", "", "write the result as JSON to this file")
		htmlOut    = flag.String("html", "", "write the timeline chart to this HTML file")
		svgOut     = flag.String("svg", "", "write the timeline chart to this SVG file")
		failoverAt = flag.Duration("failover-at", 0, "with -spawn: disturb the leader this long into the measured phase")
		failover   = flag.String("failover", "kill", "kill (kill -9 the leader, restart it 3s later) or transfer (planned leader transfer)")
		progress   = flag.Bool("progress", true, "show a progress bar")
		cpuProfile = flag.String("cpuprofile", "", "write the load generator's own CPU profile to this file")
		watchers   = flag.Int("watchers", 0, "also open this many watch streams on one member, each over its own key range, and compare with a baseline run without them")
		watchOn    = flag.Int("watch-member", -1, "member index the watchers use (-1: the leader, with -spawn)")
		watchConns = flag.Int("watch-conns", 8, "connections the watch streams share")
		watchProg  = flag.Duration("watch-progress", 0, "progress notification interval of each watch stream (0: the server's default)")
		watchIdle  = flag.Bool("watch-idle", false, "watch key ranges no write touches (the cost of holding the streams alone)")
		rounds     = flag.Int("rounds", 3, "with -watchers: alternating rounds without and with the watchers")
		tlsCA      = flag.String("tls-ca-file", "", "connect over TLS, verifying the members against this PEM CA bundle (not with -spawn)")
		tlsCert    = flag.String("tls-cert-file", "", "PEM client certificate, for members that require one")
		tlsKey     = flag.String("tls-key-file", "", "PEM private key of -tls-cert-file")
		nodeArgs   = flag.String("node-args", "", "with -spawn: extra flags for every member, space-separated (e.g. \"--raft-log-store=boltdb\")")
		auth       = flag.Bool("auth", false, "with -spawn: access control on (a root user bootstrapped), every request authenticated as root by password and authorized")
		user       = flag.String("user", "", "user to call as, on a cluster with access control (not with -spawn; password from $MEMDBD_PASSWORD)")
	)
	flag.Parse()
	var tc *tls.Config
	if *tlsCA != "" || *tlsCert != "" || *tlsKey != "" {
		if *spawn {
			return fmt.Errorf("-tls-* flags are for a cluster started with TLS, not -spawn")
		}
		var err error
		if tc, err = tlsconf.ClientFromFiles(*tlsCA, *tlsCert, *tlsKey); err != nil {
			return err
		}
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	eps := strings.Split(*endpoints, ",")
	var creds *client.Credentials
	switch {
	case *auth && !*spawn:
		return fmt.Errorf("-auth is for -spawn; against a running cluster give -user")
	case *auth:
		creds = &client.Credentials{User: "root", Password: "loadtest-root-password"}
	case *user != "":
		creds = &client.Credentials{User: *user, Password: os.Getenv("MEMDBD_PASSWORD")}
	}
	var cl *chaos.Cluster
	if *spawn {
		dir, err := os.MkdirTemp("", "memdb-loadtest")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		bin := *binary
		if bin == "" {
			wd, _ := os.Getwd()
			root, err := chaos.ModuleRoot(wd)
			if err != nil {
				return fmt.Errorf("-spawn needs -binary outside the memdbd module: %w", err)
			}
			if bin, err = chaos.BuildBinary(root, dir); err != nil {
				return err
			}
		}
		cl, err = chaos.StartCluster(chaos.ClusterConfig{Binary: bin, Dir: dir, Nodes: 3, ElectionTimeout: 500 * time.Millisecond,
			SnapshotThreshold: 16384, TrailingLogs: 10240, Direct: true, Root: creds, ExtraArgs: strings.Fields(*nodeArgs)})
		if err != nil {
			return err
		}
		defer cl.Close()
		eps = cl.Endpoints()
	} else if *failoverAt > 0 {
		return fmt.Errorf("-failover-at needs -spawn: the tool must own the processes")
	}
	setupCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if *spawn {
		// With and without -auth alike, so that both start the load on a
		// cluster as settled.
		if err := waitAuth(setupCtx, eps[0], creds); err != nil {
			return err
		}
	}
	target, err := loadtest.NewMemdbTargetTLS(setupCtx, eps, *conns, false, *noBatching, tc, creds)
	if err != nil {
		return err
	}
	defer target.Close()
	w, err := loadtest.NewWorkload(*workload, *keys, *zipf, *readRatio)
	if err != nil {
		return err
	}
	if err := target.Setup(setupCtx, *keys, make([]byte, *valueSize)); err != nil {
		return err
	}
	cfg := loadtest.Config{Clients: *clients, Rate: *rate, Warmup: *warmup, Duration: *duration, Requests: *requests,
		Keys: *keys, ValueSize: *valueSize, Timeout: *timeout, Seed: *seed}
	if *progress {
		cfg.Progress = os.Stderr
	}
	var events []loadtest.Event
	if *failoverAt > 0 {
		cfg.Bucket = 10 * time.Millisecond
		done := false
		cfg.OnTick = func(elapsed time.Duration) {
			if done || elapsed < *failoverAt {
				return
			}
			done = true
			leader := cl.Leader(ctx)
			if leader < 0 {
				events = append(events, loadtest.Event{T: elapsed, What: "no leader found to disturb"})
				return
			}
			switch *failover {
			case "transfer":
				go func() {
					tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					defer cancel()
					_ = cl.TransferLeadership(tctx, leader)
				}()
				events = append(events, loadtest.Event{T: elapsed, What: "leadership transfer from " + cl.NodeID(leader)})
			default:
				cl.Kill(leader)
				events = append(events, loadtest.Event{T: elapsed, What: "kill -9 of leader " + cl.NodeID(leader)})
				go func() {
					time.Sleep(3 * time.Second)
					_ = cl.Start(leader, "")
				}()
			}
		}
	}
	if *watchers > 0 {
		return runWatchCompare(ctx, cfg, target, w, cl, eps, *watchers, *watchOn, *watchConns, *keys, *watchProg, *watchIdle, *rounds)
	}
	res, err := loadtest.Run(ctx, cfg, target, w)
	if err != nil {
		return err
	}
	res.Events = events
	for _, e := range events {
		gap, rec := res.Unavailability(e.T)
		res.Outages = append(res.Outages, loadtest.Outage{Event: e.What, Gap: gap, Recovery: rec})
	}
	fmt.Print(res)
	if *jsonOut != "" {
		if err := res.WriteJSON(*jsonOut); err != nil {
			return err
		}
	}
	for _, out := range []struct {
		path  string
		write func(io.Writer) error
	}{{*htmlOut, res.WriteHTML}, {*svgOut, res.WriteSVG}} {
		if out.path == "" {
			continue
		}
		f, err := os.Create(out.path)
		if err != nil {
			return err
		}
		err = out.write(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// runWatchCompare measures the workload without and with the watchers
// open, alternating for several rounds on the same cluster (the watchers
// are opened and closed each round), and prints each round's ratio and
// the median: on a shared machine one pair of runs is too noisy to judge.
func runWatchCompare(ctx context.Context, cfg loadtest.Config, target *loadtest.MemdbTarget, w loadtest.Workload, cl *chaos.Cluster,
	eps []string, n, member, conns, keys int, progress time.Duration, idle bool, rounds int) error {
	target.StampWrites = true
	addr := eps[0]
	if member >= 0 && member < len(eps) {
		addr = eps[member]
	} else if cl != nil {
		if l := cl.Leader(ctx); l >= 0 {
			addr = eps[l]
		}
	}
	var ratios []float64
	var st loadtest.WatchStats
	for r := range max(rounds, 1) {
		base, err := loadtest.Run(ctx, cfg, target, w)
		if err != nil {
			return err
		}
		start := time.Now()
		ws, err := loadtest.StartWatchers(ctx, addr, n, conns, keys, progress, idle)
		if err != nil {
			return err
		}
		opened := time.Since(start)
		ws.Reset()
		with, err := loadtest.Run(ctx, cfg, target, w)
		st = ws.Stats()
		ws.Close()
		if err != nil {
			return err
		}
		ratio := with.Throughput / base.Throughput
		ratios = append(ratios, ratio)
		fmt.Printf("round %d: %.0f ops/s alone, %.0f ops/s with %d watchers on %s (opened in %v): %.2fx; write p99 %v -> %v; "+
			"%d events, write start to event p50 %v p99 %v max %v; %d streams ended early\n",
			r+1, base.Throughput, with.Throughput, st.Watchers, addr, opened.Round(time.Millisecond), ratio,
			base.Latency.P99, with.Latency.P99, st.Events, st.P50, st.P99, st.Max, st.Errors)
	}
	sort.Float64s(ratios)
	fmt.Printf("throughput with/without %d watchers, median of %d rounds: %.2fx (range %.2f-%.2f)\n",
		n, len(ratios), ratios[len(ratios)/2], ratios[0], ratios[len(ratios)-1])
	return nil
}

// waitAuth waits until the spawned cluster serves, with access control on
// when creds are given, so that the measured phase authenticates every
// request.
func waitAuth(ctx context.Context, ep string, creds *client.Credentials) error {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if creds != nil {
		opts = append(opts, grpc.WithPerRPCCredentials(creds.PerRPC()))
	}
	cc, err := grpc.NewClient(ep, opts...)
	if err != nil {
		return err
	}
	defer cc.Close()
	for {
		r, err := pb.NewAuthServiceClient(cc).WhoAmI(ctx, &pb.WhoAmIRequest{})
		if err == nil && (creds == nil || r.AuthEnabled && r.User == creds.User) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("access control did not come on: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
