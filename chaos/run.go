package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
	"google.golang.org/grpc"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/client"
)

// Config is one run of the harness. Every run is bounded by Duration plus
// a bounded recovery and check phase.
type Config struct {
	// Seed makes the choice and timing of faults repeatable.
	Seed uint64
	// Duration of the fault phase.
	Duration time.Duration
	// Nemeses to draw from (names from NemesisNames); all when empty.
	Nemeses []string
	// Workloads to run: register, bank, set (with the watch checker),
	// counter, ttl; all when empty.
	Workloads []string
	// Workers per workload.
	Workers int
	// Interval between faults: drawn between Interval/2 and Interval.
	Interval time.Duration
	// ElectionTimeout of the nodes.
	ElectionTimeout time.Duration
	// Binary is the memdbd executable; built from ModuleRoot when empty.
	Binary     string
	ModuleRoot string
	// Dir holds data and logs; a temporary directory when empty.
	Dir string
	// Artifacts receives the history, the node logs and porcupine's
	// visualization when a check fails.
	Artifacts string
	// CheckTimeout bounds porcupine; running out counts as a failure.
	CheckTimeout time.Duration
	// Log receives progress.
	Log io.Writer
	// ExtraArgs are appended to every node's command line (for example
	// --read-lease=false, so that every linearizable read is confirmed by
	// a round).
	ExtraArgs []string
	// Endpoints, when set, run the workloads and checkers against a live
	// cluster at these client addresses (every member) instead of a
	// cluster of its own, with no faults of its own: the operator brings
	// them (a rolling upgrade, a machine pulled). The workloads' tables
	// are created with TablePrefix in front of their names and dropped at
	// the end.
	Endpoints   []string
	TablePrefix string
	// Root, when set, runs with access control on (ClusterConfig.Root);
	// with Endpoints, the credentials to call the live cluster with.
	Root *client.Credentials
}

func (c *Config) defaults() {
	if c.Duration <= 0 {
		c.Duration = 30 * time.Second
	}
	if c.Workers <= 0 {
		c.Workers = 3
	}
	if c.Interval <= 0 {
		c.Interval = 3 * time.Second
	}
	if c.ElectionTimeout <= 0 {
		c.ElectionTimeout = 400 * time.Millisecond
	}
	if c.CheckTimeout <= 0 {
		c.CheckTimeout = time.Minute
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	if len(c.Workloads) == 0 {
		c.Workloads = []string{"register", "bank", "set", "counter", "ttl"}
	}
	if len(c.Nemeses) == 0 && len(c.Endpoints) == 0 {
		c.Nemeses = NemesisNames()
	}
}

// Report is the outcome of a run.
type Report struct {
	Seed       uint64
	Ops        map[string]OpCounts
	Events     []string
	Verdicts   []Verdict
	Failovers  []time.Duration
	LostReplys int64
	// SnapshotsTaken and SnapshotInstalls count, over all nodes' logs, the
	// snapshots written and the snapshots installed from a leader.
	SnapshotsTaken, SnapshotInstalls int
	// LeaseTerms counts the leader terms in which a leader held a read
	// lease (linearizable reads without a heartbeat round).
	LeaseTerms int
	// AuthBootstraps counts the members that created the root user and
	// turned access control on; AuthRefusals, the calls members refused
	// for authentication or authorization.
	AuthBootstraps, AuthRefusals int
	Artifacts                    string
}

// OK reports whether every checker passed.
func (r *Report) OK() bool {
	for _, v := range r.Verdicts {
		if !v.OK {
			return false
		}
	}
	return len(r.Verdicts) > 0
}

// String is the human summary.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d\n", r.Seed)
	names := make([]string, 0, len(r.Ops))
	for n := range r.Ops {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c := r.Ops[n]
		fmt.Fprintf(&b, "  %-9s ok %6d  failed %5d  unknown %5d\n", n, c.OK, c.Failed, c.Unknown)
	}
	fmt.Fprintf(&b, "nemesis events: %d (replies lost by proxies: %d; snapshots taken: %d, installed from a leader: %d; leader terms with a read lease: %d)\n",
		len(r.Events), r.LostReplys, r.SnapshotsTaken, r.SnapshotInstalls, r.LeaseTerms)
	for _, e := range r.Events {
		fmt.Fprintf(&b, "  %s\n", e)
	}
	if len(r.Failovers) > 0 {
		p50, p99, mx := percentiles(r.Failovers)
		fmt.Fprintf(&b, "failover (fault to first successful write), %d events: p50 %v  p99 %v  max %v\n", len(r.Failovers), p50, p99, mx)
	}
	for _, v := range r.Verdicts {
		mark := "PASS"
		if !v.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(&b, "%s %-12s %s\n", mark, v.Checker, v.Detail)
	}
	if r.Artifacts != "" {
		fmt.Fprintf(&b, "artifacts: %s\n", r.Artifacts)
	}
	return b.String()
}

