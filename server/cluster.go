package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"

	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/fsm"
	"github.com/memdbd/memdbd/node"
	"github.com/memdbd/memdbd/store"
)

// clusterService serves memdb.v1.ClusterService.
type clusterService struct {
	pb.UnimplementedClusterServiceServer
	s      *Server
	hashes stateHashes
}

// Status's state hash (include_state_hash) is XXH64 of every table's
// schema and rows at header.revision, the revision this member has
// applied: members at the same revision report the same hash, which is
// how the e2e tests, the chaos checkers and `memdbd status -hash` tell
// that replicas converged. It takes a pass over every row (9 ms of CPU at
// 200,000 rows), so a few callers asking in a loop used to take every
// core. Now:
//
//   - the last hash is kept with its revision, and a call at that
//     revision gets it without a pass (a quiet cluster, the case of a
//     convergence check, costs one pass per write);
//   - callers that arrive while the pass of their revision runs wait for
//     it rather than start their own;
//   - one pass runs at a time, and after a pass of duration d the next
//     may start (hashDutyCycle-1)·d later, so passes take at most
//     1/hashDutyCycle of one core however many ask (a small state hashes
//     in microseconds and is never held back for long);
//   - anything else is refused at once, OVERLOADED (ResourceExhausted,
//     retried by the SDK) with the time until the next pass may start.
//
// Why refuse rather than answer with the last hash at its older revision:
// callers read header.revision as the revision the member has reached;
// members all answering with an older cached pair would look converged
// while they were not. The checkpoints in every Status answer
// (checkpoints, --hash-check-entries) are the way to compare members
// continuously: they cost nothing to read.
const hashDutyCycle = 20

// stateHashes is the state hash of the last pass, and the pass running.
type stateHashes struct {
	mu      sync.Mutex
	have    bool
	rev     uint64 // of hash
	hash    uint64
	running *hashPass
	next    time.Time // no pass starts before
	passes  uint64    // passes run, for tests
	clock   func() time.Time
}

// hashPass is one pass over the state of revision rev; when done is
// closed, hash is set if ok.
type hashPass struct {
	rev  uint64
	done chan struct{}
	hash uint64
	ok   bool
}

func (h *stateHashes) now() time.Time {
	if h.clock != nil {
		return h.clock()
	}
	return time.Now()
}

// get returns the state hash of v, computed or kept as described above.
func (h *stateHashes) get(ctx context.Context, v *store.View) (uint64, error) {
	rev := v.Revision()
	h.mu.Lock()
	if h.have && h.rev == rev {
		hash := h.hash
		h.mu.Unlock()
		return hash, nil
	}
	if p := h.running; p != nil {
		h.mu.Unlock()
		if p.rev != rev {
			return 0, statusErr(pb.ReasonOverloaded, fmt.Sprintf(
				"a state hash of revision %d is being computed, and one pass over the state runs at a time; retry shortly, or compare the checkpoints that Status returns without include_state_hash", p.rev),
				nil, retryAfter)
		}
		select {
		case <-p.done:
			if !p.ok {
				return 0, errors.New("the state hash pass this request waited for failed")
			}
			return p.hash, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	start := h.now()
	if wait := h.next.Sub(start); wait > 0 {
		h.mu.Unlock()
		return 0, statusErr(pb.ReasonOverloaded, fmt.Sprintf(
			"state hashes take at most 1/%d of this member's time, and the next pass over the state may start in %v; retry then, or compare the checkpoints that Status returns without include_state_hash",
			hashDutyCycle, wait.Round(time.Millisecond)), nil, max(wait, time.Millisecond))
	}
	p := &hashPass{rev: rev, done: make(chan struct{})}
	h.running = p
	h.passes++
	h.mu.Unlock()
	defer func() {
		// Also on a panic (a bug; recoverUnary answers it): the next caller
		// must not find this pass running forever.
		end := h.now()
		h.mu.Lock()
		h.running = nil
		h.next = end.Add((hashDutyCycle - 1) * end.Sub(start))
		h.mu.Unlock()
		close(p.done)
	}()
	p.hash = v.Hash()
	p.ok = true
	h.mu.Lock()
	h.have, h.rev, h.hash = true, rev, p.hash
	h.mu.Unlock()
	return p.hash, nil
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
		h, err := c.hashes.get(ctx, v)
		if err != nil {
			return nil, toStatus(err)
		}
		resp.Header, resp.StateHash = c.s.header(v), h
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
	resp, conn, err := c.s.forwardCluster(ctx, &cmdpb.ClusterRequest{Call: &cmdpb.ClusterRequest_Join{Join: req}})
	switch {
	case err != nil:
		return nil, toStatus(err)
	case conn != nil:
		return pb.NewClusterServiceClient(conn).Join(c.s.fwd.outgoing(ctx), req)
	}
	return resp.GetJoin(), nil
}

func (c *clusterService) TransferLeadership(ctx context.Context, req *pb.TransferLeadershipRequest) (*pb.TransferLeadershipResponse, error) {
	if !c.s.node.IsLeader() {
		resp, conn, err := c.s.forwardCluster(ctx, &cmdpb.ClusterRequest{Call: &cmdpb.ClusterRequest_Transfer{Transfer: req}})
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
		if conn != nil {
			return pb.NewClusterServiceClient(conn).TransferLeadership(c.s.fwd.outgoing(ctx), req)
		}
		return resp.GetTransfer(), nil
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
	sctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	// WaitForReady: a connection still reconnecting gets the whole second.
	return c.s.statusOf(sctx, m, &pb.StatusRequest{}, grpc.WaitForReady(true))
}

func (c *clusterService) PromoteMember(ctx context.Context, req *pb.PromoteMemberRequest) (*pb.PromoteMemberResponse, error) {
	if !c.s.node.IsLeader() {
		resp, conn, err := c.s.forwardCluster(ctx, &cmdpb.ClusterRequest{Call: &cmdpb.ClusterRequest_Promote{Promote: req}})
		switch {
		case err != nil:
			return nil, toStatus(err)
		case conn != nil:
			return pb.NewClusterServiceClient(conn).PromoteMember(c.s.fwd.outgoing(ctx), req)
		}
		return resp.GetPromote(), nil
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
		resp, conn, err := c.s.forwardCluster(ctx, &cmdpb.ClusterRequest{Call: &cmdpb.ClusterRequest_Remove{Remove: req}})
		switch {
		case err != nil:
			return nil, toStatus(err)
		case conn != nil:
			return pb.NewClusterServiceClient(conn).RemoveMember(c.s.fwd.outgoing(ctx), req)
		}
		return resp.GetRemove(), nil
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
