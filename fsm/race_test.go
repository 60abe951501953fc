package fsm

import (
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/raft"

	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/store"
)

// Readers and snapshot persistence run while batches are applied. Every
// view must be consistent (transfers keep the total), and a snapshot taken
// at a revision must restore to exactly the state of that revision.
func TestConcurrentReadersAndSnapshots(t *testing.T) {
	h := newHarness(t)
	h.mustApply(&cmdpb.Envelope{Command: &cmdpb.Envelope_CreateTable{CreateTable: &pb.TableSchema{
		Name: "acct", PrimaryKey: "id",
		Fields: []*pb.FieldSchema{{Name: "id", Type: pb.FieldType_FIELD_TYPE_INT64}, {Name: "bal", Type: pb.FieldType_FIELD_TYPE_INT64}},
	}}})
	const accounts, total = 10, 1000
	put := func(id, bal int64) *pb.Op {
		return &pb.Op{Op: &pb.Op_Upsert{Upsert: &pb.UpsertOp{Table: "acct", Fields: map[string]*pb.Value{"id": i64(id), "bal": i64(bal)}}}}
	}
	var ops []*pb.Op
	for i := int64(0); i < accounts; i++ {
		ops = append(ops, put(i, total/accounts))
	}
	h.mustApply(&cmdpb.Envelope{Command: txn(ops...)})

	sum := func(v *store.View) int64 {
		res, err := v.Scan("acct", store.ScanOptions{})
		if err != nil || len(res.Rows) != accounts {
			t.Errorf("scan: %d rows, %v", len(res.Rows), err)
			return -1
		}
		var s int64
		for _, r := range res.Rows {
			b, _ := r.Get("bal")
			s += b.AsInt()
		}
		return s
	}

	var stop atomic.Bool
	var wg sync.WaitGroup
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if s := sum(h.f.Store().View()); s != total {
					t.Errorf("view at revision %d sums to %d", h.f.Store().View().Revision(), s)
					return
				}
			}
		}()
	}
	type snap struct {
		data []byte
		rev  uint64
	}
	// Snapshot is called on the writer's goroutine, as Raft does; Persist
	// runs on another while the writer goes on.
	toPersist := make(chan raft.FSMSnapshot, 8)
	snaps := make(chan snap, 8)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(snaps)
		for s := range toPersist {
			var sink memSink
			if err := s.Persist(&sink); err != nil {
				t.Error(err)
			}
			snaps <- snap{sink.Bytes(), s.(*fsmSnapshot).view.Revision()}
			s.Release()
		}
	}()
	hashes := map[uint64]uint64{}
	for i := 0; i < 400; i++ {
		// A transfer of 5 between two accounts, conditional on the balance,
		// batched with a few reads.
		from, to := int64(i%accounts), int64((i+3)%accounts)
		v := h.f.Store().View()
		fr, _, _ := v.Get("acct", store.Int(from))
		tr, _, _ := v.Get("acct", store.Int(to))
		fb, _ := fr.Get("bal")
		tb, _ := tr.Get("bal")
		batch := []*raft.Log{
			h.entry(&cmdpb.Envelope{Command: &cmdpb.Envelope_Txn{Txn: &cmdpb.Txn{
				Conditions: []*pb.Condition{{Table: "acct", Key: i64(from), Test: &pb.Condition_Field{Field: &pb.FieldCompare{Field: "bal", Op: pb.CompareOp_COMPARE_OP_GREATER_EQUAL, Value: i64(5)}}}},
				Then:       []*pb.Op{put(from, fb.AsInt()-5), put(to, tb.AsInt()+5)},
			}}}),
			h.entry(&cmdpb.Envelope{Command: txn(&pb.Op{Op: &pb.Op_Get{Get: &pb.GetOp{Table: "acct", Key: i64(to)}}})}),
		}
		h.f.ApplyBatch(batch)
		hash, _ := h.f.StateHash()
		hashes[h.f.Store().View().Revision()] = hash
		if i%50 == 0 {
			s, err := h.f.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			toPersist <- s
		}
	}
	close(toPersist)
	stop.Store(true)
	var got []snap
	for s := range snaps {
		got = append(got, s)
	}
	wg.Wait()
	for _, s := range got {
		g := newRestored(t, s.data)
		if sum(g.Store().View()) != total {
			t.Fatalf("snapshot at revision %d does not sum to %d", s.rev, total)
		}
		if want, ok := hashes[s.rev]; ok {
			// Sessions are not used here, so the state hash is a pure function
			// of the store at that revision.
			if h2, _ := g.StateHash(); h2 != want {
				t.Fatalf("snapshot at revision %d restores to another state", s.rev)
			}
		}
	}
	if len(got) != 8 {
		t.Fatalf("%d snapshots", len(got))
	}
}
