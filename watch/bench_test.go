package watch

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/memdbd/memdbd/store"
)

// BenchmarkPublish measures the apply path's cost of one published
// single-row batch with no watcher and with 10,000 watchers on distinct
// keys (one of which matches each change): the dispatcher runs on its own
// goroutine, so Publish itself must not grow with the watchers.
func BenchmarkPublish(b *testing.B) {
	for _, n := range []int{0, 10_000} {
		b.Run(fmt.Sprintf("watchers=%d", n), func(b *testing.B) {
			benchPublish(b, n)
		})
	}
}

// benchKeys builds a table of keys rows and the encoded row of each.
func benchWorld(b *testing.B, keys int) (*store.View, []store.Change) {
	s, _ := store.New(store.Options{TrackChanges: true})
	bt := s.Begin()
	_ = bt.CreateTable(1, store.TableSchema{Name: "t", PrimaryKey: "id", Fields: []store.FieldSchema{{Name: "id", Type: store.TypeInt}, {Name: "v", Type: store.TypeBytes}}})
	bt.Commit()
	var changes []store.Change
	for i := range keys {
		bt := s.Begin()
		if _, err := bt.Txn(uint64(i+2), store.Txn{Then: []store.Op{{Kind: store.OpUpsert, Table: "t",
			Fields: []store.Field{{Name: "id", Value: store.Int(int64(i))}, {Name: "v", Value: store.Bytes(make([]byte, 256))}}}}}); err != nil {
			b.Fatal(err)
		}
		changes = append(changes, bt.Changes()...)
		bt.Commit()
	}
	return s.View(), changes
}

func benchWatchers(b *testing.B, h *Hub, v *store.View, n int) ([]*Watcher, func()) {
	fn, _ := v.SortKeyFunc("t", "")
	var ws []*Watcher
	for i := range n {
		lo, hi, err := v.KeyRange("t", store.ScanOptions{Prefix: []store.Value{store.Int(int64(i))}})
		if err != nil {
			b.Fatal(err)
		}
		w, err := h.Watch(h.Revision(), Matcher{Table: "t", SortKey: fn, Lo: lo, Hi: hi})
		if err != nil {
			b.Fatal(err)
		}
		ws = append(ws, w)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if _, err := w.Next(ctx, time.Hour); err != nil {
					return
				}
			}
		}()
	}
	return ws, func() {
		cancel()
		wg.Wait()
		for _, w := range ws {
			w.Close()
		}
	}
}

func benchPublish(b *testing.B, n int) {
	const keys = 10_000
	v, changes := benchWorld(b, keys)
	h, _ := NewHub(Config{HistoryEvents: 100_000, HistoryBytes: 1 << 30, QueueEvents: 1000}, v.Revision())
	defer h.Close()
	_, stop := benchWatchers(b, h, v, n)
	defer stop()
	rev := v.Revision()
	b.ResetTimer()
	for i := range b.N {
		rev++
		c := changes[i%keys]
		c.Revision = rev
		h.Publish(rev, []store.Change{c})
	}
	b.StopTimer()
}

// BenchmarkDeliveryDelay10k measures, with 10,000 watchers each on its own
// key, the time from Publish to the matching watcher's Next returning the
// event (the server then only converts and sends it): p50 and p99 over
// the run, while changes arrive at about 5,000 per second.
func BenchmarkDeliveryDelay10k(b *testing.B) {
	const n = 10_000
	v, changes := benchWorld(b, n)
	h, _ := NewHub(Config{HistoryEvents: 100_000, HistoryBytes: 1 << 30, QueueEvents: 1000}, v.Revision())
	defer h.Close()
	fn, _ := v.SortKeyFunc("t", "")
	var mu sync.Mutex
	var delays []time.Duration
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range n {
		lo, hi, _ := v.KeyRange("t", store.ScanOptions{Prefix: []store.Value{store.Int(int64(i))}})
		w, err := h.Watch(h.Revision(), Matcher{Table: "t", SortKey: fn, Lo: lo, Hi: hi})
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer w.Close()
			for {
				bt, err := w.Next(ctx, time.Hour)
				if err != nil {
					return
				}
				now := time.Now()
				mu.Lock()
				for _, e := range bt.Events {
					delays = append(delays, now.Sub(e.At))
				}
				mu.Unlock()
			}
		}()
	}
	rev := v.Revision()
	b.ResetTimer()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for i := 0; i < b.N; i += 5 {
		<-tick.C
		for j := range 5 {
			rev++
			c := changes[(i+j)%n]
			c.Revision = rev
			h.Publish(rev, []store.Change{c})
		}
	}
	b.StopTimer()
	time.Sleep(100 * time.Millisecond)
	cancel()
	wg.Wait()
	sort.Slice(delays, func(i, j int) bool { return delays[i] < delays[j] })
	if len(delays) > 0 {
		b.ReportMetric(float64(delays[len(delays)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(delays[len(delays)*99/100].Microseconds()), "p99-µs")
	}
}
