// Package client is the Go SDK for memdbd.
//
// A Client talks to a cluster through any of its members: it learns the
// other members, sends writes to the leader (following the servers' leader
// hints; a follower would forward them anyway), spreads stale reads over
// every member, and retries calls that fail for a transient reason
// (no leader, leader change, overload) with backoff and jitter, within the
// caller's deadline.
//
// Retrying a write is safe: every write carries the client's id and a
// sequence number, and the cluster applies each (id, sequence) at most
// once, answering a retry with the first attempt's result. A timed-out
// write that is retried can therefore neither be lost nor applied twice.
//
// Watch follows a table's changes as a channel of responses that never
// skips or repeats one: it resumes on another member after a failure and
// re-lists (a Reset response) when the members no longer keep the
// changes it missed. WithTTL and Touch make rows expire unless refreshed.
//
// Values, rows and schemas use the store package's Go types (aliased
// here), so that no generated protobuf type appears in the SDK's API.
package client

import (
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/memdbd/memdbd/api/codec"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
)

// Config configures a Client.
type Config struct {
	// Endpoints are gRPC addresses (host:port) of one or more members. The
	// client learns the others from them.
	Endpoints []string
	// RequestTimeout is the deadline of a call whose context has none.
	// Default 10s.
	RequestTimeout time.Duration
	// RetryBase and RetryMax bound the backoff between retries (doubling
	// from RetryBase, with jitter). Defaults 20ms and 250ms: an election
	// takes well under a second, and a client asleep for longer than that
	// stretches the unavailability it sees.
	RetryBase, RetryMax time.Duration
	// ClientID identifies this client's write session (1-64 bytes); random
	// when empty. Two live clients must never share one.
	ClientID string
	// DialOptions replace the default dial options (DefaultDialOptions),
	// credentials included.
	DialOptions []grpc.DialOption
	// TLS, when set, connects over TLS with this configuration: members'
	// certificates are verified against TLS.RootCAs (the system's roots
	// when nil), and a certificate in TLS.Certificates or from
	// TLS.GetClientCertificate is presented to members that require one
	// (mutual TLS). Exclusive with DialOptions, which carry their own
	// credentials.
	TLS *tls.Config
	// Credentials, when set, identify the client by user name and
	// password to a cluster with access control on (see Credentials).
	Credentials *Credentials
	// Logger receives retry decisions at debug level; none when nil.
	Logger *slog.Logger
	// DisableDiscovery keeps the client on Endpoints alone: it neither asks
	// for the other members nor follows leader hints to new addresses.
	DisableDiscovery bool
	// DisableGetBatching sends every Get as its own RPC. By default,
	// concurrent Gets of one table with the same read options are sent
	// together as a BatchGet while earlier ones are in flight (see
	// coalesce.go): fewer RPCs, more reads per second under load, and no
	// change for a caller that reads one key at a time.
	DisableGetBatching bool
	// DisableUpsertBatching sends every Upsert as its own RPC. By default,
	// Upserts issued while another is in flight are sent together as one
	// transaction (see coalesce.go).
	DisableUpsertBatching bool
}

func (c *Config) setDefaults() error {
	if len(c.Endpoints) == 0 {
		return errors.New("memdb: Config.Endpoints is empty")
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 10 * time.Second
	}
	if c.RetryBase <= 0 {
		c.RetryBase = 20 * time.Millisecond
	}
	if c.RetryMax < c.RetryBase {
		c.RetryMax = max(250*time.Millisecond, c.RetryBase)
	}
	if c.ClientID == "" {
		b := make([]byte, 16)
		_, _ = crand.Read(b)
		c.ClientID = fmt.Sprintf("%x", b)
	}
	if len(c.ClientID) > 64 {
		return errors.New("memdb: Config.ClientID is longer than 64 bytes")
	}
	switch {
	case c.TLS != nil && len(c.DialOptions) > 0:
		return errors.New("memdb: Config.TLS and Config.DialOptions are exclusive: give the TLS credentials in DialOptions")
	case c.TLS != nil:
		c.DialOptions = append(DefaultDialOptions(), grpc.WithTransportCredentials(credentials.NewTLS(c.TLS)))
	case len(c.DialOptions) == 0:
		c.DialOptions = DefaultDialOptions()
	}
	if c.Credentials != nil {
		c.DialOptions = append(slices.Clip(c.DialOptions), grpc.WithPerRPCCredentials(c.Credentials.PerRPC()))
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// DefaultDialOptions are the dial options used when Config.DialOptions is
// empty: plaintext, and a reconnect backoff capped at one second. gRPC's
// default cap is two minutes, far too long to notice that a restarted
// member is back.
func DefaultDialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: time.Second,
		}),
	}
}

