package server

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/memdbd/memdbd/api/convert"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/store"
	"github.com/memdbd/memdbd/watch"
)

// Watch stream bounds.
const (
	minProgressInterval = 50 * time.Millisecond
	maxProgressInterval = time.Hour
	// watchSnapshotPage is the most rows per snapshot message.
	watchSnapshotPage = 256
	// watchMessageBytes is the size a message aims at: events of whole
	// revisions are packed until it is reached, and snapshot rows up to
	// it. Only a revision that is larger on its own (a transaction of many
	// large rows, the deletes of a dropped table, with previous rows)
	// spans messages, as fragments cut at twice this, or at the response
	// limit (Limits.MaxResponseBytes) when that is lower: gRPC clients
	// other than the Go SDK receive messages of up to 4 MiB by default.
	// One event is never split: a message holds at least one.
	watchMessageBytes = 1 << 20
)

// watchStreams lets WatchProgress find the streams this member serves.
type watchStreams struct {
	mu sync.Mutex
	m  map[string]*watch.Watcher
}

func (ws *watchStreams) add(id string, w *watch.Watcher) {
	ws.mu.Lock()
	if ws.m == nil {
		ws.m = map[string]*watch.Watcher{}
	}
	ws.m[id] = w
	ws.mu.Unlock()
}

func (ws *watchStreams) remove(id string) {
	ws.mu.Lock()
	delete(ws.m, id)
	ws.mu.Unlock()
}

func (ws *watchStreams) get(id string) *watch.Watcher {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return ws.m[id]
}

// admitStream gives a stream a request id and bounds the watch streams
// (--max-watchers); streams are long-lived, so they do not count against
// the in-flight limit of unary requests and get no default deadline.
func (s *Server) admitStream(srv interface{}, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	id := incomingRequestID(ss.Context())
	_ = ss.SetHeader(metadata.Pairs(mdRequestID, id))
	if info.FullMethod == pb.DataService_Watch_FullMethodName {
		if n := s.watchers.Add(1); n > int64(s.cfg.MaxWatchers) {
			s.watchers.Add(-1)
			s.metrics.rejected.WithLabelValues("max_watchers").Inc()
			return toStatus(overLimit("max-watchers", fmt.Errorf("%w: %d watch streams open on this member, limit %d", errOverloaded, n-1, s.cfg.MaxWatchers)))
		}
		defer s.watchers.Add(-1)
		if c := connOf(ss.Context()); c != nil && s.cfg.Conn.MaxWatchers > 0 {
			if n := c.watchers.Add(1); n > int64(s.cfg.Conn.MaxWatchers) {
				c.watchers.Add(-1)
				s.metrics.rejected.WithLabelValues("watchers_per_conn").Inc()
				return toStatus(overLimit("max-watchers-per-conn", fmt.Errorf("%w: this connection has %d watch streams open, its share", errOverloaded, n-1)))
			}
			defer c.watchers.Add(-1)
		}
	}
	ctx := context.WithValue(ss.Context(), requestIDKey{}, id)
	if auditedMethods[info.FullMethod] {
		start := time.Now()
		err := h(srv, &idStream{ServerStream: ss, ctx: ctx})
		s.audit(ctx, info.FullMethod, err, time.Since(start))
		return err
	}
	return h(srv, &idStream{ServerStream: ss, ctx: ctx})
}

type idStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *idStream) Context() context.Context { return s.ctx }

// watchStart resolves where a watch starts and the view its snapshot and
// range come from.
func (s *Server) watchStart(ctx context.Context, req *pb.WatchRequest) (*store.View, uint64, error) {
	// Waiting for a read index or for this member to catch up is bounded
	// like any read.
	rctx, cancel := context.WithTimeout(ctx, s.defaultTimeout())
	defer cancel()
	fromRevision := req.StartRevision != 0 && !req.Snapshot
	var v *store.View
	if fromRevision {
		if err := s.node.FSM().Halted(); err != nil {
			return nil, 0, err
		}
		if req.Read != nil && (req.Read.Consistency != pb.Consistency_CONSISTENCY_LINEARIZABLE || req.Read.MaxStalenessMs != 0 || req.Read.MinRevision != 0) {
			return nil, 0, fmt.Errorf("%w: read options choose the start of a watch without start_revision, or of a snapshot", errInvalid)
		}
		v = s.node.FSM().Store().View().At(s.node.Now())
	} else {
		var err error
		if v, err = s.readView(rctx, req.Read); err != nil {
			return nil, 0, err
		}
	}
	if req.StartRevision > v.Revision() {
		// This member is behind the start: a snapshot asked for at a later
		// revision, a watch resumed on a lagging follower, or one on a
		// table created a moment ago through another member, which this
		// one would not know yet. It catches up first, unless the start is
		// more than one revision beyond what the cluster has committed
		// (one beyond is the next write, which a client may know of from
		// another member): such a wait would hold the stream until the
		// deadline for nothing.
		if err := s.refuseFuture(rctx, "start_revision", req.StartRevision, req.StartRevision-1); err != nil {
			return nil, 0, err
		}
		if err := s.node.WaitApplied(rctx, req.StartRevision); err != nil {
			return nil, 0, err
		}
		v = s.node.FSM().Store().View().At(s.node.Now())
	}
	if fromRevision {
		return v, req.StartRevision, nil
	}
	return v, v.Revision(), nil
}

