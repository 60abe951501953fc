package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/store"
)

// blobsSchema is a table of opaque values, for results of a chosen size.
func blobsSchema() *pb.TableSchema {
	return &pb.TableSchema{Name: "blobs", PrimaryKey: "k", Fields: []*pb.FieldSchema{
		{Name: "k", Type: pb.FieldType_FIELD_TYPE_STRING},
		{Name: "v", Type: pb.FieldType_FIELD_TYPE_BYTES},
	}}
}

func putBlob(k string, size int) *pb.Op {
	return &pb.Op{Op: &pb.Op_Upsert{Upsert: &pb.UpsertOp{Table: "blobs", Fields: map[string]*pb.Value{
		"k": str(k), "v": {Kind: &pb.Value_BytesValue{BytesValue: bytes.Repeat([]byte{'x'}, size)}}}}}}
}

func getBlob(k string) *pb.Op {
	return &pb.Op{Op: &pb.Op_Get{Get: &pb.GetOp{Table: "blobs", Key: str(k)}}}
}

// gets is a transaction of n Gets of key k, then an upsert of a small row.
func gets(k string, n int) *cmdpb.Envelope_Txn {
	ops := make([]*pb.Op, 0, n+1)
	for range n {
		ops = append(ops, getBlob(k))
	}
	return txn(append(ops, putBlob("small", 8))...)
}

// blobHarness is a harness with the blobs table and one row of size bytes
// under "big".
func blobHarness(t testing.TB, size int) *harness {
	h := newHarness(t)
	h.mustApply(&cmdpb.Envelope{Command: &cmdpb.Envelope_CreateTable{CreateTable: blobsSchema()}})
	h.mustApply(&cmdpb.Envelope{Command: txn(putBlob("big", size))})
	return h
}

// A result above maxKeptResult reaches its caller whole, and the session
// keeps it trimmed: a retry gets OUTCOME_NOT_KEPT with the revision the
// write was applied at, and applies nothing again.
func TestSessionKeepsLargeResultTrimmed(t *testing.T) {
	h := blobHarness(t, 100<<10)
	first := h.mustApply(&cmdpb.Envelope{Session: sess("c", 1, 1), Command: gets("big", 2)})
	if first.ReplayTrimmed || len(first.Results) != 3 || len(first.Results[0].GetGet().GetRow().GetFields()["v"].GetBytesValue()) != 100<<10 {
		t.Fatalf("the caller did not get the whole result: trimmed %v, %d results", first.ReplayTrimmed, len(first.Results))
	}
	if err := ResultError(first); err != nil {
		t.Fatalf("first answer: %v", err)
	}
	hash := h.f.Store().View().Hash()
	retry := h.apply(&cmdpb.Envelope{Session: sess("c", 1, 1), Command: gets("big", 2)})
	if h.f.Store().View().Hash() != hash {
		t.Fatal("the retry applied the write again")
	}
	if !retry.ReplayTrimmed || retry.Revision != first.Revision || !retry.Succeeded || len(retry.Results) != 3 {
		t.Fatalf("kept copy: %+v", retry)
	}
	for i, r := range retry.Results[:2] {
		if g := r.GetGet(); g == nil || !g.Found || g.Row != nil {
			t.Fatalf("kept Get %d: %v, want found without the row", i, r)
		}
	}
	if !proto3Equal(retry.Results[2], first.Results[2]) {
		t.Fatalf("kept write result %v, first %v", retry.Results[2], first.Results[2])
	}
	var ce *CommandError
	err := ResultError(retry)
	if !errors.As(err, &ce) || ce.Reason != pb.ReasonOutcomeNotKept || ce.Revision != first.Revision ||
		!strings.Contains(ce.Message, fmt.Sprintf("applied at revision %d", first.Revision)) || !strings.Contains(ce.Message, "read them again") {
		t.Fatalf("retry answered from the kept copy: %#v", err)
	}
	if s := h.f.sessions["c"]; s.kept != retry.SizeVT() || s.kept > maxKeptResult {
		t.Fatalf("session keeps %d bytes, its result is %d", s.kept, retry.SizeVT())
	}
}

