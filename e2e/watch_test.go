package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/client"
)

// watchLog collects one SDK watch.
type watchLog struct {
	mu     sync.Mutex
	events []client.WatchEvent
	resets int
	err    error
	rev    uint64
}

func collectWatch(ctx context.Context, cl *client.Client, table string, o client.WatchOptions) *watchLog {
	l := &watchLog{}
	ch := cl.Watch(ctx, table, o)
	go func() {
		for r := range ch {
			l.mu.Lock()
			if r.Err != nil && ctx.Err() == nil {
				l.err = r.Err
			}
			if r.Reset {
				l.resets++
			}
			l.events = append(l.events, r.Events...)
			if r.Err == nil {
				l.rev = r.Revision
			}
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *watchLog) reached() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rev
}

// A watch on every member, while the leader is killed with SIGKILL under
// a write load: each watch resumes on a surviving member and delivers
// every acknowledged insert exactly once, in revision order, at the
// revision the write was acknowledged with.
func TestWatchResumesAcrossLeaderKill(t *testing.T) {
	c := newCluster(t, 3)
	cl := c.client()
	created := c.createTable(cl, kvSchema("wk"))
	wctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	// One client per member, so that one watch is certainly on the leader.
	// Each starts after the table's creation rather than "now": a watch's
	// stream opens in the background, and the load's first writes may be
	// acknowledged before a stream reaches its member.
	var logs []*watchLog
	for _, ep := range c.endpoints() {
		logs = append(logs, collectWatch(wctx, c.client(ep), "wk", client.WatchOptions{StartRevision: created, ProgressInterval: 100 * time.Millisecond}))
	}
	load := startLoad(c.ctx, cl, "wk", "w", 2, 10*time.Millisecond, 10*time.Second)
	load.waitAcks(t, 10*time.Second, time.Time{}, 30)
	old := c.waitLeader(5*time.Second, nil)
	killAt := time.Now()
	c.kill(old)
	c.waitLeader(10*time.Second, map[int]bool{old: true})
	load.waitAcks(t, 20*time.Second, killAt, 30)
	load.stop()

	acks, _, attempted := load.snapshot()
	var last uint64
	for _, a := range acks {
		last = max(last, a.meta.ModRevision)
	}
	waitFor(t, 20*time.Second, "every watch reached the last acknowledged write", func() error {
		for i, l := range logs {
			if r := l.reached(); r < last {
				return fmt.Errorf("watch %d at revision %d, want %d", i, r, last)
			}
		}
		return nil
	})
	cancel()
	for i, l := range logs {
		l.mu.Lock()
		if l.err != nil {
			t.Errorf("watch %d ended: %v", i, l.err)
		}
		seen := map[string]uint64{}
		var prev uint64
		for _, e := range l.events {
			k := e.Row.Fields["k"].AsString()
			if e.Revision < prev {
				t.Errorf("watch %d: revision %d after %d", i, e.Revision, prev)
			}
			prev = e.Revision
			if e.Type != client.EventPut {
				t.Errorf("watch %d: unexpected %v of %s", i, e.Type, k)
			}
			if r, dup := seen[k]; dup {
				t.Errorf("watch %d: %s delivered twice (revisions %d and %d)", i, k, r, e.Revision)
			}
			seen[k] = e.Revision
			if !attempted[k] {
				t.Errorf("watch %d: event for %s, which nobody wrote", i, k)
			}
		}
		for _, a := range acks {
			if r, ok := seen[a.key]; !ok {
				t.Errorf("watch %d: acknowledged insert %s (revision %d) never delivered", i, a.key, a.meta.ModRevision)
			} else if r != a.meta.ModRevision {
				t.Errorf("watch %d: %s delivered at revision %d, acknowledged at %d", i, a.key, r, a.meta.ModRevision)
			}
		}
		t.Logf("watch %d: %d events, %d re-lists; %d writes acknowledged", i, len(l.events), l.resets, len(acks))
		l.mu.Unlock()
	}
}

// Rows with a time to live expire on time although the leader that
// accepted them is killed: the new leader deletes them through the log,
// and no member returns them past their expiry.
func TestTTLExpiresAcrossLeaderKill(t *testing.T) {
	c := newCluster(t, 3)
	cl := c.client()
	c.createTable(cl, kvSchema("ttl"))
	ctx, cancel := c.callCtx(30 * time.Second)
	defer cancel()
	const ttl = 2 * time.Second
	var metas []client.Meta
	for i := range 20 {
		m, err := cl.Insert(ctx, "ttl", client.Fields{"k": client.String(fmt.Sprint("s", i))}, client.WithTTL(ttl))
		if err != nil {
			t.Fatal(err)
		}
		metas = append(metas, m)
	}
	if _, err := cl.Insert(ctx, "ttl", client.Fields{"k": client.String("keep")}); err != nil {
		t.Fatal(err)
	}
	expiry := metas[len(metas)-1].ExpiresAt
	old := c.waitLeader(5*time.Second, nil)
	c.kill(old)
	c.waitReady(10*time.Second, map[int]bool{old: true})
	// Before the expiry (less a margin for the test's own reads), the rows
	// are there on every surviving member.
	for _, i := range c.others(old) {
		if time.Until(metas[0].ExpiresAt) < 300*time.Millisecond {
			break
		}
		r, err := c.data(i).Get(ctx, &pb.GetRequest{Table: "ttl", Key: &pb.Value{Kind: &pb.Value_StringValue{StringValue: "s0"}}, Read: staleAt(0)})
		if (err != nil || !r.Found) && time.Until(metas[0].ExpiresAt) > 100*time.Millisecond {
			t.Errorf("member %d lost a row before its expiry: %v %v", i, r, err)
		}
	}
	// After the expiry plus the sweep and an election, the log has deleted
	// them on every surviving member.
	time.Sleep(time.Until(expiry))
	waitFor(t, 5*time.Second, "expired rows deleted on every member", func() error {
		for _, i := range c.others(old) {
			// Stored rows, expired or not: the log must have deleted them.
			d, err := c.schema(i).DescribeTable(ctx, &pb.DescribeTableRequest{Table: "ttl", Read: staleAt(0)})
			if err != nil {
				return err
			}
			if n := d.Table.GetRowCount(); n != 1 {
				return fmt.Errorf("member %d stores %d rows", i, n)
			}
		}
		return nil
	})
	if late := time.Since(expiry); late > 4*time.Second {
		t.Errorf("rows deleted %v after their expiry", late)
	}
}
