package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/bcrypt"

	"github.com/memdbd/memdbd/fsm"
	"github.com/memdbd/memdbd/internal/tlsconf"
	"github.com/memdbd/memdbd/node"
	"github.com/memdbd/memdbd/server"
)

// config is everything memdbd can be told. Each field is one setting,
// given (highest precedence first) as a command-line flag --name, an
// environment variable MEMDBD_NAME (upper case, dashes as underscores), a
// key "name" in the YAML file named by --config, or its default.
type config struct {
	configFile string
	// values holds every setting's final value, by flag name, to tell what
	// a reload changes.
	values map[string]string

	nodeID          string
	dataDir         string
	clientAddr      string
	clientAdvertise string
	raftAddr        string
	raftAdvertise   string
	raftSourceAddr  string
	initialCluster  string
	join            string
	nonVoter        bool
	adminAddr       string

	logLevel  string
	logFormat string

	heartbeatTimeout   time.Duration
	electionTimeout    time.Duration
	leaderLeaseTimeout time.Duration
	commitTimeout      time.Duration
	maxAppendEntries   int
	readLease          bool
	parallelAppend     bool
	raftLogStore       string
	snapshotThreshold  uint64
	snapshotInterval   time.Duration
	trailingLogs       uint64
	retainSnapshots    int
	maxPendingWrites   int

	requestTimeout  time.Duration
	maxInFlight     int
	shutdownTimeout time.Duration
	maxRequestBytes int
	maxKeyBytes     int
	maxValueBytes   int
	maxTxnOps       int
	dataQuotaBytes  int64

	maxResponseBytes         int
	maxResponseBytesInFlight int64

	expireInterval        time.Duration
	watchHistoryEvents    int
	watchHistoryBytes     int64
	watchQueueEvents      int
	maxWatchers           int
	connLimits            server.ConnLimits
	maxStreamsPerConn     uint
	streamWorkers         int
	watchProgressInterval time.Duration
	heapFloorBytes        int64
	hashCheckEntries      uint64
	consistencyInterval   time.Duration

	tlsCertFile, tlsKeyFile, tlsCAFile             string
	tlsClientAuth                                  bool
	peerTLSCertFile, peerTLSKeyFile, peerTLSCAFile string
	insecure                                       bool
	metricsAnonymous                               bool
	bootstrapRootPasswordFile                      string
}

const envPrefix = "MEMDBD_"

