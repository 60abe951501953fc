package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Read leases.
//
// A linearizable read on the leader needs proof that no other leader can
// have acknowledged a write the read would miss. ReadIndex gets it with a
// round of heartbeats per batch of reads; with reads sent to the leader
// that round was a fifth of the cluster's work. A lease gets the same
// proof once per renewal instead of once per batch.
//
// The promise comes from hashicorp/raft's follower itself: a follower that
// knows a leader rejects every vote request (except one from a candidate
// the leader asked to take over, LeadershipTransfer), and forgets the
// leader only when its heartbeat timer finds HeartbeatTimeout passed since
// the leader's last message (raft.go, runFollower and requestVote). So a
// follower that knows this node as leader in term T, last heard from it
// age ago, will not vote for anyone else for HeartbeatTimeout-age more
// (LeasePromise). The leader asks each voter (probeLeases) and, once
// enough promises that they and it are a majority are in, holds a lease
// until the earliest of those promises ends, counted from before it asked
// and cut by a tenth for clocks that run at slightly different rates. No
// other leader can be elected before the lease ends: it would need a vote
// from the leader (which votes for no one while it leads) or from a
// follower that promised.
//
// What can break a promise, and what is done about it:
//   - A leadership transfer: the target's candidacy carries the transfer
//     flag that followers honour despite their leader. A leader stops
//     using leases in a term before it starts a transfer in it
//     (stopLeases).
//   - A restart: a restarted follower knows no leader and votes at once.
//     A node that may have promised writes down the longest promise it
//     can make (leaseFile) and, when it starts again, waits that long
//     before Raft starts (waitOutPromises).
//   - A configuration change: the lease holds only for the voters it was
//     counted over.
//
// Anything else (no promises, a promise too short, a renewal that did not
// come back in time) leaves the lease expired, and reads take the round.

// leaseFile, in the data directory, holds the longest promise (in
// nanoseconds) this node may have made to a leader since it started.
const leaseFile = "lease-promise"

// leaseState is a lease held by this node as leader.
type leaseState struct {
	term   uint64
	voters string // voters' key: the voters the promises were counted over
	until  time.Time
}

// leaseProber asks member id for its promise to this node as leader of
// term.
type leaseProber func(ctx context.Context, id string, term uint64) (time.Duration, error)

// leases is the node's lease bookkeeping.
type leases struct {
	mu     sync.Mutex
	prober leaseProber
	// noLeaseTerm is the term in which a leadership transfer started; no
	// lease is used in it.
	noLeaseTerm uint64
	cur         *leaseState
}

// SetLeaseProber installs the function the leader asks followers for
// their promises with (the server's peer RPC). Without one, and with
// Config.ReadLease off, reads always take a round.
func (n *Node) SetLeaseProber(p func(ctx context.Context, id string, term uint64) (time.Duration, error)) {
	n.lease.mu.Lock()
	n.lease.prober = p
	n.lease.mu.Unlock()
}

// LeasePromise is this node's answer to leader from in term: how long from
// now it will vote for no other candidate, 0 for no promise. Only a
// follower that knows from as its leader in term promises.
//
// The term is read on both sides of the leader and the last contact: if
// it did not change, this node had not voted in a later term when it read
// them, and a leader it still knew then can only be forgotten when
// HeartbeatTimeout has passed since the last contact (which only moves
// forward).
func (n *Node) LeasePromise(from string, term uint64) time.Duration {
	if !n.cfg.ReadLease || n.closed.Load() || term == 0 {
		return 0
	}
	if n.raft.CurrentTerm() != term || n.raft.State() != raft.Follower {
		return 0
	}
	_, lid := n.raft.LeaderWithID()
	lc := n.raft.LastContact()
	if string(lid) != from || lc.IsZero() || n.raft.CurrentTerm() != term {
		return 0
	}
	left := n.cfg.HeartbeatTimeout - time.Since(lc)
	if left <= 0 {
		return 0
	}
	return left
}

// leaseHeld reports whether a lease lets this leader skip the round for
// a read that arrived before the call. The checks run in this order so
// that one instant (the first check) has them all true: the voters were
// those counted, no transfer had started (it starts after its mark), this
// node had not voted for another (its term changes first), and the
// promises had not ended (they end after the last check).
func (n *Node) leaseHeld() bool {
	n.lease.mu.Lock()
	l := n.lease.cur
	n.lease.mu.Unlock()
	if l == nil {
		return false
	}
	if _, key := n.voters(); key != l.voters {
		return false
	}
	n.lease.mu.Lock()
	noLease := n.lease.noLeaseTerm
	n.lease.mu.Unlock()
	return noLease != l.term && n.raft.State() == raft.Leader && n.raft.CurrentTerm() == l.term &&
		n.readyTerm.Load() == l.term && time.Now().Before(l.until)
}