// maxRecvMsgSize is the largest message the client accepts unless
// Config.DialOptions set grpc.MaxCallRecvMsgSize. gRPC's default, 4 MiB,
// is below a single row of the members' default row limit (8 MiB), so a
// Get of a large row failed in the client after the member had answered
// it. It is twice the members' default response limit
// (--max-response-bytes, 64 MiB): every answer of a member with default
// limits fits, with room for a transaction whose rows grew between the
// member's estimate of its answer and its apply (the member answers it
// anyway, since the write is done), and for a member whose limit was
// raised up to this. A member's limit above it needs the dial option.
const maxRecvMsgSize = 128 << 20

// Client is a connection to a memdbd cluster. It is safe for concurrent
// use; create one per process and Close it when done.
type Client struct {
	cfg     Config
	session sessionTracker

	mu        sync.Mutex
	conns     map[string]*grpc.ClientConn
	endpoints []string
	leader    string

	next   atomic.Uint32 // round-robin position for reads
	closed atomic.Bool

	gets    *batcher[getGroup, Value, Row]         // nil with Config.DisableGetBatching
	upserts *batcher[struct{}, *pb.UpsertOp, Meta] // nil with Config.DisableUpsertBatching
}

// New returns a client of the cluster at cfg.Endpoints. It asks the first
// member that answers (within ctx) for the others; a cluster that cannot
// be reached yet is not an error, calls will retry.
func New(ctx context.Context, cfg Config) (*Client, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, conns: map[string]*grpc.ClientConn{}, endpoints: append([]string(nil), cfg.Endpoints...)}
	c.session.init()
	if !cfg.DisableGetBatching {
		c.gets = newGetBatcher(c)
	}
	if !cfg.DisableUpsertBatching {
		c.upserts = newUpsertBatcher(c)
	}
	if cfg.DisableDiscovery {
		return c, nil
	}
	if _, err := c.Members(ctx); err != nil {
		c.cfg.Logger.Debug("member discovery failed; using the configured endpoints", "err", err)
	}
	return c, nil
}

// Close closes the client's connections.
func (c *Client) Close() error {
	c.closed.Store(true)
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for a, cc := range c.conns {
		errs = append(errs, cc.Close())
		delete(c.conns, a)
	}
	return errors.Join(errs...)
}

func (c *Client) conn(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cc, ok := c.conns[addr]; ok {
		return cc, nil
	}
	// The codec and the receive size first, so that options the caller
	// gives can still replace them.
	opts := append([]grpc.DialOption{grpc.WithDefaultCallOptions(grpc.ForceCodecV2(codec.New()), grpc.MaxCallRecvMsgSize(maxRecvMsgSize))},
		c.cfg.DialOptions...)
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, err
	}
	c.conns[addr] = cc
	return cc, nil
}

// pick chooses the member for an attempt: the leader for writes when
// known, otherwise the next member in turn.
func (c *Client) pick(toLeader bool) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if toLeader && c.leader != "" {
		return c.leader
	}
	return c.endpoints[int(c.next.Add(1))%len(c.endpoints)]
}

