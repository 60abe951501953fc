package convert

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/store"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestValueRefusesWhatTheStoreCannotHold(t *testing.T) {
	maxSec := int64(math.MaxInt64/1_000_000_000 - 1)
	for name, v := range map[string]*pb.Value{
		"NaN":                     {Kind: &pb.Value_DoubleValue{DoubleValue: math.NaN()}},
		"timestamp after 2262":    {Kind: &pb.Value_TimestampValue{TimestampValue: &timestamppb.Timestamp{Seconds: maxSec + 1}}},
		"timestamp before 1678":   {Kind: &pb.Value_TimestampValue{TimestampValue: &timestamppb.Timestamp{Seconds: -maxSec - 1}}},
		"negative nanos":          {Kind: &pb.Value_TimestampValue{TimestampValue: &timestamppb.Timestamp{Nanos: -1}}},
		"nanos of a whole second": {Kind: &pb.Value_TimestampValue{TimestampValue: &timestamppb.Timestamp{Nanos: 1_000_000_000}}},
	} {
		if _, err := Value(v); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err %v, want ErrInvalid", name, err)
		}
	}
	for name, v := range map[string]*pb.Value{
		"nil":             nil,
		"unset kind":      {},
		"nil timestamp":   {Kind: &pb.Value_TimestampValue{}},
		"last timestamp":  {Kind: &pb.Value_TimestampValue{TimestampValue: &timestamppb.Timestamp{Seconds: maxSec, Nanos: 999_999_999}}},
		"first timestamp": {Kind: &pb.Value_TimestampValue{TimestampValue: &timestamppb.Timestamp{Seconds: -maxSec}}},
		"infinity":        {Kind: &pb.Value_DoubleValue{DoubleValue: math.Inf(-1)}},
	} {
		if _, err := Value(v); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// randomValue draws a store value of every kind, edge values included.
func randomValue(rng *rand.Rand) store.Value {
	switch rng.IntN(7) {
	case 0:
		return store.Null()
	case 1:
		return store.Bool(rng.IntN(2) == 0)
	case 2:
		return store.Int([]int64{0, -1, math.MinInt64, math.MaxInt64, rng.Int64()}[rng.IntN(5)])
	case 3:
		return store.Double([]float64{0, math.Copysign(0, -1), math.Inf(1), math.MaxFloat64, rng.NormFloat64()}[rng.IntN(5)])
	case 4:
		b := make([]byte, rng.IntN(8))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		return store.String(string(b))
	case 5:
		b := make([]byte, rng.IntN(8))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		return store.Bytes(b)
	}
	return store.TimestampNanos(rng.Int64() - math.MaxInt64/2)
}

func TestValueRoundTripsThroughTheWire(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for range 5000 {
		v := randomValue(rng)
		// Through bytes too, as a client's value arrives.
		raw, err := proto.Marshal(ValueToPB(v))
		if err != nil {
			t.Fatal(err)
		}
		var w pb.Value
		if err := proto.Unmarshal(raw, &w); err != nil {
			t.Fatal(err)
		}
		got, err := Value(&w)
		if err != nil {
			t.Fatalf("%v: %v", v, err)
		}
		if !got.Equal(v) {
			t.Fatalf("%v came back as %v", v, got)
		}
	}
}

func TestTTLLimit(t *testing.T) {
	limit := uint64(store.MaxTTL / time.Millisecond)
	if d, err := TTL(limit); err != nil || d != store.MaxTTL.Truncate(time.Millisecond) {
		t.Fatalf("TTL(limit) = %v, %v", d, err)
	}
	for _, ms := range []uint64{limit + 1, math.MaxUint64} {
		if _, err := TTL(ms); !errors.Is(err, ErrInvalid) {
			t.Fatalf("TTL(%d): %v, want ErrInvalid", ms, err)
		}
	}
}

func TestEmptyAndUnknownPartsAreRefused(t *testing.T) {
	for name, err := range map[string]error{
		"nil condition":        second(Condition(nil)),
		"condition, no test":   second(Condition(&pb.Condition{Table: "t"})),
		"empty version test":   second(Condition(&pb.Condition{Test: &pb.Condition_Version{}})),
		"empty field test":     second(Condition(&pb.Condition{Test: &pb.Condition_Field{}})),
		"unknown comparison":   second(Condition(&pb.Condition{Test: &pb.Condition_Version{Version: &pb.NumberCompare{Op: 99}}})),
		"negative comparison":  second(Condition(&pb.Condition{Test: &pb.Condition_ModRevision{ModRevision: &pb.NumberCompare{Op: -1}}})),
		"NaN key":              second(Condition(&pb.Condition{Key: &pb.Value{Kind: &pb.Value_DoubleValue{DoubleValue: math.NaN()}}, Test: &pb.Condition_Exists{}})),
		"nil op":               second(Op(nil)),
		"op without a kind":    second(Op(&pb.Op{})),
		"TTL above the limit":  second(Op(&pb.Op{Op: &pb.Op_Upsert{Upsert: &pb.UpsertOp{TtlMs: math.MaxUint64}}})),
		"NaN field":            second(Op(&pb.Op{Op: &pb.Op_Insert{Insert: &pb.InsertOp{Fields: map[string]*pb.Value{"x": {Kind: &pb.Value_DoubleValue{DoubleValue: math.NaN()}}}}}})),
		"nil schema":           second(Schema(nil)),
		"field type 0":         second(Schema(&pb.TableSchema{Fields: []*pb.FieldSchema{{Name: "x"}}})),
		"field type too large": second(Schema(&pb.TableSchema{Fields: []*pb.FieldSchema{{Name: "x", Type: 99}}})),
		"NaN range start":      second(Range("ix", &pb.KeyRange{Start: []*pb.Value{{Kind: &pb.Value_DoubleValue{DoubleValue: math.NaN()}}}})),
	} {
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err %v, want ErrInvalid", name, err)
		}
	}
}

