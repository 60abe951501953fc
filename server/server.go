package server

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/fsm"
	"github.com/memdbd/memdbd/internal/rounds"
	"github.com/memdbd/memdbd/node"
)

// Config configures the gRPC server.
type Config struct {
	// NodeID names this node in response headers.
	NodeID string
	// BootstrapRootHash, when set, is the bcrypt hash of the password of
	// the user root that this member creates, with access control on, if
	// the cluster has no user yet (bootstrapAuth).
	BootstrapRootHash []byte
	// Version is reported by Status.
	Version string
	// DefaultTimeout is the deadline given to a request that carries none.
	DefaultTimeout time.Duration
	// MaxInFlight bounds concurrent requests; more are refused at once with
	// ResourceExhausted rather than queued.
	MaxInFlight int
	// SlowRequest: requests slower than this are logged.
	SlowRequest time.Duration
	// PageTTL keeps the view of a paginated scan this long after its last
	// page; MaxPinnedViews bounds how many are kept.
	PageTTL        time.Duration
	MaxPinnedViews int
	// Limits are the edge limits.
	Limits Limits
	// MaxWatchers bounds the watch streams this member serves.
	MaxWatchers int
	// Conn are the per-connection shares of the member-wide bounds
	// (conn.go).
	Conn ConnLimits
	// MaxConcurrentStreams is the HTTP/2 limit on streams one connection
	// may have open at once (unary calls and watches alike); a client at
	// the limit waits for a stream to end before it opens another, in its
	// own process, instead of piling requests onto this member.
	MaxConcurrentStreams uint32
	// StreamWorkers is the number of long-lived goroutines that run
	// requests; a request that finds them all busy gets a goroutine of its
	// own. 0 gives every request a fresh goroutine.
	StreamWorkers int
	// WatchProgressInterval is how often an idle watch stream gets a
	// progress notification unless the request asks otherwise.
	WatchProgressInterval time.Duration
	// Logger receives the server's logs.
	Logger *slog.Logger
	// Registerer receives the server's metrics; none when nil.
	Registerer prometheus.Registerer
	// TLS, when set, makes the gRPC port serve TLS only, with this
	// configuration (tlsconf.Server: client certificates required or not).
	TLS *tls.Config
	// ConsistencyInterval is how often this member compares its state
	// checkpoints with the other members' (consistency.go); 0: never.
	ConsistencyInterval time.Duration
	// PeerTLS, when set, is the client configuration this member uses to
	// call other members on their gRPC ports (forwarded writes, read
	// indexes, lease probes). Set it whenever the members serve TLS.
	PeerTLS *tls.Config
}

// DefaultConfig returns the default server settings.
func DefaultConfig() Config {
	return Config{
		DefaultTimeout: 10 * time.Second,
		MaxInFlight:    10000,
		SlowRequest:    time.Second,
		PageTTL:        time.Minute,
		MaxPinnedViews: 256,
		Limits:         DefaultLimits(),
		MaxWatchers:    100_000,
		Conn:           DefaultConnLimits(),
		// Above the per-connection in-flight and watcher shares together,
		// so that those shares, which answer with a clear error, are met
		// first.
		MaxConcurrentStreams: 2048,
		// A fresh goroutine per request grows its stack from 2 KiB through
		// the interceptor chain and the proposal path, copying it several
		// times: runtime.newstack/copystack took 11% of a leader's CPU under
		// 64 writers. Workers keep their grown stacks. A write holds its
		// worker for a commit (milliseconds), so there are enough workers
		// for a few hundred concurrent requests.
		StreamWorkers: 512,
		// Every idle stream costs a message per interval: 10,000 watchers at
		// 30s are 333 messages a second. Clients that need a tighter bound
		// on silence ask for it per stream.
		WatchProgressInterval: 30 * time.Second,
		ConsistencyInterval:   10 * time.Second,
	}
}