func (c *Client) learnLeader(addr string) {
	if addr == "" || c.cfg.DisableDiscovery {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.leader = addr
	for _, e := range c.endpoints {
		if e == addr {
			return
		}
	}
	c.endpoints = append(c.endpoints, addr)
}

func (c *Client) forgetLeader(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.leader == addr {
		c.leader = ""
	}
}

// attempt is one try of a call against one member.
type attempt func(ctx context.Context, cc *grpc.ClientConn) error

// do runs a call with retries. toLeader routes it to the leader when
// known; pinned, when non-empty, sends every attempt to that member (scan
// pages live on one member).
func (c *Client) do(ctx context.Context, toLeader bool, pinned string, fn attempt) error {
	if c.closed.Load() {
		return &Error{Message: "client closed", sentinel: ErrUnavailable}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.RequestTimeout)
		defer cancel()
	}
	var last *Error
	lastHint := ""
	for n := 0; ; n++ {
		if err := ctx.Err(); err != nil {
			if last != nil {
				return last
			}
			return &Error{Message: err.Error(), sentinel: ErrUnavailable}
		}
		addr := pinned
		if addr == "" {
			addr = c.pick(toLeader)
		}
		cc, err := c.conn(addr)
		if err != nil {
			return &Error{Message: err.Error(), sentinel: ErrInvalidArgument}
		}
		err = fn(ctx, cc)
		if err == nil {
			return nil
		}
		last = fromStatus(err)
		if !last.retryable() {
			return last
		}
		if last.LeaderAddr != "" && last.LeaderAddr != addr {
			c.learnLeader(last.LeaderAddr)
		} else if toLeader {
			c.forgetLeader(addr)
		}
		pause := c.backoff(n, last.RetryAfter)
		if last.LeaderAddr != "" && last.LeaderAddr != addr && last.LeaderAddr != lastHint {
			pause = 0 // a redirect to a leader not tried yet, not a failure
		}
		lastHint = last.LeaderAddr
		c.cfg.Logger.Debug("retrying", "addr", addr, "attempt", n, "err", last, "pause", pause)
		if dl, _ := ctx.Deadline(); time.Until(dl) < pause {
			return last
		}
		select {
		case <-ctx.Done():
			return last
		case <-time.After(pause):
		}
	}
}

// backoff is exponential with full jitter above half, capped at RetryMax,
// and at least the server's suggestion.
func (c *Client) backoff(n int, hint time.Duration) time.Duration {
	d := c.cfg.RetryBase << min(n, 16)
	if d > c.cfg.RetryMax {
		d = c.cfg.RetryMax
	}
	d = d/2 + rand.N(d/2+1)
	return max(d, hint)
}

// sessionTracker numbers writes and tracks which are still outstanding,
// so every write can tell the cluster the lowest sequence whose answer
// the client may still need (results below it are forgotten).
type sessionTracker struct {
	mu   sync.Mutex
	next uint64
	low  uint64
	done map[uint64]bool
}

func (t *sessionTracker) init() {
	t.next, t.low, t.done = 1, 1, map[uint64]bool{}
}

func (t *sessionTracker) begin() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.next
	t.next++
	return s
}

// end marks a write finished (answered, or abandoned for good).
func (t *sessionTracker) end(seq uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.done[seq] = true
	for t.done[t.low] {
		delete(t.done, t.low)
		t.low++
	}
}

func (t *sessionTracker) first() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.low
}

// write runs a write call with a session: one sequence number for every
// attempt of the call.
func (c *Client) write(ctx context.Context, fn func(ctx context.Context, cc *grpc.ClientConn, ws *pb.WriteSession) error) error {
	seq := c.session.begin()
	defer c.session.end(seq)
	return c.do(ctx, true, "", func(ctx context.Context, cc *grpc.ClientConn) error {
		ws := &pb.WriteSession{ClientId: []byte(c.cfg.ClientID), Seq: seq, FirstIncompleteSeq: c.session.first()}
		return fn(ctx, cc, ws)
	})
}
