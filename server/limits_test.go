package server_test

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/internal/testcluster"
	"github.com/memdbd/memdbd/server"
)

// Response limits of the tests: rows of about 100 KiB, about ten of them
// to a response.
const (
	testRowValue      = 100 << 10
	testResponseBytes = 1 << 20
	testBudgetBytes   = 2 << 20
)

// limitsMember starts one member with the test's response limits, and
// returns it with a connection that accepts any size (the member's limit
// is the one under test) and the logs it writes.
func limitsMember(t *testing.T) (*testcluster.Member, pb.DataServiceClient, *grpc.ClientConn) {
	t.Helper()
	cl := testcluster.Start(t, 1, testcluster.Options{TuneServer: func(c *server.Config) {
		c.Limits.MaxRowBytes, c.Limits.MaxValueBytes = 128<<10, testRowValue
		c.Limits.MaxResponseBytes, c.Limits.MaxResponseBytesInFlight = testResponseBytes, testBudgetBytes
		c.Logger = slog.New(slog.DiscardHandler)
	}})
	cc, err := grpc.NewClient(cl.Members[0].Addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	createKV(t, cc, "kv")
	return cl.Members[0], pb.NewDataServiceClient(cc), cc
}

func rowKey(i int) string { return fmt.Sprintf("r%02d", i) }

func getOp(key string) *pb.Op {
	return &pb.Op{Op: &pb.Op_Get{Get: &pb.GetOp{Table: "kv", Key: str(key)}}}
}

func upsertOp(key string, size int) *pb.Op {
	return &pb.Op{Op: &pb.Op_Upsert{Upsert: &pb.UpsertOp{Table: "kv", Fields: map[string]*pb.Value{"k": str(key), "v": str(strings.Repeat("x", size))}}}}
}

// seedRows writes n rows of about testRowValue bytes, r00 to r<n-1>.
func seedRows(t *testing.T, data pb.DataServiceClient, n int) {
	t.Helper()
	for i := range n {
		if _, err := data.Txn(ctxT(t, 5*time.Second), &pb.TxnRequest{Then: []*pb.Op{upsertOp(rowKey(i), testRowValue)}}); err != nil {
			t.Fatal(err)
		}
	}
}

// memberState is the member's revision and state hash.
func memberState(t *testing.T, cc *grpc.ClientConn) (uint64, uint64) {
	t.Helper()
	st, err := pb.NewClusterServiceClient(cc).Status(ctxT(t, 5*time.Second), &pb.StatusRequest{IncludeStateHash: true})
	if err != nil {
		t.Fatal(err)
	}
	return st.Header.Revision, st.StateHash
}

// refusedBy checks err is the refusal of a response limit: code, reason,
// the limit's flag in the metadata and in the message.
func refusedBy(t *testing.T, what string, err error, code codes.Code, why, flag string) {
	t.Helper()
	if status.Code(err) != code || reason(err) != why || errMeta(err, pb.MetaLimit) != flag || !strings.Contains(err.Error(), "--"+flag) {
		t.Fatalf("%s: %v (reason %q, limit %q), want %v, %s, limit %s named in the message", what, err, reason(err), errMeta(err, pb.MetaLimit), code, why, flag)
	}
}

// A BatchGet whose rows would exceed the response limit is refused at
// once, without building the answer; one under it is answered. A BatchGet
// on a missing table is NotFound, with keys or without.
func TestBatchGetResponseLimit(t *testing.T) {
	m, data, _ := limitsMember(t)
	seedRows(t, data, 12)
	var keys []*pb.Value
	for i := range 5 {
		keys = append(keys, str(rowKey(i)))
	}
	r, err := data.BatchGet(ctxT(t, 5*time.Second), &pb.BatchGetRequest{Table: "kv", Keys: keys})
	if err != nil || len(r.Results) != 5 || !r.Results[4].Found {
		t.Fatalf("a BatchGet under the limit: %v", err)
	}
	if n := proto.Size(r); n > testResponseBytes {
		t.Fatalf("answer of %d bytes, limit %d", n, testResponseBytes)
	}

	// The hostile case: one large row asked for a thousand times.
	keys = keys[:0]
	for range 1000 {
		keys = append(keys, str(rowKey(0)))
	}
	start := time.Now()
	_, err = data.BatchGet(ctxT(t, 5*time.Second), &pb.BatchGetRequest{Table: "kv", Keys: keys})
	took := time.Since(start)
	refusedBy(t, "1000 x 100 KiB", err, codes.ResourceExhausted, pb.ReasonResponseTooLarge, "max-response-bytes")
	if !strings.Contains(err.Error(), "fewer keys") {
		t.Fatalf("the message does not say what to do: %v", err)
	}
	if took > time.Second {
		t.Fatalf("the refusal took %v", took)
	}
	if n := server.ResponseLimitRefusals(m.Server, "max-response-bytes"); n != 1 {
		t.Fatalf("%v refusals by max-response-bytes counted, want 1", n)
	}

	for _, keys := range [][]*pb.Value{{str("a")}, nil} {
		_, err := data.BatchGet(ctxT(t, 5*time.Second), &pb.BatchGetRequest{Table: "nope", Keys: keys})
		if status.Code(err) != codes.NotFound || reason(err) != pb.ReasonTableNotFound {
			t.Fatalf("BatchGet of %d keys on a missing table: %v (reason %q), want NotFound, TABLE_NOT_FOUND", len(keys), err, reason(err))
		}
	}
}

// A Scan page ends before the row that would take it over the response
// limit, with a token for the rest; the pages together hold every row
// once, in order. A keys-only scan and a count are not cut.
func TestScanPagesByResponseBytes(t *testing.T) {
	_, data, _ := limitsMember(t)
	const rows = 25
	seedRows(t, data, rows)
	for _, reverse := range []bool{false, true} {
		var got []string
		var token []byte
		pages := 0
		for {
			r, err := data.Scan(ctxT(t, 5*time.Second), &pb.ScanRequest{Table: "kv", Limit: 1000, Reverse: reverse, PageToken: token})
			if err != nil {
				t.Fatal(err)
			}
			pages++
			if n := proto.Size(r); n > testResponseBytes {
				t.Fatalf("page %d: %d bytes, limit %d", pages, n, testResponseBytes)
			}
			if len(r.Rows) == 0 {
				t.Fatalf("page %d is empty", pages)
			}
			for _, row := range r.Rows {
				got = append(got, row.Fields["k"].GetStringValue())
			}
			if token = r.NextPageToken; len(token) == 0 {
				break
			}
		}
		if len(got) != rows || pages < 3 {
			t.Fatalf("reverse %v: %d rows in %d pages, want %d rows in 3 or more", reverse, len(got), pages, rows)
		}
		for i, k := range got {
			want := rowKey(i)
			if reverse {
				want = rowKey(rows - 1 - i)
			}
			if k != want {
				t.Fatalf("reverse %v: row %d is %s, want %s", reverse, i, k, want)
			}
		}
	}
	r, err := data.Scan(ctxT(t, 5*time.Second), &pb.ScanRequest{Table: "kv", KeysOnly: true})
	if err != nil || len(r.Rows) != rows || len(r.NextPageToken) != 0 {
		t.Fatalf("keys-only scan: %v, %d rows", err, len(r.GetRows()))
	}
	c, err := data.Count(ctxT(t, 5*time.Second), &pb.CountRequest{Table: "kv"})
	if err != nil || c.Count != rows {
		t.Fatalf("count: %v %v", err, c)
	}
}

// A Txn whose Get operations would read more than the response limit, in
// either branch, is refused before it is proposed and changes nothing.
// One whose rows grew past the limit after the estimate is answered, and
// the member logs it.
func TestTxnResponseEstimate(t *testing.T) {
	m, data, cc := limitsMember(t)
	seedRows(t, data, 12)
	rev, hash := memberState(t, cc)

	gets := func(n int) []*pb.Op {
		var ops []*pb.Op
		for i := range n {
			ops = append(ops, getOp(rowKey(i)))
		}
		return ops
	}
	_, err := data.Txn(ctxT(t, 5*time.Second), &pb.TxnRequest{Then: append([]*pb.Op{upsertOp("new", 10)}, gets(12)...)})
	refusedBy(t, "a Txn reading 12 rows", err, codes.ResourceExhausted, pb.ReasonResponseTooLarge, "max-response-bytes")
	// The branch that would run is small; the other is not.
	exists := &pb.Condition{Table: "kv", Key: str(rowKey(0)), Test: &pb.Condition_Exists{Exists: true}}
	_, err = data.Txn(ctxT(t, 5*time.Second), &pb.TxnRequest{Conditions: []*pb.Condition{exists},
		Then: []*pb.Op{upsertOp("new", 10), getOp(rowKey(0))}, Else: gets(12)})
	refusedBy(t, "a Txn whose other branch reads 12 rows", err, codes.ResourceExhausted, pb.ReasonResponseTooLarge, "max-response-bytes")
	if r2, h2 := memberState(t, cc); r2 != rev || h2 != hash {
		t.Fatalf("refused transactions changed the state: revision %d -> %d, hash %x -> %x", rev, r2, hash, h2)
	}
	if g, err := data.Get(ctxT(t, 5*time.Second), &pb.GetRequest{Table: "kv", Key: str("new")}); err != nil || g.Found {
		t.Fatalf("the refused write: found %v, %v", g.GetFound(), err)
	}
	if n := server.ResponseLimitRefusals(m.Server, "max-response-bytes"); n != 2 {
		t.Fatalf("%v refusals counted, want 2", n)
	}

	r, err := data.Txn(ctxT(t, 5*time.Second), &pb.TxnRequest{Then: append([]*pb.Op{upsertOp("new", 10)}, gets(5)...)})
	if err != nil || len(r.Results) != 6 || !r.Results[5].GetGet().GetFound() {
		t.Fatalf("a Txn under the limit: %v", err)
	}

	// A Get of a row the transaction writes itself counts the row it
	// writes: ten rows fit, and the eleventh, written first, is refused
	// before anything is applied.
	rev, hash = memberState(t, cc)
	_, err = data.Txn(ctxT(t, 5*time.Second), &pb.TxnRequest{Then: append(append([]*pb.Op{upsertOp("grown", testRowValue)}, gets(10)...), getOp("grown"))})
	refusedBy(t, "a Txn reading back the row it writes", err, codes.ResourceExhausted, pb.ReasonResponseTooLarge, "max-response-bytes")
	if r2, h2 := memberState(t, cc); r2 != rev || h2 != hash {
		t.Fatalf("the refused transaction changed the state: revision %d -> %d, hash %x -> %x", rev, r2, hash, h2)
	}
	// Deleted first, it reads nothing.
	del := &pb.Op{Op: &pb.Op_Delete{Delete: &pb.DeleteOp{Table: "kv", Key: str(rowKey(11))}}}
	if _, err := data.Txn(ctxT(t, 5*time.Second), &pb.TxnRequest{Then: append([]*pb.Op{del}, append(gets(10), getOp(rowKey(11)))...)}); err != nil {
		t.Fatalf("a Txn reading a row it deleted first: %v", err)
	}
}

// A Txn with no conditions and no operations is refused before it is
// proposed; one with only conditions is a read-only check, and passes.
func TestEmptyTxnRefused(t *testing.T) {
	_, data, cc := limitsMember(t)
	seedRows(t, data, 1)
	rev, hash := memberState(t, cc)
	_, err := data.Txn(ctxT(t, 5*time.Second), &pb.TxnRequest{})
	if status.Code(err) != codes.InvalidArgument || reason(err) != pb.ReasonInvalidArgument {
		t.Fatalf("an empty Txn: %v (reason %q), want InvalidArgument", err, reason(err))
	}
	if r2, h2 := memberState(t, cc); r2 != rev || h2 != hash {
		t.Fatalf("an empty Txn changed the state: revision %d -> %d, hash %x -> %x", rev, r2, hash, h2)
	}
	exists := &pb.Condition{Table: "kv", Key: str(rowKey(0)), Test: &pb.Condition_Exists{Exists: true}}
	if r, err := data.Txn(ctxT(t, 5*time.Second), &pb.TxnRequest{Conditions: []*pb.Condition{exists}}); err != nil || !r.Succeeded {
		t.Fatalf("a Txn of one condition: %v", err)
	}
}

// With the budget of response bytes in flight exhausted, large answers
// (BatchGet, Scan, a Txn with Gets, a Get of a large row) are refused at
// once with OVERLOADED naming the limit, and change nothing; small ones,
// which do not reserve, pass. Once the budget is released they pass
// again.
func TestResponseBytesInFlight(t *testing.T) {
	m, data, cc := limitsMember(t)
	seedRows(t, data, 3)
	if _, err := data.Txn(ctxT(t, 5*time.Second), &pb.TxnRequest{Then: []*pb.Op{upsertOp("small", 10)}}); err != nil {
		t.Fatal(err)
	}
	rev, hash := memberState(t, cc)
	const held = testBudgetBytes - 80<<10 // less than one large row left
	release, err := server.HoldResponseBytes(m.Server, held)
	if err != nil {
		t.Fatal(err)
	}
	if n := server.ResponseBytesInFlight(m.Server); n != held {
		t.Fatalf("%d bytes in flight, want %d", n, held)
	}
	two := []*pb.Value{str(rowKey(0)), str(rowKey(1))}
	start := time.Now()
	_, err = data.BatchGet(ctxT(t, 5*time.Second), &pb.BatchGetRequest{Table: "kv", Keys: two})
	refusedBy(t, "BatchGet", err, codes.ResourceExhausted, pb.ReasonOverloaded, "max-response-bytes-in-flight")
	if time.Since(start) > time.Second {
		t.Fatalf("the refusal took %v; it should not wait", time.Since(start))
	}
	if !hasRetryInfo(err) {
		t.Fatalf("OVERLOADED without a retry delay: %v", err)
	}
	_, err = data.Scan(ctxT(t, 5*time.Second), &pb.ScanRequest{Table: "kv"})
	refusedBy(t, "Scan", err, codes.ResourceExhausted, pb.ReasonOverloaded, "max-response-bytes-in-flight")
	_, err = data.Txn(ctxT(t, 5*time.Second), &pb.TxnRequest{Then: []*pb.Op{upsertOp("new", 10), getOp(rowKey(0)), getOp(rowKey(1))}})
	refusedBy(t, "Txn", err, codes.ResourceExhausted, pb.ReasonOverloaded, "max-response-bytes-in-flight")
	if r2, h2 := memberState(t, cc); r2 != rev || h2 != hash {
		t.Fatalf("refused requests changed the state: revision %d -> %d, hash %x -> %x", rev, r2, hash, h2)
	}
	_, err = data.Get(ctxT(t, 5*time.Second), &pb.GetRequest{Table: "kv", Key: str(rowKey(0))})
	refusedBy(t, "Get of a large row", err, codes.ResourceExhausted, pb.ReasonOverloaded, "max-response-bytes-in-flight")
	if n := server.ResponseLimitRefusals(m.Server, "max-response-bytes-in-flight"); n != 4 {
		t.Fatalf("%v refusals counted, want 4", n)
	}
	// Small answers do not reserve.
	if g, err := data.Get(ctxT(t, 5*time.Second), &pb.GetRequest{Table: "kv", Key: str("small")}); err != nil || !g.Found {
		t.Fatalf("Get of a small row: %v", err)
	}
	if _, err := data.Scan(ctxT(t, 5*time.Second), &pb.ScanRequest{Table: "kv", KeysOnly: true}); err != nil {
		t.Fatalf("a keys-only Scan: %v", err)
	}
	if _, err := data.Txn(ctxT(t, 5*time.Second), &pb.TxnRequest{Then: []*pb.Op{getOp("small")}}); err != nil {
		t.Fatalf("a Txn reading a small row: %v", err)
	}

	release()
	if _, err := data.BatchGet(ctxT(t, 5*time.Second), &pb.BatchGetRequest{Table: "kv", Keys: two}); err != nil {
		t.Fatalf("BatchGet after the release: %v", err)
	}
	if _, err := data.Txn(ctxT(t, 5*time.Second), &pb.TxnRequest{Then: []*pb.Op{getOp(rowKey(0)), getOp(rowKey(1))}}); err != nil {
		t.Fatalf("Txn after the release: %v", err)
	}
	if n := server.ResponseBytesInFlight(m.Server); n != 0 {
		t.Fatalf("%d bytes still reserved once every answer was sent", n)
	}
}

func hasRetryInfo(err error) bool {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if _, ok := d.(*errdetails.RetryInfo); ok {
			return true
		}
	}
	return false
}