// Validate checks the settings.
func (c Config) Validate() error {
	switch {
	case c.NodeID == "":
		return errors.New("server: node id is required")
	case c.DefaultTimeout <= 0:
		return fmt.Errorf("default timeout %v must be positive", c.DefaultTimeout)
	case c.MaxInFlight < 1:
		return fmt.Errorf("max in-flight %d must be positive", c.MaxInFlight)
	case c.PageTTL <= 0 || c.MaxPinnedViews < 1:
		return errors.New("page TTL and max pinned views must be positive")
	case c.StreamWorkers < 0 || c.StreamWorkers > 1<<16:
		return fmt.Errorf("stream workers %d must be between 0 and 65536", c.StreamWorkers)
	case c.MaxWatchers < 1:
		return fmt.Errorf("max watchers %d must be positive", c.MaxWatchers)
	case c.MaxConcurrentStreams < 1:
		return errors.New("max concurrent streams per connection must be positive")
	case c.ConsistencyInterval < 0:
		return fmt.Errorf("consistency interval %v must not be negative", c.ConsistencyInterval)
	case c.WatchProgressInterval < minProgressInterval:
		return fmt.Errorf("watch progress interval %v is below %v", c.WatchProgressInterval, minProgressInterval)
	}
	if err := c.Conn.Validate(); err != nil {
		return err
	}
	return c.Limits.Validate()
}

// Server is memdbd's gRPC front end: the v1 API, the peer service,
// reflection and health, over one node.
type Server struct {
	cfg  Config
	node *node.Node
	log  *slog.Logger
	// auditLog records control-plane calls (audit.go).
	auditLog *slog.Logger
	grpc     *grpc.Server
	health   *health.Server
	fwd      *forwarder
	authn    *authenticator
	grants   streamGrants
	// peerGRPC serves the peer service on the node's Raft port
	// (node.PeerListener); peerFwd calls other members' peer services.
	peerGRPC *grpc.Server
	peerFwd  *forwarder
	pages    *pageCache
	metrics  *metrics

	inflight chan struct{}
	live     atomic.Pointer[liveSettings] // settings that change at run time
	// readIndexes shares one read-index request to the leader among the
	// linearizable reads that arrive on a follower while none is in
	// flight: without it every follower read costs the leader an RPC.
	readIndexes *rounds.Group[uint64]
	// riStream, riNoStream and riRetryStream belong to the readIndexes
	// round (readindex.go): the open read-index stream to the leader, the
	// leader address that served none, and when to ask it again.
	riStream      *readIndexStream
	riNoStream    string
	riRetryStream time.Time
	// watchers counts open watch streams; watchStreams finds them by id.
	watchers     atomic.Int64
	watchStreams watchStreams
	fatal        chan error
	stop         chan struct{}
	// stopping is cancelled when Stop begins: watch streams, which never
	// end on their own, end then so that the drain does not wait for them.
	stopping   context.Context
	stopStream context.CancelFunc
	// peers is cancelled at the end of Stop, after the drain: the
	// read-index stream this member keeps to the leader serves the reads
	// still draining.
	peers      context.Context
	closePeers context.CancelFunc
	consist    consistency
	wg         sync.WaitGroup
}

