package server_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/fsm"
	"github.com/memdbd/memdbd/internal/testcluster"
	"github.com/memdbd/memdbd/server"
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

// The leader checks a proposal a member forwards as the edge checks a
// client's request, and a member may register only itself: nothing
// refused reaches the log.
func TestPeerProposalsAreChecked(t *testing.T) {
	cl := testcluster.Start(t, 3, testcluster.Options{})
	li := cl.Leader()
	lcc := dial(t, cl.Members[li].Addr)
	createKV(t, lcc, "kv")
	ln := cl.Members[li].Node
	peer := cmdpb.NewPeerServiceClient(dial(t, cl.Members[li].NodeCfg.RaftBind))
	other := cl.Members[(li+1)%3].NodeCfg
	manyOps := make([]*pb.Op, 1000)
	for i := range manyOps {
		manyOps[i] = &pb.Op{Op: &pb.Op_Upsert{Upsert: &pb.UpsertOp{Table: "kv", Fields: map[string]*pb.Value{"k": str(fmt.Sprint(i))}}}}
	}
	bigKey := &pb.Op{Op: &pb.Op_Upsert{Upsert: &pb.UpsertOp{Table: "kv", Fields: map[string]*pb.Value{"k": str(strings.Repeat("k", 4000))}}}}
	for _, tc := range []struct {
		name string
		env  *cmdpb.Envelope
		from string
	}{
		{"1000 ops", &cmdpb.Envelope{Command: &cmdpb.Envelope_Txn{Txn: &cmdpb.Txn{Then: manyOps}}}, other.ID},
		{"4000-byte key", &cmdpb.Envelope{Command: &cmdpb.Envelope_Txn{Txn: &cmdpb.Txn{Then: []*pb.Op{bigKey}}}}, other.ID},
		{"another member's address", &cmdpb.Envelope{Command: &cmdpb.Envelope_RegisterMember{RegisterMember: &cmdpb.RegisterMember{
			NodeId: ln.ID(), ClientAddr: "127.0.0.1:1", RaftAddr: cl.Members[li].NodeCfg.RaftBind}}}, other.ID},
		{"a wrong Raft address", &cmdpb.Envelope{Command: &cmdpb.Envelope_RegisterMember{RegisterMember: &cmdpb.RegisterMember{
			NodeId: other.ID, ClientAddr: "127.0.0.1:1", RaftAddr: "127.0.0.1:1"}}}, other.ID},
		{"an expiry", &cmdpb.Envelope{Command: &cmdpb.Envelope_Expire{Expire: &cmdpb.Expire{Table: "kv"}}}, other.ID},
	} {
		before := ln.FSM().Applied()
		_, err := peer.Propose(ctxT(t, 5*time.Second), &cmdpb.ProposeRequest{Envelope: tc.env, From: tc.from})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", tc.name, err)
		}
		if after := ln.FSM().Applied(); after != before {
			t.Errorf("%s: the leader applied entries %d to %d", tc.name, before+1, after)
		}
	}
	if m, _ := ln.FSM().Member(ln.ID()); m.ClientAddr == "127.0.0.1:1" {
		t.Fatal("a member re-registered the leader's client address")
	}
}

