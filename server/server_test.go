package server_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/internal/testcluster"
	"github.com/memdbd/memdbd/node"
	"github.com/memdbd/memdbd/server"
)

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func str(s string) *pb.Value { return &pb.Value{Kind: &pb.Value_StringValue{StringValue: s}} }

func createKV(t *testing.T, cc *grpc.ClientConn, name string) {
	t.Helper()
	_, err := pb.NewSchemaServiceClient(cc).CreateTable(ctxT(t, 5*time.Second), &pb.CreateTableRequest{Schema: &pb.TableSchema{
		Name: name, PrimaryKey: "k", Fields: []*pb.FieldSchema{{Name: "k", Type: pb.FieldType_FIELD_TYPE_STRING}},
	}})
	if err != nil {
		t.Fatal(err)
	}
}

func reason(err error) string {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.Reason
		}
	}
	return ""
}

// Every member serves every call: writes on followers are forwarded, and
// the answer names the node that served it and the revision.
func TestFollowersForwardAndHeadersTell(t *testing.T) {
	cl := testcluster.Start(t, 3, testcluster.Options{})
	leader := cl.Leader()
	var last uint64
	for i, m := range cl.Members {
		cc := dial(t, m.Addr)
		if i == 0 {
			createKV(t, cc, "kv")
		}
		resp, err := pb.NewDataServiceClient(cc).Upsert(ctxT(t, 5*time.Second), &pb.UpsertRequest{Table: "kv", Fields: map[string]*pb.Value{"k": str(m.Addr)}})
		if err != nil {
			t.Fatalf("write via %s: %v", m.NodeCfg.ID, err)
		}
		if resp.Header.NodeId != m.NodeCfg.ID || resp.Header.Revision <= last || resp.Row.ModRevision != resp.Header.Revision {
			t.Fatalf("header %+v row %+v", resp.Header, resp.Row)
		}
		last = resp.Header.Revision
		g, err := pb.NewDataServiceClient(cc).Get(ctxT(t, 5*time.Second), &pb.GetRequest{Table: "kv", Key: str(m.Addr)})
		if err != nil || !g.Found || g.Header.Revision < last {
			t.Fatalf("read via %s: %v %+v", m.NodeCfg.ID, err, g.GetHeader())
		}
	}
	st, err := pb.NewClusterServiceClient(dial(t, cl.Members[leader].Addr)).Status(ctxT(t, 5*time.Second), &pb.StatusRequest{})
	if err != nil || st.Role != "Leader" || st.LeaderId != cl.Members[leader].NodeCfg.ID {
		t.Fatalf("status %+v %v", st, err)
	}
}

