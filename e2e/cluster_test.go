package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/client"
)

// Three processes form a cluster; a table created and a row written
// through one follower are read back, linearizably, through the other.
func TestBootstrapWriteThroughFollower(t *testing.T) {
	c := newCluster(t, 3)
	l := c.waitReady(10*time.Second, nil)
	fs := c.others(l)
	f1, f2 := fs[0], fs[1]
	t.Logf("leader %s, writing through %s, reading through %s", c.nodes[l].id, c.nodes[f1].id, c.nodes[f2].id)

	// Every member knows every other, with its client address, and the
	// same leader.
	ctx, cancel := c.callCtx(10 * time.Second)
	defer cancel()
	ms, err := pb.NewClusterServiceClient(c.conn(f2)).Members(ctx, &pb.MembersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ms.Members) != 3 {
		t.Fatalf("members: %v", ms.Members)
	}
	for _, m := range ms.Members {
		nd := c.nodes[int(m.Id[1]-'1')]
		if !m.Voter || m.ClientAddr != nd.clientAddr || m.RaftAddr != nd.raftAddr || m.Leader != (m.Id == c.nodes[l].id) {
			t.Errorf("member %+v; want voter at %s/%s, leader %v", m, nd.clientAddr, nd.raftAddr, m.Id == c.nodes[l].id)
		}
	}

	// Raw gRPC to the follower: the follower forwards to the leader.
	_, err = c.schema(f1).CreateTable(ctx, &pb.CreateTableRequest{Schema: &pb.TableSchema{
		Name: "boot", PrimaryKey: "k", Fields: []*pb.FieldSchema{
			{Name: "k", Type: pb.FieldType_FIELD_TYPE_STRING}, {Name: "n", Type: pb.FieldType_FIELD_TYPE_INT64}}}})
	if err != nil {
		t.Fatalf("create table through follower %s: %v", c.nodes[f1].id, err)
	}
	ins, err := c.data(f1).Insert(ctx, &pb.InsertRequest{Table: "boot", Fields: map[string]*pb.Value{
		"k": pbString("hello"), "n": pbInt(42), "note": pbString("through a follower")}})
	if err != nil {
		t.Fatalf("insert through follower %s: %v", c.nodes[f1].id, err)
	}
	if ins.Header.NodeId != c.nodes[f1].id || ins.Row.Version != 1 || ins.Row.ModRevision == 0 {
		t.Fatalf("insert answer: header %v row %v", ins.Header, ins.Row)
	}

	// A linearizable read (the default) through the other follower.
	get, err := c.data(f2).Get(ctx, &pb.GetRequest{Table: "boot", Key: pbString("hello")})
	if err != nil {
		t.Fatalf("linearizable get through %s: %v", c.nodes[f2].id, err)
	}
	if !get.Found || get.Header.NodeId != c.nodes[f2].id {
		t.Fatalf("get: found %v, served by %q", get.Found, get.Header.GetNodeId())
	}
	row := get.Row
	if row.Fields["n"].GetIntValue() != 42 || row.Fields["note"].GetStringValue() != "through a follower" ||
		row.ModRevision != ins.Row.ModRevision || row.Version != 1 || get.Header.Revision < ins.Row.ModRevision {
		t.Fatalf("read %v at revision %d; wrote at %d", row, get.Header.Revision, ins.Row.ModRevision)
	}
	desc, err := c.schema(f2).DescribeTable(ctx, &pb.DescribeTableRequest{Table: "boot"})
	if err != nil || desc.Table.RowCount != 1 {
		t.Fatalf("describe through %s: %v %v", c.nodes[f2].id, desc, err)
	}

	// The SDK given only a follower's address finds the others and works.
	cl := c.client(c.nodes[f1].clientAddr)
	meta, err := cl.Upsert(ctx, "boot", client.Fields{"k": client.String("sdk"), "n": client.Int(7)})
	if err != nil {
		t.Fatal(err)
	}
	got, err := cl.Get(ctx, "boot", client.String("sdk"))
	if err != nil || got.Fields["n"].AsInt() != 7 || got.ModRevision != meta.ModRevision {
		t.Fatalf("sdk get: %+v %v", got, err)
	}
	members, err := cl.Members(ctx)
	if err != nil || len(members) != 3 {
		t.Fatalf("sdk members: %v %v", members, err)
	}
}

