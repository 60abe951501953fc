package e2e

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
)

// The hostile-client battery: what a stranger on the network or one
// greedy caller can send a member. Each case gets a clear refusal, the
// member goes on serving everyone else, and the replicated state is what
// the legitimate writes made it (every member's state hash agrees, at the
// revision of the last legitimate write).

// dialRaw opens a connection of its own to addr (not the shared one).
func dialRaw(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, dialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// limitOf returns the limit an error's ErrorInfo names.
func limitOf(err error) string {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if info, ok := d.(interface{ GetMetadata() map[string]string }); ok {
			return info.GetMetadata()[pb.MetaLimit]
		}
	}
	return ""
}

func TestHostileClients(t *testing.T) {
	c := newCluster(t, 3, "--max-in-flight-per-conn", "4", "--max-sessions-per-conn", "8", "--max-watchers-per-conn", "3")
	l := c.waitReady(10*time.Second, nil)
	f := c.others(l)[0]
	cl := c.client()
	c.createTable(cl, kvSchema("items"))
	ctx, cancel := c.callCtx(90 * time.Second)
	defer cancel()
	data := c.data(f)
	if _, err := data.Upsert(ctx, &pb.UpsertRequest{Table: "items", Fields: map[string]*pb.Value{"k": pbString("a")}}); err != nil {
		t.Fatal(err)
	}
	rev0, hash0 := c.waitConverged(10 * time.Second)

	t.Run("peer service is not on the client port", func(t *testing.T) {
		peer := cmdpb.NewPeerServiceClient(c.conn(l))
		_, err := peer.Propose(ctx, &cmdpb.ProposeRequest{From: "n2", Envelope: &cmdpb.Envelope{
			Command: &cmdpb.Envelope_RegisterMember{RegisterMember: &cmdpb.RegisterMember{NodeId: c.nodes[l].id, ClientAddr: "127.0.0.1:1"}}}})
		checkCode(t, "Propose on the client port", err, codes.Unimplemented, "")
		_, err = peer.LeaseProbe(ctx, &cmdpb.LeaseProbeRequest{From: "x", Term: 1})
		checkCode(t, "LeaseProbe on the client port", err, codes.Unimplemented, "")
		_, err = peer.ReadIndex(ctx, &cmdpb.ReadIndexRequest{From: "x"})
		checkCode(t, "ReadIndex on the client port", err, codes.Unimplemented, "")

		ref, err := rpb.NewServerReflectionClient(c.conn(f)).ServerReflectionInfo(ctx)
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
		for _, s := range resp.GetListServicesResponse().GetService() {
			if strings.Contains(s.Name, "PeerService") {
				t.Fatalf("reflection lists %s on the client port", s.Name)
			}
		}
	})

	t.Run("proposals to the peer port are checked like client requests", func(t *testing.T) {
		peer := cmdpb.NewPeerServiceClient(dialRaw(t, c.nodes[l].raftAddr))
		ops := make([]*pb.Op, 1000)
		for i := range ops {
			ops[i] = &pb.Op{Op: &pb.Op_Upsert{Upsert: &pb.UpsertOp{Table: "items", Fields: map[string]*pb.Value{"k": pbString(fmt.Sprint("p", i))}}}}
		}
		_, err := peer.Propose(ctx, &cmdpb.ProposeRequest{From: c.nodes[f].id, Envelope: &cmdpb.Envelope{Command: &cmdpb.Envelope_Txn{Txn: &cmdpb.Txn{Then: ops}}}})
		checkCode(t, "1000-op proposal", err, codes.InvalidArgument, pb.ReasonTooManyOps)
		bigKey := &pb.Op{Op: &pb.Op_Upsert{Upsert: &pb.UpsertOp{Table: "items", Fields: map[string]*pb.Value{"k": pbString(strings.Repeat("k", 4000))}}}}
		_, err = peer.Propose(ctx, &cmdpb.ProposeRequest{From: c.nodes[f].id, Envelope: &cmdpb.Envelope{Command: &cmdpb.Envelope_Txn{Txn: &cmdpb.Txn{Then: []*pb.Op{bigKey}}}}})
		checkCode(t, "4000-byte key proposal", err, codes.InvalidArgument, pb.ReasonTooLarge)
		_, err = peer.Propose(ctx, &cmdpb.ProposeRequest{From: c.nodes[f].id, Envelope: &cmdpb.Envelope{Command: &cmdpb.Envelope_RegisterMember{RegisterMember: &cmdpb.RegisterMember{
			NodeId: c.nodes[l].id, ClientAddr: "127.0.0.1:1", RaftAddr: c.nodes[l].raftAddr}}}})
		checkCode(t, "re-registering another member", err, codes.InvalidArgument, pb.ReasonInvalidArgument)
	})

	t.Run("HTTP/2 advertises a stream limit", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", c.nodes[f].clientAddr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
			t.Fatal(err)
		}
		fr := http2.NewFramer(conn, conn)
		if err := fr.WriteSettings(); err != nil {
			t.Fatal(err)
		}
		for {
			frame, err := fr.ReadFrame()
			if err != nil {
				t.Fatal(err)
			}
			if sf, ok := frame.(*http2.SettingsFrame); ok && !sf.IsAck() {
				v, ok := sf.Value(http2.SettingMaxConcurrentStreams)
				if !ok || v == 0 || v > 1<<16 {
					t.Fatalf("SETTINGS_MAX_CONCURRENT_STREAMS: %d (set %v)", v, ok)
				}
				return
			}
		}
	})

	t.Run("one connection cannot take every in-flight slot", func(t *testing.T) {
		greedy := pb.NewDataServiceClient(dialRaw(t, c.nodes[f].clientAddr))
		fair := pb.NewDataServiceClient(dialRaw(t, c.nodes[f].clientAddr))
		var refused, fairFailed atomic.Int64
		var firstFair atomic.Value
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					_, err := greedy.Get(ctx, &pb.GetRequest{Table: "items", Key: pbString("a")})
					if status.Code(err) == codes.ResourceExhausted && limitOf(err) == "max-in-flight-per-conn" {
						refused.Add(1)
					}
				}
			}()
		}
		for range 200 {
			if _, err := fair.Get(ctx, &pb.GetRequest{Table: "items", Key: pbString("a")}); err != nil {
				fairFailed.Add(1)
				firstFair.CompareAndSwap(nil, err.Error())
			}
		}
		close(stop)
		wg.Wait()
		if refused.Load() == 0 {
			t.Fatal("64 concurrent callers on one connection were never refused with a 4-request share")
		}
		if n := fairFailed.Load(); n > 0 {
			t.Fatalf("%d of 200 reads on another connection failed, first: %v", n, firstFair.Load())
		}
	})

	t.Run("one connection cannot fill the session table", func(t *testing.T) {
		greedy := pb.NewDataServiceClient(dialRaw(t, c.nodes[f].clientAddr))
		var err error
		i := 0
		for ; i < 20; i++ {
			_, err = greedy.Upsert(ctx, &pb.UpsertRequest{Table: "items", Fields: map[string]*pb.Value{"k": pbString("s")},
				Session: &pb.WriteSession{ClientId: []byte(fmt.Sprint("greedy-", i)), Seq: 1}})
			if err != nil {
				break
			}
		}
		if i != 8 {
			t.Fatalf("the connection opened %d sessions before a refusal (%v), want 8", i, err)
		}
		checkCode(t, "ninth client id on one connection", err, codes.ResourceExhausted, pb.ReasonSessionLimit)
		if limitOf(err) != "max-sessions-per-conn" {
			t.Fatalf("refusal names limit %q", limitOf(err))
		}
		other := pb.NewDataServiceClient(dialRaw(t, c.nodes[f].clientAddr))
		if _, err := other.Upsert(ctx, &pb.UpsertRequest{Table: "items", Fields: map[string]*pb.Value{"k": pbString("s")},
			Session: &pb.WriteSession{ClientId: []byte("honest"), Seq: 1}}); err != nil {
			t.Fatalf("a new client on another connection: %v", err)
		}
	})

	t.Run("watch streams are bounded per connection", func(t *testing.T) {
		cc := dialRaw(t, c.nodes[f].clientAddr)
		wctx, wcancel := context.WithCancel(ctx)
		defer wcancel()
		open := func(d pb.DataServiceClient) error {
			st, err := d.Watch(wctx, &pb.WatchRequest{Table: "items"})
			if err != nil {
				return err
			}
			_, err = st.Recv() // the first message, or the refusal
			return err
		}
		for i := range 3 {
			if err := open(pb.NewDataServiceClient(cc)); err != nil {
				t.Fatalf("watch %d: %v", i, err)
			}
		}
		err := open(pb.NewDataServiceClient(cc))
		checkCode(t, "fourth watch on one connection", err, codes.ResourceExhausted, pb.ReasonOverloaded)
		if err := open(pb.NewDataServiceClient(dialRaw(t, c.nodes[f].clientAddr))); err != nil {
			t.Fatalf("a watch on another connection: %v", err)
		}
	})

	// Nothing refused reached the log: the only changes since rev0 are
	// the legitimate writes above (8 session upserts of one row and the
	// honest one), so the row set is unchanged apart from "s".
	rev1, hash1 := c.waitConverged(10 * time.Second)
	if rev1 == rev0 && hash1 != hash0 {
		t.Fatalf("state hash changed at revision %d without a write", rev1)
	}
	resp, err := c.data(l).Scan(ctx, &pb.ScanRequest{Table: "items"})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, r := range resp.Rows {
		keys = append(keys, r.Fields["k"].GetStringValue())
	}
	if got := strings.Join(keys, ","); got != "a,s" {
		t.Fatalf("rows after the battery: %s, want a,s", got)
	}
}