// New assembles the gRPC server and its interceptors over a node.
func New(cfg Config, n *node.Node) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.Default()
	}
	s := &Server{
		cfg: cfg, node: n, log: lg, auditLog: newAuditLogger(lg), authn: newAuthenticator(), health: health.NewServer(), fwd: newForwarder(cfg.NodeID, cfg.PeerTLS),
		pages: newPageCache(cfg.PageTTL, cfg.MaxPinnedViews, cfg.Conn.MaxPinnedViews), metrics: newMetrics(cfg.Registerer),
		inflight: make(chan struct{}, cfg.MaxInFlight), fatal: make(chan error, 1), stop: make(chan struct{}),
	}
	s.peerFwd = newForwarder(cfg.NodeID, nil,
		// The node dials as Raft does: from --raft-source-addr, with the
		// Raft port's mutual TLS when it has TLS; gRPC adds nothing.
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return n.DialPeer(ctx, addr) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(peerConnectParams))
	s.peerFwd.scheme = "passthrough:///"
	s.stopping, s.stopStream = context.WithCancel(context.Background())
	s.peers, s.closePeers = context.WithCancel(context.Background())
	s.live.Store(&liveSettings{limits: cfg.Limits, defaultTimeout: cfg.DefaultTimeout})
	s.readIndexes = &rounds.Group[uint64]{WG: &s.wg, Do: func() (uint64, error) {
		ctx, cancel := context.WithTimeout(context.Background(), readIndexTimeout)
		defer cancel()
		return s.fetchReadIndex(ctx)
	}}
	// Per-method request counts and latency histograms by status code,
	// from the gRPC ecosystem's Prometheus middleware; first in the chain,
	// so refused requests are counted too.
	grpcMetrics := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
		grpcprom.WithHistogramBuckets([]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10})))
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(cfg.Limits.MaxRequestBytes),
		grpc.NumStreamWorkers(uint32(cfg.StreamWorkers)),
		grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
		// The proto codec, plus a pass-through for watch events that are
		// already in wire form (watchwire.go).
		grpc.ForceServerCodecV2(newRawCodec()),
		grpc.ChainUnaryInterceptor(grpcMetrics.UnaryServerInterceptor(), s.recoverUnary, s.admitUnary, s.authUnary),
		grpc.ChainStreamInterceptor(grpcMetrics.StreamServerInterceptor(), s.recoverStream, s.admitStream, s.authStream),
	}
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	s.grpc = grpc.NewServer(opts...)
	pb.RegisterDataServiceServer(s.grpc, &dataService{s: s})
	pb.RegisterSchemaServiceServer(s.grpc, &schemaService{s: s})
	pb.RegisterClusterServiceServer(s.grpc, &clusterService{s: s})
	pb.RegisterAuthServiceServer(s.grpc, &authService{s: s})
	// Not on the client port: members call each other on the Raft port.
	s.peerGRPC = grpc.NewServer(
		grpc.MaxRecvMsgSize(cfg.Limits.MaxRequestBytes),
		grpc.ForceServerCodecV2(newRawCodec()),
		grpc.ChainUnaryInterceptor(s.recoverUnary, s.admitPeer),
		grpc.ChainStreamInterceptor(s.recoverStream),
	)
	peer := &peerService{s: s}
	cmdpb.RegisterPeerServiceServer(s.peerGRPC, peer)
	// And on the client port only for members of older versions, during a
	// rolling upgrade (legacy.go).
	cmdpb.RegisterPeerServiceServer(s.grpc, &legacyPeerService{p: peer})
	n.SetLeaseProber(s.probeLease)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	registerReflection(s.grpc)
	if cfg.Registerer != nil {
		grpcMetrics.InitializeMetrics(s.grpc)
		cfg.Registerer.MustRegister(grpcMetrics, newNodeCollector(n))
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	s.wg.Add(3)
	go func() {
		defer s.wg.Done()
		// Ends when Stop stops peerGRPC (or the node's Raft port closes).
		_ = s.peerGRPC.Serve(n.PeerListener())
	}()
	go s.watchHealth()
	go s.registerLoop()
	s.wg.Add(1)
	go s.watchGrants()
	if cfg.BootstrapRootHash != nil {
		s.wg.Add(1)
		go s.bootstrapAuth()
	}
	if cfg.ConsistencyInterval > 0 {
		s.wg.Add(1)
		go s.consistencyLoop()
	}
	return s, nil
}

// liveSettings are the settings Reload may change while requests run.
type liveSettings struct {
	limits         Limits
	defaultTimeout time.Duration
}

func (s *Server) limits() Limits                { return s.live.Load().limits }
func (s *Server) defaultTimeout() time.Duration { return s.live.Load().defaultTimeout }

// Reload applies new edge limits and default timeout to requests that
// arrive from now on. MaxRequestBytes is fixed when the gRPC server is
// built and cannot change.
func (s *Server) Reload(l Limits, defaultTimeout time.Duration) error {
	cur := s.live.Load()
	if l.MaxRequestBytes != cur.limits.MaxRequestBytes {
		return fmt.Errorf("max request bytes cannot change at run time (%d -> %d)", cur.limits.MaxRequestBytes, l.MaxRequestBytes)
	}
	if err := l.Validate(); err != nil {
		return err
	}
	if defaultTimeout <= 0 {
		return fmt.Errorf("default timeout %v must be positive", defaultTimeout)
	}
	s.live.Store(&liveSettings{limits: l, defaultTimeout: defaultTimeout})
	return nil
}

// Fatal delivers an error after which this node must not go on serving:
// the cluster refused its registration because it bootstrapped from a
// different --initial-cluster than the other members.
func (s *Server) Fatal() <-chan error { return s.fatal }

// Serve accepts connections on l until Stop.
// Each connection's state rides on its remote address (conn.go).
func (s *Server) Serve(l net.Listener) error { return s.grpc.Serve(connListener{l}) }

// Stop drains in-flight requests (bounded by ctx), then closes everything.
func (s *Server) Stop(ctx context.Context) {
	close(s.stop)
	s.stopStream()
	s.health.Shutdown()
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.log.Warn("requests still in flight at the drain deadline; closing them")
		s.grpc.Stop()
		<-done
	}
	// After the drain: the requests drained on this member may need other
	// members' peer services, and theirs this member's. Members' streams to
	// this one (read indexes) never end by themselves, so no graceful stop.
	s.peerGRPC.Stop()
	s.wg.Wait()
	s.closePeers()
	s.fwd.close()
	s.peerFwd.close()
}