func proto3Equal(a, b *pb.OpResult) bool {
	x, _ := a.MarshalVT()
	y, _ := b.MarshalVT()
	return bytes.Equal(x, y)
}

// Results each below maxKeptResult are kept whole until the session's
// kept bytes would pass maxKeptSessionBytes; the later ones are trimmed,
// and acknowledging results frees their bytes.
func TestSessionBudgetTrimsBeyondIt(t *testing.T) {
	h := blobHarness(t, 40<<10)
	var whole, trimmed int
	for seq := uint64(1); seq <= 120; seq++ {
		h.mustApply(&cmdpb.Envelope{Session: sess("c", seq, 1), Command: gets("big", 1)})
		r := h.f.sessions["c"].results[seq]
		switch {
		case !r.ReplayTrimmed:
			if trimmed > 0 {
				t.Fatalf("result %d kept whole after a trimmed one", seq)
			}
			whole++
		default:
			trimmed++
		}
	}
	s := h.f.sessions["c"]
	if whole == 0 || trimmed == 0 || s.kept > maxKeptSessionBytes {
		t.Fatalf("%d kept whole, %d trimmed, %d bytes kept (budget %d)", whole, trimmed, s.kept, maxKeptSessionBytes)
	}
	sum := 0
	for _, r := range s.results {
		sum += r.SizeVT()
	}
	if sum != s.kept {
		t.Fatalf("kept bytes %d, results sum to %d", s.kept, sum)
	}
	// Acknowledging everything before 121 frees the budget: the next one
	// is kept whole again.
	h.mustApply(&cmdpb.Envelope{Session: sess("c", 121, 121), Command: gets("big", 1)})
	if r := s.results[121]; r.ReplayTrimmed || len(s.results) != 1 || s.kept != r.SizeVT() {
		t.Fatalf("after acknowledgement: %d results, %d bytes, trimmed %v", len(s.results), s.kept, r.ReplayTrimmed)
	}
}

// A write that failed is remembered as it failed: its retry gets the same
// error, not OUTCOME_NOT_KEPT, whatever the session already keeps.
func TestSessionKeepsErrorsWhole(t *testing.T) {
	h := blobHarness(t, 60<<10)
	for seq := uint64(1); seq <= 80; seq++ { // past the budget
		h.mustApply(&cmdpb.Envelope{Session: sess("c", seq, 1), Command: gets("big", 1)})
	}
	bad := &cmdpb.Envelope{Session: sess("c", 81, 1), Command: txn(&pb.Op{Op: &pb.Op_Insert{Insert: &pb.InsertOp{Table: "blobs",
		Fields: map[string]*pb.Value{"k": str("big"), "v": {Kind: &pb.Value_BytesValue{BytesValue: []byte("y")}}}}}})}
	first := h.apply(bad)
	retry := h.apply(bad)
	if first.ErrorReason != pb.ReasonRowExists || retry.ErrorReason != first.ErrorReason || retry.ErrorMessage != first.ErrorMessage || retry.ReplayTrimmed {
		t.Fatalf("first %+v, retry %+v", first, retry)
	}
}

// The kept bytes travel with the snapshot: a replica restored from it
// trims the same later results as the one that applied the whole log.
func TestSessionKeptBytesSurviveRestore(t *testing.T) {
	a := blobHarness(t, 50<<10)
	for seq := uint64(1); seq <= 60; seq++ {
		a.mustApply(&cmdpb.Envelope{Session: sess("c", seq, 1), Command: gets("big", 1)})
	}
	b := newHarness(t)
	if err := restoreBytes(b.f, snapshotBytes(t, a.f)); err != nil {
		t.Fatal(err)
	}
	if ka, kb := a.f.sessions["c"].kept, b.f.sessions["c"].kept; ka != kb || ka == 0 {
		t.Fatalf("kept bytes %d on the replica that applied the log, %d on the restored one", ka, kb)
	}
	for seq := uint64(61); seq <= 100; seq++ {
		l := a.entry(&cmdpb.Envelope{Session: sess("c", seq, 1), Command: gets("big", 1)})
		a.f.ApplyBatch([]*raft.Log{l})
		b.f.ApplyBatch([]*raft.Log{l})
		ha, _ := a.f.StateHash()
		hb, _ := b.f.StateHash()
		if ha != hb {
			t.Fatalf("replicas diverged at write %d", seq)
		}
	}
	if !a.f.sessions["c"].results[100].ReplayTrimmed {
		t.Fatal("the test never reached the budget")
	}
}

