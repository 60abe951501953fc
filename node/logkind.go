package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// The Raft log stores a data directory may keep its log in.
const (
	// LogStoreWAL is hashicorp/raft-wal: segment files under wal/, an
	// append is one write and one fsync. The default for new directories.
	LogStoreWAL = "wal"
	// LogStoreBolt is raft-boltdb (raft.db): a bbolt commit per append,
	// two fsyncs. Directories created before the WAL keep it until
	// migrated (migrate-log).
	LogStoreBolt = "boltdb"
)

// walDir is where the WAL's segments live in a data directory.
const walDir = "wal"

// ErrLogStoreMismatch: the log store asked for is not the one the data
// directory keeps its log in.
var ErrLogStoreMismatch = errors.New("raft log store mismatch")

// chooseLogStore decides where a data directory keeps its log, before
// anything is opened: what node.json records (raft-boltdb for one written
// before there was a choice), or for a new directory what was asked, the
// WAL by default. Asking for another store than the one recorded is
// refused: the log would start empty and the node would lose its history.
func chooseLogStore(dir, asked string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, identityFile))
	if errors.Is(err, os.ErrNotExist) {
		if asked == "" {
			return LogStoreWAL, nil
		}
		return asked, nil
	}
	if err != nil {
		return "", err
	}
	var idt identity
	if err := json.Unmarshal(b, &idt); err != nil {
		return "", fmt.Errorf("%s is corrupt: %w", filepath.Join(dir, identityFile), err)
	}
	have := idt.LogStore
	if have == "" {
		have = LogStoreBolt
	}
	if asked != "" && asked != have {
		return "", fmt.Errorf("%w: data dir %s keeps its Raft log in %s, not %s; start it with --raft-log-store=%s, "+
			"or move the log offline with `memdbd migrate-log --data-dir %s --to %s`, or remove the member, wipe the directory and rejoin",
			ErrLogStoreMismatch, dir, have, asked, have, dir, asked)
	}
	return have, nil
}

// openWAL opens (or creates) the WAL in a data directory.
//
// raft-wal writes each batch of entries to the tail segment and fsyncs it
// once; segments are 64 MiB by default and rotate, old ones are deleted
// when Raft truncates the log after a snapshot.
func openWAL(dataDir string, lg *slog.Logger) (*walStore, error) {
	return openWALAt(filepath.Join(dataDir, walDir), lg)
}

// walStore is the WAL with the metadata store it is given, which the
// WAL's own Close leaves open (and locked).
type walStore struct {
	*wal.WAL
	meta *metadb.BoltMetaDB
}

// GetLog refuses an entry before the first index. raft-wal truncates the
// head of its log logically, and still returns a truncated entry that is
// in its tail segment; Raft would then send followers entries it
// compacted away instead of the snapshot that replaced them, so that the
// log would behave differently with each store.
func (w *walStore) GetLog(index uint64, out *raft.Log) error {
	if first, err := w.WAL.FirstIndex(); err == nil && index < first {
		return raft.ErrLogNotFound
	}
	return w.WAL.GetLog(index, out)
}

// Close closes the WAL, then its metadata store.
func (w *walStore) Close() error {
	return errors.Join(w.WAL.Close(), w.meta.Close())
}

func openWALAt(dir string, lg *slog.Logger) (*walStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	meta := &metadb.BoltMetaDB{}
	w, err := wal.Open(dir, wal.WithLogger(newHclog(lg, "wal")), wal.WithMetaStore(meta))
	if err != nil {
		_ = meta.Close()
		return nil, fmt.Errorf("opening raft log %s: %w", dir, err)
	}
	return &walStore{WAL: w, meta: meta}, nil
}
