package node

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// The Raft port carries two protocols: hashicorp/raft's transport and the
// members' own gRPC service (forwarded proposals, read indexes, lease
// probes). Serving that service on the Raft port rather than the client
// port keeps it out of clients' reach: only members, which hold the peer
// certificate when the Raft port has TLS, can call it, and reflection on
// the client port never lists it.
//
// The two are told apart by the first byte a connection sends: the Raft
// transport opens every connection with a one-byte RPC type (0 to 4 in
// hashicorp/raft v1.7), a gRPC client with the HTTP/2 preface, "PRI *
// HTTP/2.0...". So no framing of our own is needed, and a Raft peer of an
// older version connects unchanged.

// http2PrefaceFirstByte is the first byte of the HTTP/2 client preface.
const http2PrefaceFirstByte = 'P'

// Bounds on connections that have not said which protocol they speak.
// A connection that sends nothing is closed after firstByteTimeout (with
// TLS this includes the handshake), and at most maxUnidentified wait at
// once, so that silent connections cannot pile up and hold file
// descriptors and goroutines. When that many wait, the one that has
// waited longest is closed to make room, not the new one: a member's
// connection sends its first bytes at once and leaves the queue in
// microseconds, so a flood of silent connections pushes out only its
// own.
const (
	firstByteTimeout = 10 * time.Second
	maxUnidentified  = 256
)

// peerMux is the stream layer Raft uses, with the connections that open
// with an HTTP/2 preface split off to PeerListener. It owns one accept
// goroutine and one goroutine per connection until its first byte
// arrives; Close stops and waits for all of them.
type peerMux struct {
	*streamLayer
	log *slog.Logger

	firstByte time.Duration
	raftConns chan net.Conn
	peer      *muxListener
	closed    chan struct{}

	// pendMu guards pending: the connections not identified yet, oldest
	// first.
	pendMu    sync.Mutex
	pending   []net.Conn
	closeOnce sync.Once
	wg        sync.WaitGroup
}

var _ raft.StreamLayer = (*peerMux)(nil)

// newPeerMux starts splitting s; firstByte bounds the wait for a new
// connection's first byte (firstByteTimeout outside tests).
func newPeerMux(s *streamLayer, lg *slog.Logger, firstByte time.Duration) *peerMux {
	m := &peerMux{
		streamLayer: s, log: lg, firstByte: firstByte,
		raftConns: make(chan net.Conn),
		closed:    make(chan struct{}),
	}
	m.peer = &muxListener{m: m, conns: make(chan net.Conn), done: make(chan struct{})}
	m.wg.Add(1)
	go m.acceptLoop()
	return m
}

func (m *peerMux) acceptLoop() {
	defer m.wg.Done()
	var backoff time.Duration
	for {
		c, err := m.streamLayer.Accept()
		if err != nil {
			select {
			case <-m.closed:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: pause rather than spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			m.log.Warn("raft port: accept failed", "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-m.closed:
				return
			}
			continue
		}
		backoff = 0
		m.addPending(c)
		m.wg.Add(1)
		go m.route(c)
	}
}

// route waits for a connection's first byte and hands it to Raft or to
// the peer service.
func (m *peerMux) route(c net.Conn) {
	defer m.wg.Done()
	var first [1]byte
	_ = c.SetReadDeadline(time.Now().Add(m.firstByte))
	_, err := io.ReadFull(c, first[:])
	m.removePending(c)
	if err != nil {
		m.log.Debug("raft port: connection closed before it sent anything", "remote", c.RemoteAddr().String(), "err", err)
		_ = c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	pc := &prefixConn{Conn: c, first: first[0], hasFirst: true}
	to := m.raftConns
	if first[0] == http2PrefaceFirstByte {
		to = m.peer.conns
	}
	// Bounded too: nobody may be accepting (a node without a server, or
	// one shutting down).
	t := time.NewTimer(m.firstByte)
	defer t.Stop()
	// Only the peer side closes with its listener; Raft's stays open.
	var peerDone <-chan struct{}
	if first[0] == http2PrefaceFirstByte {
		peerDone = m.peer.done
	}
	select {
	case to <- pc:
	case <-m.closed:
		_ = c.Close()
	case <-peerDone:
		_ = c.Close()
	case <-t.C:
		_ = c.Close()
	}
}

// addPending queues c until its first byte, closing the connection that
// has waited longest when maxUnidentified wait already.
func (m *peerMux) addPending(c net.Conn) {
	m.pendMu.Lock()
	var oldest net.Conn
	if len(m.pending) >= maxUnidentified {
		oldest = m.pending[0]
		m.pending = m.pending[1:]
	}
	m.pending = append(m.pending, c)
	m.pendMu.Unlock()
	if oldest != nil {
		m.log.Warn("raft port: too many connections that have not sent anything; closing the oldest",
			"remote", oldest.RemoteAddr().String(), "limit", maxUnidentified)
		_ = oldest.Close() // its route goroutine's read fails and ends it
	}
}

// removePending drops c from the queue, if it is still there.
func (m *peerMux) removePending(c net.Conn) {
	m.pendMu.Lock()
	defer m.pendMu.Unlock()
	for i, p := range m.pending {
		if p == c {
			m.pending = append(m.pending[:i], m.pending[i+1:]...)
			return
		}
	}
}

// Accept returns the next Raft connection.
func (m *peerMux) Accept() (net.Conn, error) {
	select {
	case c := <-m.raftConns:
		return c, nil
	case <-m.closed:
		return nil, net.ErrClosed
	}
}

// Close stops listening, closes every connection and waits for the
// mux's goroutines.
func (m *peerMux) Close() error {
	var err error
	m.closeOnce.Do(func() {
		close(m.closed)
		err = m.streamLayer.Close()
		m.wg.Wait()
	})
	return err
}

// muxListener is the peer service's side of the Raft port.
type muxListener struct {
	m     *peerMux
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *muxListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-l.m.closed:
		return nil, net.ErrClosed
	}
}

// Close stops handing connections to the peer service; the Raft side is
// unaffected.
func (l *muxListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *muxListener) Addr() net.Addr { return l.m.Addr() }

// prefixConn returns the byte the mux read before the rest of the stream.
type prefixConn struct {
	net.Conn
	first    byte
	hasFirst bool
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if c.hasFirst && len(p) > 0 {
		p[0] = c.first
		c.hasFirst = false
		return 1, nil
	}
	return c.Conn.Read(p)
}
