package client

import (
	"context"
	"errors"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
)

// WatchOptions selects what a watch streams and where it starts.
type WatchOptions struct {
	// Index and the range fields of Range select rows as a scan does ("" and
	// an empty range: the whole table). Range's Limit, Reverse and KeysOnly
	// do not apply.
	Index string
	Range ScanOptions
	// NoPut and NoDelete leave out puts or deletes.
	NoPut, NoDelete bool
	// PrevRow: events carry the row before the change.
	PrevRow bool
	// StartRevision: stream the changes after it; 0 starts now.
	StartRevision uint64
	// Snapshot: first deliver the matching rows (a Reset response), then
	// the changes after them.
	Snapshot bool
	// ProgressInterval: how often an idle stream reports its revision; 0
	// uses the server's default.
	ProgressInterval time.Duration
	// Stale lets the start ("now", or the snapshot) come from the member's
	// applied state without a linearizable read index.
	Stale bool
}

// EventType is the kind of a change.
type EventType int

// Event types.
const (
	EventPut    EventType = iota // insert, upsert, update or touch
	EventDelete                  // delete, expiry, or a dropped table
)

// WatchEvent is one row change.
type WatchEvent struct {
	Type     EventType
	Revision uint64
	// Row after a put; only the primary key for a delete.
	Row Row
	// PrevRow: the row before the change, with WatchOptions.PrevRow (nil
	// for an insert).
	PrevRow *Row
	// Expired: a delete because the row's time to live ran out.
	Expired bool
}

// WatchResponse is one delivery of a watch.
type WatchResponse struct {
	// Events, in revision order; every event of one revision (one
	// transaction) is in the same response, also when the member sent
	// them in several messages for their size.
	Events []WatchEvent
	// Reset: Rows holds every matching row at Revision; replace whatever
	// was built from earlier responses. It comes first with Snapshot, and
	// again whenever the watch could not resume without a gap (the
	// members no longer kept the changes it missed) and had to re-list.
	Reset bool
	Rows  []Row
	// Progress: no event; the watch has seen everything up to Revision.
	Progress bool
	// Revision: every matching change up to it has been delivered.
	Revision uint64
	// Err ends the watch (the table or index was dropped, the request is
	// invalid, or ctx ended); the channel closes after it.
	Err error
}

// Watch streams changes until ctx ends. It is gap-free and duplicate-free
// across failures: when a member fails, the stream stops or the member
// cancels it for being slow, it resumes on another member from the last
// revision delivered; when no member keeps the changes since then, it
// re-lists (a Reset response) and continues from there. Responses must be
// received promptly; a consumer that stalls is cancelled by the member and
// resumed, which costs a reconnection.
func (c *Client) Watch(ctx context.Context, table string, o WatchOptions) <-chan WatchResponse {
	ch := make(chan WatchResponse, 16)
	go func() {
		defer close(ch)
		w := &watchLoop{c: c, table: table, o: o, rev: o.StartRevision, list: o.Snapshot, out: ch}
		err := w.run(ctx)
		if ctx.Err() != nil {
			err = &Error{Code: codes.Canceled, Message: ctx.Err().Error(), sentinel: ErrUnavailable}
		}
		select {
		case ch <- WatchResponse{Err: err, Revision: w.rev}:
		case <-time.After(time.Second):
		}
	}()
	return ch
}

type watchLoop struct {
	c     *Client
	table string
	o     WatchOptions
	rev   uint64 // delivered through; 0 until the start is known
	list  bool   // the next stream must start with a snapshot
	out   chan<- WatchResponse
}