// parseConfig reads flags, then fills every flag not given on the command
// line from the environment, then from the config file.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	c := &config{}
	nd := node.DefaultConfig()
	sd := server.DefaultConfig()
	fs := flag.NewFlagSet("memdbd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.configFile, "config", "", "YAML file of settings (keys are the flag names)")
	fs.StringVar(&c.nodeID, "node-id", "", "this node's unique, stable id (required)")
	fs.StringVar(&c.dataDir, "data-dir", "", "directory for the Raft log, snapshots and node identity (required)")
	fs.StringVar(&c.clientAddr, "client-addr", "127.0.0.1:7000", "gRPC listen address for clients and peers")
	fs.StringVar(&c.clientAdvertise, "client-advertise", "", "gRPC address other nodes and clients use (default: --client-addr)")
	fs.StringVar(&c.raftAddr, "raft-addr", "127.0.0.1:7100", "Raft listen address")
	fs.StringVar(&c.raftAdvertise, "raft-advertise", "", "Raft address peers use (default: --raft-addr)")
	fs.StringVar(&c.raftSourceAddr, "raft-source-addr", "", "IP address outgoing Raft connections leave from (default: chosen by the OS)")
	fs.StringVar(&c.initialCluster, "initial-cluster", "", "bootstrap a new cluster of id=raft-host:port,... (same list on every initial node; ignored once the node has data)")
	fs.StringVar(&c.join, "join", "", "join a running cluster through any of these member client addresses host:port,...")
	fs.BoolVar(&c.nonVoter, "non-voter", false, "with --join: join as a non-voting read replica (promote it with memdbd promote)")
	fs.StringVar(&c.adminAddr, "admin-addr", "", "HTTP address for /metrics, /livez, /readyz and /debug/pprof (empty: off)")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.DurationVar(&c.heartbeatTimeout, "heartbeat-timeout", nd.HeartbeatTimeout, "followers start an election after this long without a leader")
	fs.DurationVar(&c.electionTimeout, "election-timeout", nd.ElectionTimeout, "candidates retry an election after this long")
	fs.DurationVar(&c.leaderLeaseTimeout, "leader-lease-timeout", nd.LeaderLeaseTimeout, "a leader without quorum contact for this long steps down")
	fs.DurationVar(&c.commitTimeout, "commit-timeout", nd.CommitTimeout, "longest delay before followers learn the commit index")
	fs.IntVar(&c.maxAppendEntries, "max-append-entries", nd.MaxAppendEntries, "entries per replication message and per apply batch")
	fs.BoolVar(&c.parallelAppend, "parallel-append", nd.ParallelAppend, "the leader replicates entries while it writes them to its own disk")
	fs.StringVar(&c.raftLogStore, "raft-log-store", "", "where the Raft log is kept: wal (hashicorp/raft-wal, one fsync per append) or boltdb (raft-boltdb); "+
		"default: what the data directory was created with, wal for a new one (memdbd migrate-log moves a stopped member's log)")
	fs.BoolVar(&c.readLease, "read-lease", nd.ReadLease, "the leader serves linearizable reads without a heartbeat round while followers promise not to elect another leader (assumes clock rates within 10% of each other)")
	fs.Uint64Var(&c.snapshotThreshold, "snapshot-threshold", nd.SnapshotThreshold, "log entries between snapshots")
	fs.DurationVar(&c.snapshotInterval, "snapshot-interval", nd.SnapshotInterval, "how often the snapshot threshold is checked")
	fs.Uint64Var(&c.trailingLogs, "trailing-logs", nd.TrailingLogs, "log entries kept after a snapshot")
	fs.IntVar(&c.retainSnapshots, "retain-snapshots", nd.RetainSnapshots, "snapshot files kept on disk")
	fs.IntVar(&c.maxPendingWrites, "max-pending-writes", nd.MaxPendingWrites, "writes in flight before new ones are refused")
	fs.DurationVar(&c.requestTimeout, "request-timeout", sd.DefaultTimeout, "deadline for requests that carry none")
	fs.IntVar(&c.maxInFlight, "max-in-flight", sd.MaxInFlight, "concurrent requests before new ones are refused")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 10*time.Second, "bound on leadership transfer and request drain at shutdown")
	fs.IntVar(&c.maxRequestBytes, "max-request-bytes", sd.Limits.MaxRequestBytes, "largest request message")
	fs.IntVar(&c.maxKeyBytes, "max-key-bytes", sd.Limits.MaxKeyBytes, "largest encoded primary key")
	fs.IntVar(&c.maxValueBytes, "max-value-bytes", sd.Limits.MaxValueBytes, "largest string or bytes value")
	fs.IntVar(&c.maxTxnOps, "max-txn-ops", sd.Limits.MaxOps, "most operations in one transaction branch")
	fs.Int64Var(&c.dataQuotaBytes, "data-quota-bytes", sd.Limits.MaxDataBytes, "once the tables' row data (memdb_table_bytes) reaches this, writes that add data are refused with QUOTA_EXCEEDED; deletes still pass (0: no quota)")
	fs.IntVar(&c.maxResponseBytes, "max-response-bytes", sd.Limits.MaxResponseBytes, "largest response message: a BatchGet or a Txn's Gets reading more are refused with RESPONSE_TOO_LARGE, "+
		"a Scan page ends early, a watch splits a transaction's events (at least the largest row, 8 MiB or --max-request-bytes if lower, plus 64 KiB; the Go client accepts up to 128 MiB)")
	fs.Int64Var(&c.maxResponseBytesInFlight, "max-response-bytes-in-flight", sd.Limits.MaxResponseBytesInFlight, "bytes of responses of 64 KiB or more this member builds at once; "+
		"a read or a Txn with Gets whose answer would take more than is left is refused with OVERLOADED (at least --max-response-bytes)")
	fs.DurationVar(&c.expireInterval, "expire-interval", nd.ExpireInterval, "how often the leader deletes expired rows through the log (reads hide them at once)")
	fs.IntVar(&c.watchHistoryEvents, "watch-history-events", nd.Watch.HistoryEvents, "changes kept in memory for watches to start or resume from")
	fs.Int64Var(&c.watchHistoryBytes, "watch-history-bytes", nd.Watch.HistoryBytes, "bytes of changes kept for watches")
	fs.IntVar(&c.watchQueueEvents, "watch-queue-events", nd.Watch.QueueEvents, "events a watch stream may fall behind before it is cancelled (it can resume)")
	fs.IntVar(&c.maxWatchers, "max-watchers", sd.MaxWatchers, "watch streams this member serves at once")
	fs.IntVar(&c.connLimits.MaxInFlight, "max-in-flight-per-conn", sd.Conn.MaxInFlight, "requests one client connection may have in flight; more are refused with OVERLOADED (0: no per-connection share)")
	fs.IntVar(&c.connLimits.MaxWatchers, "max-watchers-per-conn", sd.Conn.MaxWatchers, "watch streams one client connection may have open (0: no per-connection share)")
	fs.IntVar(&c.connLimits.MaxClientIDs, "max-sessions-per-conn", sd.Conn.MaxClientIDs, "distinct write-session client ids one client connection may write with (0: no per-connection share)")
	fs.IntVar(&c.connLimits.MaxPinnedViews, "max-pinned-views-per-conn", sd.Conn.MaxPinnedViews, "scan views one client connection may keep pinned for later pages; beyond it its least recently used scan expires (0: no per-connection share)")
	fs.UintVar(&c.maxStreamsPerConn, "max-streams-per-conn", uint(sd.MaxConcurrentStreams), "HTTP/2 streams one client connection may have open at once; a client at the limit waits in its own process")
	fs.IntVar(&c.streamWorkers, "stream-workers", sd.StreamWorkers, "long-lived goroutines that run requests (0: a new goroutine per request)")
	fs.DurationVar(&c.watchProgressInterval, "watch-progress-interval", sd.WatchProgressInterval, "how often an idle watch stream reports its revision")
	fs.Int64Var(&c.heapFloorBytes, "heap-floor-bytes", defaultHeapFloor, "heap the garbage collector lets the server reach before it collects, however small the data "+
		"(fewer collections for up to this much more memory; 0: Go's default pacing)")
	fs.Uint64Var(&c.hashCheckEntries, "hash-check-entries", nd.FSM.HashEvery, "record a state checkpoint (state hash) every this many log entries, for the consistency check (0: none)")
	fs.DurationVar(&c.consistencyInterval, "consistency-check-interval", sd.ConsistencyInterval, "how often a member compares its state checkpoints with the other members' (0: never)")
	fs.StringVar(&c.tlsCertFile, "tls-cert-file", "", "PEM certificate (chain) the gRPC port presents; with --tls-key-file it serves TLS only, and members call each other over TLS. Re-read on SIGHUP")
	fs.StringVar(&c.tlsKeyFile, "tls-key-file", "", "PEM private key of --tls-cert-file")
	fs.StringVar(&c.tlsCAFile, "tls-ca-file", "", "PEM CA bundle trusted for client certificates and for other members' gRPC certificates (default: the system's roots)")
	fs.BoolVar(&c.tlsClientAuth, "tls-client-auth", false, "require a client certificate signed by --tls-ca-file on the gRPC port (mutual TLS); members present their --tls-cert-file to each other, so it must allow client use too")
	fs.StringVar(&c.peerTLSCertFile, "peer-tls-cert-file", "", "PEM certificate the Raft port presents, as server and as client; with --peer-tls-key-file and --peer-tls-ca-file, Raft traffic is mutual TLS. Re-read on SIGHUP")
	fs.StringVar(&c.peerTLSKeyFile, "peer-tls-key-file", "", "PEM private key of --peer-tls-cert-file")
	fs.StringVar(&c.peerTLSCAFile, "peer-tls-ca-file", "", "PEM CA bundle that signs the members' Raft certificates")
	fs.BoolVar(&c.metricsAnonymous, "metrics-anonymous", false, "with TLS, serve /metrics on the admin port without a client certificate (pprof always needs one)")
	fs.StringVar(&c.bootstrapRootPasswordFile, "bootstrap-root-password-file", "", "file holding the password of the user root, which a new cluster creates with access control on (ignored once the cluster has users; give every bootstrapping member the same file)")
	fs.BoolVar(&c.insecure, "insecure", false, "serve ports bound beyond loopback without the TLS and authentication they need (refused otherwise); logged as a warning at every start")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	// Environment next.
	if !set["config"] {
		if v := getenv(envName("config")); v != "" {
			c.configFile = v
		}
	}
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || f.Name == "config" {
			return
		}
		if v := getenv(envName(f.Name)); v != "" {
			if err := fs.Set(f.Name, v); err != nil && envErr == nil {
				envErr = fmt.Errorf("environment %s: %v", envName(f.Name), err)
			}
			set[f.Name] = true
		}
	})
	if envErr != nil {
		return nil, envErr
	}
	// The file last.
	if c.configFile != "" {
		vals, err := readConfigFile(c.configFile)
		if err != nil {
			return nil, err
		}
		keys := make([]string, 0, len(vals))
		for k := range vals {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if fs.Lookup(k) == nil || k == "config" {
				return nil, fmt.Errorf("config file %s: unknown setting %q", c.configFile, k)
			}
			if set[k] {
				continue
			}
			if err := fs.Set(k, vals[k]); err != nil {
				return nil, fmt.Errorf("config file %s: setting %s: %v", c.configFile, k, err)
			}
		}
	}
	c.values = map[string]string{}
	fs.VisitAll(func(f *flag.Flag) { c.values[f.Name] = f.Value.String() })
	return c, nil
}