// During a rolling upgrade from a version that served the peer service on
// the client port: a member that registered such a version is called on
// its client port, and members answer the peer service there only while
// one is registered. Reflection never lists it.
func TestPeerServiceForOlderMembers(t *testing.T) {
	cl := testcluster.Start(t, 3, testcluster.Options{})
	li := cl.Leader()
	ln := cl.Members[li].Node
	fi := (li + 1) % 3
	fcc := dial(t, cl.Members[fi].Addr)
	createKV(t, fcc, "kv")

	// The leader registers as a member of an older command format, as an
	// older binary would. Its own registration loop puts its real version
	// back within half a second, so each attempt checks that the older
	// registration is still the one in force.
	peer := cmdpb.NewPeerServiceClient(dial(t, cl.Members[li].Addr))
	data := pb.NewDataServiceClient(fcc)
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		reg := ln.RegistrationCommand()
		reg.GetRegisterMember().MaxCommandVersion = 2
		if res, aerr := ln.Apply(ctxT(t, 5*time.Second), reg); aerr != nil || res.ErrorReason != "" {
			t.Fatalf("registering as an older member: %v %v", aerr, res.GetErrorMessage())
		}
		waitUntil(t, 5*time.Second, func() error {
			if m, _ := cl.Members[fi].Node.FSM().Member(ln.ID()); m.MaxCommandVersion != 2 {
				return fmt.Errorf("the follower has not applied the registration")
			}
			return nil
		})
		before := server.Forwarded(cl.Members[fi].Server, "to_client_port")
		// Its peer service answers on its client port now, and the
		// follower forwards there.
		if _, err = peer.LeaseProbe(ctxT(t, time.Second), &cmdpb.LeaseProbeRequest{From: "x", Term: 1}); err != nil {
			continue
		}
		if _, err = data.Upsert(ctxT(t, 5*time.Second), &pb.UpsertRequest{Table: "kv", Fields: map[string]*pb.Value{"k": str("a")}}); err != nil {
			continue
		}
		if _, err = data.Get(ctxT(t, 5*time.Second), &pb.GetRequest{Table: "kv", Key: str("a")}); err != nil {
			continue
		}
		m, _ := cl.Members[fi].Node.FSM().Member(ln.ID())
		if after := server.Forwarded(cl.Members[fi].Server, "to_client_port"); after > before && m.MaxCommandVersion == 2 {
			err = nil
			break
		}
		err = fmt.Errorf("the follower did not call the older leader on its client port")
	}
	if err != nil {
		t.Fatal(err)
	}

	// While it is open, nobody on the client port can re-point a member
	// or pretend it is older.
	for _, forged := range []*cmdpb.RegisterMember{
		{NodeId: cl.Members[fi].NodeCfg.ID, ClientAddr: "127.0.0.1:1", RaftAddr: cl.Members[fi].NodeCfg.RaftBind, MaxCommandVersion: fsm.MaxCommandVersion},
		{NodeId: cl.Members[fi].NodeCfg.ID, ClientAddr: cl.Members[fi].Addr, RaftAddr: cl.Members[fi].NodeCfg.RaftBind, MaxCommandVersion: 2},
	} {
		err = nil
		for attempt := 0; attempt < 20; attempt++ {
			reg := ln.RegistrationCommand()
			reg.GetRegisterMember().MaxCommandVersion = 2
			if res, aerr := ln.Apply(ctxT(t, 5*time.Second), reg); aerr != nil || res.ErrorReason != "" {
				t.Fatalf("registering as an older member: %v %v", aerr, res.GetErrorMessage())
			}
			_, err = peer.Propose(ctxT(t, 5*time.Second), &cmdpb.ProposeRequest{From: forged.NodeId,
				Envelope: &cmdpb.Envelope{Command: &cmdpb.Envelope_RegisterMember{RegisterMember: forged}}})
			if status.Code(err) != codes.Unimplemented { // the window was open
				break
			}
		}
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("a forged registration %v through the client port: %v", forged, err)
		}
		if m, _ := cl.Members[fi].Node.FSM().Member(forged.NodeId); m.ClientAddr != cl.Members[fi].Addr || m.MaxCommandVersion != fsm.MaxCommandVersion {
			t.Fatalf("the forged registration took effect: %+v", m)
		}
	}

	// The leader registers its real version again: the client port
	// refuses the peer service.
	if res, err := ln.Apply(ctxT(t, 5*time.Second), ln.RegistrationCommand()); err != nil || res.ErrorReason != "" {
		t.Fatalf("registering again: %v %v", err, res.GetErrorMessage())
	}
	waitUntil(t, 5*time.Second, func() error {
		_, err := peer.LeaseProbe(ctxT(t, time.Second), &cmdpb.LeaseProbeRequest{From: "x", Term: 1})
		if status.Code(err) != codes.Unimplemented {
			return fmt.Errorf("LeaseProbe on the client port: %v", err)
		}
		return nil
	})
}

func waitUntil(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