// SIGKILL of the leader under a light write load: a new leader is
// elected and the writes go on; the gap without acknowledgements is
// measured.
func TestLeaderKillFailover(t *testing.T) {
	c := newCluster(t, 3)
	cl := c.client()
	c.createTable(cl, kvSchema("fail"))

	load := startLoad(c.ctx, cl, "fail", "f", 1, 20*time.Millisecond, 10*time.Second)
	load.waitAcks(t, 10*time.Second, time.Time{}, 20)

	old := c.waitLeader(5*time.Second, nil)
	killAt := time.Now()
	c.kill(old)
	t.Logf("killed leader %s", c.nodes[old].id)
	nl := c.waitLeader(10*time.Second, map[int]bool{old: true})
	electedAfter := time.Since(killAt)
	load.waitAcks(t, 20*time.Second, killAt, 20)
	load.stop()

	acks, fails, _ := load.snapshot()
	var lastBefore, firstAfter time.Time
	for _, a := range acks {
		if a.at.Before(killAt) && a.at.After(lastBefore) {
			lastBefore = a.at
		}
		if a.at.After(killAt) && (firstAfter.IsZero() || a.at.Before(firstAfter)) {
			firstAfter = a.at
		}
	}
	gap := firstAfter.Sub(lastBefore)
	t.Logf("failover gap: %v (last ack %v before the kill, first ack %v after it; new leader %s agreed on after %v; %d writes acknowledged)",
		gap.Round(time.Millisecond), killAt.Sub(lastBefore).Round(time.Millisecond), firstAfter.Sub(killAt).Round(time.Millisecond),
		c.nodes[nl].id, electedAfter.Round(time.Millisecond), len(acks))
	if gap >= 5*time.Second {
		t.Errorf("failover gap %v, want under 5s", gap)
	}
	for _, f := range fails {
		t.Errorf("write %s failed at +%v: %v", f.key, f.at.Sub(killAt), f.err)
	}

	// Every acknowledged insert is there, once.
	ctx, cancel := c.callCtx(10 * time.Second)
	defer cancel()
	keys := make([]client.Value, len(acks))
	for i, a := range acks {
		keys[i] = client.String(a.key)
	}
	rows, err := cl.BatchGet(ctx, "fail", keys)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rows {
		if r == nil || r.Version != 1 {
			t.Errorf("acknowledged %s: %+v", acks[i].key, r)
		}
	}
}

