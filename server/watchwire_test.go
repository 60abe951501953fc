package server

import (
	"math"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/memdbd/memdbd/api/convert"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/store"
	"github.com/memdbd/memdbd/watch"
)

// eventToPB is the reference: the event built with the generated code.
func eventToPB(e *watch.Event, pk string, prev bool) (*pb.Event, error) {
	out := &pb.Event{Revision: e.Rev, Expired: e.Expired}
	if e.Row != "" {
		r, err := store.DecodeRow(e.Row, pk)
		if err != nil {
			return nil, err
		}
		out.Row = convert.RowToPB(r)
	} else {
		out.Type = pb.Event_TYPE_DELETE
		k, err := store.DecodeKey(e.Key)
		if err != nil {
			return nil, err
		}
		out.Row = &pb.Row{Fields: map[string]*pb.Value{pk: convert.ValueToPB(k)}}
	}
	if prev && e.Prev != "" {
		r, err := store.DecodeRow(e.Prev, pk)
		if err != nil {
			return nil, err
		}
		out.PrevRow = convert.RowToPB(r)
	}
	return out, nil
}

func randValue(r *rand.Rand) store.Value {
	switch r.IntN(7) {
	case 0:
		return store.Null()
	case 1:
		return store.Bool(r.IntN(2) == 0)
	case 2:
		return store.Int(int64(r.Uint64()) >> r.IntN(64))
	case 3:
		return store.Double([]float64{0, -1.5, math.Inf(1), math.MaxFloat64, r.NormFloat64()}[r.IntN(5)])
	case 4:
		return store.String([]string{"", "x", "héllo", string(make([]byte, 300))}[r.IntN(4)])
	case 5:
		return store.Bytes([]byte{0, 1, 2, byte(r.IntN(256))}[:r.IntN(4)])
	}
	return store.TimestampNanos(int64(r.Uint64()>>1) * []int64{1, -1}[r.IntN(2)] / (1 << r.IntN(40)))
}

// The hand-written wire form decodes to exactly what the generated code
// would have sent, for every value kind, deletes, previous rows, expiry
// and revisions.
func TestWatchWireMatchesProto(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 300 {
		s, _ := store.New(store.Options{TrackChanges: true})
		b := s.Begin()
		sc := store.TableSchema{Name: "t", PrimaryKey: "id", Fields: []store.FieldSchema{{Name: "id", Type: store.TypeString}}}
		if err := b.CreateTable(1, sc); err != nil {
			t.Fatal(err)
		}
		b.SetTime(1_700_000_000_123_456_789)
		rev := uint64(1)
		for i := range 1 + r.IntN(4) {
			fields := []store.Field{{Name: "id", Value: store.String(string(rune('a' + i%3)))}}
			for j := range r.IntN(5) {
				fields = append(fields, store.Field{Name: string(rune('k' + j)), Value: randValue(r)})
			}
			op := store.Op{Kind: store.OpUpsert, Table: "t", Fields: fields}
			if r.IntN(3) == 0 {
				op = store.Op{Kind: store.OpDelete, Table: "t", Key: fields[0].Value}
			}
			if r.IntN(2) == 0 {
				op.TTL = 1e9
			}
			rev++
			if _, err := b.Txn(rev, store.Txn{Then: []store.Op{op}}); err != nil && op.Kind != store.OpDelete {
				t.Fatal(err)
			}
		}
		changes := b.Changes()
		b.Commit()
		evs := make([]watch.Event, len(changes))
		for i, c := range changes {
			evs[i] = watch.Event{Rev: c.Revision, Key: c.Key, Row: c.Row, Prev: c.Prev, Expired: round%5 == 0}
		}
		prev := round%2 == 0
		// A fragment leaves the revision unset.
		fragment, msgRev := round%3 == 0, rev
		if fragment {
			msgRev = 0
		}
		buf, err := encodeWatchEvents(nil, evs, "id", prev, msgRev, fragment)
		if err != nil {
			t.Fatal(err)
		}
		var got pb.WatchResponse
		if err := proto.Unmarshal(buf, &got); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		want := &pb.WatchResponse{Revision: msgRev, Fragment: fragment}
		for i := range evs {
			e, err := eventToPB(&evs[i], "id", prev)
			if err != nil {
				t.Fatal(err)
			}
			want.Events = append(want.Events, e)
		}
		if !proto.Equal(&got, want) {
			t.Fatalf("round %d:\n got %v\nwant %v", round, &got, want)
		}
	}
}

func BenchmarkWatchEventEncoding(b *testing.B) {
	s, _ := store.New(store.Options{TrackChanges: true})
	bt := s.Begin()
	_ = bt.CreateTable(1, store.TableSchema{Name: "t", PrimaryKey: "k", Fields: []store.FieldSchema{{Name: "k", Type: store.TypeString}}})
	_, _ = bt.Txn(2, store.Txn{Then: []store.Op{{Kind: store.OpUpsert, Table: "t", Fields: []store.Field{
		{Name: "k", Value: store.String("00001234")}, {Name: "n", Value: store.Int(42)}, {Name: "v", Value: store.Bytes(make([]byte, 256))}}}}})
	c := bt.Changes()[0]
	bt.Commit()
	evs := []watch.Event{{Rev: 2, Key: c.Key, Row: c.Row}}
	b.Run("generated", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			e, _ := eventToPB(&evs[0], "k", false)
			if _, err := proto.Marshal(&pb.WatchResponse{Events: []*pb.Event{e}, Revision: 2}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("wire", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := encodeWatchEvents(nil, evs, "k", false, 2, false); err != nil {
				b.Fatal(err)
			}
		}
	})
}
