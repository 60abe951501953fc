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

func (p *peerService) ReadIndex(ctx context.Context, req *cmdpb.ReadIndexRequest) (*cmdpb.ReadIndexResponse, error) {
	idx, err := p.s.node.ReadIndexFor(ctx, req.From, req.Term)
	if err != nil {
		return nil, toStatus(err)
	}
	return &cmdpb.ReadIndexResponse{Index: idx}, nil
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
	conn, err := s.leaderConn(ctx)
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

// fetchReadIndex asks the leader for a read index (one RPC).
func (s *Server) fetchReadIndex(ctx context.Context) (uint64, error) {
	conn, err := s.leaderConn(ctx)
	if err != nil {
		return 0, err
	}
	s.metrics.forwarded.WithLabelValues("read_index").Inc()
	// The term is read here, after every read this request answers for
	// arrived (rounds.Group starts a request only after its callers came):
	// see node.ReadIndexFor for why that spares the leader a round.
	req := &cmdpb.ReadIndexRequest{From: s.cfg.NodeID, Term: s.node.Term()}
	resp, err := cmdpb.NewPeerServiceClient(conn).ReadIndex(s.fwd.outgoing(ctx), req)
	if err != nil {
		return 0, err
	}
	return resp.Index, nil
}

// leaderConn returns a connection to the leader, unless this request was
// itself forwarded (no second hop) or no leader is known.
func (s *Server) leaderConn(ctx context.Context) (grpc.ClientConnInterface, error) {
	id, addr := s.node.Leader()
	if by := forwardedBy(ctx); by != "" || id == s.cfg.NodeID {
		return nil, &node.NotLeaderError{LeaderID: id, LeaderAddr: addr}
	}
	if id == "" {
		return nil, node.ErrNoLeader
	}
	if addr == "" {
		return nil, fmt.Errorf("%w: leader %s has not registered its address yet", node.ErrNoLeader, id)
	}
	return s.fwd.conn(addr)
}
