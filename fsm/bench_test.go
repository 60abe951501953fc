package fsm

import (
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/store"
)

const benchValue = 256

func kvSchema() *pb.TableSchema {
	return &pb.TableSchema{Name: "kv", PrimaryKey: "k", Fields: []*pb.FieldSchema{{Name: "k", Type: pb.FieldType_FIELD_TYPE_STRING}}}
}

// BenchmarkApplyBatch measures applying batches of one-row upserts of
// 256-byte values, the shape Raft hands the state machine: 64 per batch
// under heavy load, a few per batch at 16-64 writers. ns/row at batch=4
// against batch=64 shows the fixed cost of a batch.
func BenchmarkApplyBatch(b *testing.B) {
	for _, batch := range []int{1, 4, 64} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			h := newHarness(b)
			h.mustApply(&cmdpb.Envelope{Command: &cmdpb.Envelope_CreateTable{CreateTable: kvSchema()}})
			val := strings.Repeat("v", benchValue)
			// Entries are built before the clock starts: stopping the timer
			// per batch costs more than a small batch's apply.
			all := make([][]*raft.Log, b.N)
			for i := range all {
				all[i] = make([]*raft.Log, batch)
				for j := range all[i] {
					all[i][j] = h.entry(&cmdpb.Envelope{Session: sess("bench", uint64(i*batch+j+1), uint64(i*batch+j+1)), Command: txn(&pb.Op{Op: &pb.Op_Upsert{Upsert: &pb.UpsertOp{
						Table: "kv", Fields: map[string]*pb.Value{"k": str(fmt.Sprintf("%08d", (i*batch+j)%100_000)), "v": str(val)},
					}}})})
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				h.f.ApplyBatch(all[i])
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "rows/s")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/row")
		})
	}
}

// fill loads n rows of 8-byte keys and 256-byte values straight through
// the store (the apply path is measured above).
func fill(tb testing.TB, f *FSM, n int) {
	tb.Helper()
	bt := f.Store().Begin()
	sc := store.TableSchema{Name: "kv", PrimaryKey: "k", Fields: []store.FieldSchema{{Name: "k", Type: store.TypeString, Required: true}}}
	if err := bt.CreateTable(1, sc); err != nil {
		tb.Fatal(err)
	}
	val := store.String(strings.Repeat("v", benchValue))
	rev := uint64(1)
	for i := 0; i < n; i += 1000 {
		var ops []store.Op
		for j := i; j < i+1000 && j < n; j++ {
			ops = append(ops, store.Op{Kind: store.OpUpsert, Table: "kv", Fields: []store.Field{{Name: "k", Value: store.String(fmt.Sprintf("%08d", j))}, {Name: "v", Value: val}}})
		}
		rev++
		if _, err := bt.Txn(rev, store.Txn{Then: ops}); err != nil {
			tb.Fatal(err)
		}
	}
	bt.Commit()
}

var (
	bigOnce sync.Once
	bigFSM  *FSM
	bigFile string
)

// bigSnapshot returns a state machine holding 1M rows and the path of its
// snapshot file, built once per benchmark binary.
func bigSnapshot(b *testing.B) (*FSM, string) {
	bigOnce.Do(func() {
		f, err := New(quietConfig())
		if err != nil {
			b.Fatal(err)
		}
		fill(b, f, 1_000_000)
		dir, err := os.MkdirTemp("", "memdbd-bench")
		if err != nil {
			b.Fatal(err)
		}
		bigFile = filepath.Join(dir, "snap")
		out, err := os.Create(bigFile)
		if err != nil {
			b.Fatal(err)
		}
		s, _ := f.Snapshot()
		if err := s.(*fsmSnapshot).write(out); err != nil {
			b.Fatal(err)
		}
		if err := out.Close(); err != nil {
			b.Fatal(err)
		}
		bigFSM = f
	})
	return bigFSM, bigFile
}

// BenchmarkSnapshotPersist1M streams a 1M-row snapshot to a file.
func BenchmarkSnapshotPersist1M(b *testing.B) {
	f, path := bigSnapshot(b)
	st, _ := os.Stat(path)
	b.SetBytes(st.Size())
	for i := 0; i < b.N; i++ {
		out, err := os.Create(path + ".tmp")
		if err != nil {
			b.Fatal(err)
		}
		s, _ := f.Snapshot()
		if err := s.(*fsmSnapshot).write(out); err != nil {
			b.Fatal(err)
		}
		out.Close()
	}
}

// readAndChecksum is the baseline restore is compared with: reading the
// file and computing its CRC-32C, nothing else.
func readAndChecksum(path string) error {
	in, err := os.Open(path)
	if err != nil {
		return err
	}
	defer in.Close()
	h := crc32.New(castagnoli)
	_, err = io.CopyBuffer(h, in, make([]byte, 1<<20))
	return err
}

// BenchmarkSnapshotRestore1M restores a 1M-row snapshot from a file and
// reports the time as a ratio to reading and checksumming the same file in
// the same run ("x-read"; the target is at most 2).
func BenchmarkSnapshotRestore1M(b *testing.B) {
	_, path := bigSnapshot(b)
	st, _ := os.Stat(path)
	b.SetBytes(st.Size())
	var restore, baseline time.Duration
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if err := readAndChecksum(path); err != nil {
			b.Fatal(err)
		}
		baseline += time.Since(t0)
		g, _ := New(quietConfig())
		in, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		t1 := time.Now()
		if err := g.Restore(in); err != nil {
			b.Fatal(err)
		}
		restore += time.Since(t1)
		if n := g.Store().View().Tables()[0].Rows; n != 1_000_000 {
			b.Fatalf("%d rows restored", n)
		}
	}
	b.ReportMetric(float64(restore)/float64(baseline), "x-read")
	b.ReportMetric(float64(baseline.Milliseconds())/float64(b.N), "read-ms")
	b.ReportMetric(float64(restore.Milliseconds())/float64(b.N), "restore-ms")
}

// BenchmarkGetDuringPersist measures point gets while a snapshot of 1M
// rows is being persisted, as a ratio to point gets with no snapshot
// running, measured in the same run ("x-idle"; 1.0 means no slowdown).
func BenchmarkGetDuringPersist(b *testing.B) {
	f, path := bigSnapshot(b)
	gets := func(d time.Duration) float64 {
		v := f.Store().View()
		n := 0
		deadline := time.Now().Add(d)
		for time.Now().Before(deadline) {
			for j := 0; j < 1000; j++ {
				if _, ok, _ := v.Get("kv", store.String(fmt.Sprintf("%08d", (n*7919)%1_000_000))); !ok {
					b.Fatal("missing row")
				}
				n++
			}
		}
		return float64(n) / d.Seconds()
	}
	var ratio float64
	for i := 0; i < b.N; i++ {
		idle := gets(300 * time.Millisecond)
		var persisting atomic.Bool
		persisting.Store(true)
		done := make(chan error, 1)
		go func() {
			defer persisting.Store(false)
			for j := 0; j < 3; j++ {
				out, err := os.Create(path + ".tmp")
				if err != nil {
					done <- err
					return
				}
				s, _ := f.Snapshot()
				err = s.(*fsmSnapshot).write(out)
				out.Close()
				if err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		busy := gets(300 * time.Millisecond)
		if !persisting.Load() {
			b.Log("persist finished before the measurement; ratio is optimistic")
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		ratio += busy / idle
	}
	b.ReportMetric(ratio/float64(b.N), "x-idle")
}

func quietConfig() Config {
	cfg := DefaultConfig()
	cfg.Logger = slog.New(slog.DiscardHandler)
	return cfg
}
