package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"

	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	"github.com/memdbd/memdbd/node"
)

// peerService serves other members: proposals and read indexes forwarded
// to the leader.
type peerService struct {
	cmdpb.UnimplementedPeerServiceServer
	s *Server
}

func (p *peerService) Propose(ctx context.Context, req *cmdpb.ProposeRequest) (*cmdpb.ProposeResponse, error) {
	if req.Envelope == nil {
		return nil, toStatus(fmt.Errorf("%w: no envelope", errInvalid))
	}
	res, err := p.s.node.Apply(ctx, req.Envelope)
	if err != nil {
		return nil, toStatus(err)
	}
	return &cmdpb.ProposeResponse{Result: res, RaftTerm: p.s.node.Status().Term}, nil
}

// propose applies a command through the leader: locally when this node
// leads, otherwise forwarded once to the leader it knows.
func (s *Server) propose(ctx context.Context, env *cmdpb.Envelope) (*cmdpb.Result, error) {
	if s.node.IsLeader() {
		res, err := s.node.Apply(ctx, env)
		if err == nil || !errors.Is(err, node.ErrNotLeader) || errors.Is(err, node.ErrOutcomeUnknown) {
			return res, err
		}
		// Lost leadership before the entry was appended: forward instead.
	}
	conn, _, err := s.leaderPeerConn(ctx)
	if err != nil {
		return nil, err
	}
	s.metrics.forwarded.WithLabelValues("propose").Inc()
	resp, err := cmdpb.NewPeerServiceClient(conn).Propose(s.fwd.outgoing(ctx), &cmdpb.ProposeRequest{Envelope: env, From: s.cfg.NodeID})
	if err != nil {
		return nil, err
	}
	return resp.Result, nil
}

// readIndexTimeout bounds one shared read-index request to the leader.
const readIndexTimeout = 5 * time.Second

// readIndex returns the index a linearizable read must wait for: from the
// node itself when it leads, otherwise from the leader, in a request
// shared with the other reads waiting on this node.
func (s *Server) readIndex(ctx context.Context) (uint64, error) {
	if s.node.IsLeader() {
		idx, err := s.node.ReadIndex(ctx)
		if err == nil || !errors.Is(err, node.ErrNotLeader) {
			return idx, err
		}
	}
	if by := forwardedBy(ctx); by != "" {
		id, addr := s.node.Leader()
		return 0, &node.NotLeaderError{LeaderID: id, LeaderAddr: addr}
	}
	return s.readIndexes.Get(ctx)
}

// leaderConn returns a connection to the leader, unless this request was
// itself forwarded (no second hop) or no leader is known.
func (s *Server) leaderConn(ctx context.Context) (grpc.ClientConnInterface, error) {
	conn, _, err := s.leaderConnAddr(ctx)
	return conn, err
}

// leaderPeerConn returns a connection to the leader's peer service, on
// its Raft port, and the leader's Raft address; the same refusals as
// leaderConn.
func (s *Server) leaderPeerConn(ctx context.Context) (*grpc.ClientConn, string, error) {
	id, addr := s.node.LeaderPeer()
	if by := forwardedBy(ctx); by != "" || id == s.cfg.NodeID {
		_, caddr := s.node.Leader()
		return nil, "", &node.NotLeaderError{LeaderID: id, LeaderAddr: caddr}
	}
	if id == "" {
		return nil, "", node.ErrNoLeader
	}
	conn, err := s.peerConn(addr)
	return conn, addr, err
}

// peerConn returns the connection to the peer service at a member's Raft
// address. The passthrough scheme hands the address to the dialer as
// given, so that with TLS the certificate is checked against the name the
// member advertises, as Raft's own dials do.
func (s *Server) peerConn(raftAddr string) (*grpc.ClientConn, error) {
	return s.peerFwd.conn("passthrough:///" + raftAddr)
}

// leaderConnAddr is leaderConn, with the leader's client address.
func (s *Server) leaderConnAddr(ctx context.Context) (*grpc.ClientConn, string, error) {
	id, addr := s.node.Leader()
	if by := forwardedBy(ctx); by != "" || id == s.cfg.NodeID {
		return nil, "", &node.NotLeaderError{LeaderID: id, LeaderAddr: addr}
	}
	if id == "" {
		return nil, "", node.ErrNoLeader
	}
	if addr == "" {
		return nil, "", fmt.Errorf("%w: leader %s has not registered its address yet", node.ErrNoLeader, id)
	}
	conn, err := s.fwd.conn(addr)
	return conn, addr, err
}