// Without a quorum, writes and linearizable reads fail with Unavailable
// within their deadline instead of waiting; stale reads still answer, and
// a staleness bound is refused fast.
func TestNoQuorumFailsFast(t *testing.T) {
	cl := testcluster.Start(t, 3, testcluster.Options{})
	createKV(t, dial(t, cl.Members[0].Addr), "kv")
	survivor := cl.Leader()
	for i := range cl.Members {
		if i != survivor {
			cl.StopMember(i)
		}
	}
	cc := dial(t, cl.Members[survivor].Addr)
	data := pb.NewDataServiceClient(cc)
	start := time.Now()
	_, err := data.Upsert(ctxT(t, 2*time.Second), &pb.UpsertRequest{Table: "kv", Fields: map[string]*pb.Value{"k": str("x")}})
	if code := status.Code(err); code != codes.Unavailable && code != codes.DeadlineExceeded {
		t.Fatalf("write without quorum: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("write without quorum took %v", d)
	}
	start = time.Now()
	_, err = data.Get(ctxT(t, 2*time.Second), &pb.GetRequest{Table: "kv", Key: str("x")})
	if code := status.Code(err); code != codes.Unavailable && code != codes.DeadlineExceeded {
		t.Fatalf("linearizable read without quorum: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("read without quorum took %v", d)
	}
	// Once the leader has stepped down, it knows it has no leader.
	deadline := time.Now().Add(5 * time.Second)
	for cl.Members[survivor].Node.IsLeader() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	g, err := data.Get(ctxT(t, 2*time.Second), &pb.GetRequest{Table: "kv", Key: str("x"), Read: &pb.ReadOptions{Consistency: pb.Consistency_CONSISTENCY_STALE}})
	if err != nil || g.Found {
		t.Fatalf("stale read: %v %+v", err, g)
	}
	time.Sleep(300 * time.Millisecond)
	_, err = data.Get(ctxT(t, 2*time.Second), &pb.GetRequest{Table: "kv", Key: str("x"), Read: &pb.ReadOptions{Consistency: pb.Consistency_CONSISTENCY_STALE, MaxStalenessMs: 100}})
	if status.Code(err) != codes.Unavailable || reason(err) != pb.ReasonStale {
		t.Fatalf("bounded stale read: %v (reason %q)", err, reason(err))
	}
	_, err = data.Get(ctxT(t, 300*time.Millisecond), &pb.GetRequest{Table: "kv", Key: str("x"), Read: &pb.ReadOptions{Consistency: pb.Consistency_CONSISTENCY_STALE, MinRevision: 1 << 40}})
	if status.Code(err) != codes.Unavailable || reason(err) != pb.ReasonStale {
		t.Fatalf("unreachable min_revision without a leader: %v", err)
	}
}

// Overload is refused at once with ResourceExhausted and a retry hint.
func TestOverloadIsRefused(t *testing.T) {
	cl := testcluster.Start(t, 1, testcluster.Options{TuneServer: func(c *server.Config) { c.MaxInFlight = 1 }})
	cc := dial(t, cl.Members[0].Addr)
	createKV(t, cc, "kv")
	// Hold the one slot with a request that waits until released.
	held, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- server.Admit(cl.Members[0].Server, context.Background(), func(context.Context) error {
			close(held)
			<-release
			return nil
		})
	}()
	<-held
	start := time.Now()
	_, err := pb.NewDataServiceClient(cc).Get(ctxT(t, 5*time.Second), &pb.GetRequest{Table: "kv", Key: str("x")})
	if d := time.Since(start); d > time.Second {
		t.Fatalf("refusal took %v", d)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st, _ := status.FromError(err)
	hint := false
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.RetryDelay.AsDuration() > 0 {
			hint = true
		}
	}
	if status.Code(err) != codes.ResourceExhausted || reason(err) != pb.ReasonOverloaded || !hint {
		t.Fatalf("overload: %v (reason %q, retry hint %v)", err, reason(err), hint)
	}
	// The slot is free again.
	if _, err := pb.NewDataServiceClient(cc).Get(ctxT(t, 5*time.Second), &pb.GetRequest{Table: "kv", Key: str("x")}); err != nil {
		t.Fatalf("after the overload: %v", err)
	}
}

// A request without a deadline gets the server's default instead of
// waiting forever.
func TestDefaultDeadline(t *testing.T) {
	cl := testcluster.Start(t, 1, testcluster.Options{TuneServer: func(c *server.Config) { c.DefaultTimeout = 200 * time.Millisecond }})
	start := time.Now()
	err := server.Admit(cl.Members[0].Server, context.Background(), func(ctx context.Context) error {
		dl, ok := ctx.Deadline()
		if !ok || time.Until(dl) > 200*time.Millisecond {
			return fmt.Errorf("deadline %v (set %v)", time.Until(dl), ok)
		}
		<-ctx.Done()
		return ctx.Err()
	})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("no-deadline request: %v after %v", err, time.Since(start))
	}
}

