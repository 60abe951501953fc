package node

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// MigrateResult says what MigrateLog did.
type MigrateResult struct {
	From, To    string
	First, Last uint64 // the log's index range (0, 0: empty)
	Entries     uint64
	Took        time.Duration
}

// migrateBatch is how many entries MigrateLog copies per append.
const migrateBatch = 1024

// MigrateLog moves a stopped member's Raft log to another store, offline:
// it copies every entry, reads every one back from the new store and
// compares index, term, type, extensions and a checksum of the payload
// with the old, and only then records the new store in node.json and
// removes the old copy. Until that moment the directory still starts on
// the old store; a migration that fails leaves it so, and can be run
// again.
func MigrateLog(dataDir, to string, lg *slog.Logger) (MigrateResult, error) {
	res := MigrateResult{To: to}
	start := time.Now()
	if to != LogStoreWAL && to != LogStoreBolt {
		return res, fmt.Errorf("--to %q: wal or boltdb", to)
	}
	idPath := filepath.Join(dataDir, identityFile)
	b, err := os.ReadFile(idPath)
	if err != nil {
		return res, fmt.Errorf("data dir %s: %w (is it a memdbd data directory?)", dataDir, err)
	}
	var idt identity
	if err := json.Unmarshal(b, &idt); err != nil {
		return res, fmt.Errorf("%s is corrupt: %w", idPath, err)
	}
	res.From = idt.LogStore
	if res.From == "" {
		res.From = LogStoreBolt
	}
	if res.From == to {
		return res, fmt.Errorf("data dir %s keeps its Raft log in %s already", dataDir, to)
	}
	// The bolt file holds the stable store in both layouts, and the log in
	// one; a running member holds its lock, so this also refuses to run
	// beside one (after a second).
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dataDir, "raft.db"),
		BoltOptions: &bbolt.Options{Timeout: time.Second, NoFreelistSync: true, FreelistType: bbolt.FreelistMapType}})
	if err != nil {
		return res, fmt.Errorf("opening %s (is the member still running?): %w", filepath.Join(dataDir, "raft.db"), err)
	}
	defer bolt.Close()

	var src, dst raft.LogStore
	var closeDst func() error
	staging := filepath.Join(dataDir, walDir+".migrating")
	switch to {
	case LogStoreWAL:
		src = bolt
		if err := os.RemoveAll(staging); err != nil { // an earlier attempt's
			return res, err
		}
		w, err := openWALAt(staging, lg)
		if err != nil {
			return res, err
		}
		dst, closeDst = w, w.Close
	case LogStoreBolt:
		w, err := openWAL(dataDir, lg)
		if err != nil {
			return res, err
		}
		defer w.Close()
		src, dst, closeDst = w, bolt, func() error { return nil }
		// An earlier attempt may have left entries in the bolt log.
		if first, last, err := bounds(bolt); err == nil && last > 0 {
			if err := bolt.DeleteRange(first, last); err != nil {
				return res, err
			}
		}
	}
	first, last, err := bounds(src)
	if err != nil {
		return res, err
	}
	res.First, res.Last = first, last
	if err := copyLog(src, dst, first, last); err != nil {
		_ = closeDst()
		return res, fmt.Errorf("copying the log: %w; the data dir still uses %s", err, res.From)
	}
	if err := verifyLog(src, dst, first, last); err != nil {
		_ = closeDst()
		return res, fmt.Errorf("verifying the copy: %w; the data dir still uses %s", err, res.From)
	}
	if last > 0 {
		res.Entries = last - first + 1
	}
	if err := closeDst(); err != nil {
		return res, err
	}
	// Switch: the new copy in place, then node.json, then the old copy
	// goes. A crash before node.json is written leaves the old store in
	// use (and a stray copy the next attempt replaces).
	if to == LogStoreWAL {
		if err := os.RemoveAll(filepath.Join(dataDir, walDir)); err != nil {
			return res, err
		}
		if err := os.Rename(staging, filepath.Join(dataDir, walDir)); err != nil {
			return res, err
		}
		if err := syncDir(dataDir); err != nil {
			return res, err
		}
	}
	idt.LogStore = to
	if err := writeIdentity(dataDir, idt); err != nil {
		return res, err
	}
	switch to {
	case LogStoreWAL:
		if last > 0 {
			if err := bolt.DeleteRange(first, last); err != nil {
				return res, fmt.Errorf("migrated; removing the old log from raft.db failed (harmless, it is no longer read): %w", err)
			}
		}
	case LogStoreBolt:
		if err := os.RemoveAll(filepath.Join(dataDir, walDir)); err != nil {
			return res, fmt.Errorf("migrated; removing the old WAL failed (harmless, it is no longer read): %w", err)
		}
	}
	res.Took = time.Since(start)
	return res, nil
}

func bounds(s raft.LogStore) (uint64, uint64, error) {
	first, err := s.FirstIndex()
	if err != nil {
		return 0, 0, err
	}
	last, err := s.LastIndex()
	if err != nil {
		return 0, 0, err
	}
	if last == 0 {
		return 0, 0, nil
	}
	return first, last, nil
}

func copyLog(src, dst raft.LogStore, first, last uint64) error {
	if last == 0 {
		return nil
	}
	batch := make([]*raft.Log, 0, migrateBatch)
	for i := first; i <= last; i++ {
		l := new(raft.Log)
		if err := src.GetLog(i, l); err != nil {
			return fmt.Errorf("reading entry %d: %w", i, err)
		}
		batch = append(batch, l)
		if len(batch) == migrateBatch || i == last {
			if err := dst.StoreLogs(batch); err != nil {
				return fmt.Errorf("writing entries %d-%d: %w", batch[0].Index, i, err)
			}
			batch = batch[:0]
		}
	}
	return nil
}

// verifyLog compares every entry of dst with src.
func verifyLog(src, dst raft.LogStore, first, last uint64) error {
	df, dl, err := bounds(dst)
	if err != nil {
		return err
	}
	if df != first || dl != last {
		return fmt.Errorf("the copy holds entries %d-%d, the log %d-%d", df, dl, first, last)
	}
	if last == 0 {
		return nil
	}
	var a, b raft.Log
	for i := first; i <= last; i++ {
		if err := src.GetLog(i, &a); err != nil {
			return fmt.Errorf("reading entry %d: %w", i, err)
		}
		if err := dst.GetLog(i, &b); err != nil {
			return fmt.Errorf("reading back entry %d: %w", i, err)
		}
		if a.Index != b.Index || a.Term != b.Term || a.Type != b.Type ||
			crc32.Checksum(a.Data, castagnoli) != crc32.Checksum(b.Data, castagnoli) || !bytes.Equal(a.Extensions, b.Extensions) {
			return fmt.Errorf("entry %d differs in the copy", i)
		}
	}
	return nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// writeIdentity replaces node.json atomically.
func writeIdentity(dir string, idt identity) error {
	b, err := json.Marshal(idt)
	if err != nil {
		return err
	}
	path := filepath.Join(dir, identityFile)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}
