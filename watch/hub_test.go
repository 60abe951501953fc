package watch

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/memdbd/memdbd/store"
)

// world drives a real store and publishes its changes to a hub, keeping
// every change for the checks.
type world struct {
	t   *testing.T
	s   *store.Store
	h   *Hub
	rev uint64
	all []store.Change
}

func newWorld(t *testing.T, cfg Config) *world {
	t.Helper()
	s, err := store.New(store.Options{TrackChanges: true})
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewHub(cfg, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	w := &world{t: t, s: s, h: h}
	w.batch(func(b *store.Batch, next func() uint64) {
		if err := b.CreateTable(next(), store.TableSchema{Name: "t", PrimaryKey: "id",
			Fields:  []store.FieldSchema{{Name: "id", Type: store.TypeInt}, {Name: "g", Type: store.TypeInt}},
			Indexes: []store.IndexSchema{{Name: "by_g", Fields: []string{"g"}}}}); err != nil {
			t.Fatal(err)
		}
	})
	return w
}

func (w *world) batch(fn func(b *store.Batch, next func() uint64)) {
	b := w.s.Begin()
	fn(b, func() uint64 { w.rev++; return w.rev })
	ch := append([]store.Change(nil), b.Changes()...)
	b.Commit()
	w.all = append(w.all, ch...)
	w.h.Publish(w.rev, ch)
}

// randomBatch applies 1-3 transactions of 1-3 upserts or deletes.
func (w *world) randomBatch(r *rand.Rand) {
	w.batch(func(b *store.Batch, next func() uint64) {
		for range 1 + r.IntN(3) {
			var ops []store.Op
			for range 1 + r.IntN(3) {
				id := store.Int(int64(r.IntN(40)))
				if r.IntN(4) == 0 {
					ops = append(ops, store.Op{Kind: store.OpDelete, Table: "t", Key: id})
				} else {
					ops = append(ops, store.Op{Kind: store.OpUpsert, Table: "t", Fields: []store.Field{{Name: "id", Value: id}, {Name: "g", Value: store.Int(int64(r.IntN(8)))}}})
				}
			}
			if _, err := b.Txn(next(), store.Txn{Then: ops}); err != nil {
				w.t.Fatal(err)
			}
		}
	})
}

// spec is a watch described by plain numbers, checked independently of
// the byte encodings the hub matches on.
type spec struct {
	index           bool // by_g instead of id
	lo, hi          int64
	noPut, noDelete bool
	start           uint64
}

func (w *world) matcher(sp spec) Matcher {
	v := w.s.View()
	o := store.ScanOptions{Start: []store.Value{store.Int(sp.lo)}, End: []store.Value{store.Int(sp.hi)}}
	index := ""
	if sp.index {
		index = "by_g"
		o.Index = index
	}
	lo, hi, err := v.KeyRange("t", o)
	if err != nil {
		w.t.Fatal(err)
	}
	fn, err := v.SortKeyFunc("t", index)
	if err != nil {
		w.t.Fatal(err)
	}
	return Matcher{Table: "t", Index: index, IndexDef: "g", SortKey: fn, Lo: lo, Hi: hi, NoPut: sp.noPut, NoDelete: sp.noDelete}
}

func field(raw, name string) (int64, bool) {
	if raw == "" {
		return 0, false
	}
	r, err := store.DecodeRow(raw, "id")
	if err != nil {
		panic(err)
	}
	for _, f := range r.Fields {
		if f.Name == name {
			return f.Value.AsInt(), true
		}
	}
	return 0, false
}

// expected lists the changes a spec must see, in order.
func (w *world) expected(sp spec) []string {
	var out []string
	in := func(x int64) bool { return x >= sp.lo && x < sp.hi }
	for _, c := range w.all {
		if c.Revision <= sp.start || c.Dropped != nil {
			continue
		}
		if (c.Row == "" && sp.noDelete) || (c.Row != "" && sp.noPut) {
			continue
		}
		name := "id"
		if sp.index {
			name = "g"
		}
		a, okA := field(c.Row, name)
		b, okB := field(c.Prev, name)
		if (okA && in(a)) || (okB && in(b)) {
			out = append(out, describe(c.Revision, c.Key, c.Row))
		}
	}
	return out
}

func describe(rev uint64, key, row string) string {
	return fmt.Sprintf("%d/%x/%d", rev, key, len(row))
}

// collect drains a watcher until it reaches rev, checking that every batch
// holds whole revisions in order.
func collect(t *testing.T, wt *Watcher, until uint64) ([]string, error) {
	var out []string
	last := uint64(0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		b, err := wt.Next(ctx, 20*time.Millisecond)
		if err != nil {
			return out, err
		}
		for _, e := range b.Events {
			if e.Rev < last {
				t.Errorf("event at %d after %d", e.Rev, last)
			}
			last = e.Rev
			if e.Rev > b.Rev {
				t.Errorf("batch reports revision %d but holds an event at %d", b.Rev, e.Rev)
			}
			out = append(out, describe(e.Rev, e.Key, e.Row))
		}
		if b.Rev >= until {
			return out, nil
		}
	}
}

func TestWatchMatchesEveryChangeOnce(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 7))
			w := newWorld(t, Config{HistoryEvents: 1 << 20, HistoryBytes: 1 << 30, QueueEvents: 1 << 20})
			type run struct {
				sp  spec
				got []string
				err error
			}
			var runs []*run
			var wg sync.WaitGroup
			const batches = 400
			for i := range batches {
				if i%20 == 0 {
					// Watches starting now, in the past (catch-up) and in the
					// future, on either key.
					for range 3 {
						lo := int64(r.IntN(40))
						sp := spec{index: r.IntN(2) == 0, lo: lo, hi: lo + 1 + int64(r.IntN(12)), noPut: r.IntN(6) == 0, noDelete: r.IntN(6) == 0}
						if sp.index {
							sp.lo, sp.hi = sp.lo%8, sp.lo%8+1+int64(r.IntN(3))
						}
						switch r.IntN(3) {
						case 0:
							sp.start = w.rev
						case 1:
							sp.start = uint64(r.IntN(int(w.rev) + 1))
						default:
							sp.start = w.rev + uint64(r.IntN(30))
						}
						wt, err := w.h.Watch(sp.start, w.matcher(sp))
						if err != nil {
							t.Fatal(err)
						}
						ru := &run{sp: sp}
						runs = append(runs, ru)
						wg.Add(1)
						go func() {
							defer wg.Done()
							defer wt.Close()
							ru.got, ru.err = collect(t, wt, 1<<62)
						}()
					}
				}
				w.randomBatch(r)
			}
			// Let every watcher reach the end, then stop them.
			deadline := time.Now().Add(20 * time.Second)
			for w.h.dispatched.Load() < w.rev && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			time.Sleep(100 * time.Millisecond)
			w.h.Close()
			wg.Wait()
			for i, ru := range runs {
				if !errors.Is(ru.err, ErrClosed) {
					t.Fatalf("watch %d ended with %v", i, ru.err)
				}
				want := w.expected(ru.sp)
				if fmt.Sprint(ru.got) != fmt.Sprint(want) {
					t.Fatalf("watch %d %+v:\n got %d events %v\nwant %d events %v", i, ru.sp, len(ru.got), ru.got, len(want), want)
				}
			}
		})
	}
}

