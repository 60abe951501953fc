package client

import (
	"context"
	"time"

	"google.golang.org/grpc"

	"github.com/memdbd/memdbd/api/convert"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/store"
)

// Cond is a transaction condition; build it with Exists, NotExists,
// VersionIs, ModRevisionIs or FieldIs.
type Cond struct{ c *pb.Condition }

// CompareOp compares a row attribute with a value.
type CompareOp = store.CompareOp

// Comparison operators.
const (
	Equal        = store.CmpEqual
	NotEqual     = store.CmpNotEqual
	Less         = store.CmpLess
	LessEqual    = store.CmpLessEqual
	Greater      = store.CmpGreater
	GreaterEqual = store.CmpGreaterEqual
)

// cmpPB maps a comparison to the wire; the enums share their numbering.
func cmpPB(op CompareOp) pb.CompareOp { return pb.CompareOp(op) }

// Exists holds when the row exists.
func Exists(table string, key Value) Cond {
	return Cond{&pb.Condition{Table: table, Key: convert.ValueToPB(key), Test: &pb.Condition_Exists{Exists: true}}}
}

// NotExists holds when the row does not exist.
func NotExists(table string, key Value) Cond {
	return Cond{&pb.Condition{Table: table, Key: convert.ValueToPB(key), Test: &pb.Condition_Exists{Exists: false}}}
}

// VersionIs compares the row's version (0 when absent).
func VersionIs(table string, key Value, op CompareOp, v uint64) Cond {
	return Cond{&pb.Condition{Table: table, Key: convert.ValueToPB(key), Test: &pb.Condition_Version{Version: &pb.NumberCompare{Op: cmpPB(op), Value: v}}}}
}

// ModRevisionIs compares the row's last-change revision (0 when absent).
func ModRevisionIs(table string, key Value, op CompareOp, rev uint64) Cond {
	return Cond{&pb.Condition{Table: table, Key: convert.ValueToPB(key), Test: &pb.Condition_ModRevision{ModRevision: &pb.NumberCompare{Op: cmpPB(op), Value: rev}}}}
}

// FieldIs compares a field of the row (null when the row or field is
// absent).
func FieldIs(table string, key Value, field string, op CompareOp, v Value) Cond {
	return Cond{&pb.Condition{Table: table, Key: convert.ValueToPB(key), Test: &pb.Condition_Field{Field: &pb.FieldCompare{Field: field, Op: cmpPB(op), Value: convert.ValueToPB(v)}}}}
}

// Op is a transaction operation; build it with InsertOp, UpsertOp,
// UpdateOp, DeleteOp or GetOp.
type Op struct{ o *pb.Op }

// InsertOp creates a row.
func InsertOp(table string, f Fields, opts ...WriteOption) Op {
	return Op{&pb.Op{Op: &pb.Op_Insert{Insert: &pb.InsertOp{Table: table, Fields: fieldsPB(f), TtlMs: wopts(opts).ttlMs}}}}
}

// UpsertOp creates or replaces a row.
func UpsertOp(table string, f Fields, opts ...WriteOption) Op {
	return Op{&pb.Op{Op: &pb.Op_Upsert{Upsert: &pb.UpsertOp{Table: table, Fields: fieldsPB(f), ExpectedVersion: wopts(opts).expectedVersion, TtlMs: wopts(opts).ttlMs}}}}
}

// UpdateOp changes fields of an existing row.
func UpdateOp(table string, key Value, set Fields, unset []string, opts ...WriteOption) Op {
	o := wopts(opts)
	return Op{&pb.Op{Op: &pb.Op_Update{Update: &pb.UpdateOp{Table: table, Key: convert.ValueToPB(key), Set: fieldsPB(set), Unset: unset,
		ExpectedVersion: o.expectedVersion, TtlMs: o.ttlMs, ClearTtl: o.clearTTL}}}}
}

// TouchOp sets a row's time to live (0 removes its expiry).
func TouchOp(table string, key Value, ttl time.Duration, opts ...WriteOption) Op {
	o := wopts(append(opts, WithTTL(ttl)))
	return Op{&pb.Op{Op: &pb.Op_Touch{Touch: &pb.TouchOp{Table: table, Key: convert.ValueToPB(key), TtlMs: o.ttlMs, ExpectedVersion: o.expectedVersion}}}}
}

// DeleteOp deletes a row.
func DeleteOp(table string, key Value, opts ...WriteOption) Op {
	return Op{&pb.Op{Op: &pb.Op_Delete{Delete: &pb.DeleteOp{Table: table, Key: convert.ValueToPB(key), ExpectedVersion: wopts(opts).expectedVersion}}}}
}

// GetOp reads a row inside the transaction.
func GetOp(table string, key Value) Op {
	return Op{&pb.Op{Op: &pb.Op_Get{Get: &pb.GetOp{Table: table, Key: convert.ValueToPB(key)}}}}
}

// Txn is a transaction being built: If(...).Then(...).Else(...).Commit(ctx).
type Txn struct {
	c               *Client
	conds           []*pb.Condition
	thenOps, elsOps []*pb.Op
}

// Txn starts a transaction: atomic across tables, applied once.
func (c *Client) Txn() *Txn { return &Txn{c: c} }

// If adds conditions; all must hold for Then to run.
func (t *Txn) If(cs ...Cond) *Txn {
	for _, c := range cs {
		t.conds = append(t.conds, c.c)
	}
	return t
}

// Then adds operations run when the conditions hold.
func (t *Txn) Then(ops ...Op) *Txn {
	for _, o := range ops {
		t.thenOps = append(t.thenOps, o.o)
	}
	return t
}

// Else adds operations run when a condition fails.
func (t *Txn) Else(ops ...Op) *Txn {
	for _, o := range ops {
		t.elsOps = append(t.elsOps, o.o)
	}
	return t
}

// OpResult is one operation's outcome.
type OpResult struct {
	// Meta: the row after insert, upsert or update.
	Meta Meta
	// Deleted: a delete removed a row.
	Deleted bool
	// Row: a get's row, nil when absent.
	Row *Row
}

// TxnResult is a transaction's outcome.
type TxnResult struct {
	Header Header
	// Succeeded: the conditions held and Then ran.
	Succeeded bool
	// Results: one per operation of the branch that ran.
	Results []OpResult
}

// Commit applies the transaction. If an operation of the chosen branch
// fails, nothing is applied and its error is returned.
func (t *Txn) Commit(ctx context.Context) (TxnResult, error) {
	var out TxnResult
	err := t.c.write(ctx, func(ctx context.Context, cc *grpc.ClientConn, ws *pb.WriteSession) error {
		r, err := pb.NewDataServiceClient(cc).Txn(ctx, &pb.TxnRequest{Conditions: t.conds, Then: t.thenOps, Else: t.elsOps, Session: ws})
		if err != nil {
			return err
		}
		out = TxnResult{Header: headerOf(r.Header), Succeeded: r.Succeeded, Results: make([]OpResult, len(r.Results))}
		for i, res := range r.Results {
			switch x := res.Result.(type) {
			case *pb.OpResult_Put:
				out.Results[i].Meta = metaOf(x.Put)
			case *pb.OpResult_Deleted:
				out.Results[i].Deleted = x.Deleted
			case *pb.OpResult_Get:
				if x.Get.GetFound() {
					row, err := rowOf(x.Get.Row)
					if err != nil {
						return err
					}
					out.Results[i].Row = &row
				}
			}
		}
		return nil
	})
	return out, wrap(err)
}