func (d *dataService) Watch(req *pb.WatchRequest, stream pb.DataService_WatchServer) error {
	s := d.s
	// The stream ends with the call, or when the server stops (the client
	// then resumes on another member). AfterFunc costs no goroutine per
	// stream until it fires.
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	defer context.AfterFunc(s.stopping, cancel)()
	if req.Table == "" {
		return toStatus(fmt.Errorf("%w: table is required", errInvalid))
	}
	if req.NoPut && req.NoDelete {
		return toStatus(fmt.Errorf("%w: no_put and no_delete together leave nothing to watch", errInvalid))
	}
	interval := s.cfg.WatchProgressInterval
	if ms := req.ProgressIntervalMs; ms > 0 {
		interval = min(max(time.Duration(ms)*time.Millisecond, minProgressInterval), maxProgressInterval)
	}
	o, err := convert.Range(req.Index, req.Range)
	if err != nil {
		return toStatus(err)
	}
	v, start, err := s.watchStart(ctx, req)
	if err != nil {
		return toStatus(err)
	}
	lo, hi, err := v.KeyRange(req.Table, o)
	if err != nil {
		return toStatus(err)
	}
	sortKey, err := v.SortKeyFunc(req.Table, req.Index)
	if err != nil {
		return toStatus(err)
	}
	info, err := v.Table(req.Table)
	if err != nil {
		return toStatus(err)
	}
	pk, indexDef := info.Schema.PrimaryKey, ""
	if req.Index != "" {
		ix, _ := info.Schema.Index(req.Index)
		indexDef = fmt.Sprintf("%s/%v", strings.Join(ix.Fields, ","), ix.Unique)
	}
	w, err := s.node.Watches().Watch(start, watch.Matcher{Table: req.Table, Index: req.Index, IndexDef: indexDef, SortKey: sortKey,
		Lo: lo, Hi: hi, NoPut: req.NoPut, NoDelete: req.NoDelete})
	if err != nil {
		return toStatus(err)
	}
	defer w.Close()
	id := s.cfg.NodeID + "-" + strconv.FormatUint(w.ID(), 10)
	s.watchStreams.add(id, w)
	defer s.watchStreams.remove(id)
	s.log.Debug("watch started", "request_id", requestID(ctx), "watch_id", id, "table", req.Table, "index", req.Index, "start_revision", start, "snapshot", req.Snapshot)

	first := &pb.WatchResponse{Header: s.header(v), WatchId: id, Revision: start}
	if req.Snapshot {
		if err := s.sendWatchSnapshot(stream, first, v, req.Table, o); err != nil {
			return err
		}
	} else if err := stream.Send(first); err != nil {
		return err
	}
	for {
		b, err := w.Next(ctx, interval)
		if err != nil {
			if s.stopping.Err() != nil {
				return toStatus(watch.ErrClosed)
			}
			if ctx.Err() != nil {
				return toStatus(ctx.Err())
			}
			s.metrics.watchEnded.WithLabelValues(watchEndReason(err)).Inc()
			s.log.Info("watch ended", "request_id", requestID(ctx), "watch_id", id, "err", err)
			return toStatus(err)
		}
		if len(b.Events) == 0 {
			if err := stream.Send(&pb.WatchResponse{Revision: b.Rev, Progress: true}); err != nil {
				return err
			}
			continue
		}
		if err := s.sendWatchEvents(stream, b, pk, req.PrevRow); err != nil {
			return err
		}
	}
}

