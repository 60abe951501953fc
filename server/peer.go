package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"

	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/fsm"
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
	if err := p.s.checkProposal(ctx, req.From, req.Envelope); err != nil {
		p.s.metrics.rejected.WithLabelValues("peer_proposal").Inc()
		return nil, toStatus(err)
	}
	// The member authorized its client; the leader does again, with its
	// own copy of the roles, and for the client, not for the member.
	if err := authorize(p.s.node.FSM().Auth(), identityOf(req.Caller), envelopeNeeds(req.Envelope)); err != nil {
		p.s.metrics.rejected.WithLabelValues("peer_proposal").Inc()
		return nil, toStatus(err)
	}
	res, err := p.s.node.Apply(ctx, req.Envelope)
	if err != nil {
		return nil, toStatus(err)
	}
	return &cmdpb.ProposeResponse{Result: res, RaftTerm: p.s.node.Status().Term}, nil
}

// checkProposal gives a command a member forwards the checks the edge
// gives a client's request, with this member's limits and quota: the
// member that forwarded it checked it too, but with its own settings,
// which may differ, and a proposal need not come from the edge at all.
// What only a leader proposes (expiries) is refused, and a member may
// register only itself, at the Raft address the configuration gives it.
func (s *Server) checkProposal(ctx context.Context, from string, env *cmdpb.Envelope) error {
	if err := checkSession(env.Session); err != nil {
		return err
	}
	switch c := env.Command.(type) {
	case *cmdpb.Envelope_Txn:
		_, err := s.checkWrite(ctx, c.Txn)
		return err
	case *cmdpb.Envelope_CreateTable:
		return s.checkCreateTable(ctx, c.CreateTable)
	case *cmdpb.Envelope_DropTable:
		return s.checkDropTable(ctx, c.DropTable.GetTable())
	case *cmdpb.Envelope_CreateIndex:
		return s.checkCreateIndex(ctx, c.CreateIndex.GetTable(), c.CreateIndex.GetIndex())
	case *cmdpb.Envelope_DropIndex:
		return s.checkDropIndex(ctx, c.DropIndex.GetTable(), c.DropIndex.GetIndex())
	case *cmdpb.Envelope_Tick:
		return nil
	case *cmdpb.Envelope_Auth:
		return fsm.CheckAuthChange(c.Auth)
	case *cmdpb.Envelope_RegisterMember:
		r := c.RegisterMember
		addr, ok := s.node.PeerAddr(r.NodeId)
		switch {
		case r.NodeId != from:
			return fmt.Errorf("%w: member %q may not register member %q", errInvalid, from, r.NodeId)
		case !ok:
			return fmt.Errorf("%w: %q is not in the Raft configuration", errInvalid, r.NodeId)
		case r.RaftAddr != addr:
			return fmt.Errorf("%w: member %q registers Raft address %q, the configuration has %q", errInvalid, r.NodeId, r.RaftAddr, addr)
		}
		return nil
	case nil:
		return fmt.Errorf("%w: envelope without a command", errInvalid)
	default:
		return fmt.Errorf("%w: a member may not forward a %T", errInvalid, c)
	}
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
	// A command newer than some member applies is refused here, as the
	// leader would: a leader of an older version cannot even read it.
	if v := fsm.RequiredVersion(env); v > 1 {
		if lvl := s.node.FeatureLevel(); lvl != 0 && v > lvl {
			return nil, fmt.Errorf("%w: this command needs every voter to apply command format %d; the cluster's feature level is %d (finish the rolling upgrade first)",
				node.ErrFeatureLevel, v, lvl)
		}
	}
	conn, _, err := s.leaderPeerConn(ctx)
	if err != nil {
		return nil, err
	}
	s.metrics.forwarded.WithLabelValues("propose").Inc()
	resp, err := cmdpb.NewPeerServiceClient(conn).Propose(s.fwd.outgoing(ctx), &cmdpb.ProposeRequest{Envelope: env, From: s.cfg.NodeID, Caller: callerIdentity(ctx).proto()})
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
	conn, err := s.peerTarget(id, addr)
	return conn, addr, err
}

