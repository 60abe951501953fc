package e2e

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/client"
)

// Bad requests get the documented gRPC code and reason, and change
// nothing: the table's row count, an existing row's revision and the list
// of tables stay as they were.
func TestBadInputRefused(t *testing.T) {
	const maxValue, maxOps = 1024, 8
	c := newCluster(t, 3, "--max-value-bytes", "1024", "--max-txn-ops", "8")
	l := c.waitReady(10*time.Second, nil)
	f := c.others(l)[0] // raw requests go to a follower: validation must not depend on the leader
	cl := c.client()
	c.createTable(cl, kvSchema("items"))
	ctx, cancel := c.callCtx(40 * time.Second)
	defer cancel()
	for _, k := range []string{"a", "b"} {
		if _, err := cl.Insert(ctx, "items", client.Fields{"k": client.String(k), "n": client.Int(1), "s": client.String("x")}); err != nil {
			t.Fatal(err)
		}
	}

	type state struct {
		rows   int
		modRev uint64
		tables string
	}
	snapshot := func() state {
		t.Helper()
		info, err := cl.DescribeTable(ctx, "items")
		if err != nil {
			t.Fatal(err)
		}
		row, err := cl.Get(ctx, "items", client.String("a"))
		if err != nil {
			t.Fatal(err)
		}
		tabs, err := cl.ListTables(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, tb := range tabs {
			names = append(names, tb.Schema.Name)
		}
		return state{info.Rows, row.ModRevision, strings.Join(names, ",")}
	}
	base := snapshot()

	big := strings.Repeat("x", maxValue+1)
	upsertOps := func(n int) []client.Op {
		var ops []client.Op
		for i := 0; i < n; i++ {
			ops = append(ops, client.UpsertOp("items", client.Fields{"k": client.String(string(rune('c' + i))), "n": client.Int(int64(i))}))
		}
		return ops
	}
	raw := c.data(f)
	rawUpsert := func(fields map[string]*pb.Value) error {
		_, err := raw.Upsert(ctx, &pb.UpsertRequest{Table: "items", Fields: fields})
		return err
	}
	cases := []struct {
		name   string
		call   func(ctx context.Context) error
		code   codes.Code
		reason string
	}{
		{"insert into unknown table", func(ctx context.Context) error {
			_, err := cl.Insert(ctx, "nope", client.Fields{"k": client.String("a")})
			return err
		}, codes.NotFound, pb.ReasonTableNotFound},
		{"get from unknown table", func(ctx context.Context) error {
			_, err := cl.Get(ctx, "nope", client.String("a"))
			return err
		}, codes.NotFound, pb.ReasonTableNotFound},
		{"txn on unknown table", func(ctx context.Context) error {
			_, err := cl.Txn().Then(client.UpsertOp("items", client.Fields{"k": client.String("z")}), client.UpsertOp("nope", client.Fields{"k": client.String("z")})).Commit(ctx)
			return err
		}, codes.NotFound, pb.ReasonTableNotFound},
		{"type mismatch", func(ctx context.Context) error {
			_, err := cl.Upsert(ctx, "items", client.Fields{"k": client.String("a"), "n": client.String("one")})
			return err
		}, codes.InvalidArgument, pb.ReasonTypeMismatch},
		{"key type mismatch", func(ctx context.Context) error {
			_, err := cl.Update(ctx, "items", client.Int(1), client.Fields{"n": client.Int(2)}, nil)
			return err
		}, codes.InvalidArgument, pb.ReasonTypeMismatch},
		{"oversize string value", func(ctx context.Context) error {
			_, err := cl.Update(ctx, "items", client.String("a"), client.Fields{"s": client.String(big)}, nil)
			return err
		}, codes.InvalidArgument, pb.ReasonTooLarge},
		{"oversize bytes value in a new row", func(ctx context.Context) error {
			_, err := cl.Insert(ctx, "items", client.Fields{"k": client.String("new"), "blob": client.Bytes([]byte(big))})
			return err
		}, codes.InvalidArgument, pb.ReasonTooLarge},
		{"oversize value in a txn condition", func(ctx context.Context) error {
			_, err := cl.Txn().If(client.FieldIs("items", client.String("a"), "s", client.Equal, client.String(big))).
				Then(client.DeleteOp("items", client.String("a"))).Commit(ctx)
			return err
		}, codes.InvalidArgument, pb.ReasonTooLarge},
		{"table name with a space", func(ctx context.Context) error {
			_, err := cl.CreateTable(ctx, client.TableSchema{Name: "bad name", PrimaryKey: "k", Fields: []client.FieldSchema{{Name: "k", Type: client.TypeString}}})
			return err
		}, codes.InvalidArgument, pb.ReasonInvalidArgument},
		{"table name starting with a digit", func(ctx context.Context) error {
			_, err := cl.CreateTable(ctx, client.TableSchema{Name: "9lives", PrimaryKey: "k", Fields: []client.FieldSchema{{Name: "k", Type: client.TypeString}}})
			return err
		}, codes.InvalidArgument, pb.ReasonInvalidArgument},
		{"empty table name", func(ctx context.Context) error {
			_, err := cl.CreateTable(ctx, client.TableSchema{PrimaryKey: "k", Fields: []client.FieldSchema{{Name: "k", Type: client.TypeString}}})
			return err
		}, codes.InvalidArgument, pb.ReasonInvalidArgument},
		{"table name over 64 bytes", func(ctx context.Context) error {
			_, err := cl.CreateTable(ctx, client.TableSchema{Name: strings.Repeat("t", 65), PrimaryKey: "k", Fields: []client.FieldSchema{{Name: "k", Type: client.TypeString}}})
			return err
		}, codes.InvalidArgument, pb.ReasonInvalidArgument},
		{"field name with a dash in a schema", func(ctx context.Context) error {
			_, err := cl.CreateTable(ctx, client.TableSchema{Name: "good", PrimaryKey: "k", Fields: []client.FieldSchema{
				{Name: "k", Type: client.TypeString}, {Name: "bad-field", Type: client.TypeInt}}})
			return err
		}, codes.InvalidArgument, pb.ReasonInvalidArgument},
		{"field name with a space in a row", func(ctx context.Context) error {
			_, err := cl.Upsert(ctx, "items", client.Fields{"k": client.String("a"), "bad field": client.Int(1)})
			return err
		}, codes.InvalidArgument, pb.ReasonInvalidArgument},
		{"too many ops", func(ctx context.Context) error {
			_, err := cl.Txn().Then(upsertOps(maxOps + 1)...).Commit(ctx)
			return err
		}, codes.InvalidArgument, pb.ReasonTooManyOps},
		{"too many ops in the else branch", func(ctx context.Context) error {
			_, err := cl.Txn().If(client.Exists("items", client.String("a"))).Then(upsertOps(1)...).Else(upsertOps(maxOps + 1)...).Commit(ctx)
			return err
		}, codes.InvalidArgument, pb.ReasonTooManyOps},
		// Raw gRPC with the generated types: what a non-Go client could send.
		{"raw: invalid UTF-8 in a string value", func(ctx context.Context) error {
			return rawUpsert(map[string]*pb.Value{"k": pbString("a"), "s": pbString("ok\xff\xfe")})
		}, codes.InvalidArgument, pb.ReasonInvalidArgument},
		{"raw: invalid UTF-8 in a key", func(ctx context.Context) error {
			return rawUpsert(map[string]*pb.Value{"k": pbString("\xc3\x28")})
		}, codes.InvalidArgument, pb.ReasonInvalidArgument},
		{"raw: invalid UTF-8 in a field name", func(ctx context.Context) error {
			return rawUpsert(map[string]*pb.Value{"k": pbString("a"), "f\xff": pbInt(1)})
		}, codes.InvalidArgument, pb.ReasonInvalidArgument},
		{"raw: NaN double", func(ctx context.Context) error {
			return rawUpsert(map[string]*pb.Value{"k": pbString("a"), "d": {Kind: &pb.Value_DoubleValue{DoubleValue: math.NaN()}}})
		}, codes.InvalidArgument, pb.ReasonInvalidArgument},
		{"raw: NaN key in a get", func(ctx context.Context) error {
			_, err := raw.Get(ctx, &pb.GetRequest{Table: "items", Key: &pb.Value{Kind: &pb.Value_DoubleValue{DoubleValue: math.NaN()}}})
			return err
		}, codes.InvalidArgument, pb.ReasonInvalidArgument},
		{"raw: null primary key", func(ctx context.Context) error {
			return rawUpsert(map[string]*pb.Value{"k": {}, "n": pbInt(1)})
		}, codes.InvalidArgument, ""},
		{"raw: timestamp out of range", func(ctx context.Context) error {
			return rawUpsert(map[string]*pb.Value{"k": pbString("a"), "ts": {Kind: &pb.Value_TimestampValue{
				TimestampValue: &timestamppb.Timestamp{Seconds: 1 << 40}}}})
		}, codes.InvalidArgument, pb.ReasonInvalidArgument},
		{"raw: session seq 0", func(ctx context.Context) error {
			_, err := raw.Upsert(ctx, &pb.UpsertRequest{Table: "items", Fields: map[string]*pb.Value{"k": pbString("a")},
				Session: &pb.WriteSession{ClientId: []byte("c"), Seq: 0}})
			return err
		}, codes.InvalidArgument, pb.ReasonInvalidArgument},
		{"raw: min_revision on a linearizable read", func(ctx context.Context) error {
			_, err := raw.Get(ctx, &pb.GetRequest{Table: "items", Key: pbString("a"), Read: &pb.ReadOptions{MinRevision: 1}})
			return err
		}, codes.InvalidArgument, pb.ReasonInvalidArgument},
		{"raw: unknown consistency", func(ctx context.Context) error {
			_, err := raw.Get(ctx, &pb.GetRequest{Table: "items", Key: pbString("a"), Read: &pb.ReadOptions{Consistency: 7}})
			return err
		}, codes.InvalidArgument, pb.ReasonInvalidArgument},
		{"raw: create table without a schema", func(ctx context.Context) error {
			_, err := c.schema(f).CreateTable(ctx, &pb.CreateTableRequest{})
			return err
		}, codes.InvalidArgument, pb.ReasonInvalidArgument},
	}
	for _, tc := range cases {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		err := tc.call(cctx)
		ccancel()
		checkCode(t, tc.name, err, tc.code, tc.reason)
		t.Logf("%s: %v", tc.name, err)
		if got := snapshot(); got != base {
			t.Errorf("%s changed the state: %+v, before %+v", tc.name, got, base)
			base = got
		}
	}

	// The limits are exact: a value of max-value-bytes and a transaction of
	// max-txn-ops operations are accepted.
	if _, err := cl.Update(ctx, "items", client.String("b"), client.Fields{"s": client.String(big[:maxValue])}, nil); err != nil {
		t.Errorf("value of exactly --max-value-bytes: %v", err)
	}
	if _, err := cl.Txn().Then(upsertOps(maxOps)...).Commit(ctx); err != nil {
		t.Errorf("txn of exactly --max-txn-ops: %v", err)
	}
	if got := snapshot(); got.rows != base.rows+maxOps || got.modRev != base.modRev {
		t.Errorf("after the accepted writes: %+v, before %+v", got, base)
	}
}
