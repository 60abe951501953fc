package fsm

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/store"
)

func TestApplyCommands(t *testing.T) {
	h := newHarness(t)
	h.createUsers()
	r := h.mustApply(&cmdpb.Envelope{Command: txn(insert("a", "a@x", 1), upsert("b", "b@x", 2))})
	if r.Revision != 2 || len(r.Results) != 2 || r.Results[0].GetPut().GetVersion() != 1 || r.Results[1].GetPut().GetCreateRevision() != 2 {
		t.Fatalf("unexpected result %v", r)
	}
	v := h.f.Store().View()
	if v.Revision() != 2 || h.f.Applied() != 2 {
		t.Fatalf("revision %d applied %d, want 2", v.Revision(), h.f.Applied())
	}
	row, ok, err := v.Get("users", store.String("a"))
	if err != nil || !ok {
		t.Fatalf("get a: %v %v", ok, err)
	}
	if e, _ := row.Get("email"); e.AsString() != "a@x" || row.ModRevision != 2 {
		t.Fatalf("row a = %+v", row)
	}

	cases := []struct {
		name   string
		env    *cmdpb.Envelope
		reason string
	}{
		{"duplicate insert", &cmdpb.Envelope{Command: txn(insert("a", "z@x", 1))}, pb.ReasonRowExists},
		{"unique violation", &cmdpb.Envelope{Command: txn(upsert("c", "a@x", 1))}, pb.ReasonUniqueViolation},
		{"unknown table", &cmdpb.Envelope{Command: &cmdpb.Envelope_DropTable{DropTable: &cmdpb.DropTable{Table: "nope"}}}, pb.ReasonTableNotFound},
		{"table exists", &cmdpb.Envelope{Command: &cmdpb.Envelope_CreateTable{CreateTable: usersSchema()}}, pb.ReasonTableExists},
		{"type mismatch", &cmdpb.Envelope{Command: txn(&pb.Op{Op: &pb.Op_Upsert{Upsert: &pb.UpsertOp{Table: "users", Fields: map[string]*pb.Value{"id": str("d"), "n": str("x")}}}})}, pb.ReasonTypeMismatch},
		{"invalid utf8", &cmdpb.Envelope{Command: txn(upsert("e", "\xff\xfe", 1))}, pb.ReasonInvalidArgument},
		{"no command", &cmdpb.Envelope{}, pb.ReasonInvalidArgument},
		{"empty op", &cmdpb.Envelope{Command: txn(&pb.Op{})}, pb.ReasonInvalidArgument},
		{"index exists", &cmdpb.Envelope{Command: &cmdpb.Envelope_CreateIndex{CreateIndex: &cmdpb.CreateIndex{Table: "users", Index: &pb.IndexSchema{Name: "by_email", Fields: []string{"email"}}}}}, pb.ReasonIndexExists},
		{"index unknown", &cmdpb.Envelope{Command: &cmdpb.Envelope_DropIndex{DropIndex: &cmdpb.DropIndex{Table: "users", Index: "nope"}}}, pb.ReasonIndexNotFound},
		{"null key", &cmdpb.Envelope{Command: txn(&pb.Op{Op: &pb.Op_Delete{Delete: &pb.DeleteOp{Table: "users", Key: null()}}})}, pb.ReasonTypeMismatch},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := h.f.Store().View().Hash()
			r := h.apply(tc.env)
			if r.ErrorReason != tc.reason {
				t.Fatalf("reason %q (%s), want %q", r.ErrorReason, r.ErrorMessage, tc.reason)
			}
			if r.Revision != h.index || h.f.Store().View().Revision() != h.index {
				t.Fatalf("revision %d, view %d, want %d", r.Revision, h.f.Store().View().Revision(), h.index)
			}
			if after := h.f.Store().View().Hash(); after != before {
				t.Fatal("a failed command changed the state")
			}
			if ResultError(r) == nil {
				t.Fatal("ResultError is nil for a failed result")
			}
		})
	}
}

