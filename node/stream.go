package node

import (
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// streamLayer is Raft's TCP stream layer with one addition over
// raft.TCPStreamLayer: outgoing connections can leave from a chosen source
// address (--raft-source-addr). On a multi-homed host that picks the
// interface peers see; the fault-injection harness uses it to tell nodes
// apart on loopback, where every node would otherwise connect from
// 127.0.0.1.
type streamLayer struct {
	net.Listener
	advertise net.Addr
	dialer    net.Dialer
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func newStreamLayer(bind string, advertise net.Addr, source string) (*streamLayer, error) {
	l, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, err
	}
	s := &streamLayer{Listener: l, advertise: advertise}
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
	return d.Dial("tcp", string(address))
}

// Addr is the advertised address: what peers dial.
func (s *streamLayer) Addr() net.Addr { return s.advertise }