func second[T any](_ T, err error) error { return err }

func TestTxnConvertsEveryOperationKind(t *testing.T) {
	key := &pb.Value{Kind: &pb.Value_StringValue{StringValue: "k"}}
	ops := []*pb.Op{
		{Op: &pb.Op_Insert{Insert: &pb.InsertOp{Table: "t", TtlMs: 1500}}},
		{Op: &pb.Op_Upsert{Upsert: &pb.UpsertOp{Table: "t", ExpectedVersion: 3}}},
		{Op: &pb.Op_Update{Update: &pb.UpdateOp{Table: "t", Key: key, Unset: []string{"a"}, ClearTtl: true}}},
		{Op: &pb.Op_Touch{Touch: &pb.TouchOp{Table: "t", Key: key, TtlMs: 10}}},
		{Op: &pb.Op_Delete{Delete: &pb.DeleteOp{Table: "t", Key: key}}},
		{Op: &pb.Op_Get{Get: &pb.GetOp{Table: "t", Key: key}}},
	}
	conds := []*pb.Condition{
		{Table: "t", Key: key, Test: &pb.Condition_Exists{Exists: true}},
		{Table: "t", Key: key, Test: &pb.Condition_CreateRevision{CreateRevision: &pb.NumberCompare{Op: pb.CompareOp_COMPARE_OP_GREATER_EQUAL, Value: 4}}},
	}
	txn, err := Txn(conds, ops, ops[:1])
	if err != nil {
		t.Fatal(err)
	}
	kinds := []store.OpKind{store.OpInsert, store.OpUpsert, store.OpUpdate, store.OpTouch, store.OpDelete, store.OpGet}
	if len(txn.Then) != len(kinds) || len(txn.Else) != 1 || len(txn.Conditions) != 2 {
		t.Fatalf("txn %+v", txn)
	}
	for i, k := range kinds {
		if txn.Then[i].Kind != k || txn.Then[i].Table != "t" {
			t.Errorf("op %d: %+v, want kind %v", i, txn.Then[i], k)
		}
	}
	if txn.Then[0].TTL != 1500*time.Millisecond || txn.Then[1].ExpectedVersion != 3 || !txn.Then[2].ClearTTL ||
		txn.Then[2].Unset[0] != "a" || txn.Then[3].TTL != 10*time.Millisecond {
		t.Fatalf("op details lost: %+v", txn.Then)
	}
	if c := txn.Conditions[1]; c.Test != store.CondCreateRevision || c.Number != 4 || c.Op != store.CompareOp(pb.CompareOp_COMPARE_OP_GREATER_EQUAL) {
		t.Fatalf("condition %+v", c)
	}
	// An error names where it is.
	ops[4] = &pb.Op{}
	if _, err := Txn(conds, ops, nil); err == nil || err.Error() == "" || !errors.Is(err, ErrInvalid) {
		t.Fatalf("err %v", err)
	} else if want := "then: operation 4: "; len(err.Error()) < len(want) || err.Error()[:len(want)] != want {
		t.Fatalf("err %q does not start with %q", err, want)
	}
}

