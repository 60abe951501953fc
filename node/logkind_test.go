package node

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A new data directory keeps its log in the WAL, an old one (node.json
// without a log store) in raft-boltdb; asking for the other is refused
// with the flag and the way to migrate in the message.
func TestLogStoreChoice(t *testing.T) {
	dir := t.TempDir()
	if k, err := chooseLogStore(dir, ""); err != nil || k != LogStoreWAL {
		t.Fatalf("new dir: %q %v, want wal", k, err)
	}
	if k, err := chooseLogStore(dir, LogStoreBolt); err != nil || k != LogStoreBolt {
		t.Fatalf("new dir asking boltdb: %q %v", k, err)
	}
	if err := os.WriteFile(filepath.Join(dir, identityFile), []byte(`{"node_id":"n1"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if k, err := chooseLogStore(dir, ""); err != nil || k != LogStoreBolt {
		t.Fatalf("a directory from before the WAL: %q %v, want boltdb", k, err)
	}
	_, err := chooseLogStore(dir, LogStoreWAL)
	if !errors.Is(err, ErrLogStoreMismatch) || !strings.Contains(err.Error(), "--raft-log-store=boltdb") || !strings.Contains(err.Error(), "migrate-log") {
		t.Fatalf("asking wal of a boltdb directory: %v", err)
	}
}

// A member's log moves between the stores offline and the member comes
// back on the new one with everything it had; asking for the old store
// afterwards is refused; a migration to the store in use is refused.
func TestMigrateLogBothWays(t *testing.T) {
	for _, from := range []string{LogStoreWAL, LogStoreBolt} {
		to := LogStoreBolt
		if from == LogStoreBolt {
			to = LogStoreWAL
		}
		t.Run(from+"-to-"+to, func(t *testing.T) {
			c := startClusterWith(t, 1, func(cfg *Config) {
				cfg.LogStore = from
				cfg.SnapshotThreshold = 1 << 20 // keep the whole log
			})
			l := c.leader()
			mustApply(t, l, createKV())
			for i := 0; i < 300; i++ {
				mustApply(t, l, upsertKV("k"+string(rune('a'+i%26))+string(rune('a'+i/26)), int64(i)))
			}
			wantRev := l.FSM().Store().View().Revision()
			if l.logKind != from {
				t.Fatalf("log store %q, want %q", l.logKind, from)
			}
			_ = l.Close(context.Background())
			c.nodes[0] = nil

			dir := c.cfgs[0].DataDir
			if _, err := MigrateLog(dir, from, slog.New(slog.DiscardHandler)); err == nil {
				t.Fatal("migrating to the store in use was accepted")
			}
			res, err := MigrateLog(dir, to, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			if res.Entries < 300 || res.From != from || res.To != to {
				t.Fatalf("migration: %+v", res)
			}
			if _, err := os.Stat(filepath.Join(dir, walDir)); (to == LogStoreWAL) != (err == nil) {
				t.Fatalf("wal dir after migrating to %s: %v", to, err)
			}

			// Restarted with the old store asked for: refused.
			old := c.cfgs[0]
			old.LogStore = from
			if _, err := Open(old); !errors.Is(err, ErrLogStoreMismatch) {
				t.Fatalf("restart asking the old store: %v", err)
			}
			// With the default: the new store, the whole state.
			c.cfgs[0].LogStore = ""
			c.start(0)
			l = c.leader()
			if l.logKind != to {
				t.Fatalf("restarted on %q, want %q", l.logKind, to)
			}
			if rev := l.FSM().Store().View().Revision(); rev < wantRev {
				t.Fatalf("restarted at revision %d, had %d", rev, wantRev)
			}
			if n := l.FSM().Store().View().Tables(); len(n) != 1 || n[0].Rows != 300 {
				t.Fatalf("tables after the migration: %+v", n)
			}
			mustApply(t, l, upsertKV("after", 1))
		})
	}
}
