package node

import (
	"context"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// peerDialTimeout bounds a dial to a peer when the caller's context has no
// earlier deadline.
const peerDialTimeout = 5 * time.Second

// PeerListener returns the listener of the peer service: the connections
// to this node's Raft port that speak gRPC (mux.go). Serve it with a gRPC
// server that registers only the peer service.
func (n *Node) PeerListener() net.Listener { return n.peers.peer }

// DialPeer opens a connection to a member's Raft port for its peer
// service, the way Raft dials it: from --raft-source-addr, and with the
// Raft port's mutual TLS when it has TLS. ctx bounds the dial and the
// handshake.
func (n *Node) DialPeer(ctx context.Context, raftAddr string) (net.Conn, error) {
	timeout := peerDialTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	if timeout <= 0 {
		return nil, context.DeadlineExceeded
	}
	return n.peers.Dial(raft.ServerAddress(raftAddr), timeout)
}

// LeaderPeer returns the known leader's id and Raft address (where its
// peer service is); empty when no leader is known.
func (n *Node) LeaderPeer() (id, raftAddr string) {
	addr, lid := n.raft.LeaderWithID()
	return string(lid), string(addr)
}

// PeerAddr returns the Raft address of member id in the latest Raft
// configuration; false when id is not a member. The configuration, not
// the member registry, is the authority: it changes only through Raft's
// own membership changes.
func (n *Node) PeerAddr(id string) (string, bool) {
	f := n.raft.GetConfiguration() // answered from a copy, without the Raft loop
	if f.Error() != nil {
		return "", false
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == id {
			return string(s.Address), true
		}
	}
	return "", false
}