// admitPeer bounds a member's call like a client's (the shared in-flight
// limit, a default deadline), without the per-connection shares: all of a
// follower's forwarded writes arrive on its one connection.
func (s *Server) admitPeer(ctx context.Context, req interface{}, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (interface{}, error) {
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	select {
	case s.inflight <- struct{}{}:
	default:
		s.metrics.rejected.WithLabelValues("in_flight").Inc()
		return nil, toStatus(overLimit("max-in-flight", fmt.Errorf("%w: %d requests in flight", errOverloaded, cap(s.inflight))))
	}
	defer func() { <-s.inflight }()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.defaultTimeout())
		defer cancel()
	}
	return h(ctx, req)
}

// recoverUnary turns a panic in a handler into Internal, so that one bad
// request cannot take the node down.
func (s *Server) recoverUnary(ctx context.Context, req interface{}, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp interface{}, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = s.panicked(info.FullMethod, r)
		}
	}()
	return h(ctx, req)
}

// panicked logs a handler's panic and returns the status the caller gets.
func (s *Server) panicked(method string, r any) error {
	s.log.Error("panic in handler", "method", method, "panic", r, "stack", string(debug.Stack()))
	return status.Errorf(codes.Internal, "internal error in %s; this is a bug, please report it", method)
}

// recoverStream is recoverUnary for streams.
func (s *Server) recoverStream(srv interface{}, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = s.panicked(info.FullMethod, r)
		}
	}()
	return h(srv, ss)
}

// mdRequestID carries a request id: the caller's, or one made here. It is
// in every log line about the request and echoed in the response header.
const mdRequestID = "x-request-id"

type requestIDKey struct{}

// requestID returns the request's id, for logs.
func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// incomingRequestID returns the caller's request id, or a new one.
func incomingRequestID(ctx context.Context) string {
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(mdRequestID); len(v) > 0 && v[0] != "" && len(v[0]) <= 64 {
			return v[0]
		}
	}
	return newRequestID()
}

// newRequestID returns 16 random hex digits. An id needs to be unique
// enough to find a request in the logs, not unpredictable: math/rand/v2's
// per-thread generator costs a fraction of crypto/rand's system call on
// every request.
func newRequestID() string {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], rand.Uint64())
	return hex.EncodeToString(b[:])
}

// peerServicePrefix starts the full method names of the peer service.
var peerServicePrefix = "/" + cmdpb.PeerService_ServiceDesc.ServiceName + "/"

// admitUnary bounds every request: refused at once when cancelled or when
// too many are in flight, given the default deadline when it has none, and
// logged when slow. It also gives the request an id and counts refusals by
// reason.
func (s *Server) admitUnary(ctx context.Context, req interface{}, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (interface{}, error) {
	id := incomingRequestID(ctx)
	ctx = context.WithValue(ctx, requestIDKey{}, id)
	_ = grpc.SetHeader(ctx, metadata.Pairs(mdRequestID, id))
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	conn := connOf(ctx)
	if strings.HasPrefix(info.FullMethod, peerServicePrefix) {
		// An older member's calls during a rolling upgrade (legacy.go):
		// all of its forwarded writes share one connection.
		conn = nil
	}
	if conn != nil && s.cfg.Conn.MaxInFlight > 0 {
		if n := conn.inflight.Add(1); n > int64(s.cfg.Conn.MaxInFlight) {
			conn.inflight.Add(-1)
			s.metrics.rejected.WithLabelValues("in_flight_per_conn").Inc()
			return nil, toStatus(overLimit("max-in-flight-per-conn",
				fmt.Errorf("%w: this connection has %d requests in flight, its share; spread load over more connections or wait for answers", errOverloaded, n-1)))
		}
		defer conn.inflight.Add(-1)
	}
	select {
	case s.inflight <- struct{}{}:
	default:
		s.metrics.rejected.WithLabelValues("in_flight").Inc()
		return nil, toStatus(overLimit("max-in-flight", fmt.Errorf("%w: %d requests in flight", errOverloaded, cap(s.inflight))))
	}
	defer func() { <-s.inflight }()
	if w, ok := req.(interface{ GetSession() *pb.WriteSession }); ok && conn != nil {
		if ws := w.GetSession(); ws != nil && len(ws.ClientId) > 0 && !conn.useClientID(string(ws.ClientId), s.cfg.Conn.MaxClientIDs) {
			s.metrics.rejected.WithLabelValues("sessions_per_conn").Inc()
			return nil, statusErr(pb.ReasonSessionLimit, fmt.Sprintf(
				"this connection already wrote with %d client ids, its share (limit --max-sessions-per-conn); reuse one client per process", s.cfg.Conn.MaxClientIDs),
				map[string]string{pb.MetaLimit: "max-sessions-per-conn"}, 0)
		}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.defaultTimeout())
		defer cancel()
	}
	start := time.Now()
	resp, err := h(ctx, req)
	if auditedMethods[info.FullMethod] {
		s.audit(ctx, info.FullMethod, err, time.Since(start))
	}
	if err != nil {
		if r := reasonOf(err); r != "" {
			s.metrics.rejected.WithLabelValues(strings.ToLower(r)).Inc()
		}
		if status.Code(err) == codes.Internal {
			s.log.Error("request failed", "request_id", id, "method", info.FullMethod, "err", err)
		}
	}
	if d := time.Since(start); d > s.cfg.SlowRequest {
		s.log.Info("slow request", "request_id", id, "method", info.FullMethod, "took", d, "code", status.Code(err).String())
	}
	return resp, err
}

