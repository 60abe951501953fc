package client_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/memdbd/memdbd/client"
	"github.com/memdbd/memdbd/internal/racecheck"
	"github.com/memdbd/memdbd/server"
)

// A row near the members' default row limit, and a watch event of it with
// its previous row, reach a client with default settings: its receive
// limit agrees with the members' default response limit.
func TestLargeRowsReachTheClient(t *testing.T) {
	if racecheck.Enabled {
		t.Skip("moves tens of MB through three members; runs without the race detector")
	}
	if lim := server.DefaultLimits(); lim.MaxResponseBytes < lim.MaxRowBytes {
		t.Fatalf("the default response limit %d is below the row limit %d", lim.MaxResponseBytes, lim.MaxRowBytes)
	}
	c := newClient(t, endpoints)
	ctx := ctxT(t)
	mustCreate(t, c, client.TableSchema{Name: "large", PrimaryKey: "k",
		Fields: []client.FieldSchema{{Name: "k", Type: client.TypeString}}})
	// Two values under the value limit (4 MiB), 6 MiB together.
	half := func(b byte) client.Value { return client.Bytes([]byte(strings.Repeat(string(b), 3<<20))) }
	if _, err := c.Upsert(ctx, "large", client.Fields{"k": client.String("a"), "v": half('a'), "w": half('b')}); err != nil {
		t.Fatal(err)
	}
	row, err := c.Get(ctx, "large", client.String("a"))
	if err != nil || len(row.Fields["v"].AsString()) != 3<<20 {
		t.Fatalf("Get of a 6 MiB row: %v", err)
	}
	rows, err := c.BatchGet(ctx, "large", []client.Value{client.String("a"), client.String("b")})
	if err != nil || len(rows) != 2 || rows[0] == nil || rows[1] != nil {
		t.Fatalf("BatchGet of a 6 MiB row: %v", err)
	}

	ch := c.Watch(ctx, "large", client.WatchOptions{PrevRow: true})
	time.Sleep(200 * time.Millisecond)
	if _, err := c.Upsert(ctx, "large", client.Fields{"k": client.String("a"), "v": half('c'), "w": half('d')}); err != nil {
		t.Fatal(err)
	}
	r := next(t, ch)
	if len(r.Events) != 1 || r.Events[0].PrevRow == nil || r.Events[0].Row.Fields["v"].AsString()[0] != 'c' {
		t.Fatalf("the watch event of a 6 MiB row with its previous row: %+v", r.Events)
	}
}

// A transaction whose events exceed a watch message reaches the watcher
// whole, in one response, between the transactions before and after it,
// each once.
func TestWatchJoinsATransactionsFragments(t *testing.T) {
	if racecheck.Enabled {
		t.Skip("moves several MB through three members; runs without the race detector")
	}
	c := newClient(t, endpoints)
	ctx := ctxT(t)
	mustCreate(t, c, kvSchema("frag"))
	ch := c.Watch(ctx, "frag", client.WatchOptions{PrevRow: true})
	time.Sleep(200 * time.Millisecond)
	big := client.String(strings.Repeat("x", 200<<10))
	const rows = 12 // with the previous rows, 4.8 MB: more than twice the 2 MiB a message is cut at
	write := func(v client.Value) client.Header {
		tx := c.Txn()
		for i := range rows {
			tx.Then(client.UpsertOp("frag", client.Fields{"k": client.String(fmt.Sprintf("r%02d", i)), "tag": client.String(fmt.Sprint(i)), "v": v}))
		}
		res, err := tx.Commit(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return res.Header
	}
	first, err := c.Upsert(ctx, "frag", client.Fields{"k": client.String("first")})
	if err != nil {
		t.Fatal(err)
	}
	write(big)
	large := write(client.String(strings.Repeat("y", 200<<10)))
	last, err := c.Upsert(ctx, "frag", client.Fields{"k": client.String("last")})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]int{}
	for seen[last.ModRevision] == 0 {
		r := next(t, ch)
		revs := map[uint64]int{}
		for _, e := range r.Events {
			revs[e.Revision]++
		}
		for rev, n := range revs {
			if seen[rev] != 0 {
				t.Fatalf("revision %d delivered twice", rev)
			}
			seen[rev] = n
		}
	}
	if seen[first.ModRevision] != 1 || seen[large.Revision] != rows {
		t.Fatalf("events by revision %v; want 1 at %d and %d at %d", seen, first.ModRevision, rows, large.Revision)
	}
}

// A member's refusal of a response over its limit is ErrResponseTooLarge,
// not retried, on the hand-decoded BatchGet path as on the others; the
// client's own receive limit applies to that path as to the others.
func TestResponseLimitsOnTheWirePath(t *testing.T) {
	c := newClient(t, endpoints)
	ctx := ctxT(t)
	mustCreate(t, c, kvSchema("wide"))
	row := client.Fields{"k": client.String("a"), "v": client.String(strings.Repeat("x", 100<<10))}
	if _, err := c.Upsert(ctx, "wide", row); err != nil {
		t.Fatal(err)
	}
	// A thousand times a 100 KiB row: 100 MB, over the default 64 MiB.
	keys := make([]client.Value, 1000)
	for i := range keys {
		keys[i] = client.String("a")
	}
	start := time.Now()
	_, err := c.BatchGet(ctx, "wide", keys)
	if !errors.Is(err, client.ErrResponseTooLarge) {
		t.Fatalf("BatchGet of 100 MB: %v, want ErrResponseTooLarge", err)
	}
	var e *client.Error
	if !errors.As(err, &e) || e.GRPCCode() != codes.ResourceExhausted || !strings.Contains(e.Error(), "--max-response-bytes") {
		t.Fatalf("the error does not name the limit: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the refusal took %v: retried?", d)
	}

	// A client that accepts 1 MiB: the wire path and the proto path both
	// refuse 2 MB.
	small := newClient(t, endpoints, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<20)))
	_, err = small.BatchGet(ctx, "wide", keys[:20])
	if !errors.As(err, &e) || e.GRPCCode() != codes.ResourceExhausted {
		t.Fatalf("BatchGet of 2 MB with a 1 MiB receive limit: %v", err)
	}
	for i := range 20 {
		row["k"] = client.String(fmt.Sprint("b", i))
		if _, err := c.Upsert(ctx, "wide", row); err != nil {
			t.Fatal(err)
		}
	}
	_, err = small.Scan(ctx, "wide", client.ScanOptions{})
	if !errors.As(err, &e) || e.GRPCCode() != codes.ResourceExhausted {
		t.Fatalf("Scan of 2 MB with a 1 MiB receive limit: %v", err)
	}
}
