package store

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	iradix "github.com/hashicorp/go-immutable-radix/v2"
	"github.com/tidwall/btree"
)

const (
	// benchRows is the table size of the read benchmarks. The design
	// target is a million rows; 100k keeps a run short, and a B-tree of
	// degree 32 is one level shallower than at 1M.
	benchRows = 100_000
	// memRows is the row count of BenchmarkMemoryPerRow.
	memRows     = 1_000_000
	benchValLen = 256
)

func benchSchema() TableSchema {
	return TableSchema{
		Name:       "kv",
		PrimaryKey: "k",
		Fields: []FieldSchema{
			{Name: "k", Type: TypeString},
			{Name: "v", Type: TypeString},
			{Name: "n", Type: TypeInt},
		},
		Indexes: []IndexSchema{{Name: "by_n", Fields: []string{"n"}}},
	}
}

// benchKey returns the 8-byte key of row i.
func benchKey(i int) string { return fmt.Sprintf("%08x", i) }

var benchValue = strings.Repeat("v", benchValLen)

// loadBench builds a store of n rows (key, 256-byte value, n = i) through
// batches of one-row upserts.
func loadBench(tb testing.TB, n int, withN bool) *Store {
	tb.Helper()
	opts := Options{}
	s, err := New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	sc := benchSchema()
	if !withN {
		sc.Fields = sc.Fields[:2]
		sc.Indexes = nil
	}
	b := s.Begin()
	rev := uint64(1)
	if err := b.CreateTable(rev, sc); err != nil {
		tb.Fatal(err)
	}
	fields := make([]Field, 0, 3)
	for i := 0; i < n; i++ {
		if i%1000 == 0 && i > 0 {
			b.Commit()
			b = s.Begin()
		}
		fields = append(fields[:0], Field{"k", String(benchKey(i))}, Field{"v", String(benchValue)})
		if withN {
			fields = append(fields, Field{"n", Int(int64(i))})
		}
		rev++
		if _, err := b.Txn(rev, Txn{Then: []Op{{Kind: OpUpsert, Table: "kv", Fields: fields}}}); err != nil {
			tb.Fatal(err)
		}
	}
	b.Commit()
	return s
}

func BenchmarkBatchUpsert(b *testing.B) {
	s := loadBench(b, 0, false)
	r := rand.New(rand.NewPCG(1, 2))
	rev := s.View().Revision()
	ops := make([]Op, 1)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		batch := s.Begin()
		for j := 0; j < 64; j++ {
			rev++
			ops[0] = Op{Kind: OpUpsert, Table: "kv", Fields: []Field{{"k", String(benchKey(r.IntN(1 << 20)))}, {"v", String(benchValue)}}}
			if _, err := batch.Txn(rev, Txn{Then: ops}); err != nil {
				b.Fatal(err)
			}
		}
		batch.Commit()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*64), "ns/row")
}

func benchGet(b *testing.B, s *Store) {
	v := s.View()
	r := rand.New(rand.NewPCG(3, 4))
	keys := make([]Value, 4096)
	for i := range keys {
		keys[i] = String(benchKey(r.IntN(benchRows)))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, ok, err := v.Get("kv", keys[i%len(keys)]); !ok || err != nil {
			b.Fatal("missing row", err)
		}
	}
}

func BenchmarkGet(b *testing.B) {
	benchGet(b, loadBench(b, benchRows, false))
}

// Point gets while another goroutine iterates every row of the same view,
// as a snapshot does: compare with BenchmarkGet.
func BenchmarkGetDuringSnapshotIteration(b *testing.B) {
	s := loadBench(b, benchRows, false)
	var stop atomic.Bool
	var passes atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			v := s.View()
			n := 0
			_ = v.Rows("kv", func(raw string) bool {
				n += len(raw)
				return !stop.Load()
			})
			passes.Add(1)
		}
	}()
	benchGet(b, s)
	b.StopTimer()
	stop.Store(true)
	wg.Wait()
	b.ReportMetric(float64(passes.Load()), "snapshot-passes")
}

func BenchmarkIndexRangeScan100(b *testing.B) {
	s := loadBench(b, benchRows, true)
	v := s.View()
	r := rand.New(rand.NewPCG(5, 6))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		lo := int64(r.IntN(benchRows - 100))
		res, err := v.Scan("kv", ScanOptions{Index: "by_n", Start: []Value{Int(lo)}, End: []Value{Int(lo + 100)}})
		if err != nil || len(res.Rows) != 100 {
			b.Fatalf("%d rows, %v", len(res.Rows), err)
		}
	}
}

