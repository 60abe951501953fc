package server_test

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/internal/testcluster"
)

// The peer service is not on the client port: a client can neither call
// it nor see it through reflection, while members still forward writes
// and read indexes to the leader (on its Raft port).
func TestPeerServiceNotOnClientPort(t *testing.T) {
	cl := testcluster.Start(t, 3, testcluster.Options{})
	li := cl.Leader()
	fi := (li + 1) % 3
	fcc := dial(t, cl.Members[fi].Addr)

	peer := cmdpb.NewPeerServiceClient(dial(t, cl.Members[li].Addr))
	_, err := peer.Propose(ctxT(t, 5*time.Second), &cmdpb.ProposeRequest{Envelope: &cmdpb.Envelope{
		Command: &cmdpb.Envelope_RegisterMember{RegisterMember: &cmdpb.RegisterMember{NodeId: "n1", ClientAddr: "127.0.0.1:1"}}}})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("Propose on the client port: %v, want Unimplemented", err)
	}
	if _, err := peer.LeaseProbe(ctxT(t, 5*time.Second), &cmdpb.LeaseProbeRequest{From: "x", Term: 1}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("LeaseProbe on the client port: %v, want Unimplemented", err)
	}

	ref, err := rpb.NewServerReflectionClient(fcc).ServerReflectionInfo(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := ref.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := ref.Recv()
	if err != nil {
		t.Fatal(err)
	}
	for _, svc := range resp.GetListServicesResponse().GetService() {
		if svc.Name == cmdpb.PeerService_ServiceDesc.ServiceName {
			t.Fatalf("reflection on the client port lists %s", svc.Name)
		}
	}

	// Forwarding works through the Raft port: a write and a linearizable
	// read through a follower.
	createKV(t, fcc, "kv")
	data := pb.NewDataServiceClient(fcc)
	if _, err := data.Upsert(ctxT(t, 5*time.Second), &pb.UpsertRequest{Table: "kv", Fields: map[string]*pb.Value{"k": str("a"), "v": str("1")}}); err != nil {
		t.Fatalf("write through a follower: %v", err)
	}
	g, err := data.Get(ctxT(t, 5*time.Second), &pb.GetRequest{Table: "kv", Key: str("a")})
	if err != nil || !g.Found {
		t.Fatalf("linearizable read through a follower: %v %v", err, g)
	}
}
