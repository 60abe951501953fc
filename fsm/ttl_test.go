package fsm

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/store"
)

func withTTL(op *pb.Op, ms uint64) *pb.Op {
	switch o := op.Op.(type) {
	case *pb.Op_Insert:
		o.Insert.TtlMs = ms
	case *pb.Op_Upsert:
		o.Upsert.TtlMs = ms
	}
	return op
}

func TestRequiredVersionOfExpiryCommands(t *testing.T) {
	cases := []struct {
		env  *cmdpb.Envelope
		want uint32
	}{
		{&cmdpb.Envelope{Command: txn(upsert("a", "a@", 1))}, 1},
		{&cmdpb.Envelope{Command: txn(withTTL(upsert("a", "a@", 1), 100))}, 2},
		{&cmdpb.Envelope{Command: txn(insert("a", "a@", 1), withTTL(insert("b", "b@", 1), 5))}, 2},
		{&cmdpb.Envelope{Command: txn(&pb.Op{Op: &pb.Op_Touch{Touch: &pb.TouchOp{Table: "users", Key: str("a")}}})}, 2},
		{&cmdpb.Envelope{Command: txn(&pb.Op{Op: &pb.Op_Update{Update: &pb.UpdateOp{Table: "users", Key: str("a"), ClearTtl: true}}})}, 2},
		{&cmdpb.Envelope{Command: &cmdpb.Envelope_Expire{Expire: &cmdpb.Expire{Table: "users"}}}, 2},
		{&cmdpb.Envelope{Command: &cmdpb.Envelope_Tick{Tick: &cmdpb.Tick{}}}, 1},
	}
	for i, c := range cases {
		if got := RequiredVersion(c.env); got != c.want {
			t.Errorf("case %d: RequiredVersion = %d, want %d", i, got, c.want)
		}
		// Below feature level 3, an envelope without a session is written
		// at the version its command needs; from level 3 on, transactions
		// are written at version 3, for its rules (maxTxnReadBytes).
		_, isTxn := c.env.Command.(*cmdpb.Envelope_Txn)
		for _, level := range []uint32{0, 2, MaxCommandVersion} {
			b, err := Encode(c.env, logTime0, level)
			if err != nil {
				t.Fatal(err)
			}
			want := c.want
			if isTxn && level >= 3 {
				want = 3
			}
			var back cmdpb.Envelope
			if err := proto.Unmarshal(b, &back); err != nil || back.Version != want {
				t.Errorf("case %d at level %d: encoded version %d (%v), want %d", i, level, back.Version, err, want)
			}
		}
	}
	// A session write is written at version 3, for version 3's session
	// rules, once the feature level allows, and not before.
	ws := &pb.WriteSession{ClientId: []byte("c"), Seq: 1}
	for _, c := range []struct {
		level, want uint32
	}{{0, 1}, {2, 1}, {3, 3}} {
		b, err := Encode(&cmdpb.Envelope{Session: ws, Command: txn(upsert("a", "a@", 1))}, logTime0, c.level)
		if err != nil {
			t.Fatal(err)
		}
		var back cmdpb.Envelope
		if err := proto.Unmarshal(b, &back); err != nil || back.Version != c.want {
			t.Errorf("session write at level %d: encoded version %d (%v), want %d", c.level, back.Version, err, c.want)
		}
	}
}

// Expiry follows log time only: replicas that apply the same entries
// delete the same rows at the same revision, whatever their own clocks.
func TestExpiryIsDecidedByTheLog(t *testing.T) {
	h := newHarness(t)
	h.createUsers()
	r := h.mustApply(&cmdpb.Envelope{Command: txn(withTTL(insert("a", "a@", 1), 1000), insert("b", "b@", 2))})
	exp := r.Results[0].GetPut().GetExpiresAt().AsTime()
	if want := h.now.Add(time.Second); !exp.Equal(want) {
		t.Fatalf("expires %v, want %v", exp, want)
	}
	keyA := string(encodedKey(t, h.f, "a"))
	// An Expire proposed early (a leader with a fast clock, or a refresh
	// in between) deletes nothing.
	h.now = h.now.Add(500 * time.Millisecond)
	h.mustApply(&cmdpb.Envelope{Command: &cmdpb.Envelope_Expire{Expire: &cmdpb.Expire{Table: "users", Keys: [][]byte{[]byte(keyA)}}}})
	if _, ok, _ := h.f.Store().View().Get("users", store.String("a")); !ok {
		t.Fatal("an early Expire deleted the row")
	}
	// A log time that goes backwards (a leader with a slow clock) does not
	// move expiry back either.
	h.now = h.now.Add(-10 * time.Second)
	h.mustApply(&cmdpb.Envelope{Command: &cmdpb.Envelope_Tick{Tick: &cmdpb.Tick{}}})
	if got := time.Unix(0, h.f.LogTime()); !got.Equal(logTime0.Add(500 * time.Millisecond)) {
		t.Fatalf("log time went back to %v", got)
	}
	h.now = logTime0.Add(1500 * time.Millisecond)
	h.mustApply(&cmdpb.Envelope{Command: &cmdpb.Envelope_Expire{Expire: &cmdpb.Expire{Table: "users", Keys: [][]byte{[]byte(keyA), []byte("missing")}}}})
	if _, ok, _ := h.f.Store().View().Get("users", store.String("a")); ok {
		t.Fatal("Expire past the expiry left the row")
	}
	// A second replica applying the same log, and a third restored from a
	// snapshot of the first half, end in the same state.
	cfg := DefaultConfig()
	cfg.Logger = slog.New(slog.DiscardHandler)
	f2, _ := New(cfg)
	f2.ApplyBatch(h.log)
	h1, _ := h.f.StateHash()
	h2, _ := f2.StateHash()
	if h1 != h2 {
		t.Fatal("replicas diverged")
	}
}