func (w *watchLoop) run(ctx context.Context) error {
	for n := 0; ; {
		err := w.stream(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		e := fromStatus(err)
		switch {
		case errors.Is(e, ErrCompacted):
			// The changes since w.rev are gone everywhere this member knows
			// of: start over from a fresh list.
			w.list, w.rev = true, 0
			w.c.cfg.Logger.Info("watch: history compacted; re-listing", "table", w.table)
			continue
		case errors.Is(e, ErrWatchEnded), e.Code == codes.InvalidArgument, e.Code == codes.NotFound, e.Code == codes.Unimplemented:
			return e
		}
		pause := w.c.backoff(n, e.RetryAfter)
		w.c.cfg.Logger.Debug("watch: resuming on another member", "table", w.table, "revision", w.rev, "err", e, "pause", pause)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
		n++
		if err == errProgressed {
			n = 0
		}
	}
}

// errProgressed marks a stream that delivered something before failing,
// so the next attempt starts without backoff growth.
var errProgressed = status.Error(codes.Unavailable, "watch stream ended after progress")

func (w *watchLoop) send(ctx context.Context, r WatchResponse) bool {
	select {
	case w.out <- r:
		return true
	case <-ctx.Done():
		return false
	}
}

// stream runs one Watch call on one member, until it fails.
func (w *watchLoop) stream(ctx context.Context) error {
	cc, err := w.c.conn(w.c.pick(false))
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req := &pb.WatchRequest{Table: w.table, Index: w.o.Index, Range: w.o.Range.keyRange(), NoPut: w.o.NoPut, NoDelete: w.o.NoDelete,
		PrevRow: w.o.PrevRow, StartRevision: w.rev, Snapshot: w.list, ProgressIntervalMs: uint32(w.o.ProgressInterval / time.Millisecond)}
	if w.o.Stale && (w.rev == 0 || w.list) {
		req.Read = &pb.ReadOptions{Consistency: pb.Consistency_CONSISTENCY_STALE}
	}
	st, err := pb.NewDataServiceClient(cc).Watch(sctx, req)
	if err != nil {
		return err
	}
	progressed := false
	var rows []Row
	var partial []WatchEvent // events of a revision not yet complete
	for {
		m, err := st.Recv()
		if err != nil {
			if err == io.EOF {
				err = status.Error(codes.Unavailable, "watch stream closed by the member")
			}
			if progressed && status.Code(err) == codes.Unavailable {
				return errProgressed
			}
			return err
		}
		if w.list {
			for _, r := range m.SnapshotRows {
				row, err := rowOf(r)
				if err != nil {
					return status.Error(codes.InvalidArgument, err.Error())
				}
				rows = append(rows, row)
			}
			if !m.SnapshotDone {
				continue
			}
			w.list, w.rev = false, m.Revision
			if !w.send(ctx, WatchResponse{Reset: true, Rows: rows, Revision: m.Revision}) {
				return ctx.Err()
			}
			rows, progressed = nil, true
			continue
		}
		if m.WatchId != "" && len(m.Events) == 0 {
			// The stream's first message: where "now" is.
			if w.rev == 0 {
				w.rev = m.Revision
			}
			continue
		}
		for _, e := range m.Events {
			ev, err := eventOf(e)
			if err != nil {
				return status.Error(codes.InvalidArgument, err.Error())
			}
			partial = append(partial, ev)
		}
		// A revision too large for one message (a transaction of large
		// rows, the deletes of a dropped table) arrives in parts. Its
		// events are held back until it is whole: delivered early, they
		// would come again after a resume from the revision before, and
		// split one transaction across responses. Every part but the last
		// is a fragment, with no revision; members before fragments said
		// instead that each part is complete only up to the revision
		// before, which the trimming below holds back the same way.
		if m.Fragment {
			continue
		}
		n := len(partial)
		for n > 0 && partial[n-1].Revision > m.Revision {
			n--
		}
		if m.Revision <= w.rev && n == 0 {
			continue // nothing new (a progress the caller has seen)
		}
		resp := WatchResponse{Revision: m.Revision, Progress: n == 0, Events: partial[:n:n]}
		partial = append([]WatchEvent(nil), partial[n:]...)
		w.rev = max(w.rev, m.Revision)
		if !w.send(ctx, resp) {
			return ctx.Err()
		}
		progressed = true
	}
}

func eventOf(e *pb.Event) (WatchEvent, error) {
	out := WatchEvent{Revision: e.Revision, Expired: e.Expired}
	if e.Type == pb.Event_TYPE_DELETE {
		out.Type = EventDelete
	}
	var err error
	if out.Row, err = rowOf(e.Row); err != nil {
		return out, err
	}
	if e.PrevRow != nil {
		p, err := rowOf(e.PrevRow)
		if err != nil {
			return out, err
		}
		out.PrevRow = &p
	}
	return out, nil
}
