package fsm

import (
	"bytes"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/types/known/structpb"

	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
)

// logTime0 is the log time of the first test entry.
var logTime0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// harness feeds a state machine log entries with increasing indexes.
type harness struct {
	t     testing.TB
	f     *FSM
	index uint64
	now   time.Time
	log   []*raft.Log // every entry built, for replay on another replica
	// level is the feature level entries are encoded at
	// (MaxCommandVersion unless a test sets it).
	level uint32
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Logger = slog.New(slog.DiscardHandler)
	f, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, f: f, now: logTime0, level: MaxCommandVersion}
}

func (h *harness) entry(env *cmdpb.Envelope) *raft.Log {
	h.t.Helper()
	b, err := Encode(env, h.now, h.level)
	if err != nil {
		h.t.Fatal(err)
	}
	h.index++
	l := &raft.Log{Index: h.index, Term: 1, Type: raft.LogCommand, Data: b}
	h.log = append(h.log, l)
	return l
}

// apply applies one envelope and returns its result.
func (h *harness) apply(env *cmdpb.Envelope) *cmdpb.Result {
	h.t.Helper()
	out := h.f.ApplyBatch([]*raft.Log{h.entry(env)})
	r, ok := out[0].(*cmdpb.Result)
	if !ok {
		h.t.Fatalf("result is %T", out[0])
	}
	return r
}

// mustApply applies an envelope that must succeed.
func (h *harness) mustApply(env *cmdpb.Envelope) *cmdpb.Result {
	h.t.Helper()
	r := h.apply(env)
	if r.ErrorReason != "" {
		h.t.Fatalf("apply failed: %s: %s", r.ErrorReason, r.ErrorMessage)
	}
	return r
}

func (h *harness) createUsers() {
	h.t.Helper()
	h.mustApply(&cmdpb.Envelope{Command: &cmdpb.Envelope_CreateTable{CreateTable: usersSchema()}})
}

func usersSchema() *pb.TableSchema {
	return &pb.TableSchema{
		Name: "users", PrimaryKey: "id",
		Fields: []*pb.FieldSchema{
			{Name: "id", Type: pb.FieldType_FIELD_TYPE_STRING},
			{Name: "email", Type: pb.FieldType_FIELD_TYPE_STRING},
			{Name: "n", Type: pb.FieldType_FIELD_TYPE_INT64},
		},
		Indexes: []*pb.IndexSchema{{Name: "by_email", Fields: []string{"email"}, Unique: true}},
	}
}

func str(s string) *pb.Value { return &pb.Value{Kind: &pb.Value_StringValue{StringValue: s}} }
func i64(i int64) *pb.Value  { return &pb.Value{Kind: &pb.Value_IntValue{IntValue: i}} }
func null() *pb.Value {
	return &pb.Value{Kind: &pb.Value_NullValue{NullValue: structpb.NullValue_NULL_VALUE}}
}
func txn(ops ...*pb.Op) *cmdpb.Envelope_Txn {
	return &cmdpb.Envelope_Txn{Txn: &cmdpb.Txn{Then: ops}}
}

func upsert(id, email string, n int64) *pb.Op {
	return &pb.Op{Op: &pb.Op_Upsert{Upsert: &pb.UpsertOp{Table: "users", Fields: map[string]*pb.Value{"id": str(id), "email": str(email), "n": i64(n)}}}}
}

func insert(id, email string, n int64) *pb.Op {
	return &pb.Op{Op: &pb.Op_Insert{Insert: &pb.InsertOp{Table: "users", Fields: map[string]*pb.Value{"id": str(id), "email": str(email), "n": i64(n)}}}}
}

func sess(id string, seq, first uint64) *pb.WriteSession {
	return &pb.WriteSession{ClientId: []byte(id), Seq: seq, FirstIncompleteSeq: first}
}

// memSink is a raft.SnapshotSink over a buffer.
type memSink struct {
	bytes.Buffer
	cancelled, closed bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { s.closed = true; return nil }

var _ raft.SnapshotSink = (*memSink)(nil)

// snapshotBytes persists a snapshot of f.
func snapshotBytes(t testing.TB, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	if !sink.closed || sink.cancelled {
		t.Fatalf("sink closed=%v cancelled=%v", sink.closed, sink.cancelled)
	}
	return sink.Bytes()
}

func restoreBytes(f *FSM, b []byte) error {
	return f.Restore(io.NopCloser(bytes.NewReader(b)))
}