func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// readConfigFile reads a flat YAML mapping of setting names to scalars.
func readConfigFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	var raw map[string]yaml.Node
	if err := yaml.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		if v.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("config file %s: setting %s must be a single value", path, k)
		}
		out[k] = v.Value
	}
	return out, nil
}

// nodeConfig builds and validates the node's configuration.
func (c *config) nodeConfig(version string) (node.Config, error) {
	n := node.DefaultConfig()
	n.ID, n.DataDir, n.Version = c.nodeID, c.dataDir, version
	n.RaftBind, n.RaftAdvertise, n.RaftSourceAddr = c.raftAddr, c.raftAdvertise, c.raftSourceAddr
	n.ClientAdvertise = c.clientAdvertise
	if n.ClientAdvertise == "" {
		n.ClientAdvertise = c.clientAddr
	}
	peers, err := node.ParsePeers(c.initialCluster)
	if err != nil {
		return n, fmt.Errorf("--initial-cluster: %w", err)
	}
	if len(peers) > 0 && c.join != "" {
		return n, fmt.Errorf("--initial-cluster and --join are exclusive: bootstrap a new cluster or join a running one")
	}
	n.InitialCluster = peers
	n.HeartbeatTimeout, n.ElectionTimeout, n.LeaderLeaseTimeout = c.heartbeatTimeout, c.electionTimeout, c.leaderLeaseTimeout
	n.CommitTimeout, n.MaxAppendEntries = c.commitTimeout, c.maxAppendEntries
	n.ParallelAppend, n.ReadLease = c.parallelAppend, c.readLease
	n.LogStore = c.raftLogStore
	n.SnapshotThreshold, n.SnapshotInterval, n.TrailingLogs = c.snapshotThreshold, c.snapshotInterval, c.trailingLogs
	n.RetainSnapshots, n.MaxPendingWrites = c.retainSnapshots, c.maxPendingWrites
	n.ExpireInterval = c.expireInterval
	n.FSM.HashEvery = c.hashCheckEntries
	n.Watch.HistoryEvents, n.Watch.HistoryBytes, n.Watch.QueueEvents = c.watchHistoryEvents, c.watchHistoryBytes, c.watchQueueEvents
	if err := n.Validate(); err != nil {
		return n, flagError(err)
	}
	return n, nil
}