func TestCommandErrorIs(t *testing.T) {
	h := newHarness(t)
	h.createUsers()
	h.mustApply(&cmdpb.Envelope{Command: txn(insert("a", "a@x", 1))})
	err := ResultError(h.apply(&cmdpb.Envelope{Command: txn(insert("a", "b@x", 1))}))
	if !errors.Is(err, store.ErrRowExists) || errors.Is(err, store.ErrRowNotFound) {
		t.Fatalf("errors.Is mismatch for %v", err)
	}
}

func TestUndecodableBytesChangeNothing(t *testing.T) {
	h := newHarness(t)
	h.createUsers()
	before := h.f.Store().View().Hash()
	for i, data := range [][]byte{nil, {0xff}, []byte("garbage garbage"), {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}} {
		h.index++
		out := h.f.ApplyBatch([]*raft.Log{{Index: h.index, Type: raft.LogCommand, Data: data}})
		r := out[0].(*cmdpb.Result)
		if r.ErrorReason != pb.ReasonInvalidArgument {
			t.Fatalf("case %d: reason %q", i, r.ErrorReason)
		}
	}
	if h.f.Store().View().Hash() != before {
		t.Fatal("undecodable entries changed the state")
	}
	if h.f.Halted() != nil {
		t.Fatal("undecodable entries halted the state machine")
	}
}

func TestUnknownVersionHalts(t *testing.T) {
	h := newHarness(t)
	h.createUsers()
	before := h.f.Store().View().Hash()
	b, err := proto.Marshal(&cmdpb.Envelope{Version: MaxCommandVersion + 1, Command: txn(insert("a", "a@x", 1))})
	if err != nil {
		t.Fatal(err)
	}
	h.index++
	out := h.f.ApplyBatch([]*raft.Log{{Index: h.index, Type: raft.LogCommand, Data: b}, h.entry(&cmdpb.Envelope{Command: txn(insert("b", "b@x", 1))})})
	for i, o := range out {
		if r := o.(*cmdpb.Result); r.ErrorReason != pb.ReasonHalted {
			t.Fatalf("entry %d: reason %q, want HALTED", i, r.ErrorReason)
		}
	}
	if err := h.f.Halted(); !errors.Is(err, ErrHalted) || !strings.Contains(err.Error(), "upgraded") {
		t.Fatalf("Halted() = %v", err)
	}
	if h.f.Store().View().Hash() != before {
		t.Fatal("a halted state machine changed the state")
	}
	if _, err := h.f.Snapshot(); !errors.Is(err, ErrHalted) {
		t.Fatalf("Snapshot on a halted FSM: %v", err)
	}
}

func TestConfigurationEntriesAdvance(t *testing.T) {
	h := newHarness(t)
	h.index = 5
	h.f.ApplyBatch([]*raft.Log{{Index: 5, Type: raft.LogConfiguration, Data: []byte("cfg")}})
	if h.f.Applied() != 5 || h.f.Store().View().Revision() != 5 {
		t.Fatalf("applied %d revision %d", h.f.Applied(), h.f.Store().View().Revision())
	}
}

