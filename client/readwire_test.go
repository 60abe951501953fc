package client

import (
	"math"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
)

func randPBValue(r *rand.Rand) *pb.Value {
	switch r.IntN(10) {
	case 0:
		return nil // a map entry without a value
	case 1:
		return &pb.Value{} // no kind
	case 2:
		return &pb.Value{Kind: &pb.Value_NullValue{}}
	case 3:
		return &pb.Value{Kind: &pb.Value_StringValue{StringValue: []string{"", "x", "héllo", string(make([]byte, 300))}[r.IntN(4)]}}
	case 4:
		return &pb.Value{Kind: &pb.Value_IntValue{IntValue: int64(r.Uint64()) >> r.IntN(64)}}
	case 5:
		return &pb.Value{Kind: &pb.Value_DoubleValue{DoubleValue: []float64{0, -1.5, math.Inf(-1), math.MaxFloat64, r.NormFloat64(), math.NaN()}[r.IntN(6)]}}
	case 6:
		return &pb.Value{Kind: &pb.Value_BoolValue{BoolValue: r.IntN(2) == 0}}
	case 7:
		return &pb.Value{Kind: &pb.Value_BytesValue{BytesValue: []byte{0, 1, 2, byte(r.IntN(256))}[:r.IntN(4)]}}
	}
	// Timestamps in and out of the storable range, nanos out of range too.
	// (Never a nil one: the generated marshaler writes a broken message
	// for it, and nothing builds one.)
	return &pb.Value{Kind: &pb.Value_TimestampValue{TimestampValue: randTimestamp(r)}}
}

func randExpiry(r *rand.Rand) *timestamppb.Timestamp {
	if r.IntN(8) == 0 {
		return nil
	}
	return randTimestamp(r)
}

func randTimestamp(r *rand.Rand) *timestamppb.Timestamp {
	sec := []int64{0, -1, 1_700_000_000, math.MaxInt64 / 1_000_000_000, math.MinInt64 / 1_000_000_000, int64(r.Uint64())}[r.IntN(6)]
	nanos := []int32{0, 999_999_999, -1, 1_000_000_000, int32(r.Uint32())}[r.IntN(5)]
	return &timestamppb.Timestamp{Seconds: sec, Nanos: nanos}
}

// The hand decoder reads every BatchGetResponse as the generated decoder
// followed by rowOf does: the same rows, the same not-found results, the
// same refusals (NaN, timestamps out of range), whatever the value kinds,
// missing values and expiries, and with fields it does not know.
func TestBatchGetWireMatchesGenerated(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for round := range 3000 {
		resp := &pb.BatchGetResponse{Header: &pb.ResponseHeader{Revision: r.Uint64(), NodeId: "n1", RaftTerm: 3}}
		for range r.IntN(5) {
			res := &pb.GetResult{Found: r.IntN(4) != 0}
			if res.Found || r.IntN(8) == 0 {
				row := &pb.Row{Fields: map[string]*pb.Value{}, CreateRevision: r.Uint64N(1 << 40), ModRevision: r.Uint64N(1 << 40), Version: r.Uint64N(9)}
				for j := range r.IntN(5) {
					row.Fields[string(rune('a'+j))] = randPBValue(r)
				}
				if r.IntN(3) == 0 {
					row.ExpiresAt = randExpiry(r)
				}
				res.Row = row
			}
			resp.Results = append(resp.Results, res)
		}
		b, err := resp.MarshalVT()
		if err != nil {
			t.Fatal(err)
		}
		if r.IntN(4) == 0 {
			b = append(b, 0xf8, 0x07, 0x2a) // field 127, varint: unknown here
		}

		var want []*Row
		var wantErr error
		ref := &pb.BatchGetResponse{}
		if err := ref.UnmarshalVT(b); err != nil {
			t.Fatal(err)
		}
		for _, g := range ref.Results {
			var row *Row
			if g.Found {
				rw, err := rowOf(g.Row)
				if err != nil {
					wantErr = err
					break
				}
				row = &rw
			}
			want = append(want, row)
		}

		var got batchGetReply
		gotErr := got.UnmarshalVT(b)
		if (gotErr != nil) != (wantErr != nil) {
			t.Fatalf("round %d: error %v, want %v", round, gotErr, wantErr)
		}
		if wantErr != nil {
			continue
		}
		if len(got.rows) != len(want) {
			t.Fatalf("round %d: %d results, want %d", round, len(got.rows), len(want))
		}
		for i := range want {
			g, w := got.rows[i], want[i]
			if (g == nil) != (w == nil) {
				t.Fatalf("round %d result %d: found %v, want %v", round, i, g != nil, w != nil)
			}
			if w == nil {
				continue
			}
			if g.CreateRevision != w.CreateRevision || g.ModRevision != w.ModRevision || g.Version != w.Version || !g.ExpiresAt.Equal(w.ExpiresAt) || g.ExpiresAt.IsZero() != w.ExpiresAt.IsZero() {
				t.Fatalf("round %d result %d: meta %+v, want %+v", round, i, g.Meta, w.Meta)
			}
			if len(g.Fields) != len(w.Fields) {
				t.Fatalf("round %d result %d: fields %v, want %v", round, i, g.Fields, w.Fields)
			}
			for k, wv := range w.Fields {
				if gv, ok := g.Fields[k]; !ok || !gv.Equal(wv) {
					t.Fatalf("round %d result %d field %s: %v, want %v", round, i, k, gv, wv)
				}
			}
		}
	}
}
