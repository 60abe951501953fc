package server

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/stats"
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
}

type connKey struct{}

// connOf returns the state of the connection ctx arrived on, or nil for a
// context that did not come through the gRPC server (in-process calls).
func connOf(ctx context.Context) *connState {
	c, _ := ctx.Value(connKey{}).(*connState)
	return c
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

// connTagger attaches a connState to every accepted connection. gRPC
// derives each stream's context from the context TagConn returns, so a
// handler finds its connection with connOf at the cost of a context
// lookup; the per-RPC hooks do nothing.
type connTagger struct{}

var _ stats.Handler = connTagger{}

func (connTagger) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return context.WithValue(ctx, connKey{}, &connState{})
}
func (connTagger) HandleConn(context.Context, stats.ConnStats)                     {}
func (connTagger) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (connTagger) HandleRPC(context.Context, stats.RPCStats)                       {}
