package server

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	"github.com/memdbd/memdbd/node"
)

// LeaseProbe answers a leader's request for this follower's vote promise
// (node/lease.go).
func (p *peerService) LeaseProbe(_ context.Context, req *cmdpb.LeaseProbeRequest) (*cmdpb.LeaseProbeResponse, error) {
	// The promise first: Follows is then read later, and a promise is only
	// given by a follower that follows the caller.
	promise := p.s.node.LeasePromise(req.From, req.Term)
	return &cmdpb.LeaseProbeResponse{PromiseNanos: int64(promise), Follows: p.s.node.Follows(req.From, req.Term)}, nil
}

// probeLease asks member id, on its Raft port's peer service, whether it
// follows this node as leader of term and for its promise. A member that
// predates probes answers Unimplemented (node.ErrProbeUnsupported).
func (s *Server) probeLease(ctx context.Context, id string, term uint64) (node.LeaseAnswer, error) {
	addr, ok := s.node.PeerAddr(id)
	if !ok {
		return node.LeaseAnswer{}, fmt.Errorf("%s is not a member", id)
	}
	conn, err := s.peerTarget(id, addr)
	if err != nil {
		return node.LeaseAnswer{}, err
	}
	resp, err := cmdpb.NewPeerServiceClient(conn).LeaseProbe(ctx, &cmdpb.LeaseProbeRequest{From: s.cfg.NodeID, Term: term})
	if status.Code(err) == codes.Unimplemented {
		return node.LeaseAnswer{}, fmt.Errorf("%w: %s: %v", node.ErrProbeUnsupported, id, err)
	}
	if err != nil {
		return node.LeaseAnswer{}, err
	}
	return node.LeaseAnswer{Promise: time.Duration(resp.PromiseNanos), Follows: resp.Follows}, nil
}