func percentiles(ds []time.Duration) (p50, p99, mx time.Duration) {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))].Round(time.Millisecond) }
	return at(0.5), at(0.99), s[len(s)-1].Round(time.Millisecond)
}

type harness struct {
	cfg Config
	c   *Cluster
	rec *Recorder
	// pendingFailover holds leader-loss times with no successful write yet.
	pendingFailover []int64
	// faultAt is when the running nemesis injected its fault.
	faultAt int64
	// regKeys is the register workload's key count, 0 without it.
	regKeys int
	// staleProbe numbers pause-leader-reads' writes.
	staleProbe int64
}

// mark records that the fault takes effect now.
func (h *harness) mark() { h.faultAt = h.rec.Now() }

// workloadsFor builds the named workloads; their tables are named after
// them, with prefix in front.
func workloadsFor(names []string, workers int, prefix string) ([]Workload, error) {
	var out []Workload
	for _, n := range names {
		switch n {
		case "register":
			out = append(out, registerWorkload{keys: 4, table: prefix + n})
		case "bank":
			out = append(out, &bankWorkload{accounts: 5, total: 500, table: prefix + n})
		case "set":
			out = append(out, newSetWorkload(workers, prefix+n))
		case "counter":
			out = append(out, &counterWorkload{table: prefix + n})
		case "ttl":
			out = append(out, newTTLWorkload(workers, prefix+n))
		default:
			return nil, fmt.Errorf("unknown workload %q (register, bank, set, counter, ttl)", n)
		}
	}
	return out, nil
}

