package server

import (
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/memdbd/memdbd/api/convert"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/api/wire"
	"github.com/memdbd/memdbd/store"
)

// The sizes responses are measured by before they are built are the sizes
// written: of a row (hand-written and generated alike), a BatchGet result
// and a header.
func TestResponseSizesAreExact(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for round := range 2000 {
		row := store.Row{Fields: []store.Field{{Name: "id", Value: randValue(r)}},
			Meta: store.Meta{CreateRevision: r.Uint64N(1 << 40), ModRevision: r.Uint64N(3) * r.Uint64(), Version: r.Uint64N(1000)}}
		for j := range r.IntN(6) {
			row.Fields = append(row.Fields, store.Field{Name: string(rune('k' + j)), Value: randValue(r)})
		}
		if r.IntN(2) == 0 {
			row.ExpiresAt = int64(r.Uint64()) // negative ones too
		}
		if got, want := sizeRowFields(row), len(appendRowFields(nil, row)); got != want {
			t.Fatalf("round %d: sizeRowFields %d, written %d", round, got, want)
		}
		if got, want := sizeRowFields(row), proto.Size(convert.RowToPB(row)); got != want {
			t.Fatalf("round %d: sizeRowFields %d, generated %d", round, got, want)
		}
		found := r.IntN(3) != 0
		h := &pb.ResponseHeader{Revision: r.Uint64N(3) * r.Uint64(), NodeId: []string{"", "n1"}[r.IntN(2)], RaftTerm: r.Uint64N(3)}
		w := newBatchGetWire(h, 0)
		if got, want := sizeHeader(wire.BatchHeader, h), len(w.b); got != want {
			t.Fatalf("round %d: sizeHeader %d, written %d", round, got, want)
		}
		if got, want := sizeGet(h, row, found), len(encodeGet(h, row, found)); got != want {
			t.Fatalf("round %d: sizeGet %d, written %d", round, got, want)
		}
		before := len(w.b)
		w.add(row, found)
		if got, want := sizeBatchResult(row, found), len(w.b)-before; got != want {
			t.Fatalf("round %d: sizeBatchResult %d, written %d", round, got, want)
		}
	}
}

// The budget of response bytes in flight admits reservations up to its
// limit, refuses beyond, and is whole again once they are released.
func TestResponseBudget(t *testing.T) {
	var b responseBudget
	if ok, used := b.reserve(60, 100); !ok || used != 60 {
		t.Fatalf("first reservation: %v %d", ok, used)
	}
	if ok, used := b.reserve(41, 100); ok || used != 60 {
		t.Fatalf("a reservation over the limit: %v %d, want refused with 60 in use", ok, used)
	}
	if ok, _ := b.reserve(40, 100); !ok {
		t.Fatal("a reservation up to the limit was refused")
	}
	b.release(60)
	b.release(40)
	if n := b.used.Load(); n != 0 {
		t.Fatalf("%d bytes in use after every release", n)
	}
}

// Limits.Validate: a response limit below one row and its framing, or a
// budget below one response, is refused, naming the setting.
func TestLimitsValidateResponseBytes(t *testing.T) {
	l := DefaultLimits()
	if err := l.Validate(); err != nil {
		t.Fatal(err)
	}
	l.MaxResponseBytes = l.MaxRowBytes
	if err := l.Validate(); err == nil || !startsWith(err.Error(), "max response bytes ") {
		t.Fatalf("a response limit of one row without framing: %v", err)
	}
	l = DefaultLimits()
	l.MaxResponseBytesInFlight = int64(l.MaxResponseBytes) - 1
	if err := l.Validate(); err == nil || !startsWith(err.Error(), "max response bytes in flight ") {
		t.Fatalf("a budget below one response: %v", err)
	}
}

func startsWith(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }
