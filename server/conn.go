package server

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/peer"
)

// Per-connection fairness.
//
// The member-wide bounds (in-flight requests, watch streams, pinned scan
// views) keep a member alive, but one caller could fill them and make the
// member refuse everyone else. So each client connection also has a
// share of its own: a connection over its share is refused, the others go
// on. A connection is the unit because it is what the server can tell
// apart without authentication; a caller that opens many connections is
// bounded by the member-wide limits and by MaxConcurrentStreams per
// connection, and is a matter for access control.

// ConnLimits are the per-connection shares. Zero disables a share.
type ConnLimits struct {
	// MaxInFlight bounds the unary requests one connection has in flight
	// (--max-in-flight-per-conn).
	MaxInFlight int
	// MaxWatchers bounds the watch streams one connection has open
	// (--max-watchers-per-conn).
	MaxWatchers int
	// MaxClientIDs bounds the distinct write-session client ids one
	// connection may use (--max-sessions-per-conn): each new one opens a
	// session in the replicated state, which every member keeps for an
	// hour, so a connection cycling through fresh ids would otherwise fill
	// the session table for everyone.
	MaxClientIDs int
	// MaxPinnedViews bounds the scan views one connection keeps pinned
	// for its later pages (--max-pinned-views-per-conn; pages.go): beyond
	// it the connection's least recently used pin goes.
	MaxPinnedViews int
}

// DefaultConnLimits returns the default per-connection shares: a tenth of
// the member-wide in-flight default, enough watchers for a client that
// watches a few hundred ranges, enough client ids for a process with a
// few dozen SDK clients sharing one connection, and an eighth of the
// member-wide pinned views, for a client paging through a few dozen scans
// at once.
func DefaultConnLimits() ConnLimits {
	return ConnLimits{MaxInFlight: 1000, MaxWatchers: 1000, MaxClientIDs: 64, MaxPinnedViews: 32}
}

// Validate checks the shares.
func (l ConnLimits) Validate() error {
	if l.MaxInFlight < 0 || l.MaxWatchers < 0 || l.MaxClientIDs < 0 || l.MaxPinnedViews < 0 {
		return fmt.Errorf("per-connection limits must not be negative: %+v", l)
	}
	return nil
}

// connState is what the server knows about one client connection.
type connState struct {
	inflight atomic.Int64
	watchers atomic.Int64

	mu        sync.Mutex
	clientIDs map[string]struct{} // guarded by mu

	// ident is the identity the connection's last call was found to
	// have (auth.go, identifyCached).
	ident atomic.Pointer[cachedIdentity]
}

// connOf returns the state of the connection ctx arrived on, or nil for a
// context that did not come through a listener of Serve (in-process
// calls).
func connOf(ctx context.Context) *connState {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	if a, ok := p.Addr.(*connAddr); ok {
		return a.state
	}
	return nil
}

// useClientID records that the connection writes with client id; false
// when that would take it beyond max distinct ids (0: no bound).
func (c *connState) useClientID(id string, max int) bool {
	if c == nil || max <= 0 {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.clientIDs[id]; ok {
		return true
	}
	if len(c.clientIDs) >= max {
		return false
	}
	if c.clientIDs == nil {
		c.clientIDs = map[string]struct{}{}
	}
	c.clientIDs[id] = struct{}{}
	return true
}

// How a handler finds its connection: Serve wraps the listener so that
// every accepted connection reports, as its remote address, a connAddr
// that carries the connection's state; gRPC hands that address to every
// request on the connection (peer.FromContext). Why not a gRPC stats
// handler, whose TagConn would do the same through the context: gRPC then
// builds and delivers a stats event for every step of every call, which
// cost about 6% of a member's read throughput.

// connListener wraps the client port's listener (Serve).
type connListener struct{ net.Listener }

func (l connListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &stateConn{Conn: c, addr: &connAddr{Addr: c.RemoteAddr(), state: &connState{}}}, nil
}

// stateConn is an accepted connection that reports a connAddr.
type stateConn struct {
	net.Conn
	addr *connAddr
}

func (c *stateConn) RemoteAddr() net.Addr { return c.addr }

// connAddr is the remote address of a connection, with its state; it
// prints as the address.
type connAddr struct {
	net.Addr
	state *connState
}