// Run runs the cluster, the workloads and the nemeses, then checks.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.defaults()
	logf := func(format string, args ...any) { fmt.Fprintf(cfg.Log, format+"\n", args...) }
	var nemeses []Nemesis
	for _, n := range cfg.Nemeses {
		nm, ok := NemesisByName(n)
		if !ok {
			return nil, fmt.Errorf("unknown nemesis %q (have %s)", n, strings.Join(NemesisNames(), ", "))
		}
		nemeses = append(nemeses, nm)
	}
	workloads, err := workloadsFor(cfg.Workloads, cfg.Workers, cfg.TablePrefix)
	if err != nil {
		return nil, err
	}
	live := len(cfg.Endpoints) > 0
	if live && len(nemeses) > 0 {
		return nil, fmt.Errorf("nemeses need a cluster of the tool's own; against a live cluster the faults are the operator's")
	}
	var cl *Cluster // nil against a live cluster
	endpoints := cfg.Endpoints
	if !live {
		if cfg.Dir == "" {
			if cfg.Dir, err = os.MkdirTemp("", "memdb-chaos"); err != nil {
				return nil, err
			}
			defer os.RemoveAll(cfg.Dir)
		}
		if cfg.Binary == "" {
			if cfg.Binary, err = BuildBinary(cfg.ModuleRoot, cfg.Dir); err != nil {
				return nil, err
			}
		}
		cl, err = StartCluster(ClusterConfig{Binary: cfg.Binary, Dir: cfg.Dir, Nodes: 3, ElectionTimeout: cfg.ElectionTimeout, ExtraArgs: cfg.ExtraArgs,
			SnapshotThreshold: 100, TrailingLogs: 50, Root: cfg.Root})
		if err != nil {
			return nil, err
		}
		defer cl.Close()
		endpoints = cl.Endpoints()
	}
	h := &harness{cfg: cfg, c: cl, rec: newRecorder()}
	for _, w := range workloads {
		if r, ok := w.(registerWorkload); ok {
			h.regKeys = r.keys
		}
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x6d656d6462))
	report := &Report{Seed: cfg.Seed, Ops: map[string]OpCounts{}}

	newClient := func() (*client.Client, error) {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return client.New(cctx, client.Config{Endpoints: endpoints, RequestTimeout: 3 * time.Second,
			Credentials: cfg.Root, Logger: slog.New(slog.DiscardHandler)})
	}
	admin, err := newClient()
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	setupCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	for _, w := range workloads {
		if err := retrySetup(setupCtx, func() error { return w.Setup(setupCtx, admin) }); err != nil {
			cancel()
			return nil, fmt.Errorf("setting up %s: %w", w.Name(), err)
		}
	}
	cancel()
	logf("cluster up, workloads %v, nemeses %v, %v", cfg.Workloads, cfg.Nemeses, cfg.Duration)

	// Watches over the set table live through every fault.
	var wc *watchChecker
	var set *setWorkload
	for _, w := range workloads {
		if s, ok := w.(*setWorkload); ok {
			set = s
		}
	}
	watchCtx, stopWatches := context.WithCancel(ctx)
	defer stopWatches()
	if set != nil {
		var closeWatchers func()
		if wc, closeWatchers, err = startWatchChecker(watchCtx, 2, newClient, set.table); err != nil {
			return nil, err
		}
		defer closeWatchers()
	}

	// Workers: each with its own client (its own write session).
	workCtx, stopWork := context.WithCancel(ctx)
	defer stopWork()
	var wg sync.WaitGroup
	for wi, w := range workloads {
		for i := 0; i < cfg.Workers; i++ {
			c, err := newClient()
			if err != nil {
				return nil, err
			}
			defer c.Close()
			wrng := rand.New(rand.NewPCG(cfg.Seed, uint64(wi*100+i)))
			worker := wi*cfg.Workers + i
			switch w.(type) {
			case *setWorkload, *ttlWorkload:
				worker = i
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for workCtx.Err() == nil {
					opCtx, cancel := context.WithTimeout(workCtx, 2*time.Second)
					w.Step(opCtx, c, worker, wrng, h.rec)
					cancel()
				}
			}()
		}
	}

	// Faults, one at a time, until the duration is up; against a live
	// cluster, only the workload.
	faultEnd := time.Now().Add(cfg.Duration)
	if live {
		sleepCtx(ctx, cfg.Duration)
	}
	for !live && time.Now().Before(faultEnd) && ctx.Err() == nil {
		sleepCtx(ctx, between(rng, cfg.Interval/2, cfg.Interval))
		if !time.Now().Before(faultEnd) {
			break
		}
		nm := nemeses[rng.IntN(len(nemeses))]
		h.faultAt = h.rec.Now()
		desc, leaderLoss := nm.Run(ctx, h, rng)
		t0 := h.faultAt
		ev := fmt.Sprintf("%6.1fs %-18s %s", time.Duration(t0).Seconds(), nm.Name, desc)
		if leaderLoss {
			if at, ok := h.rec.firstWriteAfter(t0); ok {
				report.Failovers = append(report.Failovers, time.Duration(at-t0))
			} else {
				h.pendingFailover = append(h.pendingFailover, t0)
			}
		}
		report.Events = append(report.Events, ev)
		logf("%s", ev)
	}

	// Recovery: heal, restart, resume; let the workload run on a healthy
	// cluster for a while, then stop it.
	if cl != nil {
		cl.HealNetwork()
		for i := range cl.nodes {
			cl.Resume(i)
			if !cl.Running(i) {
				_ = cl.Start(i, "")
			}
		}
	}
	sleepCtx(ctx, 3*time.Second)
	stopWork()
	wg.Wait()
	for _, t0 := range h.pendingFailover {
		if at, ok := h.rec.firstWriteAfter(t0); ok {
			report.Failovers = append(report.Failovers, time.Duration(at-t0))
		} else {
			report.Verdicts = append(report.Verdicts, Verdict{Checker: "availability", Detail: fmt.Sprintf("no successful write after the fault at %.1fs", time.Duration(t0).Seconds())})
		}
	}
	for n, c := range h.rec.counts {
		report.Ops[n] = *c
	}
	if cl != nil {
		report.LostReplys = cl.LostReplies()
		report.SnapshotsTaken = cl.CountLog("snapshot complete up to")
		report.SnapshotInstalls = cl.CountLog("Installed remote snapshot")
		report.LeaseTerms = cl.CountLog("read lease acquired")
		// Calls refused for want of an identity or a permission: with
		// access control on, every call of the harness is root's.
		report.AuthRefusals = cl.CountLog("call refused") + cl.CountLog("authentication failed")
		for _, what := range []string{"call refused", "authentication failed"} {
			for _, l := range cl.LogLines(what, 3) {
				report.Events = append(report.Events, "refused: "+l)
			}
		}
		report.AuthBootstraps = cl.CountLog("access control bootstrapped")
	}

	// Checks.
	checkCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var info porcupine.LinearizationInfo
	for _, w := range workloads {
		if _, ok := w.(registerWorkload); ok {
			var res porcupine.CheckResult
			hist := h.rec.history()
			res, info = porcupine.CheckOperationsVerbose(registerModel, hist, cfg.CheckTimeout)
			report.Verdicts = append(report.Verdicts, Verdict{Checker: "linearizable", OK: res == porcupine.Ok,
				Detail: fmt.Sprintf("porcupine: %s over %d register operations", res, len(hist))})
			continue
		}
		report.Verdicts = append(report.Verdicts, w.Check(checkCtx, admin, h.rec))
	}
	if wc != nil {
		set.mu.Lock()
		acked := maps.Clone(set.acked)
		set.mu.Unlock()
		report.Verdicts = append(report.Verdicts, wc.check(checkCtx, admin, set.table, acked))
	}
	var rev, hash uint64
	if cl != nil {
		rev, hash, err = cl.Converged(checkCtx)
	} else {
		rev, hash, err = liveConverged(checkCtx, endpoints, cfg.Root)
	}
	if err != nil {
		report.Verdicts = append(report.Verdicts, Verdict{Checker: "convergence", Detail: err.Error()})
	} else {
		report.Verdicts = append(report.Verdicts, Verdict{Checker: "convergence", OK: true, Detail: fmt.Sprintf("%d replicas at revision %d, state hash %016x", len(endpoints), rev, hash)})
	}
	if live {
		// The workloads' tables go; a failure here is reported, not fatal.
		for _, w := range workloads {
			if err := admin.DropTable(checkCtx, cfg.TablePrefix+w.Name()); err != nil {
				logf("dropping %s%s: %v", cfg.TablePrefix, w.Name(), err)
			}
		}
	}
	if !report.OK() && cfg.Artifacts != "" {
		report.Artifacts = h.saveArtifacts(cfg.Artifacts, info)
	}
	return report, nil
}