// serverConfig builds and validates the server's configuration.
func (c *config) serverConfig(version string) (server.Config, error) {
	if c.heapFloorBytes < 0 || c.heapFloorBytes > maxHeapFloor {
		return server.Config{}, fmt.Errorf("--heap-floor-bytes: %d is outside 0..%d", c.heapFloorBytes, int64(maxHeapFloor))
	}
	s := server.DefaultConfig()
	s.NodeID, s.Version = c.nodeID, version
	if c.bootstrapRootPasswordFile != "" {
		b, err := os.ReadFile(c.bootstrapRootPasswordFile)
		if err != nil {
			return s, fmt.Errorf("--bootstrap-root-password-file: %w", err)
		}
		pw := strings.TrimRight(string(b), "\r\n")
		if len(pw) < 8 || len(pw) > 72 {
			return s, errors.New("--bootstrap-root-password-file: the password must be 8-72 bytes")
		}
		// Hashed here: the password itself goes nowhere, not even into
		// the log.
		if s.BootstrapRootHash, err = bcrypt.GenerateFromPassword([]byte(pw), fsm.MinHashCost); err != nil {
			return s, err
		}
	}
	s.DefaultTimeout, s.MaxInFlight = c.requestTimeout, c.maxInFlight
	s.MaxWatchers, s.WatchProgressInterval = c.maxWatchers, c.watchProgressInterval
	s.StreamWorkers = c.streamWorkers
	s.Conn = c.connLimits
	if c.maxStreamsPerConn > 1<<31 {
		return s, fmt.Errorf("--max-streams-per-conn: %d is above %d", c.maxStreamsPerConn, 1<<31)
	}
	s.MaxConcurrentStreams = uint32(c.maxStreamsPerConn)
	s.ConsistencyInterval = c.consistencyInterval
	s.Limits.MaxRequestBytes, s.Limits.MaxKeyBytes, s.Limits.MaxValueBytes, s.Limits.MaxOps = c.maxRequestBytes, c.maxKeyBytes, c.maxValueBytes, c.maxTxnOps
	s.Limits.MaxDataBytes = c.dataQuotaBytes
	s.Limits.MaxResponseBytes, s.Limits.MaxResponseBytesInFlight = c.maxResponseBytes, c.maxResponseBytesInFlight
	if s.Limits.MaxRowBytes > s.Limits.MaxRequestBytes {
		s.Limits.MaxRowBytes = s.Limits.MaxRequestBytes
	}
	if s.Limits.MaxValueBytes > s.Limits.MaxRowBytes {
		return s, fmt.Errorf("--max-value-bytes %d is above the row limit %d", s.Limits.MaxValueBytes, s.Limits.MaxRowBytes)
	}
	if err := s.Validate(); err != nil {
		return s, flagError(err)
	}
	return s, nil
}

