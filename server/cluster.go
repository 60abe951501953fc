package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/node"
)

// clusterService serves memdb.v1.ClusterService.
type clusterService struct {
	pb.UnimplementedClusterServiceServer
	s *Server
}

func (c *clusterService) Status(ctx context.Context, req *pb.StatusRequest) (*pb.StatusResponse, error) {
	st := c.s.node.Status()
	resp := &pb.StatusResponse{
		Header: c.s.header(c.s.node.FSM().Store().View()), NodeId: st.ID, Role: st.State, Term: st.Term,
		LeaderId: st.LeaderID, LeaderAddr: st.LeaderAddr, CommitIndex: st.CommitIndex, AppliedIndex: st.AppliedIndex,
		LastContactMs: st.LastContact.Milliseconds(), Version: c.s.cfg.Version,
	}
	if err := c.s.node.FSM().Halted(); err != nil {
		resp.Halted = err.Error()
	}
	if req.IncludeStateHash {
		v := c.s.node.FSM().Store().View()
		resp.Header, resp.StateHash = c.s.header(v), v.Hash()
	}
	return resp, nil
}

func (c *clusterService) Members(ctx context.Context, _ *pb.MembersRequest) (*pb.MembersResponse, error) {
	st := c.s.node.Status()
	resp := &pb.MembersResponse{Header: c.s.header(c.s.node.FSM().Store().View())}
	for _, srv := range st.Servers {
		m := &pb.Member{Id: string(srv.ID), RaftAddr: string(srv.Address), Voter: srv.Suffrage == raft.Voter, Leader: string(srv.ID) == st.LeaderID}
		if reg, ok := c.s.node.FSM().Member(m.Id); ok {
			m.ClientAddr, m.Version = reg.ClientAddr, reg.Version
		}
		resp.Members = append(resp.Members, m)
	}
	return resp, nil
}

func (c *clusterService) Join(ctx context.Context, req *pb.JoinRequest) (*pb.JoinResponse, error) {
	if req.NodeId == "" || len(req.NodeId) > 64 || req.RaftAddr == "" {
		return nil, toStatus(fmt.Errorf("%w: join needs a node_id (1-64 bytes) and a raft_addr", errInvalid))
	}
	if c.s.node.IsLeader() {
		if err := c.s.node.AddVoter(ctx, req.NodeId, req.RaftAddr); err != nil {
			return nil, toStatus(err)
		}
		return &pb.JoinResponse{Header: c.s.header(c.s.node.FSM().Store().View())}, nil
	}
	conn, err := c.s.leaderConn(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return pb.NewClusterServiceClient(conn).Join(c.s.fwd.outgoing(ctx), req)
}

func (c *clusterService) TransferLeadership(ctx context.Context, req *pb.TransferLeadershipRequest) (*pb.TransferLeadershipResponse, error) {
	if !c.s.node.IsLeader() {
		conn, err := c.s.leaderConn(ctx)
		if err != nil {
			return nil, toStatus(err)
		}
		return pb.NewClusterServiceClient(conn).TransferLeadership(c.s.fwd.outgoing(ctx), req)
	}
	if err := c.s.node.TransferLeadershipTo(ctx, req.ToNodeId); err != nil {
		if errors.Is(err, node.ErrUnknownMember) {
			return nil, toStatus(fmt.Errorf("%w: %v", errInvalid, err))
		}
		return nil, toStatus(err)
	}
	// The transfer completes when the target wins its election; this node
	// learns of it with the new leader's first heartbeat.
	id, _ := c.s.node.Leader()
	for (id == "" || id == c.s.cfg.NodeID) && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
		id, _ = c.s.node.Leader()
	}
	return &pb.TransferLeadershipResponse{Header: c.s.header(c.s.node.FSM().Store().View()), NewLeaderId: id}, nil
}
