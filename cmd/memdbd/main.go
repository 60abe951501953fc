// Command memdbd runs one member of a memdbd cluster: a replicated,
// in-memory table store served over gRPC.
//
//	memdbd --node-id n1 --data-dir data/n1 \
//	  --client-addr 127.0.0.1:7001 --raft-addr 127.0.0.1:7101 \
//	  --initial-cluster n1=127.0.0.1:7101,n2=127.0.0.1:7102,n3=127.0.0.1:7103
//
// Run `memdbd -h` for every setting. Settings come from flags, then
// MEMDBD_* environment variables, then the YAML file named by --config.
//
// Admin commands talk to a running node: memdbd status, members,
// transfer [-to id], promote -id, remove -id [-force], health (exit 0
// when serving; for container health checks) and version, each with -addr
// host:port.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	armonmetrics "github.com/armon/go-metrics"
	armonprom "github.com/armon/go-metrics/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/fsm"
	"github.com/memdbd/memdbd/node"
	"github.com/memdbd/memdbd/server"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	// memdbd <admin command> [flags]; anything else starts the server.
	if len(os.Args) > 1 {
		if cmd, ok := subcommands[os.Args[1]]; ok {
			os.Exit(cmd(os.Args[2:], os.Stdout, os.Stderr))
		}
	}
	cfg, err := parseConfig(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err == nil {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err = run(ctx, cfg, func() (*config, error) { return parseConfig(os.Args[1:], os.Getenv, io.Discard) })
		stop()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "memdbd:", err)
		os.Exit(1)
	}
}

func newLogger(c *config, level *slog.LevelVar) (*slog.Logger, error) {
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", c.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)).With("node", c.nodeID), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)).With("node", c.nodeID), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", c.logFormat)
}

// run starts the node and its servers and blocks until ctx is cancelled
// (SIGINT, SIGTERM), then shuts down in order. SIGHUP calls reparse and
// applies what may change at run time.
// defaultHeapFloor and maxHeapFloor are --heap-floor-bytes' default and
// upper bound.
const (
	defaultHeapFloor = 64 << 20
	maxHeapFloor     = 16 << 30
)

// heapFloor holds --heap-floor-bytes of heap for the life of the process.
//
// Why: Go collects garbage when the heap doubles its live size, and while
// the data is small that is every few megabytes. A member allocates about
// 11 KB per write (decoded requests and log entries, copied B-tree nodes,
// bbolt's page buffers), so with 64 writers and 10,000 rows each member
// collected 6 times a second and the collector took a tenth of the
// leader's CPU. An allocation the collector counts as live but never
// scans (no pointers) and the program never touches (no memory is
// committed for its pages) raises every heap target by its size:
// collections become rare while the data is small and are unaffected once
// it is large. The cost is up to that much more garbage in memory (resident
// size 150 MB to 210 MB in that run), and it counts against GOMEMLIMIT.
// With 64 MiB: collections 43-45 to 10-12 per member in 7 s, CPU per write
// (all members) 139 to 128 µs, 12.1k to 12.8k writes/s.
var heapFloor []byte

func run(ctx context.Context, c *config, reparse func() (*config, error)) error {
	if c.heapFloorBytes > 0 && heapFloor == nil { // checked by serverConfig
		heapFloor = make([]byte, c.heapFloorBytes)
	}
	// 1. Settings and logging.
	level := new(slog.LevelVar)
	lg, err := newLogger(c, level)
	if err != nil {
		return err
	}
	// Ports other machines reach need protection, or --insecure
	// (exposure.go).
	if err := c.checkExposure(lg); err != nil {
		return err
	}
	ncfg, err := c.nodeConfig(version)
	if err != nil {
		return err
	}
	scfg, err := c.serverConfig(version)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// hashicorp/raft reports its own timings (commit time, log store
	// latency: the fsync, FSM apply, snapshot persist) through go-metrics;
	// this sink publishes them in the same registry.
	sink, err := armonprom.NewPrometheusSinkFrom(armonprom.PrometheusOpts{Registerer: reg, Expiration: 5 * time.Minute})
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	mcfg := armonmetrics.DefaultConfig("memdb")
	mcfg.EnableHostname, mcfg.EnableRuntimeMetrics, mcfg.EnableServiceLabel = false, false, false
	// Dropped: the samples taken per log entry, per Raft RPC and per
	// heartbeat. Each is a Prometheus summary update behind a string-built
	// key, and together they took 5% of a leader's CPU and 15% of a
	// follower's under a 64-client write load. The per-batch timings that
	// say where a write's time goes stay.
	mcfg.BlockedPrefixes = raftMetricsDropped
	if _, err := armonmetrics.NewGlobal(mcfg, sink); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	ncfg.Logger, scfg.Logger, scfg.Registerer = lg, lg, reg
	tl, err := c.tlsSetup()
	if err != nil {
		return err
	}
	ncfg.RaftTLS, scfg.TLS, scfg.PeerTLS = tl.raft, tl.server, tl.peerDial

	// 2. The client listener first, so that a port clash fails before Raft
	// starts.
	lis, err := net.Listen("tcp", c.clientAddr)
	if err != nil {
		return fmt.Errorf("--client-addr: %w", err)
	}
	defer lis.Close()

	// 3. The node: data dir, Raft log, snapshots, transport, bootstrap.
	n, err := node.Open(ncfg)
	if err != nil {
		return err
	}
	closeCtx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), c.shutdownTimeout)
	}

	// 4. The gRPC server.
	srv, err := server.New(scfg, n)
	if err != nil {
		cctx, cancel := closeCtx()
		_ = n.Close(cctx)
		cancel()
		return err
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(lis) }()
	lg.Info("memdbd serving", "version", version, "client_addr", lis.Addr().String(), "raft_addr", c.raftAddr, "data_dir", c.dataDir)

	// 5. The admin HTTP endpoints.
	var admin *http.Server
	if c.adminAddr != "" {
		admin = newAdmin(c.adminAddr, reg, n, srv, adminTLS(tl.server), c.metricsAnonymous)
		go func() {
			serve := admin.ListenAndServe
			if admin.TLSConfig != nil {
				serve = func() error { return admin.ListenAndServeTLS("", "") }
			}
			if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				lg.Error("admin HTTP server stopped", "err", err)
			}
		}()
	}

	// 6. Join a running cluster, when asked and new.
	if c.join != "" && !n.HadState() {
		if err := joinCluster(ctx, lg, strings.Split(c.join, ","), tl.peerDial, c.nodeID, ncfg.RaftAdvertise, c.raftAddr, c.nonVoter); err != nil {
			lg.Error("could not join the cluster", "err", err)
		}
	}

	// 7. SIGHUP re-reads the settings.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			// Certificates first: their files may have changed while the
			// settings naming them did not.
			if err := tl.reload(); err != nil {
				lg.Error("reload: certificates not reloaded", "err", err)
			} else if len(tl.pairs) > 0 {
				lg.Info("reload: certificates re-read")
			}
			reload(lg, c, reparse, level, n, srv)
		}
	}()

	// 8. Wait, then shut down: hand over leadership, drain, close.
	var fatal error
	select {
	case <-ctx.Done():
		lg.Info("shutting down")
	case err := <-serveErr:
		lg.Error("gRPC server stopped", "err", err)
		fatal = err
	case err := <-srv.Fatal():
		lg.Error("stopping", "err", err)
		fatal = err
	}
	cctx, cancel := closeCtx()
	defer cancel()
	if err := n.TransferLeadership(cctx); err != nil {
		lg.Warn("shutting down without a leadership transfer", "err", err)
	}
	srv.Stop(cctx)
	if admin != nil {
		_ = admin.Shutdown(cctx)
	}
	if err := n.Close(cctx); err != nil {
		return fmt.Errorf("closing raft: %w", err)
	}
	lg.Info("stopped")
	return fatal
}

