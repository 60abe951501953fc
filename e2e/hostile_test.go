package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
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
	"github.com/memdbd/memdbd/client"
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
	// One row of 1 MiB, for the requests that multiply it.
	c.createTable(cl, client.TableSchema{Name: "blobs", PrimaryKey: "k", Fields: []client.FieldSchema{
		{Name: "k", Type: client.TypeString}, {Name: "v", Type: client.TypeBytes}}})
	if _, err := data.Upsert(ctx, &pb.UpsertRequest{Table: "blobs", Fields: map[string]*pb.Value{"k": pbString("big"),
		"v": {Kind: &pb.Value_BytesValue{BytesValue: make([]byte, 1<<20)}}}}); err != nil {
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

	t.Run("a small request cannot ask for a huge answer", func(t *testing.T) {
		rss0 := rssBytes(t, c.nodes[f].pid())
		keys := make([]*pb.Value, 1000)
		for i := range keys {
			keys[i] = pbString("big")
		}
		start := time.Now()
		_, err := data.BatchGet(ctx, &pb.BatchGetRequest{Table: "blobs", Keys: keys})
		checkCode(t, "BatchGet of one 1 MiB row 1000 times", err, codes.ResourceExhausted, pb.ReasonResponseTooLarge)
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("the refusal took %v", d)
		}
		gets := make([]*pb.Op, 128)
		for i := range gets {
			gets[i] = &pb.Op{Op: &pb.Op_Get{Get: &pb.GetOp{Table: "blobs", Key: pbString("big")}}}
		}
		_, err = data.Txn(ctx, &pb.TxnRequest{Then: gets})
		checkCode(t, "Txn of 128 Gets of a 1 MiB row", err, codes.ResourceExhausted, pb.ReasonResponseTooLarge)
		if grown := rssBytes(t, c.nodes[f].pid()) - rss0; grown > 256<<20 {
			t.Fatalf("the member grew by %d MiB answering them", grown>>20)
		}
	})

	t.Run("reads of a revision that will not come fail fast", func(t *testing.T) {
		flood := pb.NewDataServiceClient(dialRaw(t, c.nodes[f].clientAddr))
		var wg sync.WaitGroup
		var slowest atomic.Int64
		for range 1000 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				start := time.Now()
				_, err := flood.Get(ctx, &pb.GetRequest{Table: "items", Key: pbString("a"), Read: staleAt(1<<64 - 1)})
				if c := status.Code(err); c != codes.OutOfRange && c != codes.ResourceExhausted {
					t.Errorf("a read of revision 2^64-1: %v", err)
				}
				if d := int64(time.Since(start)); d > slowest.Load() {
					slowest.Store(d)
				}
			}()
		}
		other := pb.NewDataServiceClient(dialRaw(t, c.nodes[f].clientAddr))
		if _, err := other.Upsert(ctx, &pb.UpsertRequest{Table: "items", Fields: map[string]*pb.Value{"k": pbString("a")}}); err != nil {
			t.Errorf("a write during the flood: %v", err)
		}
		if _, err := other.Get(ctx, &pb.GetRequest{Table: "items", Key: pbString("a")}); err != nil {
			t.Errorf("a read during the flood: %v", err)
		}
		wg.Wait()
		if d := time.Duration(slowest.Load()); d > 3*time.Second {
			t.Fatalf("a read of revision 2^64-1 was answered after %v", d)
		}
	})

	t.Run("small refusals", func(t *testing.T) {
		_, err := data.Txn(ctx, &pb.TxnRequest{})
		checkCode(t, "an empty Txn", err, codes.InvalidArgument, pb.ReasonInvalidArgument)
		_, err = data.BatchGet(ctx, &pb.BatchGetRequest{Table: "nope", Keys: []*pb.Value{pbString("a")}})
		checkCode(t, "BatchGet on a missing table", err, codes.NotFound, pb.ReasonTableNotFound)
		_, err = data.BatchGet(ctx, &pb.BatchGetRequest{Table: "nope"})
		checkCode(t, "BatchGet of no keys on a missing table", err, codes.NotFound, pb.ReasonTableNotFound)
		first, err := data.Scan(ctx, &pb.ScanRequest{Table: "items", Limit: 1})
		if err != nil || len(first.NextPageToken) == 0 {
			t.Fatalf("first page: %v", err)
		}
		forged := append([]byte(nil), first.NextPageToken...)
		forged[len(forged)/2] ^= 1
		_, err = data.Scan(ctx, &pb.ScanRequest{Table: "items", Limit: 1, PageToken: forged})
		checkCode(t, "an altered page token", err, codes.InvalidArgument, pb.ReasonInvalidArgument)
	})

	t.Run("one connection's scans cannot expire another's", func(t *testing.T) {
		greedy := pb.NewDataServiceClient(dialRaw(t, c.nodes[f].clientAddr))
		honest := pb.NewDataServiceClient(dialRaw(t, c.nodes[f].clientAddr))
		first, err := honest.Scan(ctx, &pb.ScanRequest{Table: "items", Limit: 1})
		if err != nil || len(first.NextPageToken) == 0 {
			t.Fatalf("first page: %v", err)
		}
		for i := range 300 {
			if _, err := greedy.Scan(ctx, &pb.ScanRequest{Table: "items", Limit: 1}); err != nil {
				t.Fatalf("greedy scan %d: %v", i, err)
			}
		}
		if _, err := honest.Scan(ctx, &pb.ScanRequest{Table: "items", Limit: 1, PageToken: first.NextPageToken}); err != nil {
			t.Fatalf("the second page after another connection's 300 scans: %v", err)
		}
	})

	t.Run("state hash callers share a budget", func(t *testing.T) {
		var wg sync.WaitGroup
		var served, refused atomic.Int64
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cs := pb.NewClusterServiceClient(dialRaw(t, c.nodes[f].clientAddr))
				for range 20 {
					start := time.Now()
					_, err := cs.Status(ctx, &pb.StatusRequest{IncludeStateHash: true})
					switch {
					case err == nil:
						served.Add(1)
					case status.Code(err) == codes.ResourceExhausted && errorReason(err) == pb.ReasonOverloaded:
						refused.Add(1)
					default:
						t.Errorf("Status with the state hash: %v", err)
					}
					if d := time.Since(start); d > 2*time.Second {
						t.Errorf("Status with the state hash took %v", d)
					}
				}
			}()
		}
		wg.Wait()
		if served.Load() == 0 {
			t.Fatalf("no state hash served (%d refused)", refused.Load())
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

// rssBytes is the resident memory of process pid.
func rssBytes(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int64
			if _, err := fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), &kb); err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}
