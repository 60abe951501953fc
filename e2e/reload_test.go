package e2e

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/memdbd/memdbd/client"
)

// SIGHUP re-reads the config file: limits and the log level change at run
// time, and a setting that cannot (a Raft timer) is reported, not ignored.
// (Flags win over the file, so the settings changed here are ones the
// test harness does not pass on the command line.)
func TestReloadOnSIGHUP(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "memdbd.yaml")
	if err := os.WriteFile(cfg, []byte("max-txn-ops: 8\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, 1, "--config", cfg)
	cl := c.client()
	ctx, cancel := c.callCtx(10 * time.Second)
	defer cancel()
	if _, err := cl.CreateTable(ctx, client.TableSchema{Name: "kv", PrimaryKey: "k", Fields: []client.FieldSchema{{Name: "k", Type: client.TypeString}}}); err != nil {
		t.Fatal(err)
	}
	txn := func() error {
		tx := cl.Txn()
		for i := 0; i < 12; i++ {
			tx.Then(client.GetOp("kv", client.String("x")))
		}
		_, err := tx.Commit(ctx)
		return err
	}
	if err := txn(); !errors.Is(err, client.ErrTooManyOps) {
		t.Fatalf("12 ops with max-txn-ops 8: %v", err)
	}
	if err := os.WriteFile(cfg, []byte("max-txn-ops: 16\ncommit-timeout: 30ms\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	off := c.logSize(0)
	c.sendSignal(0, syscall.SIGHUP)
	waitFor(t, 10*time.Second, "the reload to apply", func() error {
		log := c.logSince(0, off)
		if !strings.Contains(log, "reload: settings applied") {
			return errors.New("not applied yet")
		}
		if !strings.Contains(log, "take effect only at restart") || !strings.Contains(log, "commit-timeout") {
			return errors.New("the restart-only setting was not reported: " + log)
		}
		return nil
	})
	if err := txn(); err != nil {
		t.Fatalf("12 ops after raising max-txn-ops to 16: %v", err)
	}
}