// Planned leadership transfer, asked of any member, moves leadership to
// the named member; every member reports the same state hash once they
// have applied the same revision.
func TestTransferLeadershipAndStateHash(t *testing.T) {
	cl := testcluster.Start(t, 3, testcluster.Options{})
	cc := dial(t, cl.Members[0].Addr)
	createKV(t, cc, "kv")
	for i := 0; i < 20; i++ {
		if _, err := pb.NewDataServiceClient(cc).Upsert(ctxT(t, 5*time.Second), &pb.UpsertRequest{Table: "kv", Fields: map[string]*pb.Value{"k": str(fmt.Sprint(i))}}); err != nil {
			t.Fatal(err)
		}
	}
	old := cl.Leader()
	target := (old + 1) % 3
	resp, err := pb.NewClusterServiceClient(dial(t, cl.Members[(old+2)%3].Addr)).TransferLeadership(ctxT(t, 5*time.Second),
		&pb.TransferLeadershipRequest{ToNodeId: cl.Members[target].NodeCfg.ID})
	if err != nil {
		t.Fatal(err)
	}
	if got := cl.Leader(); got != target {
		t.Fatalf("leader is %d after transfer to %d (response %+v)", got, target, resp)
	}
	_, err = pb.NewClusterServiceClient(cc).TransferLeadership(ctxT(t, 5*time.Second), &pb.TransferLeadershipRequest{ToNodeId: "nobody"})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("transfer to a non-member: %v", err)
	}
	// Quiesced, every member converges on one revision and one hash.
	deadline := time.Now().Add(5 * time.Second)
	for {
		var revs, hashes []uint64
		for _, m := range cl.Members {
			st, err := pb.NewClusterServiceClient(dial(t, m.Addr)).Status(ctxT(t, 5*time.Second), &pb.StatusRequest{IncludeStateHash: true})
			if err != nil {
				t.Fatal(err)
			}
			revs, hashes = append(revs, st.Header.Revision), append(hashes, st.StateHash)
		}
		if revs[0] == revs[1] && revs[1] == revs[2] {
			if hashes[0] != hashes[1] || hashes[1] != hashes[2] || hashes[0] == 0 {
				t.Fatalf("replicas at revision %d disagree: %x", revs[0], hashes)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas did not converge: revisions %v", revs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// With no leader known (a quorum lost, or an election under way), a
// transfer to a member is Unavailable, to retry, and one to an id this
// member never knew is InvalidArgument at once.
func TestTransferLeadershipWithoutALeader(t *testing.T) {
	cl := testcluster.Start(t, 3, testcluster.Options{})
	leader := cl.Leader()
	survivor := (leader + 1) % 3
	cl.StopMember(leader)
	cl.StopMember((leader + 2) % 3)
	cc := dial(t, cl.Members[survivor].Addr)
	cs := pb.NewClusterServiceClient(cc)
	// The survivor forgets the stopped leader once its heartbeat timeout
	// passes.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := cs.Status(ctxT(t, 5*time.Second), &pb.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if st.LeaderId == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the survivor still follows %q", st.LeaderId)
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, err := cs.TransferLeadership(ctxT(t, 5*time.Second), &pb.TransferLeadershipRequest{ToNodeId: "nobody"})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("transfer to a non-member without a leader: %v", err)
	}
	_, err = cs.TransferLeadership(ctxT(t, 5*time.Second), &pb.TransferLeadershipRequest{ToNodeId: cl.Members[leader].NodeCfg.ID})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("transfer to a member without a leader: %v", err)
	}
}

// Every response carries a request id: the caller's, or a new one.
func TestRequestIDs(t *testing.T) {
	cl := testcluster.Start(t, 1, testcluster.Options{})
	cc := dial(t, cl.Members[0].Addr)
	var hdr metadata.MD
	ctx := metadata.AppendToOutgoingContext(ctxT(t, 5*time.Second), "x-request-id", "req-42")
	if _, err := pb.NewClusterServiceClient(cc).Status(ctx, &pb.StatusRequest{}, grpc.Header(&hdr)); err != nil {
		t.Fatal(err)
	}
	if got := hdr.Get("x-request-id"); len(got) != 1 || got[0] != "req-42" {
		t.Fatalf("request id echoed as %v", got)
	}
	hdr = nil
	if _, err := pb.NewClusterServiceClient(cc).Status(ctxT(t, 5*time.Second), &pb.StatusRequest{}, grpc.Header(&hdr)); err != nil {
		t.Fatal(err)
	}
	if got := hdr.Get("x-request-id"); len(got) != 1 || len(got[0]) != 16 {
		t.Fatalf("generated request id %v", got)
	}
}

// Followers get read indexes over one stream to the leader, or with a call
// each from a leader that does not serve the stream; either way a
// linearizable read on a follower sees every write acknowledged before it,
// and the leader spends no round of heartbeats on them. A stopping leader
// ends the streams at once rather than waiting out its drain deadline.
func TestFollowerReadIndexStreamAndFallback(t *testing.T) {
	for _, served := range []bool{true, false} {
		t.Run(fmt.Sprintf("stream=%v", served), func(t *testing.T) {
			server.SetReadIndexStreamServed(served)
			defer server.SetReadIndexStreamServed(true)
			cl := testcluster.Start(t, 3, testcluster.Options{})
			li := cl.Leader()
			lcc := dial(t, cl.Members[li].Addr)
			createKV(t, lcc, "kv")
			_, shortcuts0 := cl.Members[li].Node.ReadIndexCounts()
			const reads = 20
			for i, m := range cl.Members {
				if i == li {
					continue
				}
				data := pb.NewDataServiceClient(dial(t, m.Addr))
				for j := range reads {
					val := fmt.Sprintf("%s-%d", m.NodeCfg.ID, j)
					if _, err := pb.NewDataServiceClient(lcc).Upsert(ctxT(t, 5*time.Second), &pb.UpsertRequest{Table: "kv", Fields: map[string]*pb.Value{"k": str("x"), "v": str(val)}}); err != nil {
						t.Fatal(err)
					}
					g, err := data.Get(ctxT(t, 5*time.Second), &pb.GetRequest{Table: "kv", Key: str("x")})
					if err != nil || !g.Found || g.Row.Fields["v"].GetStringValue() != val {
						t.Fatalf("linearizable read on %s after writing %q: %v %v", m.NodeCfg.ID, val, err, g.GetRow())
					}
				}
				streamed, calls := server.Forwarded(m.Server, "read_index"), server.Forwarded(m.Server, "read_index_call")
				if served && (streamed < reads || calls != 0) || !served && (streamed != 1 || calls < reads) {
					t.Fatalf("%s: %v read indexes on the stream, %v by call", m.NodeCfg.ID, streamed, calls)
				}
			}
			if _, shortcuts := cl.Members[li].Node.ReadIndexCounts(); shortcuts-shortcuts0 < 2*reads {
				t.Fatalf("leader gave %d read indexes without a round, want at least %d", shortcuts-shortcuts0, 2*reads)
			}
			start := time.Now()
			cl.StopMember(li)
			if d := time.Since(start); d > 3*time.Second {
				t.Fatalf("stopping the leader took %v with read-index streams open", d)
			}
			// The followers elect a new leader and serve linearizable reads
			// again, through a stream to it.
			nl := cl.Leader()
			for i, m := range cl.Members {
				if m.Node == nil || i == nl {
					continue
				}
				if _, err := pb.NewDataServiceClient(dial(t, m.Addr)).Get(ctxT(t, 5*time.Second), &pb.GetRequest{Table: "kv", Key: str("x")}); err != nil {
					t.Fatalf("read on %s after the leader stopped: %v", m.NodeCfg.ID, err)
				}
			}
		})
	}
}

// The leader holds a read lease made of its followers' promises, fetched
// over the peer service, and serves linearizable reads under it without a
// round of heartbeats. A member with leases off promises nothing, and a
// leader without promises from a majority takes rounds.
func TestReadLeaseOverThePeerService(t *testing.T) {
	for _, followersOn := range []bool{true, false} {
		t.Run(fmt.Sprintf("followers=%v", followersOn), func(t *testing.T) {
			cl := testcluster.Start(t, 3, testcluster.Options{Tune: func(c *node.Config) {
				c.ReadLease = followersOn || c.ID == "n1"
			}})
			li := cl.Leader()
			lcc := dial(t, cl.Members[li].Addr)
			createKV(t, lcc, "kv")
			ln := cl.Members[li].Node
			term := ln.Term()
			for i, m := range cl.Members {
				if i == li {
					continue
				}
				var promise int64
				// The peer service is on the Raft port.
				peer := cmdpb.NewPeerServiceClient(dial(t, m.NodeCfg.RaftBind))
				// A follower promises once it has heard from the leader.
				deadline := time.Now().Add(5 * time.Second)
				for time.Now().Before(deadline) {
					resp, err := peer.LeaseProbe(ctxT(t, time.Second),
						&cmdpb.LeaseProbeRequest{From: ln.ID(), Term: term})
					if err != nil {
						t.Fatal(err)
					}
					if promise = resp.PromiseNanos; promise > 0 || !m.NodeCfg.ReadLease {
						break
					}
					time.Sleep(10 * time.Millisecond)
				}
				if on := m.NodeCfg.ReadLease; (promise > 0) != on || time.Duration(promise) > m.NodeCfg.HeartbeatTimeout {
					t.Fatalf("%s (leases %v) promised %v", m.NodeCfg.ID, on, time.Duration(promise))
				}
			}
			if followersOn {
				deadline := time.Now().Add(5 * time.Second)
				for ln.LeaseRemaining() == 0 && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond)
				}
			} else {
				time.Sleep(3 * ln.Config().HeartbeatTimeout) // probes would have come back by now
			}
			rounds0, _ := ln.ReadIndexCounts()
			leased0, probes := ln.LeaseCounts()
			if probes == 0 && ln.Config().ReadLease {
				t.Fatal("the leader sent no lease probes")
			}
			data := pb.NewDataServiceClient(lcc)
			const reads = 20
			for j := range reads {
				val := fmt.Sprintf("v%d", j)
				if _, err := data.Upsert(ctxT(t, 5*time.Second), &pb.UpsertRequest{Table: "kv", Fields: map[string]*pb.Value{"k": str("x"), "v": str(val)}}); err != nil {
					t.Fatal(err)
				}
				g, err := data.Get(ctxT(t, 5*time.Second), &pb.GetRequest{Table: "kv", Key: str("x")})
				if err != nil || !g.Found || g.Row.Fields["v"].GetStringValue() != val {
					t.Fatalf("linearizable read after writing %q: %v %v", val, err, g.GetRow())
				}
			}
			rounds1, _ := ln.ReadIndexCounts()
			leased1, _ := ln.LeaseCounts()
			switch {
			case followersOn && (leased1-leased0 < reads/2 || rounds1-rounds0 > reads/2):
				t.Fatalf("with promises: %d leased reads, %d rounds", leased1-leased0, rounds1-rounds0)
			case !followersOn && (leased1 != leased0 || rounds1-rounds0 < reads):
				t.Fatalf("without promises: %d leased reads, %d rounds", leased1-leased0, rounds1-rounds0)
			}
		})
	}
}
