package node

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// wireLeases lets every node of c probe the others directly (the server
// does it over gRPC); a probe fails while blocked is set.
func wireLeases(c *testCluster, blocked *atomic.Bool) {
	byID := map[string]*Node{}
	for _, nd := range c.nodes {
		byID[nd.ID()] = nd
	}
	for _, nd := range c.nodes {
		self := nd.ID()
		nd.SetLeaseProber(func(ctx context.Context, id string, term uint64) (LeaseAnswer, error) {
			if blocked != nil && blocked.Load() {
				return LeaseAnswer{}, errors.New("unreachable")
			}
			return LeaseAnswer{Promise: byID[id].LeasePromise(self, term), Follows: byID[id].Follows(self, term)}, nil
		})
	}
}

// A follower promises only to the leader it knows, in its term, and for
// no longer than its heartbeat timeout; it says it follows only that
// leader in that term, with leases on or off.
func TestLeasePromiseOnlyToTheKnownLeaderInItsTerm(t *testing.T) {
	c := startCluster(t, 3)
	l := c.leader()
	term := l.Term()
	for _, f := range c.nodes {
		if f == l {
			if p := f.LeasePromise(l.ID(), term); p != 0 {
				t.Fatalf("the leader promised %v to itself", p)
			}
			continue
		}
		waitFor(t, "a promise", func() bool { return f.LeasePromise(l.ID(), term) > 0 })
		if p := f.LeasePromise(l.ID(), term); p > f.cfg.HeartbeatTimeout {
			t.Fatalf("promise %v is longer than the heartbeat timeout %v", p, f.cfg.HeartbeatTimeout)
		}
		for _, bad := range []struct {
			from string
			term uint64
		}{{l.ID(), term + 1}, {l.ID(), term - 1}, {l.ID(), 0}, {f.ID(), term}, {"n9", term}} {
			if p := f.LeasePromise(bad.from, bad.term); p != 0 {
				t.Fatalf("%s promised %v to %q in term %d (leader %s, term %d)", f.ID(), p, bad.from, bad.term, l.ID(), term)
			}
			if f.Follows(bad.from, bad.term) {
				t.Fatalf("%s says it follows %q in term %d (leader %s, term %d)", f.ID(), bad.from, bad.term, l.ID(), term)
			}
		}
		if !f.Follows(l.ID(), term) {
			t.Fatalf("%s does not say it follows its leader %s in term %d", f.ID(), l.ID(), term)
		}
		f.cfg.ReadLease = false
		if !f.Follows(l.ID(), term) {
			t.Fatalf("%s stopped saying it follows its leader with leases off: rounds need that answer", f.ID())
		}
		if p := f.LeasePromise(l.ID(), term); p != 0 {
			t.Fatalf("%s promised %v with leases off", f.ID(), p)
		}
		f.cfg.ReadLease = true
	}
}

// Under a lease the leader gives read indexes without a round; when the
// promises stop coming the lease runs out within a heartbeat timeout and
// reads take rounds again; a leadership transfer ends the lease at once.
func TestReadLeaseSkipsRoundsUntilPromisesStop(t *testing.T) {
	c := startCluster(t, 3)
	var blocked atomic.Bool
	wireLeases(c, &blocked)
	l := c.leader()
	mustApply(t, l, createKV())
	last := mustApply(t, l, upsertKV("a", 1)).Revision
	waitFor(t, "a lease", func() bool { return l.LeaseRemaining() > 0 })
	if r := l.LeaseRemaining(); r > l.cfg.HeartbeatTimeout {
		t.Fatalf("lease of %v is longer than a promise can be", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rounds0, _ := l.ReadIndexCounts()
	leased0, _ := l.LeaseCounts()
	for range 10 {
		if idx, err := l.ReadIndex(ctx); err != nil || idx < last {
			t.Fatalf("ReadIndex = %d, %v; want at least %d", idx, err, last)
		}
	}
	rounds1, _ := l.ReadIndexCounts()
	leased1, _ := l.LeaseCounts()
	if rounds1 != rounds0 || leased1-leased0 != 10 {
		t.Fatalf("under a lease: rounds %d->%d, leased reads %d->%d; want no round and 10 leased", rounds0, rounds1, leased0, leased1)
	}

	blocked.Store(true)
	stopped := time.Now()
	waitFor(t, "the lease to run out", func() bool { return l.LeaseRemaining() == 0 })
	if d := time.Since(stopped); d > l.cfg.HeartbeatTimeout+100*time.Millisecond {
		t.Fatalf("the lease outlived the last promise by %v", d)
	}
	// Without a lease a read takes a round, which asks the followers the
	// same way; unanswered, the leader cannot confirm it still leads.
	if _, err := l.ReadIndex(ctx); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("ReadIndex with the followers unreachable: %v, want ErrNoLeader", err)
	}
	if rounds2, _ := l.ReadIndexCounts(); rounds2 != rounds1+1 {
		t.Fatalf("without a lease: rounds %d->%d, want one round", rounds1, rounds2)
	}

	blocked.Store(false)
	if idx, err := l.ReadIndex(ctx); err != nil || idx < last {
		t.Fatalf("ReadIndex with the followers back = %d, %v; want at least %d", idx, err, last)
	}
	waitFor(t, "the lease back", func() bool { return l.LeaseRemaining() > 0 })
	if err := l.TransferLeadership(ctx); err != nil {
		t.Fatal(err)
	}
	if r := l.LeaseRemaining(); r != 0 {
		t.Fatalf("the old leader holds a lease of %v after a transfer", r)
	}
	nl := c.leader()
	if nl == l {
		t.Fatal("leadership did not move")
	}
	waitFor(t, "the new leader's lease", func() bool { return nl.LeaseRemaining() > 0 })
	if _, err := l.ReadIndex(ctx); !errors.Is(err, ErrNotLeader) && !errors.Is(err, ErrNoLeader) {
		t.Fatalf("deposed leader's ReadIndex: %v, want ErrNotLeader or ErrNoLeader", err)
	}
}

// A node that may have promised its vote waits, when it starts again,
// until any such promise has ended; with leases off it stops recording.
func TestRestartWaitsOutPromises(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.HeartbeatTimeout = 300 * time.Millisecond
	if err := waitOutPromises(cfg, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(cfg.DataDir, leaseFile)
	b, err := os.ReadFile(path)
	if err != nil || string(b) != strconv.FormatInt(int64(cfg.HeartbeatTimeout), 10) {
		t.Fatalf("recorded promise %q, %v", b, err)
	}
	start := time.Now()
	cfg.HeartbeatTimeout = 50 * time.Millisecond // lowered across the restart
	if err := waitOutPromises(cfg, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("restart waited %v, less than the promise it may have made (300ms)", d)
	}
	cfg.ReadLease = false
	if err := waitOutPromises(cfg, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("leases off, but the promise file remains: %v", err)
	}
	if err := os.WriteFile(path, []byte("soon"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := waitOutPromises(cfg, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("a corrupt promise file was accepted")
	}
}
