package node

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// streamLayer is Raft's TCP stream layer with one addition over
// raft.TCPStreamLayer: outgoing connections can leave from a chosen source
// address (--raft-source-addr). On a multi-homed host that picks the
// interface peers see; the fault-injection harness uses it to tell nodes
// apart on loopback, where every node would otherwise connect from
// 127.0.0.1.
//
// With TLS (Config.RaftTLS) every connection is mutual TLS: accepted ones
// complete their handshake on their first read, in the transport's
// goroutine for that connection, so a slow or silent peer never holds up
// the accept loop; dialled ones complete it within the dial timeout, so a
// peer with the wrong certificate fails the dial with the reason instead
// of failing later as a broken connection.
//
// It also closes every connection it made or accepted when it is closed:
// Raft's transport stops reading a connection only when its peer closes
// it, so a stopped node would otherwise leave goroutines reading from its
// peers' idle connections.
type streamLayer struct {
	net.Listener
	advertise net.Addr
	dialer    net.Dialer
	tls       *RaftTLS // nil: plaintext

	mu     sync.Mutex
	conns  map[*trackedConn]struct{}
	closed bool
}

// trackedConn removes itself from the layer's set when closed.
type trackedConn struct {
	net.Conn
	s    *streamLayer
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
	})
	return c.Conn.Close()
}

func (s *streamLayer) track(c net.Conn) (net.Conn, error) {
	tc := &trackedConn{Conn: c, s: s}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = c.Close()
		return nil, net.ErrClosed
	}
	s.conns[tc] = struct{}{}
	return tc, nil
}

// Accept returns the next inbound connection, tracked.
func (s *streamLayer) Accept() (net.Conn, error) {
	c, err := s.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if s.tls != nil {
		c = tls.Server(c, s.tls.Server)
	}
	return s.track(c)
}

// Close stops listening and closes every tracked connection.
func (s *streamLayer) Close() error {
	err := s.Listener.Close()
	s.mu.Lock()
	s.closed = true
	conns := s.conns
	s.conns = map[*trackedConn]struct{}{}
	s.mu.Unlock()
	for c := range conns {
		_ = c.Conn.Close()
	}
	return err
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func newStreamLayer(bind string, advertise net.Addr, source string, tc *RaftTLS) (*streamLayer, error) {
	l, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, err
	}
	s := &streamLayer{Listener: l, advertise: advertise, conns: map[*trackedConn]struct{}{}, tls: tc}
	if source != "" {
		ip := net.ParseIP(source)
		if ip == nil {
			_ = l.Close()
			return nil, &net.AddrError{Err: "not an IP address", Addr: source}
		}
		s.dialer.LocalAddr = &net.TCPAddr{IP: ip}
	}
	if s.advertise == nil {
		s.advertise = l.Addr()
	}
	return s, nil
}

func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := s.dialer
	d.Timeout = timeout
	c, err := d.Dial("tcp", string(address))
	if err != nil {
		return nil, err
	}
	if s.tls != nil {
		host, _, err := net.SplitHostPort(string(address))
		if err != nil {
			_ = c.Close()
			return nil, err
		}
		cfg := s.tls.Client.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName = host
		}
		tc := tls.Client(c, cfg)
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		err = tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", address, err)
		}
		c = tc
	}
	return s.track(c)
}

// Addr is the advertised address: what peers dial.
func (s *streamLayer) Addr() net.Addr { return s.advertise }
