package chaos

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Rule is what happens to the bytes of one direction between two nodes.
type Rule struct {
	Drop  bool
	Delay time.Duration
}

// rules holds the rule of every ordered pair (from, to) of nodes. The zero
// rule passes.
type rules struct {
	mu sync.RWMutex
	r  map[[2]int]Rule
	// gen changes whenever a rule changes, so pumps can re-check cheaply.
	gen atomic.Uint64
}

func newRules() *rules { return &rules{r: map[[2]int]Rule{}} }

func (r *rules) get(from, to int) Rule {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r[[2]int{from, to}]
}

func (r *rules) set(from, to int, rule Rule) {
	r.mu.Lock()
	r.r[[2]int{from, to}] = rule
	r.mu.Unlock()
	r.gen.Add(1)
}

func (r *rules) healAll() {
	r.mu.Lock()
	r.r = map[[2]int]Rule{}
	r.mu.Unlock()
	r.gen.Add(1)
}

// peerProxy listens on one node's advertised Raft address and forwards to
// its real Raft port, identifying the connecting node by source IP.
type peerProxy struct {
	to     int
	ln     net.Listener
	target string
	rules  *rules
	nodeOf func(ip string) int

	mu    sync.Mutex
	conns map[*proxyConn]bool
	wg    sync.WaitGroup
}

type proxyConn struct {
	from     int
	a, b     net.Conn
	closeOne sync.Once
}

func (c *proxyConn) close() {
	c.closeOne.Do(func() { _ = c.a.Close(); _ = c.b.Close() })
}

func newPeerProxy(listen, target string, to int, r *rules, nodeOf func(string) int) (*peerProxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	p := &peerProxy{to: to, ln: ln, target: target, rules: r, nodeOf: nodeOf, conns: map[*proxyConn]bool{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

func (p *peerProxy) accept() {
	defer p.wg.Done()
	for {
		a, err := p.ln.Accept()
		if err != nil {
			return
		}
		host, _, _ := net.SplitHostPort(a.RemoteAddr().String())
		from := p.nodeOf(host)
		// A dropped direction from the initiator: the connection fails at
		// once, as a refused connection would.
		if from < 0 || p.rules.get(from, p.to).Drop {
			_ = a.Close()
			continue
		}
		b, err := net.DialTimeout("tcp", p.target, time.Second)
		if err != nil {
			_ = a.Close()
			continue
		}
		c := &proxyConn{from: from, a: a, b: b}
		p.mu.Lock()
		p.conns[c] = true
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pump(c, a, b, from, p.to)
		go p.pump(c, b, a, p.to, from)
	}
}

// pump copies one direction. A chunk in a dropped direction kills the
// connection (TCP cannot lose bytes in the middle of a stream and go on);
// a delayed direction holds each chunk for the delay, in order.
func (p *peerProxy) pump(c *proxyConn, src, dst net.Conn, from, to int) {
	defer p.wg.Done()
	defer func() {
		c.close()
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			rule := p.rules.get(from, to)
			if rule.Drop {
				return
			}
			if rule.Delay > 0 {
				time.Sleep(rule.Delay)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// cut closes the live connections of a pair whose rule now drops, so a
// partition takes effect at once even on idle connections.
func (p *peerProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		if p.rules.get(c.from, p.to).Drop || p.rules.get(p.to, c.from).Drop {
			c.close()
		}
	}
}

func (p *peerProxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// clientProxy forwards client (and forwarded peer) gRPC traffic to one
// node. When armed, it loses the next reply: the server's response bytes
// are not delivered and the connection closes, after the server has done
// the work.
type clientProxy struct {
	ln     net.Listener
	target string
	armed  atomic.Int32
	lost   atomic.Int64

	mu    sync.Mutex
	conns map[net.Conn]net.Conn
	wg    sync.WaitGroup
}

func newClientProxy(listen, target string) (*clientProxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	p := &clientProxy{ln: ln, target: target, conns: map[net.Conn]net.Conn{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

func (p *clientProxy) accept() {
	defer p.wg.Done()
	for {
		a, err := p.ln.Accept()
		if err != nil {
			return
		}
		b, err := net.DialTimeout("tcp", p.target, time.Second)
		if err != nil {
			_ = a.Close()
			continue
		}
		p.mu.Lock()
		p.conns[a] = b
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pump(a, b, false)
		go p.pump(b, a, true)
	}
}

func (p *clientProxy) pump(src, dst net.Conn, replies bool) {
	defer p.wg.Done()
	defer func() {
		_ = src.Close()
		_ = dst.Close()
		p.mu.Lock()
		delete(p.conns, src)
		delete(p.conns, dst)
		p.mu.Unlock()
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			// Only replies large enough to carry a response (not HTTP/2
			// pings and window updates) are worth losing.
			if replies && n > 40 && p.armed.Load() > 0 && p.armed.Add(-1) >= 0 {
				p.lost.Add(1)
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				return
			}
			return
		}
	}
}

// loseNextReplies arms the proxy to lose the next n replies.
func (p *clientProxy) loseNextReplies(n int) { p.armed.Store(int32(n)) }

func (p *clientProxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	for a, b := range p.conns {
		_ = a.Close()
		_ = b.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