// A transaction whose events (with previous rows) exceed the response
// limit reaches a watcher in several messages, each within the limit:
// every one but the last is a fragment without a revision, the last
// carries the transaction's revision. A snapshot's messages are bounded
// too.
func TestWatchSplitsLargeTransactions(t *testing.T) {
	_, data, _ := limitsMember(t)
	const rows = 12
	seedRows(t, data, rows)
	ctx := ctxT(t, 30*time.Second)

	snap, err := data.Watch(ctx, &pb.WatchRequest{Table: "kv", Snapshot: true})
	if err != nil {
		t.Fatal(err)
	}
	n, msgs := 0, 0
	for {
		m, err := snap.Recv()
		if err != nil {
			t.Fatal(err)
		}
		msgs++
		if s := proto.Size(m); s > testResponseBytes {
			t.Fatalf("snapshot message %d: %d bytes, limit %d", msgs, s, testResponseBytes)
		}
		n += len(m.SnapshotRows)
		if m.SnapshotDone {
			break
		}
	}
	if n != rows || msgs < 2 {
		t.Fatalf("snapshot of %d rows in %d messages, want %d rows in 2 or more", n, msgs, rows)
	}

	st, err := data.Watch(ctx, &pb.WatchRequest{Table: "kv", PrevRow: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	var ops []*pb.Op
	for i := range rows {
		ops = append(ops, upsertOp(rowKey(i), testRowValue-1))
	}
	r, err := data.Txn(ctx, &pb.TxnRequest{Then: ops})
	if err != nil {
		t.Fatal(err)
	}
	events, msgs := 0, 0
	for {
		m, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if m.Progress {
			continue
		}
		msgs++
		if s := proto.Size(m); s > testResponseBytes {
			t.Fatalf("message %d: %d bytes, limit %d", msgs, s, testResponseBytes)
		}
		for _, e := range m.Events {
			if e.Revision != r.Header.Revision || e.PrevRow == nil {
				t.Fatalf("event %+v of revision %d", e.Row.GetFields()["k"], e.Revision)
			}
		}
		events += len(m.Events)
		if m.Fragment {
			if m.Revision != 0 {
				t.Fatalf("fragment %d says revision %d", msgs, m.Revision)
			}
			continue
		}
		if m.Revision != r.Header.Revision {
			t.Fatalf("the last message says revision %d, want %d", m.Revision, r.Header.Revision)
		}
		break
	}
	if events != rows || msgs < 3 {
		t.Fatalf("%d events in %d messages, want %d in 3 or more", events, msgs, rows)
	}
}

// The response limits change at run time with Reload.
func TestResponseLimitsReload(t *testing.T) {
	m, data, _ := limitsMember(t)
	seedRows(t, data, 3)
	keys := []*pb.Value{str(rowKey(0)), str(rowKey(1)), str(rowKey(2))}
	if _, err := data.BatchGet(ctxT(t, 5*time.Second), &pb.BatchGetRequest{Table: "kv", Keys: keys}); err != nil {
		t.Fatal(err)
	}
	lim := m.ServerCfg.Limits
	lim.MaxResponseBytes = lim.MaxRowBytes + 64<<10 // one row and its framing, not three
	if err := m.Server.Reload(lim, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	_, err := data.BatchGet(ctxT(t, 5*time.Second), &pb.BatchGetRequest{Table: "kv", Keys: keys})
	refusedBy(t, "three rows after the limit was lowered", err, codes.ResourceExhausted, pb.ReasonResponseTooLarge, "max-response-bytes")
	lim.MaxResponseBytes--
	if err := m.Server.Reload(lim, 10*time.Second); err == nil || !strings.HasPrefix(err.Error(), "max response bytes") {
		t.Fatalf("a limit below one row and its framing: %v", err)
	}
}