func TestExactlyOnce(t *testing.T) {
	h := newHarness(t)
	h.createUsers()
	w := func(seq, first uint64, op *pb.Op) *cmdpb.Result {
		return h.apply(&cmdpb.Envelope{Session: sess("client-1", seq, first), Command: txn(op)})
	}
	r1 := w(1, 1, insert("a", "a@x", 1))
	if r1.ErrorReason != "" {
		t.Fatal(r1.ErrorMessage)
	}
	// The reply was lost; the client retries the same sequence number.
	r1b := w(1, 1, insert("a", "a@x", 1))
	if !proto.Equal(r1, r1b) {
		t.Fatalf("retry answered %v, first attempt %v", r1b, r1)
	}
	row, _, _ := h.f.Store().View().Get("users", store.String("a"))
	if row.Version != 1 {
		t.Fatalf("retried insert applied twice: version %d", row.Version)
	}
	// A failed write is remembered too: its retry fails the same way even
	// though the state has changed since.
	r2 := w(2, 1, insert("a", "other@x", 1))
	if r2.ErrorReason != pb.ReasonRowExists {
		t.Fatalf("reason %q", r2.ErrorReason)
	}
	h.mustApply(&cmdpb.Envelope{Command: txn(&pb.Op{Op: &pb.Op_Delete{Delete: &pb.DeleteOp{Table: "users", Key: str("a")}}})})
	if r := w(2, 1, insert("a", "other@x", 1)); !proto.Equal(r, r2) {
		t.Fatalf("retry of a failed write answered %v", r)
	}
	if _, ok, _ := h.f.Store().View().Get("users", store.String("a")); ok {
		t.Fatal("retry of a failed insert was applied")
	}
	// Non-idempotent writes out of order: seq 4 before 3, then both retried.
	inc := func(n int64) *pb.Op { return upsert("ctr", "ctr@x", n) }
	r4 := w(4, 3, inc(4))
	r3 := w(3, 3, inc(3))
	if r4.ErrorReason != "" || r3.ErrorReason != "" {
		t.Fatal("out of order writes failed")
	}
	if r := w(4, 3, inc(4)); !proto.Equal(r, r4) {
		t.Fatal("retry of seq 4 not deduplicated")
	}
	row, _, _ = h.f.Store().View().Get("users", store.String("ctr"))
	if row.Version != 2 {
		t.Fatalf("ctr version %d, want 2", row.Version)
	}
	// Acknowledging up to 5 forgets 1..4; a late duplicate of 3 is refused.
	if r := w(5, 5, inc(5)); r.ErrorReason != "" {
		t.Fatal(r.ErrorMessage)
	}
	before := h.f.Store().View().Hash()
	if r := w(3, 5, inc(3)); r.ErrorReason != pb.ReasonStaleSequence {
		t.Fatalf("late duplicate: reason %q", r.ErrorReason)
	}
	if h.f.Store().View().Hash() != before {
		t.Fatal("a stale duplicate changed the state")
	}
	if n := len(h.f.sessions["client-1"].results); n != 1 {
		t.Fatalf("%d results kept after acknowledgement, want 1", n)
	}
}

func TestSessionValidationAndLimits(t *testing.T) {
	h := newHarness(t)
	h.f.cfg.MaxSessions = 2
	h.f.cfg.MaxResultsPerSession = 2
	h.createUsers()
	cases := []struct {
		s      *pb.WriteSession
		reason string
	}{
		{sess("", 1, 1), pb.ReasonInvalidArgument},
		{sess(strings.Repeat("x", 65), 1, 1), pb.ReasonInvalidArgument},
		{sess("c", 0, 0), pb.ReasonInvalidArgument},
	}
	for _, tc := range cases {
		if r := h.apply(&cmdpb.Envelope{Session: tc.s, Command: txn(upsert("a", "a@x", 1))}); r.ErrorReason != tc.reason {
			t.Fatalf("session %v: reason %q want %q", tc.s, r.ErrorReason, tc.reason)
		}
	}
	h.mustApply(&cmdpb.Envelope{Session: sess("c1", 1, 1), Command: txn(upsert("a", "a@x", 1))})
	h.mustApply(&cmdpb.Envelope{Session: sess("c1", 2, 1), Command: txn(upsert("a", "a@x", 2))})
	if r := h.apply(&cmdpb.Envelope{Session: sess("c1", 3, 1), Command: txn(upsert("a", "a@x", 3))}); r.ErrorReason != pb.ReasonSessionLimit {
		t.Fatalf("results limit: %q", r.ErrorReason)
	}
	h.mustApply(&cmdpb.Envelope{Session: sess("c2", 1, 1), Command: txn(upsert("b", "b@x", 1))})
	// A full table makes room for a new client (session_test.go has the
	// eviction order): c1 and c2 were last seen at the same log time, and
	// c1 sorts first.
	h.mustApply(&cmdpb.Envelope{Session: sess("c3", 1, 1), Command: txn(upsert("c", "c@x", 1))})
	if _, ok := h.f.sessions["c1"]; ok || len(h.f.sessions) != 2 || h.f.SessionsEvicted() != 1 {
		t.Fatalf("after a session over the limit: %d sessions, c1 kept %v, %d evicted", len(h.f.sessions), ok, h.f.SessionsEvicted())
	}
}