// stopLeases ends this node's use of leases in its current term; called
// before a leadership transfer starts.
func (n *Node) stopLeases() {
	n.lease.mu.Lock()
	n.lease.noLeaseTerm = n.raft.CurrentTerm()
	n.lease.cur = nil
	n.lease.mu.Unlock()
}

// voters returns the ids of the latest configuration's voters, sorted,
// and the same joined into one comparable key.
func (n *Node) voters() (ids []string, key string) {
	for _, s := range n.raft.GetConfiguration().Configuration().Servers {
		if s.Suffrage == raft.Voter {
			ids = append(ids, string(s.ID))
		}
	}
	slices.Sort(ids)
	return ids, strings.Join(ids, "\x00")
}

// renewLease asks for promises while this node leads and is ready; the
// node calls it every HeartbeatTimeout/5 (everyWhileLeader): a promise
// lasts up to HeartbeatTimeout, so a lease survives a few renewals that
// come late.
func (n *Node) renewLease() {
	if term := n.raft.CurrentTerm(); n.readyTerm.Load() == term {
		n.probeLeases(term)
	}
}

// probeLeases asks every other voter for its promise and records the
// lease they add up to, if any.
func (n *Node) probeLeases(term uint64) {
	n.lease.mu.Lock()
	prober, noLease := n.lease.prober, n.lease.noLeaseTerm
	n.lease.mu.Unlock()
	if prober == nil || noLease == term {
		return
	}
	ids, voters := n.voters()
	var others []string
	self := false
	for _, id := range ids {
		if id == n.cfg.ID {
			self = true
		} else {
			others = append(others, id)
		}
	}
	// Promises needed: with this node, a majority of the voters.
	need := (len(others) + 1) / 2
	if !self || need == 0 {
		// Not a voter, or the only one: a round costs nothing then.
		return
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.HeartbeatTimeout/2)
	defer cancel()
	promises := make(chan time.Duration, len(others))
	for _, id := range others {
		go func() {
			p, err := prober(ctx, id, term)
			if err != nil {
				p = 0
			}
			promises <- p
		}()
	}
	var got []time.Duration
	for range others {
		if p := <-promises; p > 0 {
			got = append(got, p)
		}
	}
	n.leaseProbes.Add(1)
	if len(got) < need {
		return
	}
	// The need-th longest promise: it and the longer ones make the
	// majority; a tenth off for clock rates.
	slices.Sort(got)
	p := got[len(got)-need]
	until := start.Add(p - p/10)
	n.lease.mu.Lock()
	first := n.lease.cur == nil || n.lease.cur.term != term
	if n.lease.noLeaseTerm != term && (first || n.lease.cur.voters != voters || until.After(n.lease.cur.until)) {
		n.lease.cur = &leaseState{term: term, voters: voters, until: until}
	} else {
		first = false
	}
	n.lease.mu.Unlock()
	if first {
		n.log.Info("read lease acquired", "term", term, "promises", len(got), "lease", time.Until(until).Round(time.Millisecond))
	}
}

// LeaseCounts returns how many read indexes this leader gave under a lease
// and how many rounds of lease probes it ran.
func (n *Node) LeaseCounts() (reads, probes uint64) {
	return n.leaseReads.Load(), n.leaseProbes.Load()
}

// LeaseRemaining returns how long the lease this node holds has left, 0
// when it holds none it may use.
func (n *Node) LeaseRemaining() time.Duration {
	if !n.leaseHeld() {
		return 0
	}
	n.lease.mu.Lock()
	l := n.lease.cur
	n.lease.mu.Unlock()
	if l == nil {
		return 0
	}
	return max(0, time.Until(l.until))
}

// waitOutPromises is called before Raft starts. A node that may have
// promised a leader its vote before it stopped waits until any such
// promise has ended (a restarted follower knows no leader and would vote
// at once); then, with leases on, it records the longest promise it may
// make from now on.
func waitOutPromises(cfg Config, log *slog.Logger) error {
	path := filepath.Join(cfg.DataDir, leaseFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		d, perr := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if perr != nil || d < 0 {
			return fmt.Errorf("%s is corrupt: %q", path, b)
		}
		wait := time.Duration(d)
		log.Info("waiting out vote promises this node may have given before it stopped", "wait", wait)
		time.Sleep(wait)
	case !errors.Is(err, os.ErrNotExist):
		return err
	}
	if !cfg.ReadLease {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	tmp := path + ".tmp"
	if err := writeSynced(tmp, []byte(strconv.FormatInt(int64(cfg.HeartbeatTimeout), 10))); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(cfg.DataDir)
}

func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
