package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/client"
)

func runBin(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(memdbdBin, args...).CombinedOutput()
	return string(out), err
}

// An online backup taken from a follower while writes go on seeds a new
// cluster that holds exactly the backed-up state; a corrupt or truncated
// backup is refused with a clear error and leaves the data dir empty.
func TestBackupAndRestore(t *testing.T) {
	c := newCluster(t, 3)
	cl := c.client()
	ctx, cancel := c.callCtx(30 * time.Second)
	defer cancel()
	if _, err := cl.CreateTable(ctx, client.TableSchema{Name: "users", PrimaryKey: "id",
		Fields:  []client.FieldSchema{{Name: "id", Type: client.TypeInt}, {Name: "email", Type: client.TypeString}},
		Indexes: []client.IndexSchema{{Name: "by_email", Fields: []string{"email"}, Unique: true}}}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 300; i += 50 {
		tx := cl.Txn()
		for j := i; j < i+50; j++ {
			tx.Then(client.UpsertOp("users", client.Fields{"id": client.Int(int64(j)), "email": client.String(fmt.Sprintf("u%d@x", j))}))
		}
		if _, err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Back up from a follower, with writes still arriving.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1000; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_, _ = cl.Upsert(ctx, "users", client.Fields{"id": client.Int(int64(i)), "email": client.String(fmt.Sprintf("late%d@x", i))})
		}
	}()
	leader := c.waitLeader(10*time.Second, nil)
	follower := (leader + 1) % 3
	file := filepath.Join(t.TempDir(), "memdbd.backup")
	out, err := runBin(t, "backup", "-addr", c.nodes[follower].clientAddr, "-out", file)
	close(stop)
	<-done
	if err != nil {
		t.Fatalf("backup: %v\n%s", err, out)
	}
	t.Log(strings.TrimSpace(out))
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}

	// Damaged backups are refused and seed nothing.
	for name, bad := range map[string][]byte{
		"truncated": data[:len(data)*2/3],
		"corrupt":   append(append(append([]byte(nil), data[:len(data)/2]...), data[len(data)/2]^0xff), data[len(data)/2+1:]...),
	} {
		badFile := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(badFile, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		out, err := runBin(t, "restore", "-backup", badFile, "--node-id", "r1", "--data-dir", dir,
			"--raft-addr", "127.0.0.1:1", "--initial-cluster", "r1=127.0.0.1:1")
		if err == nil || !strings.Contains(out, "not usable") {
			t.Fatalf("%s backup: %v\n%s", name, err, out)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Fatalf("%s backup left %d files in the data dir", name, len(ents))
		}
	}

	// A new cluster from the backup.
	nc := newClusterSeeded(t, 3, func(nd *node) {
		args := append([]string{"restore", "-backup", file}, nd.args...)
		if out, err := runBin(t, args...); err != nil {
			t.Fatalf("restore %s: %v\n%s", nd.id, err, out)
		}
	})
	ncl := nc.client()
	rows, err := ncl.Count(ctx, "users", client.ScanOptions{})
	if err != nil || rows < 300 {
		t.Fatalf("restored cluster has %d users (%v), want at least 300", rows, err)
	}
	row, err := ncl.Get(ctx, "users", client.Int(42))
	if err != nil || row.Fields["email"].AsString() != "u42@x" {
		t.Fatalf("restored row 42: %+v %v", row, err)
	}
	// Indexes were rebuilt; the unique one still holds.
	if _, err := ncl.Insert(ctx, "users", client.Fields{"id": client.Int(99999), "email": client.String("u7@x")}); err == nil {
		t.Fatal("the restored unique index accepted a duplicate")
	}
	// It takes writes, and its replicas agree.
	if _, err := ncl.Upsert(ctx, "users", client.Fields{"id": client.Int(5000), "email": client.String("new@x")}); err != nil {
		t.Fatal(err)
	}
	nc.waitConverged(20 * time.Second)
	st, err := pb.NewClusterServiceClient(nc.conn(0)).Members(ctx, &pb.MembersRequest{})
	if err != nil || len(st.Members) != 3 {
		t.Fatalf("members of the restored cluster: %v", err)
	}
	for _, m := range st.Members {
		if !strings.HasPrefix(m.ClientAddr, "127.0.0.1:") || m.ClientAddr == c.nodes[0].clientAddr {
			t.Fatalf("member %s registered %q: the old cluster's registry leaked", m.Id, m.ClientAddr)
		}
	}
}