// peerConn returns the connection to the peer service at a member's Raft
// address. The passthrough scheme hands the address to the dialer as
// given, so that with TLS the certificate is checked against the name the
// member advertises, as Raft's own dials do.
func (s *Server) peerConn(raftAddr string) (*grpc.ClientConn, error) {
	return s.peerFwd.conn(raftAddr)
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

// MemberStatus answers another member's status request (no client
// credentials between members: the Raft port authenticates them).
func (p *peerService) MemberStatus(ctx context.Context, req *cmdpb.MemberStatusRequest) (*cmdpb.MemberStatusResponse, error) {
	st, err := (&clusterService{s: p.s}).Status(ctx, req.GetRequest())
	if err != nil {
		return nil, err
	}
	return &cmdpb.MemberStatusResponse{Response: st}, nil
}

// Cluster serves a membership call a member forwarded, authorized for the
// client that made it. The leader serves it; a member that is not the
// leader refuses it (no second hop).
func (p *peerService) Cluster(ctx context.Context, req *cmdpb.ClusterRequest) (*cmdpb.ClusterResponse, error) {
	id := identityOf(req.Caller)
	st := p.s.node.FSM().Auth()
	ctx = context.WithValue(ctx, identityKey{}, id)
	c := &clusterService{s: p.s}
	var out cmdpb.ClusterResponse
	var err error
	switch r := req.Call.(type) {
	case *cmdpb.ClusterRequest_Join:
		if err = authorizeJoin(st, id); err == nil {
			var resp *pb.JoinResponse
			resp, err = c.Join(ctx, r.Join)
			out.Result = &cmdpb.ClusterResponse_Join{Join: resp}
		}
	case *cmdpb.ClusterRequest_Transfer:
		if err = p.s.authorizeCall(st, id, pb.ClusterService_TransferLeadership_FullMethodName, r.Transfer); err == nil {
			var resp *pb.TransferLeadershipResponse
			resp, err = c.TransferLeadership(ctx, r.Transfer)
			out.Result = &cmdpb.ClusterResponse_Transfer{Transfer: resp}
		}
	case *cmdpb.ClusterRequest_Promote:
		if err = p.s.authorizeCall(st, id, pb.ClusterService_PromoteMember_FullMethodName, r.Promote); err == nil {
			var resp *pb.PromoteMemberResponse
			resp, err = c.PromoteMember(ctx, r.Promote)
			out.Result = &cmdpb.ClusterResponse_Promote{Promote: resp}
		}
	case *cmdpb.ClusterRequest_Remove:
		if err = p.s.authorizeCall(st, id, pb.ClusterService_RemoveMember_FullMethodName, r.Remove); err == nil {
			var resp *pb.RemoveMemberResponse
			resp, err = c.RemoveMember(ctx, r.Remove)
			out.Result = &cmdpb.ClusterResponse_Remove{Remove: resp}
		}
	default:
		err = fmt.Errorf("%w: no call", errInvalid)
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return &out, nil
}

// forwardCluster sends a membership call to the leader's peer service,
// with the caller's identity: on its client port, as before, when the
// leader is of a version without this call.
func (s *Server) forwardCluster(ctx context.Context, req *cmdpb.ClusterRequest) (*cmdpb.ClusterResponse, grpc.ClientConnInterface, error) {
	id, _ := s.node.LeaderPeer()
	if m, ok := s.node.FSM().Member(id); ok && m.MaxCommandVersion > 0 && m.MaxCommandVersion < fsm.MaxCommandVersion {
		conn, err := s.leaderConn(ctx)
		return nil, conn, err
	}
	conn, _, err := s.leaderPeerConn(ctx)
	if err != nil {
		return nil, nil, err
	}
	req.Caller, req.From = callerIdentity(ctx).proto(), s.cfg.NodeID
	resp, err := cmdpb.NewPeerServiceClient(conn).Cluster(s.fwd.outgoing(ctx), req)
	return resp, nil, err
}

// statusOf asks member m for its status: through its peer service, or on
// its client port when it is of a version without MemberStatus.
func (s *Server) statusOf(ctx context.Context, m fsm.Member, req *pb.StatusRequest, opts ...grpc.CallOption) (*pb.StatusResponse, error) {
	if m.MaxCommandVersion > 0 && m.MaxCommandVersion < fsm.MaxCommandVersion {
		conn, err := s.fwd.conn(m.ClientAddr)
		if err != nil {
			return nil, err
		}
		return pb.NewClusterServiceClient(conn).Status(ctx, req, opts...)
	}
	conn, err := s.peerTarget(m.ID, m.RaftAddr)
	if err != nil {
		return nil, err
	}
	resp, err := cmdpb.NewPeerServiceClient(conn).MemberStatus(ctx, &cmdpb.MemberStatusRequest{Request: req}, opts...)
	if err != nil {
		return nil, err
	}
	return resp.Response, nil
}
