package node

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/memdbd/memdbd/internal/testcerts"
	"github.com/memdbd/memdbd/internal/tlsconf"
	"github.com/memdbd/memdbd/store"
)

// TestRaftOverMutualTLS runs three nodes whose Raft port is mutual TLS:
// they elect, replicate, and a follower that was down catches up through
// a snapshot install, all over TLS connections.
func TestRaftOverMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testcerts.NewCA(t, dir, "raft")
	f := ca.Issue(t, "member")
	kp, err := tlsconf.LoadKeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	cas, err := tlsconf.LoadCAs(ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	c := startClusterWith(t, 3, func(cfg *Config) {
		cfg.RaftTLS = &RaftTLS{Server: tlsconf.Server(kp, cas, true), Client: tlsconf.Client(kp, cas)}
	})
	l := c.leader()
	mustApply(t, l, createKV())
	down := -1
	for i, nd := range c.nodes {
		if nd != l {
			down = i
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.nodes[down].Close(ctx); err != nil {
		t.Fatal(err)
	}
	// Past the snapshot threshold (64) and trailing logs (16): the
	// restarted follower needs the leader's snapshot.
	var last uint64
	for i := 0; i < 200; i++ {
		last = mustApply(t, l, upsertKV(fmt.Sprintf("k%03d", i), int64(i))).Revision
	}
	waitSnapshot := time.Now().Add(5 * time.Second)
	for {
		if snaps, _ := l.snaps.List(); len(snaps) > 0 {
			break
		}
		if time.Now().After(waitSnapshot) {
			t.Fatal("the leader took no snapshot")
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.start(down)
	if err := c.nodes[down].WaitApplied(ctx, last); err != nil {
		t.Fatalf("restarted follower did not catch up over TLS: %v", err)
	}
	row, ok, err := c.nodes[down].FSM().Store().View().Get("kv", store.String("k199"))
	if err != nil || !ok {
		t.Fatalf("restarted follower is missing k199: %v", err)
	}
	if v, _ := row.Get("v"); v.AsInt() != 199 {
		t.Fatalf("restarted follower has v=%v", v)
	}
}