func TestSnapshotKeepsExpiry(t *testing.T) {
	h := newHarness(t)
	h.createUsers()
	h.mustApply(&cmdpb.Envelope{Command: txn(withTTL(insert("a", "a@", 1), 60_000))})
	b := snapshotBytes(t, h.f)
	cfg := DefaultConfig()
	cfg.Logger = slog.New(slog.DiscardHandler)
	f2, _ := New(cfg)
	if err := restoreBytes(f2, b); err != nil {
		t.Fatal(err)
	}
	row, ok, _ := f2.Store().View().Get("users", store.String("a"))
	if !ok || row.ExpiresAt != logTime0.Add(time.Minute).UnixNano() {
		t.Fatalf("restored row %+v", row)
	}
	if f2.Store().View().NextExpiry() != row.ExpiresAt {
		t.Fatal("restored store lost its expiry index")
	}
	if f2.LogTime() != h.f.LogTime() {
		t.Fatalf("log time %d, want %d", f2.LogTime(), h.f.LogTime())
	}
}

func encodedKey(t *testing.T, f *FSM, id string) []byte {
	t.Helper()
	exp := f.Store().View().At(1<<62).Expired(1<<62, 100)
	for _, k := range exp["users"] {
		if v, err := store.DecodeKey(k); err == nil && v.AsString() == id {
			return []byte(k)
		}
	}
	t.Fatalf("no expiring row %s", id)
	return nil
}

// A replica restored from a snapshot sweeps sessions at the same entries
// as one that applied the whole log: the sweep schedule depends on log
// time alone.
func TestSessionSweepAfterRestoreMatches(t *testing.T) {
	a := newHarness(t)
	a.createUsers()
	step := DefaultConfig().SessionTTL / 8
	a.mustApply(&cmdpb.Envelope{Session: sess("idle", 1, 1), Command: txn(upsert("a", "a@x", 1))})
	// Advance log time in uneven steps so the last sweep before the
	// snapshot is not on a grid point.
	for i := range 9 {
		a.now = a.now.Add(step/3 + time.Duration(i)*time.Second)
		a.mustApply(&cmdpb.Envelope{Command: &cmdpb.Envelope_Tick{Tick: &cmdpb.Tick{}}})
	}
	snap := snapshotBytes(t, a.f)
	cfg := DefaultConfig()
	cfg.Logger = slog.New(slog.DiscardHandler)
	b, _ := New(cfg)
	if err := restoreBytes(b, snap); err != nil {
		t.Fatal(err)
	}
	if a.f.nextExpiry != b.nextExpiry {
		t.Fatalf("next sweep at %d on the replica that applied the log, %d on the restored one", a.f.nextExpiry, b.nextExpiry)
	}
	// Carry both across the session's expiry, entry by entry.
	for i := range 40 {
		a.now = a.now.Add(step / 5)
		l := a.entry(&cmdpb.Envelope{Session: sess(fmt.Sprint("s", i), 1, 1), Command: txn(upsert(fmt.Sprint("k", i), fmt.Sprint(i, "@x"), 1))})
		a.f.ApplyBatch([]*raft.Log{l})
		b.ApplyBatch([]*raft.Log{l})
		ha, _ := a.f.StateHash()
		hb, _ := b.StateHash()
		if ha != hb {
			t.Fatalf("replicas diverged at entry %d (sessions %d vs %d)", i, len(a.f.sessions), len(b.sessions))
		}
	}
	if _, ok := a.f.sessions["idle"]; ok {
		t.Fatal("the idle session never expired")
	}
}
