package server

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/fsm"
)

// The consistency check: every member records state checkpoints (the
// state hash as of revisions every replica passes through, fsm.Checkpoint)
// and compares them with the other members' every ConsistencyInterval.
// Replicas that applied the same log hold the same state; a checkpoint
// that differs means a damaged disk or memory or a bug changed one of
// them, which nothing else would notice until a client read the wrong
// row. The member whose hash differs from the majority's at a checkpoint
// marks itself divergent: it says so in its logs, its Status and the
// memdb_state_divergent gauge, and fails /readyz, so that it is taken out
// of rotation and replaced. It also stops serving reads (DIVERGED,
// Unavailable: the Go client retries on another member) and hands
// leadership to another member whenever it finds itself leader, so that
// no reader sees its data. Writes through it are still forwarded to the
// leader, which decides them. With no majority (two members, or three
// different hashes) every member that differs from another reports it.

// consistency holds what the last rounds found.
type consistency struct {
	mu sync.Mutex
	// divergent describes why this member's state cannot be trusted
	// (empty: no evidence against it). It stays set: a replica that
	// diverged once does not heal by applying more entries.
	divergent string
	// reported: checkpoint revisions already logged as mismatched.
	reported map[uint64]bool
}

// Divergence returns why this member's state differs from the majority's
// at a checkpoint, or "" when no check found it so.
func (s *Server) Divergence() string {
	s.consist.mu.Lock()
	defer s.consist.mu.Unlock()
	return s.consist.divergent
}

// consistencyLoop compares checkpoints until the server stops.
func (s *Server) consistencyLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.ConsistencyInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(s.peers, s.cfg.ConsistencyInterval)
			s.checkConsistency(ctx)
			if s.Divergence() != "" && s.node.IsLeader() {
				if err := s.node.TransferLeadership(ctx); err != nil {
					s.log.Warn("consistency check: could not hand leadership over from a divergent member", "err", err)
				} else {
					s.log.Warn("consistency check: handed leadership over: this member's state diverged")
				}
			}
			cancel()
		}
	}
}

// peerCheckpoints are one member's checkpoints, by revision.
type peerCheckpoints struct {
	id     string
	hashes map[uint64]uint64
}

// checkConsistency runs one round: it asks every other registered member
// for its checkpoints and compares them with this member's.
func (s *Server) checkConsistency(ctx context.Context) {
	own := s.node.FSM().Checkpoints()
	if len(own) == 0 {
		return
	}
	all := []peerCheckpoints{{id: s.cfg.NodeID, hashes: byRevision(own)}}
	for _, m := range s.node.FSM().Members() {
		if m.ID == s.cfg.NodeID || m.ClientAddr == "" {
			continue
		}
		st, err := s.statusOf(s.fwd.outgoing(ctx), m, &pb.StatusRequest{})
		if err != nil {
			continue // a member that is down is not evidence either way
		}
		h := map[uint64]uint64{}
		for _, cp := range st.Checkpoints {
			h[cp.Revision] = cp.Hash
		}
		all = append(all, peerCheckpoints{id: m.ID, hashes: h})
	}
	for _, cp := range own {
		s.judge(cp.Revision, all)
	}
}

func byRevision(cps []fsm.Checkpoint) map[uint64]uint64 {
	m := make(map[uint64]uint64, len(cps))
	for _, cp := range cps {
		m[cp.Revision] = cp.Hash
	}
	return m
}

// judge compares the members' hashes at one revision; all[0] is this
// member.
func (s *Server) judge(rev uint64, all []peerCheckpoints) {
	votes := map[uint64][]string{}
	at := 0 // members with a checkpoint at rev
	for _, p := range all {
		if h, ok := p.hashes[rev]; ok {
			votes[h] = append(votes[h], p.id)
			at++
		}
	}
	switch {
	case at < 2:
		return // nothing to compare with
	case len(votes) == 1:
		s.metrics.checks.WithLabelValues("match").Inc()
		return
	}
	s.metrics.checks.WithLabelValues("mismatch").Inc()
	mine := all[0].hashes[rev]
	agree := len(votes[mine])
	var differ []string
	outvoted := false
	for h, ids := range votes {
		if h == mine {
			continue
		}
		differ = append(differ, ids...)
		if len(ids) >= agree {
			outvoted = true // a larger or equal group holds another state
		}
	}
	slices.Sort(differ)
	s.consist.mu.Lock()
	defer s.consist.mu.Unlock()
	if s.consist.reported == nil {
		s.consist.reported = map[uint64]bool{}
	}
	if s.consist.reported[rev] {
		return
	}
	s.consist.reported[rev] = true
	if outvoted {
		why := fmt.Sprintf("state hash %016x at revision %d differs from members %v (%d of %d members at that revision agree with this one)",
			mine, rev, differ, agree, at)
		if s.consist.divergent == "" {
			s.consist.divergent = why
		}
		s.metrics.divergent.Set(1)
		s.log.Error("consistency check: THIS MEMBER'S STATE DIVERGES from the others; its data cannot be trusted: remove it, empty its data directory and add it back",
			"revision", rev, "hash", fmt.Sprintf("%016x", mine), "differing_members", differ)
		return
	}
	s.log.Error("consistency check: members whose state diverges from this one's", "revision", rev,
		"hash", fmt.Sprintf("%016x", mine), "members", differ)
}