func waitDispatched(t *testing.T, w *world) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for w.h.dispatched.Load() < w.rev {
		if time.Now().After(deadline) {
			t.Fatal("dispatcher did not catch up")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestWatchCompactedStart(t *testing.T) {
	w := newWorld(t, Config{HistoryEvents: 50, HistoryBytes: 1 << 30, QueueEvents: 10})
	r := rand.New(rand.NewPCG(1, 2))
	for range 100 {
		w.randomBatch(r)
	}
	waitDispatched(t, w)
	oldest := w.h.Oldest()
	if oldest == 0 {
		t.Fatal("nothing was compacted")
	}
	var ce *ErrCompacted
	if _, err := w.h.Watch(oldest-1, w.matcher(spec{lo: 0, hi: 100})); !errors.As(err, &ce) || ce.Oldest != oldest {
		t.Fatalf("Watch below the history: %v, want ErrCompacted{%d}", err, oldest)
	}
	sp := spec{lo: 0, hi: 100, start: oldest}
	wt, err := w.h.Watch(oldest, w.matcher(sp))
	if err != nil {
		t.Fatal(err)
	}
	defer wt.Close()
	got, err := collect(t, wt, w.rev)
	if err != nil || fmt.Sprint(got) != fmt.Sprint(w.expected(sp)) {
		t.Fatalf("from the oldest revision: %v, %d events, want %d", err, len(got), len(w.expected(sp)))
	}
	// A watcher in catch-up that the history overtakes learns it.
	wt2, err := w.h.Watch(oldest, w.matcher(sp))
	if err != nil {
		t.Fatal(err)
	}
	defer wt2.Close()
	for range 100 {
		w.randomBatch(r)
	}
	_, err = collect(t, wt2, w.rev)
	if !errors.As(err, &ce) {
		t.Fatalf("overtaken watcher: %v", err)
	}
}

func TestWatchSlowWatcherIsCancelled(t *testing.T) {
	w := newWorld(t, Config{HistoryEvents: 1 << 20, HistoryBytes: 1 << 30, QueueEvents: 20})
	sp := spec{lo: 0, hi: 100, start: w.rev}
	wt, err := w.h.Watch(w.rev, w.matcher(sp))
	if err != nil {
		t.Fatal(err)
	}
	defer wt.Close()
	r := rand.New(rand.NewPCG(3, 4))
	start := time.Now()
	for range 200 {
		w.randomBatch(r)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("publishing took %v with a stuck watcher", d)
	}
	got, err := collect(t, wt, 1<<62)
	var slow *ErrTooSlow
	if !errors.As(err, &slow) {
		t.Fatalf("err = %v, want ErrTooSlow", err)
	}
	if len(got) == 0 || len(got) > 20 {
		t.Fatalf("%d events before the cancel", len(got))
	}
	// What it got is a gap-free prefix of what it should have seen, made of
	// whole revisions; resuming from the delivered revision continues it.
	want := w.expected(sp)
	if fmt.Sprint(got) != fmt.Sprint(want[:len(got)]) {
		t.Fatalf("prefix differs:\n%v\n%v", got, want[:len(got)])
	}
	sp2 := sp
	sp2.start = wt.Delivered()
	wt2, err := w.h.Watch(sp2.start, w.matcher(sp2))
	if err != nil {
		t.Fatal(err)
	}
	defer wt2.Close()
	rest, err := collect(t, wt2, w.rev)
	if err != nil || fmt.Sprint(append(got, rest...)) != fmt.Sprint(want) {
		t.Fatalf("resumed stream: %v; %d+%d events, want %d", err, len(got), len(rest), len(want))
	}
}

func TestWatchEndsWhenTableDroppedAndOnReset(t *testing.T) {
	w := newWorld(t, DefaultConfig())
	r := rand.New(rand.NewPCG(5, 6))
	for range 10 {
		w.randomBatch(r)
	}
	sp := spec{lo: 0, hi: 100, start: w.rev}
	wt, err := w.h.Watch(w.rev, w.matcher(sp))
	if err != nil {
		t.Fatal(err)
	}
	defer wt.Close()
	w.batch(func(b *store.Batch, next func() uint64) {
		if err := b.DropTable(next(), "t"); err != nil {
			t.Fatal(err)
		}
	})
	got, err := collect(t, wt, 1<<62)
	var de *ErrDropped
	if !errors.As(err, &de) || de.Rev != w.rev || de.Table != "t" {
		t.Fatalf("err = %v", err)
	}
	if fmt.Sprint(got) != fmt.Sprint(w.expected(sp)) || len(got) == 0 {
		t.Fatalf("the deletes of the dropped rows: %d events, want %d", len(got), len(w.expected(sp)))
	}

	w2 := newWorld(t, DefaultConfig())
	wt2, err := w2.h.Watch(w2.rev, w2.matcher(sp))
	if err != nil {
		t.Fatal(err)
	}
	defer wt2.Close()
	w2.h.Reset(w2.rev + 10)
	var ce *ErrCompacted
	if _, err := collect(t, wt2, 1<<62); !errors.As(err, &ce) || ce.Oldest != w2.rev+10 {
		t.Fatalf("after Reset: %v", err)
	}
}

func TestWatchProgressWithoutEvents(t *testing.T) {
	w := newWorld(t, DefaultConfig())
	wt, err := w.h.Watch(w.rev, w.matcher(spec{lo: 1000, hi: 1001}))
	if err != nil {
		t.Fatal(err)
	}
	defer wt.Close()
	r := rand.New(rand.NewPCG(8, 9))
	for range 20 {
		w.randomBatch(r)
	}
	got, err := collect(t, wt, w.rev)
	if err != nil || len(got) != 0 {
		t.Fatalf("%v %v", got, err)
	}
	if wt.Delivered() != w.rev {
		t.Fatalf("progress reached %d, want %d", wt.Delivered(), w.rev)
	}
}

// A watch that starts after a drop the dispatcher has not reached yet
// watches the table created since; the old drop must not end it.
func TestWatchStartingAfterAnUndispatchedDrop(t *testing.T) {
	gate := make(chan struct{})
	var held atomic.Bool
	dispatchHook = func() {
		if held.Load() {
			<-gate
		}
	}
	w := newWorld(t, DefaultConfig())
	t.Cleanup(func() { w.h.Close(); dispatchHook = nil })
	r := rand.New(rand.NewPCG(10, 11))
	for range 5 {
		w.randomBatch(r)
	}
	waitDispatched(t, w)
	// The dispatcher is held back while the table is dropped and
	// recreated, and while a watch starts after both.
	held.Store(true)
	w.batch(func(b *store.Batch, next func() uint64) {
		if err := b.DropTable(next(), "t"); err != nil {
			t.Fatal(err)
		}
		if err := b.CreateTable(next(), store.TableSchema{Name: "t", PrimaryKey: "id",
			Fields:  []store.FieldSchema{{Name: "id", Type: store.TypeInt}, {Name: "g", Type: store.TypeInt}},
			Indexes: []store.IndexSchema{{Name: "by_g", Fields: []string{"g"}}}}); err != nil {
			t.Fatal(err)
		}
	})
	sp := spec{lo: 0, hi: 100, start: w.rev}
	wt, err := w.h.Watch(w.rev, w.matcher(sp))
	if err != nil {
		t.Fatal(err)
	}
	defer wt.Close()
	held.Store(false)
	close(gate)
	for range 5 {
		w.randomBatch(r)
	}
	got, err := collect(t, wt, w.rev)
	if err != nil || fmt.Sprint(got) != fmt.Sprint(w.expected(sp)) || len(got) == 0 {
		t.Fatalf("after the recreate: %v, %d events, want %d", err, len(got), len(w.expected(sp)))
	}
}

// The smallest queue still lets a watch start in the middle of history.
func TestWatchWithTheSmallestQueue(t *testing.T) {
	w := newWorld(t, Config{HistoryEvents: 1000, HistoryBytes: 1 << 20, QueueEvents: 1})
	r := rand.New(rand.NewPCG(12, 13))
	for range 3 {
		w.randomBatch(r)
	}
	waitDispatched(t, w)
	wt, err := w.h.Watch(0, w.matcher(spec{lo: 0, hi: 100}))
	if err != nil {
		t.Fatal(err)
	}
	defer wt.Close()
	if got, err := collect(t, wt, w.rev); err != nil || fmt.Sprint(got) != fmt.Sprint(w.expected(spec{lo: 0, hi: 100})) {
		t.Fatalf("%v: %d events", err, len(got))
	}
}
