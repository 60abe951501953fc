package fsm

import (
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
)

// FuzzApply feeds arbitrary bytes to the state machine as a log entry. It
// must never panic, and an entry that fails must leave the state unchanged.
func FuzzApply(f *testing.F) {
	seeds := []*cmdpb.Envelope{
		{Command: txn(insert("a", "a@x", 1))},
		{Command: txn(upsert("b", "a@x", 2), &pb.Op{Op: &pb.Op_Delete{Delete: &pb.DeleteOp{Table: "users", Key: str("a")}}})},
		{Session: sess("c", 1, 1), Command: txn(&pb.Op{Op: &pb.Op_Update{Update: &pb.UpdateOp{Table: "users", Key: str("a"), Set: map[string]*pb.Value{"n": i64(5)}, Unset: []string{"email"}}}})},
		{Command: &cmdpb.Envelope_Txn{Txn: &cmdpb.Txn{
			Conditions: []*pb.Condition{{Table: "users", Key: str("a"), Test: &pb.Condition_Field{Field: &pb.FieldCompare{Field: "n", Op: pb.CompareOp_COMPARE_OP_GREATER, Value: i64(0)}}}},
			Then:       []*pb.Op{upsert("x", "x@x", 1)},
			Else:       []*pb.Op{{Op: &pb.Op_Get{Get: &pb.GetOp{Table: "users", Key: str("a")}}}},
		}}},
		{Command: &cmdpb.Envelope_CreateIndex{CreateIndex: &cmdpb.CreateIndex{Table: "users", Index: &pb.IndexSchema{Name: "by_n", Fields: []string{"n", "email"}}}}},
		{Command: &cmdpb.Envelope_CreateTable{CreateTable: &pb.TableSchema{Name: "t", PrimaryKey: "k", Fields: []*pb.FieldSchema{{Name: "k", Type: pb.FieldType_FIELD_TYPE_BYTES}}}}},
		{Command: &cmdpb.Envelope_DropTable{DropTable: &cmdpb.DropTable{Table: "users"}}},
	}
	for _, env := range seeds {
		env.Version = CommandVersion
		b, err := proto.Marshal(env)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h := newHarness(t)
		h.createUsers()
		h.mustApply(&cmdpb.Envelope{Command: txn(insert("a", "a@x", 1))})
		before := h.f.Store().View().Hash()
		h.index++
		r, ok := h.f.ApplyBatch([]*raft.Log{{Index: h.index, Type: raft.LogCommand, Data: data}})[0].(*cmdpb.Result)
		if !ok {
			t.Fatal("no result")
		}
		if r.ErrorReason != "" && h.f.Store().View().Hash() != before {
			t.Fatalf("failed entry (%s: %s) changed the state", r.ErrorReason, r.ErrorMessage)
		}
		if r.ErrorReason == "" && h.f.Halted() != nil {
			t.Fatal("halted without an error result")
		}
		// Whatever happened, the state still snapshots and restores.
		if h.f.Halted() == nil {
			want, _ := h.f.StateHash()
			g := newRestored(t, snapshotBytes(t, h.f))
			if got, _ := g.StateHash(); got != want {
				t.Fatal("snapshot round trip changed the state")
			}
		}
	})
}

// FuzzRestore feeds arbitrary bytes to Restore: an error, never a panic or
// a partly restored state.
func FuzzRestore(f *testing.F) {
	f.Add(snapshotBytes(f, populated(f, 3).f))
	f.Add(snapshotBytes(f, newHarness(f).f))
	f.Add([]byte("MEMDBSNP\x00\x00\x00\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		h := newHarness(t)
		h.createUsers()
		want, _ := h.f.StateHash()
		if err := restoreBytes(h.f, data); err != nil {
			if got, _ := h.f.StateHash(); got != want {
				t.Fatal("failed restore changed the state")
			}
			return
		}
		// Accepted: the restored state must snapshot to the same state.
		got, _ := h.f.StateHash()
		g := newRestored(t, snapshotBytes(t, h.f))
		if again, _ := g.StateHash(); again != got {
			t.Fatal("accepted snapshot does not round-trip")
		}
	})
}
