package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/fsm"
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
	v := c.s.node.FSM().Store().View()
	if req.IncludeStateHash {
		resp.Header, resp.StateHash = c.s.header(v), v.Hash()
	}
	resp.Voter = st.Voter
	resp.MaxCommandVersion, resp.FeatureLevel = fsm.MaxCommandVersion, st.FeatureLevel
	if idx, at, ok := c.s.node.LastSnapshot(); ok {
		resp.LastSnapshotIndex = idx
		if !at.IsZero() {
			resp.LastSnapshotAgeMs = time.Since(at).Milliseconds()
		}
	}
	for _, t := range v.Tables() {
		resp.Tables++
		resp.Rows += uint64(t.Rows)
		resp.DataBytes += uint64(t.Bytes)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	resp.HeapBytes = ms.HeapInuse
	for _, cp := range c.s.node.FSM().Checkpoints() {
		resp.Checkpoints = append(resp.Checkpoints, &pb.StateCheckpoint{Revision: cp.Revision, Hash: cp.Hash})
	}
	resp.Divergence = c.s.Divergence()
	return resp, nil
}

func (c *clusterService) Members(ctx context.Context, _ *pb.MembersRequest) (*pb.MembersResponse, error) {
	st := c.s.node.Status()
	resp := &pb.MembersResponse{Header: c.s.header(c.s.node.FSM().Store().View())}
	for _, srv := range st.Servers {
		m := &pb.Member{Id: string(srv.ID), RaftAddr: string(srv.Address), Voter: srv.Suffrage == raft.Voter, Leader: string(srv.ID) == st.LeaderID}
		if reg, ok := c.s.node.FSM().Member(m.Id); ok {
			m.ClientAddr, m.Version, m.MaxCommandVersion = reg.ClientAddr, reg.Version, reg.MaxCommandVersion
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
		add := c.s.node.AddVoter
		if req.NonVoter {
			add = c.s.node.AddNonvoter
		}
		if err := add(ctx, req.NodeId, req.RaftAddr); err != nil {
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
			// The leader checks the target against the newest
			// configuration. Without one (an election under way, as right
			// after a transfer), a target this member has never known is
			// refused here: a retry would not fix a wrong id.
			if errors.Is(err, node.ErrNoLeader) && req.ToNodeId != "" && !c.knows(req.ToNodeId) {
				return nil, toStatus(fmt.Errorf("%w: no member %q", errInvalid, req.ToNodeId))
			}
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

// knows reports whether id is a member in this node's latest known
// configuration.
func (c *clusterService) knows(id string) bool {
	for _, srv := range c.s.node.Status().Servers {
		if string(srv.ID) == id {
			return true
		}
	}
	return false
}

// catchUpSlack is how far behind the leader's commit index a member may be
// and still count as caught up for promotion: about one replication batch.
const catchUpSlack = 256

// memberStatus asks a member for its status through its registered client
// address.
func (c *clusterService) memberStatus(ctx context.Context, id string) (*pb.StatusResponse, error) {
	m, ok := c.s.node.FSM().Member(id)
	if !ok || m.ClientAddr == "" {
		return nil, fmt.Errorf("member %s has not registered a client address", id)
	}
	if id == c.s.cfg.NodeID {
		return c.Status(ctx, &pb.StatusRequest{})
	}
	conn, err := c.s.fwd.conn(m.ClientAddr)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	// WaitForReady: a connection still reconnecting gets the whole second.
	return pb.NewClusterServiceClient(conn).Status(sctx, &pb.StatusRequest{}, grpc.WaitForReady(true))
}

func (c *clusterService) PromoteMember(ctx context.Context, req *pb.PromoteMemberRequest) (*pb.PromoteMemberResponse, error) {
	if !c.s.node.IsLeader() {
		conn, err := c.s.leaderConn(ctx)
		if err != nil {
			return nil, toStatus(err)
		}
		return pb.NewClusterServiceClient(conn).PromoteMember(c.s.fwd.outgoing(ctx), req)
	}
	var raftAddr string
	for _, srv := range c.s.node.Status().Servers {
		if string(srv.ID) == req.NodeId {
			raftAddr = string(srv.Address)
			if srv.Suffrage == raft.Voter {
				return nil, toStatus(fmt.Errorf("%w: %s is a voter already", errInvalid, req.NodeId))
			}
		}
	}
	if raftAddr == "" {
		return nil, toStatus(fmt.Errorf("%w: %s is not a member", errInvalid, req.NodeId))
	}
	if !req.Force {
		st, err := c.memberStatus(ctx, req.NodeId)
		if err != nil {
			return nil, toStatus(fmt.Errorf("%w: cannot tell whether %s has caught up (%v); retry, or force", errPrecondition, req.NodeId, err))
		}
		if commit := c.s.node.Status().CommitIndex; st.AppliedIndex+catchUpSlack < commit {
			return nil, toStatus(fmt.Errorf("%w: %s has applied index %d, the leader has committed %d; promote it once it has caught up",
				errPrecondition, req.NodeId, st.AppliedIndex, commit))
		}
	}
	if err := c.s.node.AddVoter(ctx, req.NodeId, raftAddr); err != nil {
		return nil, toStatus(err)
	}
	return &pb.PromoteMemberResponse{Header: c.s.header(c.s.node.FSM().Store().View())}, nil
}

func (c *clusterService) RemoveMember(ctx context.Context, req *pb.RemoveMemberRequest) (*pb.RemoveMemberResponse, error) {
	if !c.s.node.IsLeader() {
		conn, err := c.s.leaderConn(ctx)
		if err != nil {
			return nil, toStatus(err)
		}
		return pb.NewClusterServiceClient(conn).RemoveMember(c.s.fwd.outgoing(ctx), req)
	}
	servers := c.s.node.Status().Servers
	found := false
	var voters []string
	for _, srv := range servers {
		if string(srv.ID) == req.NodeId {
			found = true
		} else if srv.Suffrage == raft.Voter {
			voters = append(voters, string(srv.ID))
		}
	}
	if !found {
		return nil, toStatus(fmt.Errorf("%w: %s is not a member", errInvalid, req.NodeId))
	}
	if !req.Force {
		// The voters left after the change must include a reachable
		// majority of themselves, or the cluster stops.
		reachable := 0
		for _, id := range voters {
			if _, err := c.memberStatus(ctx, id); err == nil {
				reachable++
			}
		}
		if len(voters) == 0 || reachable < len(voters)/2+1 {
			return nil, toStatus(fmt.Errorf("%w: removing %s leaves %d voters of which %d are reachable, short of a quorum of %d; force it to remove anyway",
				errPrecondition, req.NodeId, len(voters), reachable, len(voters)/2+1))
		}
	}
	if err := c.s.node.RemoveMember(ctx, req.NodeId); err != nil {
		return nil, toStatus(err)
	}
	return &pb.RemoveMemberResponse{Header: c.s.header(c.s.node.FSM().Store().View())}, nil
}

func (c *clusterService) Snapshot(ctx context.Context, _ *pb.SnapshotRequest) (*pb.SnapshotResponse, error) {
	start := time.Now()
	idx, err := c.s.node.TakeSnapshot(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	c.s.log.Info("snapshot taken on request", "index", idx, "took", time.Since(start))
	return &pb.SnapshotResponse{Header: c.s.header(c.s.node.FSM().Store().View()), Index: idx}, nil
}

// backupChunk is the size of the pieces a backup streams in.
const backupChunk = 256 << 10

func (c *clusterService) Backup(_ *pb.BackupRequest, stream pb.ClusterService_BackupServer) error {
	ctx := stream.Context()
	start := time.Now()
	meta, rc, err := c.s.node.Backup(ctx)
	if err != nil {
		return toStatus(err)
	}
	defer rc.Close()
	buf := make([]byte, backupChunk)
	first := true
	var sent int64
	for {
		n, rerr := io.ReadFull(rc, buf)
		if n > 0 {
			chunk := &pb.BackupResponse{Data: buf[:n]}
			if first {
				chunk.Index, chunk.Size = meta.Index, uint64(meta.Size)
				first = false
			}
			if err := stream.Send(chunk); err != nil {
				return err
			}
			sent += int64(n)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return toStatus(rerr)
		}
	}
	c.s.log.Info("backup streamed", "index", meta.Index, "bytes", sent, "took", time.Since(start))
	return nil
}
