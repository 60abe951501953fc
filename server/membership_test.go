package server_test

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/internal/testcluster"
)

// A read replica joins as a non-voter, serves stale reads and forwards
// writes, is promoted once caught up, and is removed; a removal that would
// leave no reachable quorum is refused unless forced.
func TestMembershipChanges(t *testing.T) {
	cl := testcluster.Start(t, 3, testcluster.Options{})
	admin := pb.NewClusterServiceClient(dial(t, cl.Members[0].Addr))
	createKV(t, dial(t, cl.Members[0].Addr), "kv")

	r := cl.AddNode()
	replica := cl.Members[r]
	if _, err := admin.Join(ctxT(t, 5*time.Second), &pb.JoinRequest{NodeId: replica.NodeCfg.ID, RaftAddr: replica.NodeCfg.RaftBind, NonVoter: true}); err != nil {
		t.Fatal(err)
	}
	// A member learns who leads from the leader's first message to it.
	deadline := time.Now().Add(15 * time.Second)
	for id, addr := replica.Node.Leader(); (id == "" || addr == "") && time.Now().Before(deadline); id, addr = replica.Node.Leader() {
		time.Sleep(20 * time.Millisecond)
	}
	rc := dial(t, replica.Addr)
	// Writes through the replica are forwarded; stale reads are local.
	for i := 0; i < 20; i++ {
		if _, err := pb.NewDataServiceClient(rc).Upsert(ctxT(t, 5*time.Second), &pb.UpsertRequest{Table: "kv", Fields: map[string]*pb.Value{"k": str(fmt.Sprint(i))}}); err != nil {
			t.Fatalf("write through the replica: %v", err)
		}
	}
	g, err := pb.NewDataServiceClient(rc).Get(ctxT(t, 5*time.Second), &pb.GetRequest{Table: "kv", Key: str("19"),
		Read: &pb.ReadOptions{Consistency: pb.Consistency_CONSISTENCY_STALE, MinRevision: 1}})
	if err != nil || g.Header.NodeId != replica.NodeCfg.ID {
		t.Fatalf("stale read on the replica: %v %+v", err, g.GetHeader())
	}
	if _, err := pb.NewDataServiceClient(rc).Get(ctxT(t, 5*time.Second), &pb.GetRequest{Table: "kv", Key: str("19")}); err != nil {
		t.Fatalf("linearizable read on the replica: %v", err)
	}
	ms, err := admin.Members(ctxT(t, 5*time.Second), &pb.MembersRequest{})
	if err != nil || len(ms.Members) != 4 {
		t.Fatalf("members: %v %d", err, len(ms.GetMembers()))
	}
	for _, m := range ms.Members {
		if m.Id == replica.NodeCfg.ID && m.Voter {
			t.Fatal("the replica is a voter")
		}
	}
	st, err := pb.NewClusterServiceClient(rc).Status(ctxT(t, 5*time.Second), &pb.StatusRequest{})
	if err != nil || st.Voter || st.Tables != 1 || st.Rows != 20 || st.HeapBytes == 0 {
		t.Fatalf("replica status: %v %+v", err, st)
	}

	// Promote once it has caught up (and registered its address).
	deadline = time.Now().Add(15 * time.Second)
	for !replica.Node.Registered() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := admin.PromoteMember(ctxT(t, 5*time.Second), &pb.PromoteMemberRequest{NodeId: replica.NodeCfg.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.PromoteMember(ctxT(t, 5*time.Second), &pb.PromoteMemberRequest{NodeId: replica.NodeCfg.ID}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("promoting a voter: %v", err)
	}
	// Four voters; stop two, then removing a live one would leave three
	// voters with one reachable: refused, and allowed when forced.
	leader := cl.Leader()
	var stopped, live []int
	for i := range cl.Members {
		if i == leader {
			continue
		}
		if len(stopped) < 2 && i != r {
			stopped = append(stopped, i)
		} else {
			live = append(live, i)
		}
	}
	for _, i := range stopped {
		cl.StopMember(i)
	}
	la := pb.NewClusterServiceClient(dial(t, cl.Members[leader].Addr))
	// With two of four voters down the cluster has no quorum and no leader:
	// remove is refused (no leader) or by the guard; either way nothing
	// changes.
	_, err = la.RemoveMember(ctxT(t, 3*time.Second), &pb.RemoveMemberRequest{NodeId: cl.Members[live[0]].NodeCfg.ID})
	if err == nil {
		t.Fatal("a removal that loses quorum was accepted")
	}
	for _, i := range stopped {
		cl.StartMember(i)
	}
	cl.WaitReady()
	leader = cl.Leader()
	if leader == r {
		// Hand leadership away so that the removal below is not of the leader.
		if _, err := pb.NewClusterServiceClient(dial(t, replica.Addr)).TransferLeadership(ctxT(t, 5*time.Second), &pb.TransferLeadershipRequest{}); err != nil {
			t.Fatal(err)
		}
		leader = cl.Leader()
	}
	la = pb.NewClusterServiceClient(dial(t, cl.Members[leader].Addr))
	// Healthy again: removing the replica is fine.
	if _, err := la.RemoveMember(ctxT(t, 5*time.Second), &pb.RemoveMemberRequest{NodeId: replica.NodeCfg.ID}); err != nil {
		t.Fatalf("removing the replica: %v", err)
	}
	ms, err = la.Members(ctxT(t, 5*time.Second), &pb.MembersRequest{})
	if err != nil || len(ms.Members) != 3 {
		t.Fatalf("members after removal: %v %d", err, len(ms.GetMembers()))
	}
	if _, err := la.RemoveMember(ctxT(t, 5*time.Second), &pb.RemoveMemberRequest{NodeId: "nobody"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("removing a non-member: %v", err)
	}
}

// The quorum guard: with one of three voters down, removing another live
// voter would leave two voters with one reachable: refused unless forced.
func TestRemoveGuardsQuorum(t *testing.T) {
	cl := testcluster.Start(t, 3, testcluster.Options{})
	leader := cl.Leader()
	down, other := (leader+1)%3, (leader+2)%3
	cl.StopMember(down)
	la := pb.NewClusterServiceClient(dial(t, cl.Members[leader].Addr))
	_, err := la.RemoveMember(ctxT(t, 5*time.Second), &pb.RemoveMemberRequest{NodeId: cl.Members[other].NodeCfg.ID})
	if status.Code(err) != codes.FailedPrecondition || reason(err) != pb.ReasonPrecondition {
		t.Fatalf("removal that loses quorum: %v", err)
	}
	// Removing the dead one is fine: two voters remain, both reachable.
	if _, err := la.RemoveMember(ctxT(t, 5*time.Second), &pb.RemoveMemberRequest{NodeId: cl.Members[down].NodeCfg.ID}); err != nil {
		t.Fatalf("removing the dead member: %v", err)
	}
}