// A node killed with SIGKILL and restarted with the same flags catches
// up, even when the cluster compacted the log past the node's last entry
// while it was down (it must install a snapshot).
func TestRestartedNodeCatchesUpFromSnapshot(t *testing.T) {
	c := newCluster(t, 3)
	cl := c.client()
	c.createTable(cl, kvSchema("catch"))
	ctx, cancel := c.callCtx(40 * time.Second)
	defer cancel()

	type want struct {
		n       int64
		version uint64
		modRev  uint64
	}
	expect := map[string]want{}
	put := func(k string, n int64) uint64 {
		t.Helper()
		m, err := cl.Upsert(ctx, "catch", client.Fields{"k": client.String(k), "n": client.Int(n)})
		if err != nil {
			t.Fatalf("upsert %s: %v", k, err)
		}
		expect[k] = want{n, m.Version, m.ModRevision}
		return m.ModRevision
	}
	for i := 0; i < 20; i++ {
		put(fmt.Sprintf("before-%02d", i), int64(i))
	}

	victim := c.waitLeader(5*time.Second, nil)
	c.kill(victim)
	t.Logf("killed leader %s", c.nodes[victim].id)
	c.waitLeader(10*time.Second, map[int]bool{victim: true})

	// Far more than trailing-logs + snapshot-threshold entries while it is
	// down: new rows, changed rows and deleted rows.
	firstRev := put("down-000", 0)
	var lastRev uint64
	for i := 1; i < 160; i++ {
		lastRev = put(fmt.Sprintf("down-%03d", i), int64(i))
	}
	for i := 0; i < 10; i++ {
		lastRev = put(fmt.Sprintf("before-%02d", i), int64(1000+i))
	}
	for i := 10; i < 15; i++ {
		k := fmt.Sprintf("before-%02d", i)
		if ok, err := cl.Delete(ctx, "catch", client.String(k)); err != nil || !ok {
			t.Fatalf("delete %s: %v %v", k, ok, err)
		}
		delete(expect, k)
	}
	m, err := cl.Update(ctx, "catch", client.String("down-000"), client.Fields{"s": client.String("last")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	lastRev = m.ModRevision
	expect["down-000"] = want{0, m.Version, m.ModRevision}

	// The running nodes snapshot and drop the log the victim would need.
	for _, i := range c.others(victim) {
		waitFor(t, 15*time.Second, c.nodes[i].id+" to compact its log past the victim's last entry", func() error {
			snaps := c.snapshotIndexes(i)
			if len(snaps) == 0 || snaps[len(snaps)-1] < firstRev+snapshotThreshold {
				return fmt.Errorf("snapshots %v, want one at or after %d", snaps, firstRev+snapshotThreshold)
			}
			if got := c.compactedThrough(i); got < firstRev {
				return fmt.Errorf("log compacted through %d, want %d", got, firstRev)
			}
			return nil
		})
	}

	off := c.logSize(victim)
	c.start(victim)
	waitFor(t, 20*time.Second, c.nodes[victim].id+" to apply the last write", func() error {
		st, err := c.status(victim)
		if err != nil {
			return err
		}
		if st.AppliedIndex < lastRev {
			return fmt.Errorf("%s applied %d, want %d (role %s, leader %q)", st.NodeId, st.AppliedIndex, lastRev, st.Role, st.LeaderId)
		}
		return nil
	})
	if log := c.logSince(victim, off); !strings.Contains(log, "Installed remote snapshot") {
		t.Errorf("%s caught up without installing a snapshot from the leader", c.nodes[victim].id)
	}

	// A stale read on the restarted node at the last write's revision, and
	// its whole table, match what was written.
	get, err := c.data(victim).Get(ctx, &pb.GetRequest{Table: "catch", Key: pbString("down-000"), Read: staleAt(lastRev)})
	if err != nil || !get.Found || get.Header.NodeId != c.nodes[victim].id {
		t.Fatalf("stale read on %s: %v %v", c.nodes[victim].id, get, err)
	}
	if get.Row.Fields["s"].GetStringValue() != "last" || get.Row.ModRevision != lastRev || get.Row.Version != expect["down-000"].version {
		t.Fatalf("stale read on %s: %v, want mod revision %d", c.nodes[victim].id, get.Row, lastRev)
	}
	rows, hdr, err := c.scanNode(victim, "catch", staleAt(lastRev))
	if err != nil {
		t.Fatal(err)
	}
	if hdr.NodeId != c.nodes[victim].id {
		t.Fatalf("scan served by %s", hdr.NodeId)
	}
	if len(rows) != len(expect) {
		t.Errorf("%s holds %d rows, want %d", c.nodes[victim].id, len(rows), len(expect))
	}
	for k, w := range expect {
		r, ok := rows[k]
		if !ok {
			t.Errorf("%s lacks %s", c.nodes[victim].id, k)
			continue
		}
		if r.Fields["n"].GetIntValue() != w.n || r.Version != w.version || r.ModRevision != w.modRev {
			t.Errorf("%s: %s is n=%d v%d @%d, want n=%d v%d @%d", c.nodes[victim].id, k,
				r.Fields["n"].GetIntValue(), r.Version, r.ModRevision, w.n, w.version, w.modRev)
		}
	}
	cnt, err := c.data(victim).Count(ctx, &pb.CountRequest{Table: "catch", Read: staleAt(lastRev)})
	if err != nil || cnt.Count != uint64(len(expect)) {
		t.Errorf("count on %s: %v %v, want %d", c.nodes[victim].id, cnt, err, len(expect))
	}
	// Byte for byte the same state as the others.
	rev, hash := c.waitConverged(10 * time.Second)
	t.Logf("all replicas at revision %d with state hash %016x", rev, hash)

	// It is a working member again: a linearizable read through it.
	if _, err := c.data(victim).Get(ctx, &pb.GetRequest{Table: "catch", Key: pbString("down-159")}); err != nil {
		t.Errorf("linearizable read through the restarted node: %v", err)
	}
}

// SIGKILL of all three nodes during a concurrent insert load, then a
// restart of all three: every acknowledged insert survived, and nothing
// was applied twice.
func TestKillAllDuringWrites(t *testing.T) {
	c := newCluster(t, 3)
	cl := c.client()
	c.createTable(cl, kvSchema("crash"))

	load := startLoad(c.ctx, cl, "crash", "c", 6, 0, 3*time.Second)
	load.waitAcks(t, 20*time.Second, time.Time{}, 400)
	for i := range c.nodes {
		c.sendSignal(i, syscall.SIGKILL)
	}
	for i := range c.nodes {
		c.waitExit(i, 10*time.Second)
	}
	load.abort()
	acks, fails, attempted := load.snapshot()
	for _, f := range fails {
		if errors.Is(f.err, client.ErrRowExists) {
			t.Errorf("insert of the new key %s was refused as a duplicate: applied twice? %v", f.key, f.err)
		}
	}
	t.Logf("%d inserts attempted, %d acknowledged, %d failed before the kill was noticed", len(attempted), len(acks), len(fails))

	for i := range c.nodes {
		c.start(i)
	}
	c.waitReady(20*time.Second, nil)
	cl2 := c.client()
	ctx, cancel := c.callCtx(20 * time.Second)
	defer cancel()

	n, err := cl2.Count(ctx, "crash", client.ScanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var rev uint64
	for r, err := range cl2.ScanAll(ctx, "crash", client.ScanOptions{Limit: 500}) {
		if err != nil {
			t.Fatal(err)
		}
		k := r.Fields["k"].AsString()
		if seen[k] {
			t.Errorf("row %s returned twice", k)
		}
		seen[k] = true
		if r.Version != 1 {
			t.Errorf("row %s has version %d: applied more than once", k, r.Version)
		}
		if !attempted[k] {
			t.Errorf("row %s was never written", k)
		}
		rev = max(rev, r.ModRevision)
	}
	if uint64(len(seen)) != n {
		t.Errorf("scan returned %d rows, count says %d", len(seen), n)
	}
	for _, a := range acks {
		if !seen[a.key] {
			t.Errorf("acknowledged insert %s is lost", a.key)
		}
	}
	t.Logf("after the restart: %d rows (%d acknowledged, %d with an unknown outcome that were applied)", len(seen), len(acks), len(seen)-len(acks))

	// All three replicas hold the same rows.
	for i := range c.nodes {
		cnt, err := c.data(i).Count(ctx, &pb.CountRequest{Table: "crash", Read: staleAt(rev)})
		if err != nil || cnt.Count != n {
			t.Errorf("%s counts %v (%v), want %d", c.nodes[i].id, cnt.GetCount(), err, n)
		}
	}
	srev, hash := c.waitConverged(10 * time.Second)
	t.Logf("all replicas at revision %d with state hash %016x", srev, hash)
}

// SIGTERM to the leader while a client writes: leadership is handed over
// at once, the process exits 0 within the shutdown bound, and no write
// fails.
func TestGracefulShutdownOfLeader(t *testing.T) {
	c := newCluster(t, 3)
	cl := c.client()
	c.createTable(cl, kvSchema("term"))
	load := startLoad(c.ctx, cl, "term", "t", 2, 5*time.Millisecond, 10*time.Second)
	load.waitAcks(t, 10*time.Second, time.Time{}, 30)

	old := c.waitLeader(5*time.Second, nil)
	off := c.logSize(old)
	nd := c.nodes[old]
	termAt := time.Now()
	c.sendSignal(old, syscall.SIGTERM)
	nl := c.waitLeader(5*time.Second, map[int]bool{old: true})
	handover := time.Since(termAt)
	code, _ := c.waitExit(old, shutdownBound+5*time.Second)
	took := time.Since(termAt)
	if took > shutdownBound {
		t.Errorf("%s took %v to exit, over the --shutdown-timeout %v", nd.id, took, shutdownBound)
	}
	t.Logf("leadership went from %s to %s %v after the signal; %s exited with %d after %v",
		nd.id, c.nodes[nl].id, handover.Round(time.Millisecond), nd.id, code, took.Round(time.Millisecond))
	if code != 0 {
		t.Errorf("%s exited with %d, want 0", nd.id, code)
	}
	if handover > 2*time.Second {
		t.Errorf("new leader after %v, want a prompt handover", handover)
	}
	if log := c.logSince(old, off); !strings.Contains(log, "leadership transferred") {
		t.Errorf("%s did not log a leadership transfer", nd.id)
	}
	exitedAt := time.Now()
	load.waitAcks(t, 10*time.Second, exitedAt, 30)
	load.stop()
	acks, fails, _ := load.snapshot()
	for _, f := range fails {
		t.Errorf("write %s failed at %v after the signal: %v", f.key, f.at.Sub(termAt), f.err)
	}
	t.Logf("%d writes acknowledged, %d failed", len(acks), len(fails))
	ctx, cancel := c.callCtx(10 * time.Second)
	defer cancel()
	keys := make([]client.Value, len(acks))
	for i, a := range acks {
		keys[i] = client.String(a.key)
	}
	rows, err := cl.BatchGet(ctx, "term", keys)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rows {
		if r == nil || r.Version != 1 {
			t.Errorf("acknowledged %s: %+v", acks[i].key, r)
		}
	}
}

// A data dir remembers its node: starting another node id on it fails
// with a clear message and leaves it intact.
func TestDataDirBelongsToNode(t *testing.T) {
	c := newCluster(t, 3)
	cl := c.client()
	c.createTable(cl, kvSchema("own"))
	ctx, cancel := c.callCtx(20 * time.Second)
	defer cancel()
	m, err := cl.Upsert(ctx, "own", client.Fields{"k": client.String("a"), "n": client.Int(1)})
	if err != nil {
		t.Fatal(err)
	}
	victim := 2
	nd := c.nodes[victim]
	if code, _ := c.stop(victim); code != 0 {
		t.Fatalf("%s exited with %d on SIGTERM", nd.id, code)
	}
	idPath := filepath.Join(nd.dataDir, "node.json")
	before, err := os.ReadFile(idPath)
	if err != nil {
		t.Fatal(err)
	}
	addrs := freeAddrs(t, 4)
	initial := ""
	for i, x := range c.nodes {
		if i > 0 {
			initial += ","
		}
		initial += x.id + "=" + x.raftAddr
	}
	cases := []struct {
		name string
		args []string
	}{
		{"unknown id", []string{"--node-id", "n9", "--data-dir", nd.dataDir, "--client-addr", addrs[0], "--raft-addr", addrs[1]}},
		// Swapped data dirs: n1's identity and addresses on n3's data.
		{"another member's id", []string{"--node-id", "n1", "--data-dir", nd.dataDir, "--client-addr", addrs[2],
			"--raft-addr", c.nodes[0].raftAddr, "--initial-cluster", initial}},
	}
	for _, tc := range cases {
		code, out := runBinary(t, 15*time.Second, append(tc.args, baseFlags...)...)
		if code == 0 || !strings.Contains(out, "belongs to node") || !strings.Contains(out, `"`+nd.id+`"`) {
			t.Errorf("%s: exit %d, output:\n%s", tc.name, code, out)
		} else {
			t.Logf("%s: exit %d: %s", tc.name, code, strings.TrimSpace(lastLine(out)))
		}
	}
	after, err := os.ReadFile(idPath)
	if err != nil || !bytes.Equal(before, after) {
		t.Fatalf("node.json changed: %s -> %s (%v)", before, after, err)
	}
	// The rightful node still starts on it and catches up.
	c.start(victim)
	c.waitReady(10*time.Second, nil)
	get, err := c.data(victim).Get(ctx, &pb.GetRequest{Table: "own", Key: pbString("a"), Read: staleAt(m.ModRevision)})
	if err != nil || !get.Found || get.Row.ModRevision != m.ModRevision {
		t.Fatalf("read on %s after the refused starts: %v %v", nd.id, get, err)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
