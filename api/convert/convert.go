// Package convert translates between the wire types of memdb.v1 and the
// store's Go types. It is shared by the state machine (decoding log
// entries) and the server (validating requests and filling responses), so
// a value means the same thing wherever it is read.
package convert

import (
	"fmt"
	"math"
	"slices"
	"time"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/store"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ErrInvalid wraps every conversion error; it is store.ErrInvalidArgument
// so that callers map it like any other invalid input.
var ErrInvalid = store.ErrInvalidArgument

// Value converts a wire value. nil and an unset kind are null.
func Value(v *pb.Value) (store.Value, error) {
	if v == nil {
		return store.Null(), nil
	}
	switch k := v.Kind.(type) {
	case nil, *pb.Value_NullValue:
		return store.Null(), nil
	case *pb.Value_StringValue:
		return store.String(k.StringValue), nil
	case *pb.Value_IntValue:
		return store.Int(k.IntValue), nil
	case *pb.Value_DoubleValue:
		if math.IsNaN(k.DoubleValue) {
			return store.Value{}, fmt.Errorf("%w: NaN is not a storable double", ErrInvalid)
		}
		return store.Double(k.DoubleValue), nil
	case *pb.Value_BoolValue:
		return store.Bool(k.BoolValue), nil
	case *pb.Value_BytesValue:
		return store.Bytes(k.BytesValue), nil
	case *pb.Value_TimestampValue:
		ts := k.TimestampValue
		if ts == nil {
			return store.Null(), nil
		}
		// Nanoseconds since 1970 must fit an int64: years 1678 to 2262.
		const maxSec = math.MaxInt64/1_000_000_000 - 1
		if ts.Nanos < 0 || ts.Nanos > 999_999_999 || ts.Seconds > maxSec || ts.Seconds < -maxSec {
			return store.Value{}, fmt.Errorf("%w: timestamp out of range (years 1678 to 2262, nanos 0 to 999999999)", ErrInvalid)
		}
		return store.TimestampNanos(ts.Seconds*1e9 + int64(ts.Nanos)), nil
	}
	return store.Value{}, fmt.Errorf("%w: unknown value kind", ErrInvalid)
}

// Values converts a list of wire values.
func Values(vs []*pb.Value) ([]store.Value, error) {
	out := make([]store.Value, len(vs))
	for i, v := range vs {
		var err error
		if out[i], err = Value(v); err != nil {
			return nil, fmt.Errorf("value %d: %w", i, err)
		}
	}
	return out, nil
}

// ValueToPB converts a store value to the wire.
func ValueToPB(v store.Value) *pb.Value {
	switch v.Kind() {
	case store.KindBool:
		return &pb.Value{Kind: &pb.Value_BoolValue{BoolValue: v.AsBool()}}
	case store.KindInt:
		return &pb.Value{Kind: &pb.Value_IntValue{IntValue: v.AsInt()}}
	case store.KindDouble:
		return &pb.Value{Kind: &pb.Value_DoubleValue{DoubleValue: v.AsDouble()}}
	case store.KindString:
		return &pb.Value{Kind: &pb.Value_StringValue{StringValue: v.AsString()}}
	case store.KindBytes:
		return &pb.Value{Kind: &pb.Value_BytesValue{BytesValue: v.AsBytes()}}
	case store.KindTimestamp:
		return &pb.Value{Kind: &pb.Value_TimestampValue{TimestampValue: timestamppb.New(v.AsTime())}}
	}
	return &pb.Value{Kind: &pb.Value_NullValue{NullValue: structpb.NullValue_NULL_VALUE}}
}

// Fields converts a wire field map, in name order so that the first error
// reported is the same on every replica.
func Fields(m map[string]*pb.Value) ([]store.Field, error) {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	out := make([]store.Field, 0, len(m))
	for _, n := range names {
		v, err := Value(m[n])
		if err != nil {
			return nil, fmt.Errorf("field %q: %w", n, err)
		}
		out = append(out, store.Field{Name: n, Value: v})
	}
	return out, nil
}

// RowToPB converts a decoded row to the wire.
func RowToPB(r store.Row) *pb.Row {
	out := &pb.Row{
		Fields:         make(map[string]*pb.Value, len(r.Fields)),
		CreateRevision: r.CreateRevision,
		ModRevision:    r.ModRevision,
		Version:        r.Version,
		ExpiresAt:      expiresToPB(r.ExpiresAt),
	}
	for _, f := range r.Fields {
		out.Fields[f.Name] = ValueToPB(f.Value)
	}
	return out
}

// MetaToPB converts a row's history to the wire.
func MetaToPB(m store.Meta) *pb.RowMeta {
	return &pb.RowMeta{CreateRevision: m.CreateRevision, ModRevision: m.ModRevision, Version: m.Version, ExpiresAt: expiresToPB(m.ExpiresAt)}
}

func expiresToPB(unixNanos int64) *timestamppb.Timestamp {
	if unixNanos == 0 {
		return nil
	}
	return timestamppb.New(time.Unix(0, unixNanos))
}

// TTL converts a time to live in milliseconds, refusing one above
// store.MaxTTL (which also keeps the conversion from overflowing).
func TTL(ms uint64) (time.Duration, error) {
	if ms > uint64(store.MaxTTL/time.Millisecond) {
		return 0, fmt.Errorf("%w: ttl_ms %d is above the limit of %d (%v)", ErrInvalid, ms, uint64(store.MaxTTL/time.Millisecond), store.MaxTTL)
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// Schema converts a wire table schema.
func Schema(s *pb.TableSchema) (store.TableSchema, error) {
	if s == nil {
		return store.TableSchema{}, fmt.Errorf("%w: schema is required", ErrInvalid)
	}
	out := store.TableSchema{Name: s.Name, PrimaryKey: s.PrimaryKey}
	for _, f := range s.Fields {
		if f.Type < pb.FieldType_FIELD_TYPE_STRING || f.Type > pb.FieldType_FIELD_TYPE_TIMESTAMP {
			return store.TableSchema{}, fmt.Errorf("%w: field %q: type must be one of STRING, INT64, DOUBLE, BOOL, BYTES, TIMESTAMP", ErrInvalid, f.Name)
		}
		out.Fields = append(out.Fields, store.FieldSchema{Name: f.Name, Type: store.FieldType(f.Type), Required: f.Required || f.Name == s.PrimaryKey})
	}
	for _, ix := range s.Indexes {
		out.Indexes = append(out.Indexes, Index(ix))
	}
	return out, nil
}

// Index converts a wire index schema.
func Index(ix *pb.IndexSchema) store.IndexSchema {
	if ix == nil {
		return store.IndexSchema{}
	}
	return store.IndexSchema{Name: ix.Name, Fields: slices.Clone(ix.Fields), Unique: ix.Unique}
}

// SchemaToPB converts a store schema to the wire.
func SchemaToPB(s store.TableSchema) *pb.TableSchema {
	out := &pb.TableSchema{Name: s.Name, PrimaryKey: s.PrimaryKey}
	for _, f := range s.Fields {
		out.Fields = append(out.Fields, &pb.FieldSchema{Name: f.Name, Type: pb.FieldType(f.Type), Required: f.Required})
	}
	for _, ix := range s.Indexes {
		out.Indexes = append(out.Indexes, &pb.IndexSchema{Name: ix.Name, Fields: slices.Clone(ix.Fields), Unique: ix.Unique})
	}
	return out
}

// TableInfoToPB converts table statistics to the wire.
func TableInfoToPB(t store.TableInfo) *pb.TableInfo {
	return &pb.TableInfo{Schema: SchemaToPB(t.Schema), RowCount: uint64(t.Rows), DataBytes: uint64(t.Bytes), CreateRevision: t.CreateRevision}
}

// Txn converts a transaction.
func Txn(conds []*pb.Condition, then, els []*pb.Op) (store.Txn, error) {
	var out store.Txn
	for i, c := range conds {
		sc, err := Condition(c)
		if err != nil {
			return store.Txn{}, fmt.Errorf("condition %d: %w", i, err)
		}
		out.Conditions = append(out.Conditions, sc)
	}
	var err error
	if out.Then, err = Ops(then); err != nil {
		return store.Txn{}, fmt.Errorf("then: %w", err)
	}
	if out.Else, err = Ops(els); err != nil {
		return store.Txn{}, fmt.Errorf("else: %w", err)
	}
	return out, nil
}

func compareOp(op pb.CompareOp) (store.CompareOp, error) {
	if op < pb.CompareOp_COMPARE_OP_EQUAL || op > pb.CompareOp_COMPARE_OP_GREATER_EQUAL {
		return 0, fmt.Errorf("%w: unknown comparison %d", ErrInvalid, op)
	}
	return store.CompareOp(op), nil
}

// Condition converts a transaction condition.
func Condition(c *pb.Condition) (store.Condition, error) {
	if c == nil {
		return store.Condition{}, fmt.Errorf("%w: empty condition", ErrInvalid)
	}
	key, err := Value(c.Key)
	if err != nil {
		return store.Condition{}, fmt.Errorf("key: %w", err)
	}
	out := store.Condition{Table: c.Table, Key: key}
	switch t := c.Test.(type) {
	case *pb.Condition_Exists:
		out.Test = store.CondNotExists
		if t.Exists {
			out.Test = store.CondExists
		}
	case *pb.Condition_Version, *pb.Condition_ModRevision, *pb.Condition_CreateRevision:
		var nc *pb.NumberCompare
		switch t := t.(type) {
		case *pb.Condition_Version:
			out.Test, nc = store.CondVersion, t.Version
		case *pb.Condition_ModRevision:
			out.Test, nc = store.CondModRevision, t.ModRevision
		case *pb.Condition_CreateRevision:
			out.Test, nc = store.CondCreateRevision, t.CreateRevision
		}
		if nc == nil {
			return store.Condition{}, fmt.Errorf("%w: empty comparison", ErrInvalid)
		}
		if out.Op, err = compareOp(nc.Op); err != nil {
			return store.Condition{}, err
		}
		out.Number = nc.Value
	case *pb.Condition_Field:
		if t.Field == nil {
			return store.Condition{}, fmt.Errorf("%w: empty field comparison", ErrInvalid)
		}
		out.Test, out.Field = store.CondField, t.Field.Field
		if out.Op, err = compareOp(t.Field.Op); err != nil {
			return store.Condition{}, err
		}
		if out.Value, err = Value(t.Field.Value); err != nil {
			return store.Condition{}, err
		}
	default:
		return store.Condition{}, fmt.Errorf("%w: condition has no test (exists, version, mod_revision, create_revision or field)", ErrInvalid)
	}
	return out, nil
}

// Ops converts transaction operations.
func Ops(ops []*pb.Op) ([]store.Op, error) {
	out := make([]store.Op, 0, len(ops))
	for i, op := range ops {
		so, err := Op(op)
		if err != nil {
			return nil, fmt.Errorf("operation %d: %w", i, err)
		}
		out = append(out, so)
	}
	return out, nil
}

// Op converts one transaction operation.
func Op(op *pb.Op) (store.Op, error) {
	if op == nil {
		return store.Op{}, fmt.Errorf("%w: empty operation", ErrInvalid)
	}
	var err error
	var out store.Op
	switch o := op.Op.(type) {
	case *pb.Op_Insert:
		out = store.Op{Kind: store.OpInsert, Table: o.Insert.GetTable()}
		if out.TTL, err = TTL(o.Insert.GetTtlMs()); err == nil {
			out.Fields, err = Fields(o.Insert.GetFields())
		}
	case *pb.Op_Upsert:
		out = store.Op{Kind: store.OpUpsert, Table: o.Upsert.GetTable(), ExpectedVersion: o.Upsert.GetExpectedVersion()}
		if out.TTL, err = TTL(o.Upsert.GetTtlMs()); err == nil {
			out.Fields, err = Fields(o.Upsert.GetFields())
		}
	case *pb.Op_Update:
		u := o.Update
		out = store.Op{Kind: store.OpUpdate, Table: u.GetTable(), ExpectedVersion: u.GetExpectedVersion(), Unset: slices.Clone(u.GetUnset()), ClearTTL: u.GetClearTtl()}
		if out.TTL, err = TTL(u.GetTtlMs()); err != nil {
			break
		}
		if out.Key, err = Value(u.GetKey()); err == nil {
			out.Fields, err = Fields(u.GetSet())
		}
	case *pb.Op_Touch:
		out = store.Op{Kind: store.OpTouch, Table: o.Touch.GetTable(), ExpectedVersion: o.Touch.GetExpectedVersion()}
		if out.TTL, err = TTL(o.Touch.GetTtlMs()); err == nil {
			out.Key, err = Value(o.Touch.GetKey())
		}
	case *pb.Op_Delete:
		out = store.Op{Kind: store.OpDelete, Table: o.Delete.GetTable(), ExpectedVersion: o.Delete.GetExpectedVersion()}
		out.Key, err = Value(o.Delete.GetKey())
	case *pb.Op_Get:
		out = store.Op{Kind: store.OpGet, Table: o.Get.GetTable()}
		out.Key, err = Value(o.Get.GetKey())
	default:
		return store.Op{}, fmt.Errorf("%w: operation has no kind (insert, upsert, update, delete, get or touch)", ErrInvalid)
	}
	return out, err
}

// OpResultToPB converts an operation's outcome to the wire.
func OpResultToPB(r store.OpResult) *pb.OpResult {
	switch r.Kind {
	case store.OpDelete:
		return &pb.OpResult{Result: &pb.OpResult_Deleted{Deleted: r.Deleted}}
	case store.OpGet:
		g := &pb.GetResult{Found: r.Found}
		if r.Found {
			g.Row = RowToPB(r.Row)
		}
		return &pb.OpResult{Result: &pb.OpResult_Get{Get: g}}
	}
	return &pb.OpResult{Result: &pb.OpResult_Put{Put: MetaToPB(r.Meta)}}
}

// Range converts a key range into scan options.
func Range(index string, r *pb.KeyRange) (store.ScanOptions, error) {
	o := store.ScanOptions{Index: index}
	if r == nil {
		return o, nil
	}
	var err error
	if o.Prefix, err = Values(r.Prefix); err != nil {
		return o, fmt.Errorf("prefix: %w", err)
	}
	if o.Start, err = Values(r.Start); err != nil {
		return o, fmt.Errorf("start: %w", err)
	}
	if o.End, err = Values(r.End); err != nil {
		return o, fmt.Errorf("end: %w", err)
	}
	o.PartialLast, o.StartExclusive, o.EndInclusive = r.PartialLast, r.StartExclusive, r.EndInclusive
	return o, nil
}
