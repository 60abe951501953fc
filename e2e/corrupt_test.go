package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/client"
)

// newestSnapshot returns the state file of the newest snapshot in a data
// dir (directories are named term-index-time).
func newestSnapshot(t *testing.T, dataDir string) string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dataDir, "snapshots", "*", "state.bin"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no snapshot in %s: %v", dataDir, err)
	}
	key := func(path string) [2]uint64 {
		parts := strings.Split(filepath.Base(filepath.Dir(path)), "-")
		term, _ := strconv.ParseUint(parts[0], 10, 64)
		index, _ := strconv.ParseUint(parts[1], 10, 64)
		return [2]uint64{term, index}
	}
	return slices.MaxFunc(files, func(a, b string) int {
		ka, kb := key(a), key(b)
		if ka[0] != kb[0] {
			return int(ka[0]) - int(kb[0])
		}
		return int(ka[1]) - int(kb[1])
	})
}

// TestDamagedSnapshotRefusesToStart damages the newest snapshot of a
// stopped follower whose log no longer reaches back to the older ones.
// The member must refuse to start with a message that says what to do (no
// panic, no start from an incomplete history), the cluster must go on
// writing, and the documented recovery (remove the member, empty its data
// directory, join again) must bring it back with the same state as the
// others.
func TestDamagedSnapshotRefusesToStart(t *testing.T) {
	c := newCluster(t, 3)
	cl := c.client()
	c.createTable(cl, kvSchema("kv"))
	ctx, cancel := c.callCtx(50 * time.Second)
	defer cancel()
	put := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if _, err := cl.Upsert(ctx, "kv", client.Fields{"k": client.String(fmt.Sprintf("k%04d", i)), "n": client.Int(int64(i))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Several snapshots (every 64 entries), the log kept 32 entries back
	// from the newest: an older snapshot no longer meets the log.
	put(0, 300)
	leader := c.waitLeader(5*time.Second, nil)
	victim := c.others(leader)[0]
	nd := c.nodes[victim]
	c.stop(victim)
	state := newestSnapshot(t, nd.dataDir)
	b, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(state, b, 0o600); err != nil {
		t.Fatal(err)
	}

	off := c.logSize(victim)
	c.start(victim)
	code, _ := c.waitExit(victim, 20*time.Second)
	log := c.logSince(victim, off)
	if code == 0 || strings.Contains(log, "panic:") || !strings.Contains(log, "cannot be recovered on its own") {
		t.Fatalf("start on a damaged snapshot: exit code %d, want a refusal naming the remedy and no panic; log:\n%s", code, log)
	}
	put(300, 350) // the other two go on

	// Recovery: remove it, empty its data directory, join again.
	rctx, rcancel := c.callCtx(10 * time.Second)
	_, err = pb.NewClusterServiceClient(c.conn(leader)).RemoveMember(rctx, &pb.RemoveMemberRequest{NodeId: nd.id})
	rcancel()
	if err != nil {
		t.Fatalf("remove %s: %v", nd.id, err)
	}
	if err := os.RemoveAll(nd.dataDir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(nd.dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	i := slices.Index(nd.args, "--initial-cluster")
	nd.args = slices.Concat(nd.args[:i], nd.args[i+2:], []string{"--join", c.nodes[leader].clientAddr})
	c.start(victim)
	put(350, 400)
	rev, _ := c.waitConverged(20 * time.Second)
	st, err := c.status(victim)
	// Never behind what the members agreed on (a follower sent an older
	// snapshot once went back, fsm.Restore).
	if err != nil || st.GetHeader().GetRevision() < rev {
		t.Fatalf("rejoined member behind the converged revision %d: %v, %v", rev, st, err)
	}
	row, err := cl.Get(ctx, "kv", client.String("k0399"), client.Stale())
	if err != nil || row.Fields["n"] != client.Int(399) {
		t.Fatalf("read after recovery: %v, %v", row, err)
	}
}

// TestBitRotInTheLogIsDetected changes one byte of a committed write in a
// stopped follower's log file (a value, so the entry still decodes: the
// damage nothing else would notice). The follower replays its own copy on
// restart and so holds a different row than the others; the consistency
// check must find it at the next checkpoint: that member, and only that
// one, reports itself divergent.
func TestBitRotInTheLogIsDetected(t *testing.T) {
	bitRotInTheLog(t, "boltdb", func(dataDir string) string { return filepath.Join(dataDir, "raft.db") })
}

// The same damage in a WAL segment.
func TestBitRotInTheWALIsDetected(t *testing.T) {
	bitRotInTheLog(t, "wal", func(dataDir string) string {
		segs, err := filepath.Glob(filepath.Join(dataDir, "wal", "*.wal"))
		if err != nil || len(segs) == 0 {
			t.Fatalf("no WAL segment in %s: %v", dataDir, err)
		}
		return segs[len(segs)-1]
	})
}

func bitRotInTheLog(t *testing.T, store string, file func(dataDir string) string) {
	// No snapshots: the follower replays its whole log at restart.
	c := newCluster(t, 3, "--hash-check-entries", "40", "--consistency-check-interval", "200ms", "--snapshot-threshold", "1000000",
		"--raft-log-store", store)
	cl := c.client()
	c.createTable(cl, kvSchema("kv"))
	ctx, cancel := c.callCtx(50 * time.Second)
	defer cancel()
	put := func(k, s string) {
		t.Helper()
		if _, err := cl.Upsert(ctx, "kv", client.Fields{"k": client.String(k), "s": client.String(s)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 150; i++ {
		put(fmt.Sprintf("k%04d", i), "plain")
	}
	const marker, rotten = "MARKER-0123456789", "MARKER-0123456780"
	put("marked", marker)
	// More after it: the damage is then not in the log's last batch,
	// which the WAL checks on open and drops as a torn write when its
	// checksum fails (TestTornWALTail).
	for i := 0; i < 20; i++ {
		put(fmt.Sprintf("later%04d", i), "plain")
	}
	leader := c.waitLeader(5*time.Second, nil)
	victim := c.others(leader)[0]
	c.waitConverged(10 * time.Second)
	c.stop(victim)
	db := file(c.nodes[victim].dataDir)
	b, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), marker); n == 0 {
		t.Fatalf("the marked write is not in %s", db)
	}
	if err := os.WriteFile(db, []byte(strings.ReplaceAll(string(b), marker, rotten)), 0o600); err != nil {
		t.Fatal(err)
	}
	c.start(victim)
	// Past the next checkpoints.
	for i := 0; i < 100; i++ {
		put(fmt.Sprintf("after%04d", i), "plain")
	}
	waitFor(t, 20*time.Second, "the damaged member to report itself divergent", func() error {
		st, err := c.status(victim)
		if err != nil {
			return err
		}
		if st.Divergence == "" {
			return fmt.Errorf("%s reports no divergence yet (checkpoints %v)", c.nodes[victim].id, st.Checkpoints)
		}
		return nil
	})
	for _, i := range c.others(victim) {
		st, err := c.status(i)
		if err != nil || st.Divergence != "" {
			t.Fatalf("%s (undamaged): divergence %q, %v", c.nodes[i].id, st.GetDivergence(), err)
		}
	}
	if !strings.Contains(c.logSince(victim, 0), "THIS MEMBER'S STATE DIVERGES") {
		t.Fatal("the damaged member did not log its divergence")
	}
	// It serves no reads; the client, pointed at it first, reads the
	// right value from another member.
	_, err = c.data(victim).Get(ctx, &pb.GetRequest{Table: "kv", Key: &pb.Value{Kind: &pb.Value_StringValue{StringValue: "marked"}},
		Read: &pb.ReadOptions{Consistency: pb.Consistency_CONSISTENCY_STALE}})
	checkCode(t, "a read from the divergent member", err, codes.Unavailable, pb.ReasonDiverged)
	vcl := c.client(c.nodes[victim].clientAddr)
	row, err := vcl.Get(ctx, "kv", client.String("marked"), client.Stale())
	if err != nil || row.Fields["s"] != client.String(marker) {
		t.Fatalf("a client that starts at the divergent member: %v, %v; want the undamaged value", row, err)
	}
}
