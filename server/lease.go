package server

import (
	"context"
	"fmt"
	"time"

	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
)

// LeaseProbe answers a leader's request for this follower's vote promise
// (node/lease.go).
func (p *peerService) LeaseProbe(_ context.Context, req *cmdpb.LeaseProbeRequest) (*cmdpb.LeaseProbeResponse, error) {
	return &cmdpb.LeaseProbeResponse{PromiseNanos: int64(p.s.node.LeasePromise(req.From, req.Term))}, nil
}

// probeLease asks member id, at the client address it registered, for its
// promise to this node as leader of term. A member that predates leases
// answers Unimplemented, which counts as no promise.
func (s *Server) probeLease(ctx context.Context, id string, term uint64) (time.Duration, error) {
	m, ok := s.node.FSM().Member(id)
	if !ok || m.ClientAddr == "" {
		return 0, fmt.Errorf("member %s has not registered its address", id)
	}
	conn, err := s.fwd.conn(m.ClientAddr)
	if err != nil {
		return 0, err
	}
	resp, err := cmdpb.NewPeerServiceClient(conn).LeaseProbe(ctx, &cmdpb.LeaseProbeRequest{From: s.cfg.NodeID, Term: term})
	if err != nil {
		return 0, err
	}
	return time.Duration(resp.PromiseNanos), nil
}
