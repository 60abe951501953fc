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
// round per batch of reads (confirmRound: the other voters, asked after
// the reads arrived, say they still follow it); with reads sent to the
// leader such rounds were a fifth of the cluster's work. A lease gets the same
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

// LeaseAnswer is a follower's answer to a leader's probe.
type LeaseAnswer struct {
	// Promise is LeasePromise's answer: how long from the answer the
	// follower votes for no other candidate.
	Promise time.Duration
	// Follows is Follows' answer: the follower knew the caller as its
	// leader in the caller's term when it answered.
	Follows bool
}

// ErrProbeUnsupported is a prober's error for a member that predates
// probes; a leader then confirms its reads as hashicorp/raft does.
var ErrProbeUnsupported = errors.New("member does not answer lease probes")

// leaseProber asks member id for its promise to this node as leader of
// term.
type leaseProber func(ctx context.Context, id string, term uint64) (LeaseAnswer, error)

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
func (n *Node) SetLeaseProber(p func(ctx context.Context, id string, term uint64) (LeaseAnswer, error)) {
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

// Follows reports whether this node is a follower that knows from as its
// leader in term: the acknowledgement a leader counts to confirm that it
// still leads (confirmRound). Read after the question arrived, with the
// term read on both sides, it means this node had not voted in a later
// term by then (hashicorp/raft raises its term before it votes).
func (n *Node) Follows(from string, term uint64) bool {
	if n.closed.Load() || term == 0 || n.raft.CurrentTerm() != term || n.raft.State() != raft.Follower {
		return false
	}
	_, lid := n.raft.LeaderWithID()
	return string(lid) == from && n.raft.CurrentTerm() == term
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
		n.lease.mu.Lock()
		noLease := n.lease.noLeaseTerm
		n.lease.mu.Unlock()
		if noLease != term {
			n.probeVoters(term, true)
		}
	}
}

// errNoProbes: no prober is installed, or this node is not a voter.
var errNoProbes = errors.New("no probes")

// probeVoters asks every other voter whether it follows this node in term
// and for its promise, and returns once the answers (counting this node)
// make a majority or all are in. It reports whether they made a majority,
// and whether a member answered that it does not know probes. With lease,
// it also records the lease the promises add up to, if any.
func (n *Node) probeVoters(term uint64, lease bool) (majority, unsupported bool, err error) {
	n.lease.mu.Lock()
	prober := n.lease.prober
	n.lease.mu.Unlock()
	if prober == nil {
		return false, false, errNoProbes
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
	// Answers needed: with this node, a majority of the voters.
	need := (len(others) + 1) / 2
	if !self {
		return false, false, errNoProbes
	}
	if need == 0 {
		return true, false, nil // the only voter
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.HeartbeatTimeout/2)
	defer cancel()
	type answer struct {
		a   LeaseAnswer
		err error
	}
	answers := make(chan answer, len(others))
	for _, id := range others {
		go func() {
			a, err := prober(ctx, id, term)
			answers <- answer{a, err}
		}()
	}
	var promises []time.Duration
	follows := 0
	for range others {
		a := <-answers
		if errors.Is(a.err, ErrProbeUnsupported) {
			unsupported = true
		}
		if a.err != nil {
			continue
		}
		// A promise is only given by a follower of this node in term.
		if a.a.Follows || a.a.Promise > 0 {
			follows++
		}
		if a.a.Promise > 0 {
			promises = append(promises, a.a.Promise)
		}
		if follows >= need && len(promises) >= need {
			break // the rest cannot shorten a lease the majority gives
		}
	}
	n.leaseProbes.Add(1)
	if lease && len(promises) >= need {
		n.recordLease(term, voters, start, promises, need)
	}
	return follows >= need, unsupported, nil
}

// recordLease turns promises (at least need of them, answers to probes
// sent after start) into a lease: until the need-th longest ends, counted
// from start, a tenth off for clock rates.
func (n *Node) recordLease(term uint64, voters string, start time.Time, promises []time.Duration, need int) {
	slices.Sort(promises)
	p := promises[len(promises)-need]
	until := start.Add(p - p/10)
	if !until.After(time.Now()) {
		// The round took longer than the promises last (a stalled
		// process): nothing to hold.
		return
	}
	n.lease.mu.Lock()
	first := n.lease.cur == nil || n.lease.cur.term != term
	if n.lease.noLeaseTerm != term && (first || n.lease.cur.voters != voters || until.After(n.lease.cur.until)) {
		n.lease.cur = &leaseState{term: term, voters: voters, until: until}
	} else {
		first = false
	}
	n.lease.mu.Unlock()
	if first {
		n.log.Info("read lease acquired", "term", term, "promises", len(promises), "lease", time.Until(until).Round(time.Millisecond))
	}
}

// confirmRound confirms that this node still leads, for read indexes
// taken before the round started (rounds.Group starts a round only after
// its callers arrived), and returns the term it confirmed.
//
// Why not hashicorp/raft's VerifyLeader: it counts any successful answer
// that arrives while the check waits, including answers to heartbeats and
// appends sent before the check began (replication.go, notifyAll). A
// leader paused (SIGSTOP, a long GC or VM stall) just after sending
// appends finds their answers waiting when it resumes and confirms itself
// at once, although a new leader may have been elected and acknowledged
// writes meanwhile: a stale read. The chaos nemesis pause-leader-reads
// caught that. Here every counted answer is to a question asked after the
// round began: a follower that still followed this node in its term then
// had not voted for another candidate, so no later leader can have
// acknowledged a write before the reads arrived.
func (n *Node) confirmRound() (uint64, error) {
	term := n.raft.CurrentTerm()
	if n.raft.State() != raft.Leader {
		return 0, n.notLeader()
	}
	n.leadershipRounds.Add(1)
	majority, unsupported, err := n.probeVoters(term, n.cfg.ReadLease)
	switch {
	case majority:
		return term, nil
	case err != nil || unsupported:
		// No probes here (a node without a server), or members older than
		// probes during a rolling upgrade: Raft's own check.
		fut := n.raft.VerifyLeader()
		releaseAtShutdown(fut, n.raftDown)
		if err := fut.Error(); err != nil {
			if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
				return 0, n.notLeader()
			}
			if errors.Is(err, raft.ErrRaftShutdown) {
				return 0, ErrShutdown
			}
			return 0, err
		}
		return term, nil
	case n.raft.State() != raft.Leader:
		return 0, n.notLeader()
	}
	return 0, fmt.Errorf("%w: a majority of voters did not confirm this leader's term %d in time", ErrNoLeader, term)
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
