package server

import (
	"context"
	"errors"
	"fmt"
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
//     min_revision within the deadline.
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