func retrySetup(ctx context.Context, f func() error) error {
	for {
		err := f()
		if err == nil || ctx.Err() != nil {
			return err
		}
		if strings.Contains(err.Error(), "already exists") {
			return nil
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
}

// saveArtifacts writes the history, the logs and the visualization.
func (h *harness) saveArtifacts(dir string, info porcupine.LinearizationInfo) string {
	out := filepath.Join(dir, fmt.Sprintf("seed-%d-%s", h.cfg.Seed, time.Now().Format("150405")))
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err.Error()
	}
	if b, err := json.MarshalIndent(h.rec.history(), "", " "); err == nil {
		_ = os.WriteFile(filepath.Join(out, "history.json"), b, 0o644)
	}
	_ = porcupine.VisualizePath(registerModel, info, filepath.Join(out, "linearizability.html"))
	for i, n := range h.c.nodes {
		if b, err := os.ReadFile(n.logPath); err == nil {
			_ = os.WriteFile(filepath.Join(out, h.c.nodes[i].id+".log"), b, 0o644)
		}
	}
	return out
}

// liveConverged is Cluster.Converged over the members at endpoints.
func liveConverged(ctx context.Context, endpoints []string, root *client.Credentials) (uint64, uint64, error) {
	conns := make([]*grpc.ClientConn, len(endpoints))
	for i, ep := range endpoints {
		cc, err := grpc.NewClient(ep, dialOptions(root)...)
		if err != nil {
			return 0, 0, err
		}
		defer cc.Close()
		conns[i] = cc
	}
	return converged(ctx, len(endpoints), func(i int) string { return endpoints[i] },
		func(ctx context.Context, i int) (*pb.StatusResponse, error) {
			return pb.NewClusterServiceClient(conns[i]).Status(ctx, &pb.StatusRequest{IncludeStateHash: true})
		})
}
