package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"math"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/memdbd/memdbd/api/codec"
	"github.com/memdbd/memdbd/node"
)

// mdForwardedBy marks a request one member forwarded to another. A member
// never forwards a request that carries it, so a stale view of who leads
// costs one hop and an error, never a loop.
const mdForwardedBy = "x-memdb-forwarded-by"

// forwarder keeps one client connection per peer address, for forwarding
// writes and read-index requests to the leader.
type forwarder struct {
	self string
	opts []grpc.DialOption
	// scheme prefixes the address to make the dial target (peers: the
	// passthrough resolver); conns are keyed by the address alone, so a
	// lookup builds no string.
	scheme string

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
	// closed refuses new connections once close ran: a caller still
	// finishing as the server stops would otherwise dial a connection no
	// one ever closes.
	closed bool
}

// peerConnectParams reconnect to a restarted member within a second:
// gRPC's default backoff grows to two minutes, during which forwarding to
// a leader that came back would fail.
var peerConnectParams = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
	MinConnectTimeout: time.Second,
}

// newForwarder dials peers with tc (plaintext when nil), unless opts are
// given, which replace every default.
func newForwarder(self string, tc *tls.Config, opts ...grpc.DialOption) *forwarder {
	if len(opts) == 0 {
		creds := insecure.NewCredentials()
		if tc != nil {
			creds = credentials.NewTLS(tc)
		}
		opts = []grpc.DialOption{grpc.WithTransportCredentials(creds), grpc.WithConnectParams(peerConnectParams)}
	}
	return &forwarder{self: self, opts: opts, conns: map[string]*grpc.ClientConn{}}
}

// conn returns the connection to addr, creating it (lazily connecting) on
// first use.
func (f *forwarder) conn(addr string) (*grpc.ClientConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.conns[addr]; ok {
		return c, nil
	}
	if f.closed {
		return nil, fmt.Errorf("connecting to %s: %w", addr, node.ErrShutdown)
	}
	// No receive limit of gRPC's own (4 MiB by default) between members:
	// what a member answers is bounded by its own response limits, and a
	// forwarded write's answer refused here, after the leader applied it,
	// would reach the client as a failure of a write that happened.
	target := f.scheme + addr
	opts := append([]grpc.DialOption{grpc.WithDefaultCallOptions(grpc.ForceCodecV2(codec.New()), grpc.MaxCallRecvMsgSize(math.MaxInt32))}, f.opts...)
	c, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", addr, err)
	}
	f.conns[addr] = c
	return c, nil
}

// outgoing marks ctx as forwarded by this node, carrying the request id
// so that the leader's logs name the same request.
func (f *forwarder) outgoing(ctx context.Context) context.Context {
	if id := requestID(ctx); id != "" {
		return metadata.AppendToOutgoingContext(ctx, mdForwardedBy, f.self, mdRequestID, id)
	}
	return metadata.AppendToOutgoingContext(ctx, mdForwardedBy, f.self)
}

func (f *forwarder) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for addr, c := range f.conns {
		_ = c.Close()
		delete(f.conns, addr)
	}
}

// forwardedBy returns the member that forwarded this request, if any.
func forwardedBy(ctx context.Context) string {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return ""
	}
	if v := md.Get(mdForwardedBy); len(v) > 0 {
		return v[0]
	}
	return ""
}
