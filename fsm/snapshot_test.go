package fsm

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/store"
)

// populated returns a harness with two tables, rows, an index built online
// and a live session.
func populated(t testing.TB, rows int) *harness {
	h := newHarness(t)
	h.createUsers()
	h.mustApply(&cmdpb.Envelope{Command: &cmdpb.Envelope_CreateTable{CreateTable: &pb.TableSchema{
		Name: "events", PrimaryKey: "seq",
		Fields: []*pb.FieldSchema{{Name: "seq", Type: pb.FieldType_FIELD_TYPE_INT64}},
	}}})
	for i := 0; i < rows; i++ {
		h.mustApply(&cmdpb.Envelope{Command: txn(
			upsert(fmt.Sprintf("u%04d", i), fmt.Sprintf("u%d@x", i), int64(i%7)),
			&pb.Op{Op: &pb.Op_Insert{Insert: &pb.InsertOp{Table: "events", Fields: map[string]*pb.Value{"seq": i64(int64(i - rows/2)), "blob": {Kind: &pb.Value_BytesValue{BytesValue: []byte{0, byte(i), 0xff}}}}}}},
		)})
	}
	h.mustApply(&cmdpb.Envelope{Command: &cmdpb.Envelope_CreateIndex{CreateIndex: &cmdpb.CreateIndex{Table: "users", Index: &pb.IndexSchema{Name: "by_n", Fields: []string{"n"}}}}})
	h.mustApply(&cmdpb.Envelope{Session: sess("client-1", 1, 1), Command: txn(upsert("s", "s@x", 1))})
	return h
}

func TestSnapshotRoundTrip(t *testing.T) {
	h := populated(t, 200)
	want, err := h.f.StateHash()
	if err != nil {
		t.Fatal(err)
	}
	data := snapshotBytes(t, h.f)

	g := newHarness(t)
	if err := restoreBytes(g.f, data); err != nil {
		t.Fatal(err)
	}
	got, _ := g.f.StateHash()
	if got != want {
		t.Fatal("restored state hash differs")
	}
	if g.f.Applied() != h.index || g.f.Store().View().Revision() != h.index {
		t.Fatalf("restored revision %d, want %d", g.f.Store().View().Revision(), h.index)
	}
	// Secondary indexes are rebuilt: an index scan gives the same rows.
	o := store.ScanOptions{Index: "by_n", Prefix: []store.Value{store.Int(3)}}
	a, err1 := h.f.Store().View().Scan("users", o)
	b, err2 := g.f.Store().View().Scan("users", o)
	if err1 != nil || err2 != nil || len(a.Rows) == 0 || len(a.Rows) != len(b.Rows) {
		t.Fatalf("index scan: %d rows (%v) vs %d (%v)", len(a.Rows), err1, len(b.Rows), err2)
	}
	// The session table travelled: a retry after restore is deduplicated.
	g.index = h.index
	g.now = h.now
	r := g.apply(&cmdpb.Envelope{Session: sess("client-1", 1, 1), Command: txn(upsert("s", "s@x", 1))})
	if r.ErrorReason != "" || r.Revision != h.index {
		t.Fatalf("retry after restore: %v", r)
	}
	row, _, _ := g.f.Store().View().Get("users", store.String("s"))
	if row.Version != 1 {
		t.Fatalf("retry after restore applied again: version %d", row.Version)
	}
	// A second snapshot of the restored state is byte-identical.
	if again := snapshotBytes(t, newRestored(t, data)); !bytes.Equal(again, data) {
		t.Fatal("snapshot of a restored state differs from the original")
	}
}

func newRestored(t *testing.T, data []byte) *FSM {
	g := newHarness(t)
	if err := restoreBytes(g.f, data); err != nil {
		t.Fatal(err)
	}
	return g.f
}

func TestSnapshotEmpty(t *testing.T) {
	h := newHarness(t)
	g := newRestored(t, snapshotBytes(t, h.f))
	if n := len(g.Store().View().Tables()); n != 0 {
		t.Fatalf("%d tables", n)
	}
}

// Corruption anywhere, or truncation at any length, is detected and leaves
// the target state machine unchanged.
func TestSnapshotCorruption(t *testing.T) {
	data := snapshotBytes(t, populated(t, 50).f)
	target := populated(t, 3)
	want, _ := target.f.StateHash()
	check := func(name string, b []byte) {
		t.Helper()
		err := restoreBytes(target.f, b)
		if err == nil {
			t.Fatalf("%s: restore succeeded", name)
		}
		if !errors.Is(err, ErrSnapshotCorrupt) && !errors.Is(err, ErrSnapshotVersion) {
			t.Fatalf("%s: error %v is not a corruption error", name, err)
		}
		if got, _ := target.f.StateHash(); got != want {
			t.Fatalf("%s: failed restore changed the state", name)
		}
	}
	for n := 0; n < len(data); n += 1 + n/16 {
		check(fmt.Sprintf("truncated to %d", n), data[:n])
	}
	check("truncated checksum", data[:len(data)-1])
	check("trailing byte", append(bytes.Clone(data), 0))
	for i := 0; i < len(data); i += 7 {
		b := bytes.Clone(data)
		b[i] ^= 0x40
		check(fmt.Sprintf("flipped byte %d", i), b)
	}
	v := bytes.Clone(data)
	binary.BigEndian.PutUint32(v[8:], 99)
	check("future version", v)
}

// A snapshot whose checksum is valid but whose rows decode to a different
// state (a bug or a forged file) fails the state hash check.
func TestSnapshotStateHashMismatch(t *testing.T) {
	h := populated(t, 5)
	data := snapshotBytes(t, h.f)
	// Rewrite the meta record's hash and fix the CRC.
	r := newSnapReader(bytes.NewReader(data[12:]))
	typ, payload, err := r.next()
	if err != nil || typ != recMeta {
		t.Fatal(err)
	}
	var meta cmdpb.SnapshotMeta
	if err := proto.Unmarshal(payload, &meta); err != nil {
		t.Fatal(err)
	}
	meta.StateHash[0] ^= 1
	var buf bytes.Buffer
	w := &snapWriter{w: bufio.NewWriter(&buf)}
	w.write(data[:12])
	w.message(recMeta, "", &meta)
	framed := 1 + len(binary.AppendUvarint(nil, uint64(len(payload)))) + len(payload)
	w.write(data[12+framed : len(data)-4])
	if err := w.w.Flush(); err != nil || w.err != nil {
		t.Fatal(err, w.err)
	}
	forged := append(buf.Bytes(), 0, 0, 0, 0)
	binary.BigEndian.PutUint32(forged[len(forged)-4:], crc32.Checksum(forged[:len(forged)-4], castagnoli))
	g := newHarness(t)
	if err := restoreBytes(g.f, forged); !errors.Is(err, ErrSnapshotCorrupt) || !strings.Contains(err.Error(), "state hash") {
		t.Fatalf("forged snapshot: %v", err)
	}
}