// The hostile sequence behind the session-table poisoning, scaled down
// (rows of 64 KiB, the reader's record bound lowered from 256 MiB to 16
// MiB): four transactions of 128 Gets of the same row used to grow one
// session record to 32 MiB, written by the snapshot writer and refused
// by the reader. The session now keeps trimmed copies, and the snapshot
// restores.
func TestSessionOfLargeReadsRestores(t *testing.T) {
	lowerMaxRecord(t, 16<<20)
	h := blobHarness(t, 64<<10)
	for seq := uint64(1); seq <= 4; seq++ {
		r := h.mustApply(&cmdpb.Envelope{Session: sess("poison", seq, 1), Command: gets("big", 128)})
		if n := r.SizeVT(); n < 128*64<<10 {
			t.Fatalf("the caller's result is %d bytes", n)
		}
	}
	snap := snapshotBytes(t, h.f)
	g := newHarness(t)
	if err := restoreBytes(g.f, snap); err != nil {
		t.Fatalf("restoring a snapshot of %d bytes: %v", len(snap), err)
	}
	kept := g.f.sessions["poison"].kept
	t.Logf("snapshot %d bytes, the session keeps %d bytes for 4 results of %d bytes", len(snap), kept, 128*64<<10)
	if kept > 4*maxKeptResult {
		t.Fatalf("the session keeps %d bytes", kept)
	}
}

// lowerMaxRecord lowers the snapshot record bound for one test.
func lowerMaxRecord(t *testing.T, n int) {
	old := maxRecord
	maxRecord = n
	t.Cleanup(func() { maxRecord = old })
}

