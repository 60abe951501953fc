package node

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
)

// TestTornWALTail cuts a member's last WAL segment at many offsets (a
// machine that lost power in the middle of a write keeps some prefix of
// it): the log opens every time, without a panic, and holds exactly a
// prefix of what was written, each entry intact; and the member starts on
// it.
func TestTornWALTail(t *testing.T) {
	c := startClusterWith(t, 1, func(cfg *Config) {
		cfg.LogStore = LogStoreWAL
		cfg.SnapshotThreshold = 1 << 20
	})
	l := c.leader()
	mustApply(t, l, createKV())
	for i := 0; i < 200; i++ {
		mustApply(t, l, upsertKV(string(rune('a'+i%26))+string(rune('a'+i/26)), int64(i)))
	}
	_ = l.Close(context.Background())
	c.nodes[0] = nil
	dir := c.cfgs[0].DataDir
	lg := slog.New(slog.DiscardHandler)

	// The log as written.
	w, err := openWAL(dir, lg)
	if err != nil {
		t.Fatal(err)
	}
	first, last, err := bounds(w)
	if err != nil || last < 200 {
		t.Fatalf("log %d-%d: %v", first, last, err)
	}
	want := map[uint64]raft.Log{}
	for i := first; i <= last; i++ {
		var e raft.Log
		if err := w.GetLog(i, &e); err != nil {
			t.Fatal(err)
		}
		want[i] = e
	}
	_ = w.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, walDir, "*.wal"))
	if len(segs) == 0 {
		t.Fatal("no segment")
	}
	tail := segs[len(segs)-1]
	full, err := os.ReadFile(tail)
	if err != nil {
		t.Fatal(err)
	}
	end := len(bytes.TrimRight(full, "\x00")) // the segment is preallocated
	var offsets []int
	for off := 0; off < end; off += max(1, end/60) {
		offsets = append(offsets, off)
	}
	for off := max(0, end-64); off <= end; off++ { // every byte of the last frames
		offsets = append(offsets, off)
	}

	for n, off := range offsets {
		cut := t.TempDir()
		copyTree(t, dir, cut)
		segCopy := filepath.Join(cut, walDir, filepath.Base(tail))
		if err := os.Truncate(segCopy, int64(off)); err != nil {
			t.Fatal(err)
		}
		w, err := openWAL(cut, lg)
		if err != nil {
			t.Fatalf("cut at %d: the log does not open: %v", off, err)
		}
		f2, l2, err := bounds(w)
		if err != nil || l2 > last || (l2 != 0 && f2 != first) {
			t.Fatalf("cut at %d: log %d-%d (%v), was %d-%d", off, f2, l2, err, first, last)
		}
		for i := f2; l2 != 0 && i <= l2; i++ {
			var e raft.Log
			if err := w.GetLog(i, &e); err != nil {
				t.Fatalf("cut at %d: entry %d: %v", off, i, err)
			}
			if o := want[i]; e.Term != o.Term || e.Type != o.Type || !bytes.Equal(e.Data, o.Data) {
				t.Fatalf("cut at %d: entry %d differs from what was written", off, i)
			}
		}
		if off == end && l2 != last {
			t.Fatalf("the uncut segment holds %d entries, want %d", l2, last)
		}
		_ = w.Close()
		// Now and then, the member itself starts on the cut log.
		if n%15 == 0 {
			cfg := c.cfgs[0]
			cfg.DataDir = cut
			nd, err := Open(cfg)
			if err != nil {
				t.Fatalf("cut at %d: the member does not start: %v", off, err)
			}
			_ = nd.Close(context.Background())
		}
	}
}

// copyTree copies the files of a data directory.
func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.Walk(from, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if info.IsDir() {
			return os.MkdirAll(dst, 0o700)
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(dst)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
}