// reasonOf returns the ErrorInfo reason of a status error.
func reasonOf(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.Reason
		}
	}
	return ""
}

// watchHealth keeps the gRPC health status current: SERVING while a
// leader is known and the state machine runs.
func (s *Server) watchHealth() {
	defer s.wg.Done()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	last := healthpb.HealthCheckResponse_UNKNOWN
	for {
		st := healthpb.HealthCheckResponse_SERVING
		if id, _ := s.node.Leader(); id == "" || s.node.FSM().Halted() != nil {
			st = healthpb.HealthCheckResponse_NOT_SERVING
		}
		if st != last {
			for _, svc := range []string{"", pb.DataService_ServiceDesc.ServiceName, pb.SchemaService_ServiceDesc.ServiceName} {
				s.health.SetServingStatus(svc, st)
			}
			last = st
		}
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}

// registerLoop makes sure the cluster knows this node's client address
// (for forwarding and client discovery), through the leader.
// bootstrapAuth creates the first root user and turns access control on,
// once the cluster can apply it, unless it has users already. Every
// bootstrapping member may be given the same password file: the state
// machine applies only the first such command, and only to a cluster
// without users.
func (s *Server) bootstrapAuth() {
	defer s.wg.Done()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		if _, ok := s.node.FSM().Auth().HasUser(fsm.RootUser); ok || len(s.node.FSM().Auth().Users()) > 0 {
			return
		}
		if id, _ := s.node.Leader(); id == "" || !s.node.Registered() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		res, err := s.propose(ctx, &cmdpb.Envelope{Command: &cmdpb.Envelope_Auth{Auth: &cmdpb.AuthChange{
			Op: cmdpb.AuthOp_AUTH_OP_BOOTSTRAP, PasswordHash: s.cfg.BootstrapRootHash}}})
		cancel()
		if err == nil {
			err = fsm.ResultError(res)
		}
		var ce *fsm.CommandError
		if errors.As(err, &ce) && ce.Reason == pb.ReasonPrecondition {
			// Every bootstrapping member may propose it; the first applied
			// creates root, the others are refused, changing nothing.
			return
		}
		if err != nil {
			s.log.Warn("creating the root user failed; will retry", "err", err)
			continue
		}
		s.auditLog.Info("access control bootstrapped: user root created, access control on", "revision", res.Revision)
		return
	}
}

func (s *Server) registerLoop() {
	defer s.wg.Done()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		if s.node.Registered() {
			continue
		}
		if id, _ := s.node.Leader(); id == "" {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		res, err := s.propose(ctx, s.node.RegistrationCommand())
		cancel()
		if err == nil {
			err = fsm.ResultError(res)
		}
		if err != nil {
			if status.Code(err) == codes.InvalidArgument {
				// The leader refused it (peer.go, checkProposal): it will
				// not pass by itself.
				s.log.Error("the leader refused this node's registration; will retry, but check --raft-advertise and --node-id against the cluster's configuration", "err", err)
			} else {
				s.log.Warn("registering this node with the cluster failed; will retry", "err", err)
			}
			var ce *fsm.CommandError
			if errors.As(err, &ce) && ce.Reason == pb.ReasonInvalidArgument {
				s.fatal <- fmt.Errorf("the cluster refused this node's registration: %w", err)
				return
			}
			continue
		}
		s.log.Info("registered with the cluster", "client_addr", s.node.Config().ClientAdvertise)
	}
}
