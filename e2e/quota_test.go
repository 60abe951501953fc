package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/memdbd/memdbd/client"
)

// TestDataQuotaFromTheConfigFile: a member started with a data quota
// refuses writes once its data reaches it, with the SDK's ErrQuotaExceeded
// (no retry), and takes them again after a SIGHUP that raises the quota.
func TestDataQuotaFromTheConfigFile(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "memdbd.yaml")
	if err := os.WriteFile(cfg, []byte("data-quota-bytes: 4096\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, 1, "--config", cfg)
	cl := c.client()
	ctx, cancel := c.callCtx(20 * time.Second)
	defer cancel()
	if _, err := cl.CreateTable(ctx, client.TableSchema{Name: "kv", PrimaryKey: "k",
		Fields: []client.FieldSchema{{Name: "k", Type: client.TypeString}, {Name: "v", Type: client.TypeString}}}); err != nil {
		t.Fatal(err)
	}
	write := func(i int) error {
		_, err := cl.Upsert(ctx, "kv", client.Fields{"k": client.String(fmt.Sprint(i)), "v": client.String(strings.Repeat("v", 500))})
		return err
	}
	var err error
	n := 0
	for ; n < 100; n++ {
		if err = write(n); err != nil {
			break
		}
	}
	if !errors.Is(err, client.ErrQuotaExceeded) || n < 5 || n > 9 {
		t.Fatalf("after %d writes of about 500 bytes under a 4096-byte quota: %v, want ErrQuotaExceeded after 7 or 8", n, err)
	}
	if err := os.WriteFile(cfg, []byte("data-quota-bytes: 1000000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	off := c.logSize(0)
	c.sendSignal(0, syscall.SIGHUP)
	waitFor(t, 10*time.Second, "the reload to apply", func() error {
		if !strings.Contains(c.logSince(0, off), "reload: settings applied") {
			return errors.New("not applied yet")
		}
		return nil
	})
	if err := write(n); err != nil {
		t.Fatalf("a write after the quota was raised: %v", err)
	}
}