// flagError names the flag behind a validation message where it can;
// the validators start every message with the setting they reject.
func flagError(err error) error {
	msg := err.Error()
	for _, pair := range [][2]string{
		{"node id", "--node-id"}, {"data dir", "--data-dir"}, {"raft address", "--raft-addr"},
		{"heartbeat timeout", "--heartbeat-timeout"}, {"election timeout", "--election-timeout"},
		{"leader lease timeout", "--leader-lease-timeout"}, {"commit timeout", "--commit-timeout"},
		{"max append entries", "--max-append-entries"}, {"snapshot threshold", "--snapshot-threshold"},
		{"snapshot interval", "--snapshot-interval"}, {"retain snapshots", "--retain-snapshots"},
		{"max pending writes", "--max-pending-writes"}, {"initial cluster", "--initial-cluster"},
		{"max key bytes", "--max-key-bytes"}, {"max value bytes", "--max-value-bytes"},
		{"max request bytes", "--max-request-bytes"}, {"max ops", "--max-txn-ops"}, {"data quota", "--data-quota-bytes"},
		{"max response bytes in flight", "--max-response-bytes-in-flight"}, {"max response bytes", "--max-response-bytes"},
		{"default timeout", "--request-timeout"}, {"max in-flight", "--max-in-flight"},
		{"expire interval", "--expire-interval"}, {"watch: history of", "--watch-history-events or --watch-history-bytes"},
		{"watch: queue", "--watch-queue-events"}, {"consistency interval", "--consistency-check-interval"}, {"max watchers", "--max-watchers"}, {"per-connection limits", "--max-*-per-conn"}, {"max concurrent streams", "--max-streams-per-conn"}, {"watch progress interval", "--watch-progress-interval"},
	} {
		if strings.HasPrefix(msg, pair[0]) {
			return fmt.Errorf("%s: %w", pair[1], err)
		}
	}
	return err
}