// joinCluster asks the members at addrs to add this node, until one
// accepts or ctx ends.
func joinCluster(ctx context.Context, lg *slog.Logger, addrs []string, tc *tls.Config, id, raftAdvertise, raftBind string, nonVoter bool) error {
	raftAddr := raftAdvertise
	if raftAddr == "" {
		raftAddr = raftBind
	}
	backoff := 200 * time.Millisecond
	for {
		for _, a := range addrs {
			a = strings.TrimSpace(a)
			creds := insecure.NewCredentials()
			if tc != nil {
				creds = credentials.NewTLS(tc)
			}
			conn, err := grpc.NewClient(a, grpc.WithTransportCredentials(creds))
			if err != nil {
				return fmt.Errorf("--join %s: %w", a, err)
			}
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err = pb.NewClusterServiceClient(conn).Join(cctx, &pb.JoinRequest{NodeId: id, RaftAddr: raftAddr, NonVoter: nonVoter})
			cancel()
			_ = conn.Close()
			if err == nil {
				lg.Info("joined the cluster", "via", a)
				return nil
			}
			lg.Warn("join attempt failed", "via", a, "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// reloadable lists the settings SIGHUP applies to a running node.
var reloadable = map[string]bool{
	"log-level": true, "snapshot-threshold": true, "snapshot-interval": true, "trailing-logs": true,
	"max-key-bytes": true, "max-value-bytes": true, "max-txn-ops": true, "request-timeout": true, "data-quota-bytes": true,
	"max-response-bytes": true, "max-response-bytes-in-flight": true,
}

// reload applies the settings that changed and can change at run time,
// and reports the others instead of ignoring them. c is updated to what is
// in force.
func reload(lg *slog.Logger, c *config, reparse func() (*config, error), level *slog.LevelVar, n *node.Node, srv *server.Server) {
	nc, err := reparse()
	if err != nil {
		lg.Error("reload: settings not applied", "err", err)
		return
	}
	var changed, fixed []string
	for name, v := range nc.values {
		if c.values[name] == v {
			continue
		}
		if reloadable[name] {
			changed = append(changed, name)
		} else {
			fixed = append(fixed, name)
		}
	}
	sort.Strings(changed)
	sort.Strings(fixed)
	if len(fixed) > 0 {
		lg.Warn("reload: these settings changed but take effect only at restart", "settings", strings.Join(fixed, ", "))
	}
	if len(changed) == 0 {
		lg.Info("reload: nothing to change")
		return
	}
	if err := level.UnmarshalText([]byte(nc.logLevel)); err != nil {
		lg.Error("reload: --log-level", "err", err)
		return
	}
	if err := n.ReloadSnapshots(nc.snapshotThreshold, nc.snapshotInterval, nc.trailingLogs); err != nil {
		lg.Error("reload: snapshot settings not applied", "err", err)
		return
	}
	scfg, err := nc.serverConfig(version)
	if err == nil {
		err = srv.Reload(scfg.Limits, scfg.DefaultTimeout)
	}
	if err != nil {
		lg.Error("reload: limits not applied", "err", err)
		return
	}
	for _, name := range changed {
		c.values[name] = nc.values[name]
	}
	lg.Info("reload: settings applied", "settings", strings.Join(changed, ", "))
}

// maxApplyLag is the most committed-but-unapplied entries a ready node
// may have.
const maxApplyLag = 1000

// readiness runs the /readyz checks: each with its result.
func readiness(n *node.Node, srv *server.Server) (ok bool, report string) {
	var b strings.Builder
	ok = true
	check := func(name string, pass bool, detail string) {
		mark := "ok"
		if !pass {
			mark, ok = "FAIL", false
		}
		fmt.Fprintf(&b, "[%s] %s: %s\n", mark, name, detail)
	}
	st := n.Status()
	check("leader", st.LeaderID != "", fmt.Sprintf("leader %q, term %d", st.LeaderID, st.Term))
	halted := n.FSM().Halted()
	check("state machine", halted == nil, fmt.Sprint(func() any {
		if halted != nil {
			return halted
		}
		return "applying"
	}()))
	lag := int64(st.CommitIndex) - int64(st.AppliedIndex)
	check("apply lag", lag <= maxApplyLag, fmt.Sprintf("%d entries (bound %d)", max(lag, 0), maxApplyLag))
	check("disk", diskWritable(n.Config().DataDir) == nil, fmt.Sprint(func() any {
		if err := diskWritable(n.Config().DataDir); err != nil {
			return err
		}
		return "writable"
	}()))
	// Snapshots keep up: entries since the newest snapshot stay within a
	// few thresholds (a failing snapshot lets them grow without bound).
	threshold, trailing := n.SnapshotSettings()
	bound := 4*threshold + trailing
	snapIdx, _, _ := n.LastSnapshot()
	since := st.AppliedIndex - min(snapIdx, st.AppliedIndex)
	check("snapshots", since <= bound, fmt.Sprintf("%d entries since the last snapshot at %d (bound %d)", since, snapIdx, bound))
	div := srv.Divergence()
	check("consistency", div == "", func() string {
		if div != "" {
			return div + "; replace this member (docs/operations.md, damaged data)"
		}
		return "no checkpoint differs from the other members'"
	}())
	return ok, b.String()
}

func diskWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".readyz-*")
	if err != nil {
		return err
	}
	name := f.Name()
	_, err = f.Write([]byte("ok"))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if rerr := os.Remove(name); err == nil {
		err = rerr
	}
	return err
}

// newAdmin serves metrics, liveness, readiness and pprof.
//
// With TLS on the gRPC port, the admin port serves TLS with the same
// certificate, and its health endpoints stay open (load balancers and
// orchestrators probe them without credentials), while pprof, and
// /metrics unless --metrics-anonymous, need a client certificate signed
// by --tls-ca-file: they show the heap, goroutines and the command line.
// With access control on, pprof needs cluster.admin and /metrics
// cluster.read, from a client certificate's user or an Authorization
// header ("Bearer <user>:<password>").
func newAdmin(addr string, reg *prometheus.Registry, n *node.Node, srv *server.Server, tc *tls.Config, metricsAnonymous bool) *http.Server {
	mux := http.NewServeMux()
	guardFor := func(action string) func(http.Handler) http.Handler {
		return func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if code, msg := srv.AllowHTTP(r, action); code != http.StatusOK {
					http.Error(w, msg, code)
					return
				}
				if !srv.AuthEnabled() && tc != nil && (r.TLS == nil || len(r.TLS.VerifiedChains) == 0) {
					http.Error(w, "a client certificate signed by the member's --tls-ca-file is needed here", http.StatusUnauthorized)
					return
				}
				h.ServeHTTP(w, r)
			})
		}
	}
	guard := guardFor(fsm.ActionClusterAdmin)
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	if metricsAnonymous {
		mux.Handle("/metrics", metrics)
	} else {
		mux.Handle("/metrics", guardFor(fsm.ActionClusterRead)(metrics))
	}
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, report := readiness(n, srv)
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprint(w, report)
	})
	mux.Handle("/debug/pprof/", guard(http.HandlerFunc(pprof.Index)))
	mux.Handle("/debug/pprof/cmdline", guard(http.HandlerFunc(pprof.Cmdline)))
	mux.Handle("/debug/pprof/profile", guard(http.HandlerFunc(pprof.Profile)))
	mux.Handle("/debug/pprof/symbol", guard(http.HandlerFunc(pprof.Symbol)))
	mux.Handle("/debug/pprof/trace", guard(http.HandlerFunc(pprof.Trace)))
	return &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second, TLSConfig: tc}
}