func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkMemoryPerRow loads a million rows of an 8-byte string key and a
// 256-byte string value through batches of 1000 one-row upserts and
// reports the heap they take per row, and its ratio to the raw data (264
// bytes a row).
// BenchmarkHash1MRows is the cost of one state checkpoint's store hash
// (the consistency check) over a million rows.
func BenchmarkHash1MRows(b *testing.B) {
	s := loadBench(b, memRows, false)
	v := s.View()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_ = v.Hash()
	}
}

func BenchmarkMemoryPerRow(b *testing.B) {
	for i := 0; i < b.N; i++ {
		before := heapAfterGC()
		s := loadBench(b, memRows, false)
		after := heapAfterGC()
		if n, _ := s.View().Count("kv", ScanOptions{}); n != memRows {
			b.Fatalf("%d rows", n)
		}
		perRow := float64(after-before) / memRows
		b.ReportMetric(perRow, "heapB/row")
		b.ReportMetric(perRow/float64(8+benchValLen), "x-raw")
		runtime.KeepAlive(s)
	}
}

// ---------------------------------------------------------------------------
// Why tidwall/btree: the same workload on hashicorp/go-immutable-radix,
// the usual persistent tree in Go (go-memdb is built on it). Both publish
// an immutable version after every 64 inserts, as the store does after
// every batch.

const treeKeys = 100_000

func treeBenchKeys() []string {
	r := rand.New(rand.NewPCG(7, 8))
	keys := make([]string, treeKeys)
	for i := range keys {
		var k [8]byte
		binary.BigEndian.PutUint64(k[:], r.Uint64())
		keys[i] = string(k[:])
	}
	return keys
}

func buildBTree(keys []string) *btree.BTreeG[string] {
	tr := btree.NewBTreeGOptions(func(a, b string) bool { return a < b }, btree.Options{Degree: btreeDegree, NoLocks: true})
	var snap *btree.BTreeG[string]
	for i, k := range keys {
		tr.Set(k)
		if i%64 == 63 {
			snap = tr.Copy()
		}
	}
	_ = snap
	return tr
}

func buildRadix(keys []string) *iradix.Tree[string] {
	tree := iradix.New[string]()
	txn := tree.Txn()
	for i, k := range keys {
		txn.Insert([]byte(k), k)
		if i%64 == 63 {
			tree = txn.Commit()
			txn = tree.Txn()
		}
	}
	return txn.Commit()
}

func BenchmarkTreeInsert(b *testing.B) {
	keys := treeBenchKeys()
	run := func(b *testing.B, build func() any) {
		b.ReportAllocs()
		var heap float64
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			before := heapAfterGC()
			b.StartTimer()
			t := build()
			b.StopTimer()
			heap = float64(heapAfterGC()-before) / treeKeys
			runtime.KeepAlive(t)
			b.StartTimer()
		}
		b.ReportMetric(heap, "heapB/key")
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*treeKeys), "ns/key")
	}
	b.Run("btree", func(b *testing.B) { run(b, func() any { return buildBTree(keys) }) })
	b.Run("iradix", func(b *testing.B) { run(b, func() any { return buildRadix(keys) }) })
}

func BenchmarkTreeGet(b *testing.B) {
	keys := treeBenchKeys()
	b.Run("btree", func(b *testing.B) {
		tr := buildBTree(keys)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, ok := tr.Get(keys[i%treeKeys]); !ok {
				b.Fatal("missing")
			}
		}
	})
	b.Run("iradix", func(b *testing.B) {
		tr := buildRadix(keys)
		bkeys := make([][]byte, len(keys))
		for i, k := range keys {
			bkeys[i] = []byte(k)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, ok := tr.Get(bkeys[i%treeKeys]); !ok {
				b.Fatal("missing")
			}
		}
	})
}

// The comparison benchmarks build what they claim to.
func TestTreeBenchBuilders(t *testing.T) {
	keys := treeBenchKeys()[:1000]
	bt, rt := buildBTree(keys), buildRadix(keys)
	if bt.Len() != len(keys) || rt.Len() != len(keys) {
		t.Fatalf("btree %d, iradix %d keys", bt.Len(), rt.Len())
	}
	for _, k := range keys {
		if _, ok := bt.Get(k); !ok {
			t.Fatal("btree lost a key")
		}
		if v, ok := rt.Get([]byte(k)); !ok || v != k {
			t.Fatal("iradix lost a key")
		}
	}
	s := loadBench(t, 2500, true)
	if n, _ := s.View().Count("kv", ScanOptions{Index: "by_n"}); n != 2500 {
		t.Fatalf("%d rows", n)
	}
	if r, ok, _ := s.View().Get("kv", String(benchKey(2499))); !ok || len(r.Fields) != 3 {
		t.Fatalf("row %+v", r)
	}
}