// Sessions expire by log time, identically on replicas that applied the
// same entries, whatever their own clocks say.
func TestSessionExpiryIsDeterministic(t *testing.T) {
	a, b := newHarness(t), newHarness(t)
	a.createUsers()
	a.now = a.now.Add(time.Minute)
	a.mustApply(&cmdpb.Envelope{Session: sess("old", 1, 1), Command: txn(upsert("a", "a@x", 1))})
	a.now = a.now.Add(30 * time.Minute)
	a.mustApply(&cmdpb.Envelope{Session: sess("new", 1, 1), Command: txn(upsert("b", "b@x", 1))})
	// A leader with a slower clock proposes: log time does not go back.
	a.now = a.now.Add(-10 * time.Minute)
	a.mustApply(&cmdpb.Envelope{Command: &cmdpb.Envelope_Tick{Tick: &cmdpb.Tick{}}})
	a.now = a.now.Add(45 * time.Minute)
	a.mustApply(&cmdpb.Envelope{Command: &cmdpb.Envelope_Tick{Tick: &cmdpb.Tick{}}})
	if _, ok := a.f.sessions["old"]; ok {
		t.Fatal("session idle for more than the TTL of log time was kept")
	}
	if _, ok := a.f.sessions["new"]; !ok {
		t.Fatal("session idle for less than the TTL was dropped")
	}
	// Replay the same entries on another replica, in one batch.
	b.f.ApplyBatch(a.log)
	ha, _ := a.f.StateHash()
	hb, _ := b.f.StateHash()
	if ha != hb || len(b.f.sessions) != 1 || b.f.logTime != a.f.logTime {
		t.Fatalf("replica diverged: sessions %d logTime %d, leader %d %d", len(b.f.sessions), b.f.logTime, len(a.f.sessions), a.f.logTime)
	}
}

func TestMemberRegistry(t *testing.T) {
	h := newHarness(t)
	reg := func(id, addr, token string) *cmdpb.Result {
		return h.apply(&cmdpb.Envelope{Command: &cmdpb.Envelope_RegisterMember{RegisterMember: &cmdpb.RegisterMember{
			NodeId: id, ClientAddr: addr, RaftAddr: addr + "0", ClusterToken: []byte(token)}}})
	}
	if r := reg("n1", "127.0.0.1:1", "tok"); r.ErrorReason != "" {
		t.Fatal(r.ErrorMessage)
	}
	if r := reg("n2", "127.0.0.1:2", ""); r.ErrorReason != "" {
		t.Fatal(r.ErrorMessage)
	}
	if r := reg("n3", "127.0.0.1:3", "other"); r.ErrorReason != pb.ReasonInvalidArgument || !strings.Contains(r.ErrorMessage, "--initial-cluster") {
		t.Fatalf("token mismatch: %q %q", r.ErrorReason, r.ErrorMessage)
	}
	if r := reg("", "x", ""); r.ErrorReason != pb.ReasonInvalidArgument {
		t.Fatalf("empty id: %q", r.ErrorReason)
	}
	if r := reg("n1", "127.0.0.1:9", "tok"); r.ErrorReason != "" {
		t.Fatal(r.ErrorMessage)
	}
	if m, ok := h.f.Member("n1"); !ok || m.ClientAddr != "127.0.0.1:9" {
		t.Fatalf("n1 = %+v", m)
	}
	g := newRestored(t, snapshotBytes(t, h.f))
	if len(g.Members()) != 2 || g.Members()[1].ID != "n2" {
		t.Fatalf("restored members %+v", g.Members())
	}
	a, _ := h.f.StateHash()
	b, _ := g.StateHash()
	if a != b {
		t.Fatal("state hash differs after restore")
	}
}