// adminTLS is the admin port's TLS: the gRPC port's certificate, with
// client certificates asked for but not required (see newAdmin); nil
// without TLS.
func adminTLS(grpcTLS *tls.Config) *tls.Config {
	if grpcTLS == nil {
		return nil
	}
	c := grpcTLS.Clone()
	if c.ClientCAs != nil {
		c.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return c
}

// raftMetricsDropped are the go-metrics names (with the "memdb" prefix)
// that hashicorp/raft and raft-boltdb emit per entry, per RPC or per
// heartbeat; see the BlockedPrefixes setting above.
var raftMetricsDropped = []string{
	"memdb.raft.apply",                 // a counter per write; the gRPC metrics count writes
	"memdb.raft.verify_leader",         // a counter per leadership check
	"memdb.raft.boltdb.logSize",        // a sample per entry
	"memdb.raft.boltdb.logBatchSize",   // bytes per batch, next to logsPerBatch
	"memdb.raft.boltdb.writeCapacity",  // derived from storeLogs
	"memdb.raft.boltdb.getLog",         // per read of the log store
	"memdb.raft.net.",                  // four samples per Raft RPC, heartbeats included
	"memdb.raft.rpc.processHeartbeat",  // per heartbeat, on followers
	"memdb.raft.replication.heartbeat", // per heartbeat, on the leader
}