// tlsSetup is the TLS of a member, built from the --tls-* and
// --peer-tls-* settings; every field is nil for plaintext.
type tlsSetup struct {
	server   *tls.Config   // the gRPC listener
	peerDial *tls.Config   // this member calling others' gRPC ports (forwarding, join)
	raft     *node.RaftTLS // the Raft port
	pairs    []*tlsconf.KeyPair
}

// reload re-reads every certificate and key; a pair that fails to load
// stays as it was.
func (t *tlsSetup) reload() error {
	var errs []error
	for _, kp := range t.pairs {
		errs = append(errs, kp.Reload())
	}
	return errors.Join(errs...)
}

// tlsSetup checks the TLS settings together and loads their files.
func (c *config) tlsSetup() (*tlsSetup, error) {
	t := &tlsSetup{}
	switch {
	case (c.tlsCertFile == "") != (c.tlsKeyFile == ""):
		return nil, errors.New("--tls-cert-file and --tls-key-file go together")
	case c.tlsCertFile == "" && (c.tlsCAFile != "" || c.tlsClientAuth):
		return nil, errors.New("--tls-ca-file and --tls-client-auth need --tls-cert-file and --tls-key-file")
	case c.tlsClientAuth && c.tlsCAFile == "":
		return nil, errors.New("--tls-client-auth needs --tls-ca-file, the CA that signs client certificates")
	}
	if c.tlsCertFile != "" {
		kp, err := tlsconf.LoadKeyPair(c.tlsCertFile, c.tlsKeyFile)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert-file: %w", err)
		}
		var cas *x509.CertPool
		if c.tlsCAFile != "" {
			if cas, err = tlsconf.LoadCAs(c.tlsCAFile); err != nil {
				return nil, fmt.Errorf("--tls-ca-file: %w", err)
			}
		}
		t.server = tlsconf.Server(kp, cas, c.tlsClientAuth)
		t.peerDial = tlsconf.Client(kp, cas)
		t.pairs = append(t.pairs, kp)
	}
	peer := []string{c.peerTLSCertFile, c.peerTLSKeyFile, c.peerTLSCAFile}
	if n := len(slices.DeleteFunc(slices.Clone(peer), func(s string) bool { return s == "" })); n == 0 {
		return t, nil
	} else if n < len(peer) {
		return nil, errors.New("--peer-tls-cert-file, --peer-tls-key-file and --peer-tls-ca-file go together")
	}
	kp, err := tlsconf.LoadKeyPair(c.peerTLSCertFile, c.peerTLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("--peer-tls-cert-file: %w", err)
	}
	cas, err := tlsconf.LoadCAs(c.peerTLSCAFile)
	if err != nil {
		return nil, fmt.Errorf("--peer-tls-ca-file: %w", err)
	}
	t.raft = &node.RaftTLS{Server: tlsconf.Server(kp, cas, true), Client: tlsconf.Client(kp, cas)}
	t.pairs = append(t.pairs, kp)
	return t, nil
}