func watchEndReason(err error) string {
	var c *watch.ErrCompacted
	var t *watch.ErrTooSlow
	var d *watch.ErrDropped
	switch {
	case errors.As(err, &c):
		return "compacted"
	case errors.As(err, &t):
		return "too_slow"
	case errors.As(err, &d):
		return "dropped"
	case errors.Is(err, watch.ErrClosed):
		return "shutdown"
	}
	return "other"
}

// sendWatchSnapshot sends the rows in range at the view's revision, in
// pages over that one view of up to watchSnapshotPage rows and about
// watchMessageBytes (at least one row each); the last message says it is
// complete.
func (s *Server) sendWatchSnapshot(stream pb.DataService_WatchServer, first *pb.WatchResponse, v *store.View, table string, o store.ScanOptions) error {
	msg := first
	o.Limit = watchSnapshotPage
	// The fields other than rows are a header, an id and a revision.
	target := min(watchMessageBytes, s.limits().MaxResponseBytes) - 256
	noToken := func([]byte) []byte { return nil }
	for {
		page, err := v.Scan(table, o)
		if err != nil {
			return toStatus(err)
		}
		if page, _, _, err = fitScanPage(v, table, o, page, 0, target, noToken); err != nil {
			return toStatus(err)
		}
		msg.SnapshotRows = make([]*pb.Row, len(page.Rows))
		for i, r := range page.Rows {
			msg.SnapshotRows[i] = convert.RowToPB(r)
		}
		msg.Revision = v.Revision()
		if page.Next == nil {
			msg.SnapshotDone = true
			return stream.Send(msg)
		}
		if err := stream.Send(msg); err != nil {
			return err
		}
		o.After = page.Next
		msg = &pb.WatchResponse{}
	}
}

// sendWatchEvents sends a batch of events, encoded by hand
// (watchwire.go): whole revisions packed into messages of about
// watchMessageBytes, and a revision too large for one message split over
// several, every one but its last marked as a fragment.
func (s *Server) sendWatchEvents(stream pb.DataService_WatchServer, b watch.Batch, pk string, prev bool) error {
	now := time.Now()
	limit := s.limits().MaxResponseBytes
	soft, hard := min(watchMessageBytes, limit), min(2*watchMessageBytes, limit)-watchTrailerBytes
	enc := watchEncoder{pk: pk, prev: prev}
	rest := watchEventsSize(b.Events, prev) // to size the buffers
	var msg []byte
	var last uint64 // the revision of msg's last event
	send := func(rev uint64, fragment bool) error {
		buf := appendWatchTrailer(msg, rev, fragment)
		// gRPC may still hold buf after SendMsg returns: the next message
		// gets a buffer of its own.
		msg = nil
		return stream.SendMsg(&rawMessage{b: buf})
	}
	for i := range b.Events {
		e := &b.Events[i]
		ev, err := enc.event(e)
		if err != nil {
			return toStatus(err)
		}
		n := protowire.SizeTag(wireRespEvents) + protowire.SizeBytes(len(ev))
		if len(msg) > 0 {
			over := len(msg)+n > hard
			switch {
			case e.Rev != last && (len(msg) >= soft || over):
				err = send(last, false)
			case e.Rev == last && over:
				// Within one revision: the message is complete only up to
				// the revision before, which the revision field cannot say
				// once it holds a part of this one, so it is left unset.
				err = send(0, true)
			}
			if err != nil {
				return err
			}
		}
		if msg == nil {
			msg = make([]byte, 0, max(min(rest, hard), n)+watchTrailerBytes)
		}
		msg = protowire.AppendTag(msg, wireRespEvents, protowire.BytesType)
		msg = protowire.AppendBytes(msg, ev)
		last = e.Rev
		rest -= min(rest, 2*len(e.Row)+len(e.Key)+64+2*len(e.Prev))
		s.metrics.watchDelay.Observe(now.Sub(e.At).Seconds())
	}
	s.metrics.watchEvents.Add(float64(len(b.Events)))
	return send(b.Rev, false)
}

func (d *dataService) WatchProgress(ctx context.Context, req *pb.WatchProgressRequest) (*pb.WatchProgressResponse, error) {
	w := d.s.watchStreams.get(req.WatchId)
	if w == nil {
		return nil, toStatus(fmt.Errorf("%w: no watch %q on this member (a watch id names the member that serves it)", errPrecondition, req.WatchId))
	}
	w.Poke()
	return &pb.WatchProgressResponse{Header: d.s.header(d.s.node.FSM().Store().View()), Revision: w.Delivered()}, nil
}
