package server

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/store"
)

// readView returns the view a read is served from, honouring its
// consistency:
//
//   - linearizable (default): a read index from the leader (this node or
//     the leader through PeerService), then wait until this node has
//     applied it. Served from this node's memory: followers share the read
//     load, the leader only confirms its leadership.
//   - stale: this node's current view, refused when it has not heard from
//     a leader within max_staleness, or waited for until it reaches
//     min_revision within the deadline. A min_revision the cluster has
//     not committed is refused at once (refuseFuture).
func (s *Server) readView(ctx context.Context, opts *pb.ReadOptions) (*store.View, error) {
	if err := s.node.FSM().Halted(); err != nil {
		return nil, err
	}
	if d := s.Divergence(); d != "" {
		return nil, fmt.Errorf("%w (%s): read from another member", errDiverged, d)
	}
	switch opts.GetConsistency() {
	case pb.Consistency_CONSISTENCY_STALE:
		s.metrics.reads.WithLabelValues("stale").Inc()
		if ms := opts.GetMaxStalenessMs(); ms > 0 {
			bound := time.Duration(ms) * time.Millisecond
			if lc := s.node.LastContact(); lc > bound {
				return nil, fmt.Errorf("%w: this node last heard from a leader %s ago, more than max_staleness %s", errStale, roundDur(lc), bound)
			}
		}
		if r := opts.GetMinRevision(); r > 0 {
			if err := s.refuseFuture(ctx, "min_revision", r, r); err != nil {
				return nil, err
			}
			// Give up a little before the caller's deadline, so that the caller
			// learns why (STALE) rather than seeing its own deadline expire.
			wctx := ctx
			if dl, ok := ctx.Deadline(); ok {
				margin := min(time.Until(dl)/10, 50*time.Millisecond)
				var cancel context.CancelFunc
				wctx, cancel = context.WithDeadline(ctx, dl.Add(-margin))
				defer cancel()
			}
			if err := s.node.WaitApplied(wctx, r); err != nil {
				if errors.Is(err, context.DeadlineExceeded) {
					return nil, fmt.Errorf("%w: this node reached revision %d, not min_revision %d, within the deadline", errStale, s.node.FSM().Applied(), r)
				}
				return nil, err
			}
		}
		return s.node.FSM().Store().View().At(s.node.Now()), nil
	case pb.Consistency_CONSISTENCY_LINEARIZABLE:
		s.metrics.reads.WithLabelValues("linearizable").Inc()
		if opts.GetMaxStalenessMs() != 0 || opts.GetMinRevision() != 0 {
			return nil, fmt.Errorf("%w: max_staleness_ms and min_revision apply to stale reads only", errInvalid)
		}
		idx, err := s.readIndex(ctx)
		if err != nil {
			return nil, err
		}
		if err := s.node.WaitApplied(ctx, idx); err != nil {
			return nil, err
		}
		// Expired rows are hidden from the moment they expire, although the
		// log deletes them a little later (the leader's next expiry sweep).
		return s.node.FSM().Store().View().At(s.node.Now()), nil
	}
	return nil, fmt.Errorf("%w: unknown consistency %d", errInvalid, opts.GetConsistency())
}

// refuseFuture fails fast when a read or a watch would wait for a revision
// the cluster has not committed: need, asked for as field = asked. It is
// FUTURE_REVISION (OutOfRange, not retried by the SDK), with the revision
// this member has reached in the ErrorInfo metadata.
//
// Why: such a wait can only end at the caller's deadline (no write may
// ever reach a revision like 2^64-1), and meanwhile it holds one of this
// member's in-flight slots (a watch: one of its watch streams); enough of
// them refused every other request.
//
// What counts as committed: first this member's own commit index
// (node.CommitIndex), which costs nothing and covers every read whose
// revision came from this cluster once this member has heard of it; a
// legitimate read-your-writes that is merely ahead of this member's apply
// waits as before. A revision beyond it may still be committed (a
// follower hears of a commit with the leader's next message; a new leader
// learns its predecessor's commits once ready), so the leader is asked
// for its commit index through the read-index machinery, which confirms
// its leadership and is shared among concurrent callers (one request in
// flight per follower, one leadership round per leader), so a flood of
// such reads costs the leader one question per round trip, not one per
// read. Only a revision beyond that too is refused. When the leader
// cannot be asked the read fails STALE (Unavailable, retried elsewhere by
// the SDK) rather than waiting: this member cannot tell whether the
// revision exists.
func (s *Server) refuseFuture(ctx context.Context, field string, asked, need uint64) error {
	if need <= s.node.FSM().Applied() || need <= s.node.CommitIndex() {
		return nil
	}
	idx, err := s.readIndex(ctx)
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		// %v, not %w: the cause (NOT_LEADER, NO_LEADER, ...) would
		// otherwise decide the status, and this is a staleness refusal.
		return fmt.Errorf("%w: %s %d is beyond revision %d, the newest this member knows to be committed, and the leader could not be asked for a newer one: %v",
			errStale, field, asked, s.node.CommitIndex(), err)
	}
	// The commit index again: it may have advanced during the question, and
	// the leader's answer leaves out entries not yet on its own disk, which
	// a follower may already have applied and shown to a client.
	committed := max(idx, s.node.CommitIndex())
	if need <= committed {
		return nil
	}
	reached := s.node.FSM().Applied()
	return statusErr(pb.ReasonFutureRevision, fmt.Sprintf(
		"%s %d is beyond revision %d, the newest the cluster has committed (this member has reached %d): no write has that revision yet, so waiting for it could take forever; "+
			"pass a revision taken from a response header or a write result of this cluster", field, asked, committed, reached),
		map[string]string{pb.MetaRevision: strconv.FormatUint(reached, 10)}, 0)
}

func roundDur(d time.Duration) time.Duration {
	if d > time.Hour*24*365 {
		return time.Hour * 24 * 365
	}
	return d.Round(time.Millisecond)
}

// header describes the state a response reflects.
func (s *Server) header(v *store.View) *pb.ResponseHeader {
	h := &pb.ResponseHeader{NodeId: s.cfg.NodeID, RaftTerm: s.node.Term()}
	if v != nil {
		h.Revision = v.Revision()
	}
	return h
}

// writeHeader describes the state after a write at revision rev.
func (s *Server) writeHeader(rev uint64) *pb.ResponseHeader {
	return &pb.ResponseHeader{NodeId: s.cfg.NodeID, RaftTerm: s.node.Term(), Revision: rev}
}