// The writer refuses a record the reader would refuse: Persist fails,
// the sink is cancelled, and nothing is left in the snapshot store.
func TestSnapshotRefusesUnreadableRecord(t *testing.T) {
	h := blobHarness(t, 40<<10)
	h.mustApply(&cmdpb.Envelope{Session: sess("heavy", 1, 1), Command: gets("big", 1)})
	lowerMaxRecord(t, 32<<10) // the session record (40 KiB) is above it
	var logs bytes.Buffer
	h.f.log = slog.New(slog.NewTextHandler(&logs, nil))

	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	err = snap.Persist(&sink)
	var big *RecordTooLargeError
	if !errors.As(err, &big) || big.Type != "session" || !strings.Contains(big.Label, "heavy") || big.Size <= 32<<10 {
		t.Fatalf("Persist: %v, want a too-large session record", err)
	}
	if !sink.cancelled || sink.closed {
		t.Fatalf("sink cancelled=%v closed=%v", sink.cancelled, sink.closed)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "record=session") ||
		!strings.Contains(logs.String(), fmt.Sprintf("bytes=%d", big.Size)) {
		t.Fatalf("no error log naming the record and its size:\n%s", logs.String())
	}

	// Through Raft's file snapshot store: no snapshot, no temporary
	// directory.
	dir := t.TempDir()
	store, err := raft.NewFileSnapshotStoreWithLogger(dir, 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, trans := raft.NewInmemTransport("a")
	fsink, err := store.Create(raft.SnapshotVersionMax, 10, 1, raft.Configuration{}, 1, trans)
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Persist(fsink); err == nil {
		t.Fatal("Persist to a file store succeeded")
	}
	metas, _ := store.List()
	ents, _ := os.ReadDir(filepath.Join(dir, "snapshots"))
	if len(metas) != 0 || len(ents) != 0 {
		t.Fatalf("left behind: %d snapshots, %d entries", len(metas), len(ents))
	}
	// A row above the bound fails the same way.
	h.mustApply(&cmdpb.Envelope{Session: sess("heavy", 2, 2), Command: txn(putBlob("small", 1))})
	snap, _ = h.f.Snapshot()
	if err := snap.Persist(&memSink{}); !errors.As(err, &big) || big.Type != "row" || !strings.Contains(big.Label, "blobs") {
		t.Fatalf("Persist with a row above the bound: %v", err)
	}
}

// A session record the reader would refuse for its client id is not
// written either.
func TestSnapshotRefusesBadSessionID(t *testing.T) {
	h := newHarness(t)
	h.createUsers()
	h.mustApply(&cmdpb.Envelope{Session: sess("ok", 1, 1), Command: txn(upsert("a", "a@x", 1))})
	s := h.f.sessions["ok"]
	h.f.removeSession(s)
	s.id = strings.Repeat("x", maxClientID+1) // as no write could make it
	h.f.addSession(s)
	if _, err := h.f.Snapshot(); err == nil || !strings.Contains(err.Error(), "client_id") {
		t.Fatalf("Snapshot with a session id of %d bytes: %v", len(s.id), err)
	}
}

// CheckSnapshot accepts what the writer writes and refuses what Restore
// would refuse for its framing.
func TestCheckSnapshot(t *testing.T) {
	h := blobHarness(t, 40<<10)
	h.mustApply(&cmdpb.Envelope{Session: sess("c", 1, 1), Command: gets("big", 1)})
	data := snapshotBytes(t, h.f)
	if err := CheckSnapshot(bytes.NewReader(data)); err != nil {
		t.Fatalf("a valid snapshot: %v", err)
	}
	for name, b := range map[string][]byte{
		"truncated":     data[:len(data)-1],
		"trailing byte": append(bytes.Clone(data), 0),
		"flipped byte":  func() []byte { b := bytes.Clone(data); b[len(b)/2] ^= 1; return b }(),
		"empty":         nil,
	} {
		if err := CheckSnapshot(bytes.NewReader(b)); !errors.Is(err, ErrSnapshotCorrupt) {
			t.Errorf("%s: %v", name, err)
		}
		if err := restoreBytes(newHarness(t).f, b); err == nil {
			t.Errorf("%s: Restore accepted it", name)
		}
	}
	lowerMaxRecord(t, 32<<10)
	if err := CheckSnapshot(bytes.NewReader(data)); !errors.Is(err, ErrSnapshotCorrupt) || !strings.Contains(err.Error(), "record of") {
		t.Fatalf("a record above the bound: %v", err)
	}
}

// A write opening a session when the table is full evicts the least
// recently seen session, ties broken by client id.
func TestSessionEvictsLeastRecentlySeen(t *testing.T) {
	h := newHarness(t)
	h.f.cfg.MaxSessions = 3
	h.createUsers()
	write := func(id string, seq uint64) {
		t.Helper()
		h.now = h.now.Add(time.Second)
		h.mustApply(&cmdpb.Envelope{Session: sess(id, seq, seq), Command: txn(upsert(id, id+"@x", int64(seq)))})
	}
	write("a", 1)
	write("b", 1)
	write("c", 1)
	write("a", 2) // a is now the most recent
	write("d", 1) // evicts b
	if got := sessionIDs(h.f); !slices.Equal(got, []string{"a", "c", "d"}) || h.f.SessionsEvicted() != 1 {
		t.Fatalf("sessions %v, %d evicted; want a c d, 1", got, h.f.SessionsEvicted())
	}
	// Same log time from here on: c (3s) goes, then a (4s), then, among
	// d, y and z, all last seen at 5s, the smallest id.
	for _, id := range []string{"z", "y", "x"} {
		h.mustApply(&cmdpb.Envelope{Session: sess(id, 1, 1), Command: txn(upsert(id, id+"@x", 1))})
	}
	if got := sessionIDs(h.f); !slices.Equal(got, []string{"x", "y", "z"}) || h.f.SessionsEvicted() != 4 {
		t.Fatalf("sessions %v, %d evicted; want x y z, 4", got, h.f.SessionsEvicted())
	}
	// An evicted client that retries applies its write again: the
	// documented cost, as after SessionTTL.
	write("b", 1)
	if row, _, _ := h.f.Store().View().Get("users", store.String("b")); row.Version != 2 {
		t.Fatalf("b's retried write: version %d, want 2 (applied again)", row.Version)
	}
	checkIdleHeap(t, h.f)
}

// Two replicas, one restored from a snapshot of the other half-way, evict
// the same sessions at the same entries.
func TestSessionEvictionAfterRestoreMatches(t *testing.T) {
	const maxSessions = 40
	a := newHarness(t)
	a.f.cfg.MaxSessions = maxSessions
	a.createUsers()
	// Clients write in an order that gives many equal last-seen times.
	next := func(i int) *raft.Log {
		if i%3 == 0 {
			a.now = a.now.Add(time.Second)
		}
		id := fmt.Sprintf("c%03d", (i*7)%97)
		return a.entry(&cmdpb.Envelope{Session: sess(id, uint64(i+1), uint64(i+1)), Command: txn(upsert(id, id+"@x", int64(i)))})
	}
	for i := range 150 {
		a.f.ApplyBatch([]*raft.Log{next(i)})
	}
	cfg := DefaultConfig()
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.MaxSessions = maxSessions
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := restoreBytes(b, snapshotBytes(t, a.f)); err != nil {
		t.Fatal(err)
	}
	before := a.f.SessionsEvicted()
	for i := 150; i < 400; i++ {
		l := next(i)
		a.f.ApplyBatch([]*raft.Log{l})
		b.ApplyBatch([]*raft.Log{l})
		if sa, sb := sessionIDs(a.f), sessionIDs(b); !slices.Equal(sa, sb) {
			t.Fatalf("entry %d: sessions %v and %v", i, sa, sb)
		}
		ha, _ := a.f.StateHash()
		hb, _ := b.StateHash()
		if ha != hb {
			t.Fatalf("entry %d: state hashes differ", i)
		}
	}
	if a.f.SessionsEvicted()-before != b.SessionsEvicted() || b.SessionsEvicted() == 0 {
		t.Fatalf("evicted %d after the snapshot on one replica, %d on the restored one", a.f.SessionsEvicted()-before, b.SessionsEvicted())
	}
	if len(a.f.sessions) != maxSessions {
		t.Fatalf("%d sessions, want the limit %d", len(a.f.sessions), maxSessions)
	}
	checkIdleHeap(t, a.f)
	checkIdleHeap(t, b)
}

// The TTL sweep and eviction share the idle order: a sweep drops exactly
// the sessions idle longer than SessionTTL.
func TestSessionSweepUsesIdleOrder(t *testing.T) {
	h := newHarness(t)
	h.createUsers()
	for i := range 20 {
		h.now = h.now.Add(5 * time.Minute)
		id := fmt.Sprintf("s%02d", i)
		h.mustApply(&cmdpb.Envelope{Session: sess(id, 1, 1), Command: txn(upsert(id, id+"@x", 1))})
	}
	// Log time is now 100m; a tick at 130m sweeps those last seen before
	// 70m: s00..s12 (seen at 5m..65m).
	h.now = logTime0.Add(130 * time.Minute)
	h.mustApply(&cmdpb.Envelope{Command: &cmdpb.Envelope_Tick{Tick: &cmdpb.Tick{}}})
	want := []string{"s13", "s14", "s15", "s16", "s17", "s18", "s19"}
	if got := sessionIDs(h.f); !slices.Equal(got, want) {
		t.Fatalf("after the sweep %v, want %v", got, want)
	}
	checkIdleHeap(t, h.f)
}

func sessionIDs(f *FSM) []string {
	ids := make([]string, 0, len(f.sessions))
	for id := range f.sessions {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// checkIdleHeap checks that the heap holds every session once, at the
// position it records, in heap order.
func checkIdleHeap(t *testing.T, f *FSM) {
	t.Helper()
	if len(f.idle) != len(f.sessions) {
		t.Fatalf("heap of %d, %d sessions", len(f.idle), len(f.sessions))
	}
	for i, s := range f.idle {
		if s.pos != i || f.sessions[s.id] != s {
			t.Fatalf("heap entry %d (%s) records position %d", i, s.id, s.pos)
		}
		if i > 0 && f.idle.Less(i, (i-1)/2) {
			t.Fatalf("heap order broken at %d", i)
		}
	}
	total := 0
	for _, s := range f.sessions {
		total += s.kept
	}
	if total != f.keptBytes {
		t.Fatalf("the table's kept bytes are %d, its sessions keep %d", f.keptBytes, total)
	}
}

// With the session's budget all but spent, even a trimmed copy does not
// fit: the outcome alone is kept.
func TestKeptFormOutcomeOnly(t *testing.T) {
	r := &cmdpb.Result{Revision: 7, Succeeded: true, Results: []*pb.OpResult{
		{Result: &pb.OpResult_Get{Get: &pb.GetResult{Found: true, Row: &pb.Row{Fields: map[string]*pb.Value{"k": str("v")}}}}},
		{Result: &pb.OpResult_Put{Put: &pb.RowMeta{CreateRevision: 7, ModRevision: 7, Version: 1}}},
	}}
	if k, n := keptForm(r, 0, 0); k != r || n != r.SizeVT() {
		t.Fatalf("a small result with room left: %+v", k)
	}
	k, n := keptForm(r, maxKeptSessionBytes-r.SizeVT()+1, 0)
	if !k.ReplayTrimmed || len(k.Results) != 2 || k.Results[0].GetGet().GetRow() != nil || n != k.SizeVT() {
		t.Fatalf("a result just past the budget: %+v", k)
	}
	k, _ = keptForm(r, maxKeptSessionBytes, 0)
	if !k.ReplayTrimmed || len(k.Results) != 0 || k.Revision != 7 || !k.Succeeded {
		t.Fatalf("with the budget spent: %+v", k)
	}
	if len(r.Results) != 2 || r.Results[0].GetGet().GetRow() == nil || r.ReplayTrimmed {
		t.Fatal("keptForm modified the caller's result")
	}
	// The whole table's budget spent: trimmed too, whatever the session's.
	if k, _ := keptForm(r, 0, maxKeptTableBytes); !k.ReplayTrimmed || len(k.Results) != 0 {
		t.Fatalf("with the table's budget spent: %+v", k)
	}
	failed := &cmdpb.Result{Revision: 8, ErrorReason: pb.ReasonRowExists, ErrorMessage: "exists"}
	if k, _ := keptForm(failed, maxKeptSessionBytes, maxKeptTableBytes); k != failed {
		t.Fatalf("a failed write's result: %+v", k)
	}
}

// BenchmarkSessionEviction opens a new session per write on a full table
// of 100,000 sessions: each write evicts the least recently seen one.
func BenchmarkSessionEviction(b *testing.B) {
	h := newHarness(b)
	h.createUsers()
	h.f.cfg.MaxSessions = 100_000
	var ls []*raft.Log
	for i := range h.f.cfg.MaxSessions + b.N {
		if i%1000 == 0 {
			h.now = h.now.Add(time.Millisecond)
		}
		ls = append(ls, h.entry(&cmdpb.Envelope{Session: sess(fmt.Sprintf("client-%08d", i), 1, 1), Command: txn()}))
	}
	for i := 0; i < h.f.cfg.MaxSessions; i += 1000 {
		h.f.ApplyBatch(ls[i : i+1000])
	}
	b.ResetTimer()
	for i := range b.N {
		h.f.ApplyBatch(ls[h.f.cfg.MaxSessions+i : h.f.cfg.MaxSessions+i+1])
	}
	b.StopTimer()
	if len(h.f.sessions) != h.f.cfg.MaxSessions || h.f.SessionsEvicted() != uint64(b.N) {
		b.Fatalf("%d sessions, %d evicted", len(h.f.sessions), h.f.SessionsEvicted())
	}
}

// Before every voter applies version 3 (feature level 2), session writes
// are written at an older version and keep version 2's rules on every
// replica: a full table refuses a new client, and a large result is kept
// whole. A replica of either version applying these entries ends in the
// same state.
func TestSessionRulesFollowTheEntryVersion(t *testing.T) {
	h := blobHarness(t, 100<<10)
	h.level = 2
	first := h.mustApply(&cmdpb.Envelope{Session: sess("c", 1, 1), Command: gets("big", 2)})
	retry := h.apply(&cmdpb.Envelope{Session: sess("c", 1, 1), Command: gets("big", 2)})
	if retry.ReplayTrimmed || retry.Revision != first.Revision || len(retry.Results[0].GetGet().GetRow().GetFields()["v"].GetBytesValue()) != 100<<10 || ResultError(retry) != nil {
		t.Fatalf("at level 2 the session kept a trimmed copy: %v", ResultError(retry))
	}
	h.f.cfg.MaxSessions = 1
	r := h.apply(&cmdpb.Envelope{Session: sess("d", 1, 1), Command: txn(putBlob("d", 8))})
	if r.ErrorReason != pb.ReasonSessionLimit || h.f.SessionsEvicted() != 0 {
		t.Fatalf("a new client on a full table at level 2: %q, %d evicted", r.ErrorReason, h.f.SessionsEvicted())
	}
	// Once the level allows, the same write evicts.
	h.level = MaxCommandVersion
	if r := h.apply(&cmdpb.Envelope{Session: sess("d", 1, 1), Command: txn(putBlob("d", 8))}); r.ErrorReason != "" || h.f.SessionsEvicted() != 1 {
		t.Fatalf("a new client on a full table at level 3: %q, %d evicted", r.ErrorReason, h.f.SessionsEvicted())
	}
}

// From version 3 on, a transaction whose Gets read more than
// maxTxnReadBytes is applied and answered without the rows, on every
// replica alike, before any row is converted: the caller, and a retry,
// get OUTCOME_NOT_KEPT naming the revision.
func TestTxnReadingTooMuchAnswersWithoutRows(t *testing.T) {
	const rowBytes = 7 << 20
	h := blobHarness(t, rowBytes)
	n := maxTxnReadBytes/rowBytes + 1
	r := h.apply(&cmdpb.Envelope{Session: sess("c", 1, 1), Command: gets("big", n)})
	var ce *CommandError
	if err := ResultError(r); !errors.As(err, &ce) || ce.Reason != pb.ReasonOutcomeNotKept || ce.Revision != r.Revision ||
		!strings.Contains(ce.Message, fmt.Sprintf("applied at revision %d", r.Revision)) {
		t.Fatalf("a transaction reading %d MiB: %v", n*rowBytes>>20, err)
	}
	for i, op := range r.Results[:n] {
		if g := op.GetGet(); g == nil || !g.Found || g.Row != nil {
			t.Fatalf("Get %d: %v, want found without the row", i, op)
		}
	}
	// The write in it was applied.
	if row, ok, _ := h.f.Store().View().Get("blobs", store.String("small")); !ok || row.ModRevision != r.Revision {
		t.Fatalf("the transaction's upsert: found %v at %d, want revision %d", ok, row.ModRevision, r.Revision)
	}
	retry := h.apply(&cmdpb.Envelope{Session: sess("c", 1, 1), Command: gets("big", n)})
	if err := ResultError(retry); !errors.As(err, &ce) || ce.Reason != pb.ReasonOutcomeNotKept || ce.Revision != r.Revision {
		t.Fatalf("the retry: %v", err)
	}
	// One Get fewer than the bound allows is answered whole.
	ok := h.apply(&cmdpb.Envelope{Session: sess("c", 2, 2), Command: gets("big", n-2)})
	if err := ResultError(ok); err != nil || len(ok.Results[0].GetGet().GetRow().GetFields()["v"].GetBytesValue()) != rowBytes {
		t.Fatalf("a transaction under the bound: %v", err)
	}
}