func TestSchemaRoundTrip(t *testing.T) {
	in := &pb.TableSchema{Name: "users", PrimaryKey: "id",
		Fields: []*pb.FieldSchema{
			{Name: "id", Type: pb.FieldType_FIELD_TYPE_STRING},
			{Name: "age", Type: pb.FieldType_FIELD_TYPE_INT64, Required: true},
			{Name: "seen", Type: pb.FieldType_FIELD_TYPE_TIMESTAMP},
		},
		Indexes: []*pb.IndexSchema{{Name: "by_age", Fields: []string{"age", "seen"}, Unique: true}}}
	s, err := Schema(in)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Fields[0].Required {
		t.Fatalf("the primary key is not required: %+v", s.Fields[0])
	}
	out := SchemaToPB(s)
	in.Fields[0].Required = true // as the store holds it
	if !proto.Equal(in, out) {
		t.Fatalf("schema came back as %v", out)
	}
}

// FuzzRequests decodes arbitrary bytes as the requests whose parts this
// package converts: nothing may panic, and every refusal is ErrInvalid
// (a client's InvalidArgument), never an internal error.
func FuzzRequests(f *testing.F) {
	seed := []proto.Message{
		&pb.TxnRequest{Conditions: []*pb.Condition{{Table: "t", Test: &pb.Condition_Field{Field: &pb.FieldCompare{Field: "a", Op: pb.CompareOp_COMPARE_OP_LESS, Value: &pb.Value{Kind: &pb.Value_DoubleValue{DoubleValue: 1}}}}}},
			Then: []*pb.Op{{Op: &pb.Op_Update{Update: &pb.UpdateOp{Table: "t", Set: map[string]*pb.Value{"b": {Kind: &pb.Value_TimestampValue{TimestampValue: timestamppb.Now()}}}}}}}},
		&pb.ScanRequest{Table: "t", Index: "ix", Range: &pb.KeyRange{Prefix: []*pb.Value{{Kind: &pb.Value_IntValue{IntValue: 3}}}}},
		&pb.CreateTableRequest{Schema: &pb.TableSchema{Name: "t", PrimaryKey: "k", Fields: []*pb.FieldSchema{{Name: "k", Type: pb.FieldType_FIELD_TYPE_BYTES}}}},
	}
	for i, m := range seed {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(i), b)
	}
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		var err error
		switch which % 3 {
		case 0:
			var req pb.TxnRequest
			if proto.Unmarshal(data, &req) != nil {
				return
			}
			_, err = Txn(req.Conditions, req.Then, req.Else)
		case 1:
			var req pb.ScanRequest
			if proto.Unmarshal(data, &req) != nil {
				return
			}
			_, err = Range(req.Index, req.Range)
		case 2:
			var req pb.CreateTableRequest
			if proto.Unmarshal(data, &req) != nil {
				return
			}
			_, err = Schema(req.Schema)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("refusal %v is not ErrInvalid", err)
		}
	})
}
