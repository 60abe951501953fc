package fsm

import (
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
)

// waitCheckpoints waits for f's background hashes to finish.
func waitCheckpoints(f *FSM) []Checkpoint {
	f.ckptWG.Wait()
	return f.Checkpoints()
}

// TestCheckpointsAgreeAcrossReplicas: replicas that apply the same log in
// different batches, with entries Raft kept to itself (gaps in the
// indexes), and one that started from a snapshot part way, record the same
// checkpoints; a replica whose state differs records a different hash at
// the first checkpoint after the difference.
func TestCheckpointsAgreeAcrossReplicas(t *testing.T) {
	const every = 10
	h := newHarness(t)
	h.createUsers()
	var log []*raft.Log
	for i := 0; i < 60; i++ {
		if i%7 == 3 {
			h.index++ // a no-op the state machine never sees
		}
		log = append(log, h.entry(&cmdpb.Envelope{Command: txn(upsert(fmt.Sprintf("u%d", i), fmt.Sprintf("e%d@x", i), int64(i)))}))
	}
	log = append(h.log[:1:1], log...) // the table first

	replica := func(batches []int) *FSM {
		cfg := DefaultConfig()
		cfg.Logger, cfg.HashEvery = slog.New(slog.DiscardHandler), every
		f, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		// Each batch crosses at most maxHashing checkpoints, and the
		// hashes finish before the next: none is skipped.
		rest := log
		for _, n := range batches {
			n = min(n, len(rest))
			f.ApplyBatch(rest[:n])
			f.ckptWG.Wait()
			rest = rest[n:]
		}
		if len(rest) > 0 {
			f.ApplyBatch(rest)
		}
		return f
	}
	one := waitCheckpoints(replica([]int{20, 20, 21}))
	var revs []uint64
	for _, cp := range one {
		revs = append(revs, cp.Revision)
	}
	last := log[len(log)-1].Index
	if want := last / every; uint64(len(one)) != want || revs[0] != every-1 {
		t.Fatalf("checkpoints at %v for a log of %d entries, want one before every multiple of %d", revs, last, every)
	}
	for _, split := range [][]int{{1, 1, 1, 5, 25, 25}, {3, 7, 11, 13, 2, 25}, {9, 9, 9, 9, 9, 9, 9, 9}} {
		if got := waitCheckpoints(replica(split)); !slices.Equal(got, one) {
			t.Fatalf("batches %v: %v, want %v", split, got, one)
		}
	}

	// From a snapshot taken part way: the checkpoints after it agree.
	cfg := DefaultConfig()
	cfg.Logger, cfg.HashEvery = slog.New(slog.DiscardHandler), every
	src, _ := New(cfg)
	src.ApplyBatch(log[:25])
	restored, _ := New(cfg)
	if err := restoreBytes(restored, snapshotBytes(t, src)); err != nil {
		t.Fatal(err)
	}
	restored.ApplyBatch(log[25:45])
	restored.ckptWG.Wait()
	restored.ApplyBatch(log[45:])
	after := waitCheckpoints(restored)
	if len(after) == 0 || !slices.Equal(after, one[len(one)-len(after):]) {
		t.Fatalf("restored replica: %v, want the tail of %v", after, one)
	}

	// A replica with one entry changed differs from the next checkpoint on.
	bad := slices.Clone(log)
	e := *bad[30]
	b, err := Encode(&cmdpb.Envelope{Command: txn(upsert("u29", "rotten@x", 29))}, time.Unix(0, 0).Add(time.Hour), MaxCommandVersion)
	if err != nil {
		t.Fatal(err)
	}
	e.Data = b
	bad[30] = &e
	f2, _ := New(cfg)
	for i := 0; i < len(bad); i += 20 {
		f2.ApplyBatch(bad[i:min(i+20, len(bad))])
		f2.ckptWG.Wait()
	}
	got := waitCheckpoints(f2)
	for i, cp := range got {
		same := cp == one[i]
		if before := cp.Revision < bad[30].Index; same != before {
			t.Fatalf("checkpoint %d at %d: equal %v, want equal only before the changed entry %d", i, cp.Revision, same, bad[30].Index)
		}
	}
}

// TestOlderSnapshotKeepsTheState: a follower asked to install a snapshot
// older than what it applied (hashicorp/raft re-sends one after a rejected
// append) keeps its state, never showing the older one, and skips the
// entries up to it when Raft replays them: the result is the state of
// applying every entry once.
func TestOlderSnapshotKeepsTheState(t *testing.T) {
	h := newHarness(t)
	h.createUsers()
	for i := 0; i < 40; i++ {
		h.mustApply(&cmdpb.Envelope{Session: sess("c1", uint64(i+1), 1), Command: txn(upsert(fmt.Sprintf("u%d", i%7), fmt.Sprintf("e%d@x", i), int64(i)))})
	}
	log := h.log
	cfg := DefaultConfig()
	cfg.Logger = slog.New(slog.DiscardHandler)

	// A snapshot at entry 20, from a replica that applied that far.
	old, _ := New(cfg)
	old.ApplyBatch(log[:20])
	snap := snapshotBytes(t, old)

	follower, _ := New(cfg)
	follower.ApplyBatch(log[:30])
	before, _ := follower.StateHash()
	if err := restoreBytes(follower, snap); err != nil {
		t.Fatal(err)
	}
	if after, _ := follower.StateHash(); after != before || follower.Applied() != log[29].Index {
		t.Fatalf("after an older snapshot: hash %x (was %x), applied %d (was %d)", after, before, follower.Applied(), log[29].Index)
	}
	// Raft replays from the snapshot on.
	follower.ApplyBatch(log[20:])
	got, _ := follower.StateHash()
	want, _ := h.f.StateHash()
	if got != want || follower.Applied() != h.f.Applied() {
		t.Fatalf("after the replay: hash %x applied %d, want %x applied %d", got, follower.Applied(), want, h.f.Applied())
	}
}
