package server

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
)

// Read indexes for followers.
//
// A follower serves a linearizable read from its own memory once it has
// applied the leader's read index (reads.go). It asks for one per batch of
// reads (readIndexes, one request in flight), over one long-lived stream to
// the leader (ReadIndexStream): a message on an open stream is a fraction
// of a call's cost (no HTTP/2 stream to open, no headers or trailers, no
// interceptors), and with reads spread over three members these requests
// were about a fifth of the cluster's work for linearizable reads. The
// follower falls back to one call per request (ReadIndex) for a leader
// that does not serve the stream, as during a rolling upgrade from a
// version without it.

// noReadIndexStream makes every server in the process answer
// ReadIndexStream as a version without it would; for tests of the
// fallback.
var noReadIndexStream atomic.Bool

// readIndexStream is a follower's open stream to one leader. Only the
// readIndexes round uses it, one request at a time.
type readIndexStream struct {
	addr   string
	stream cmdpb.PeerService_ReadIndexStreamClient
	cancel context.CancelFunc
}

// fetchReadIndex asks the leader for a read index. Called by one round at
// a time (readIndexes), which owns s.riStream, s.riNoStream and
// s.riRetryStream.
func (s *Server) fetchReadIndex(ctx context.Context) (uint64, error) {
	conn, addr, err := s.leaderPeerConn(ctx)
	if err != nil {
		return 0, err
	}
	// The term is read here, after every read this request answers for
	// arrived (rounds.Group starts a request only after its callers came):
	// see node.ReadIndexFor for why that spares the leader a round.
	term := s.node.Term()
	if s.riNoStream != addr || time.Now().After(s.riRetryStream) {
		s.metrics.forwarded.WithLabelValues("read_index").Inc()
		idx, err := s.streamReadIndex(ctx, addr, cmdpb.NewPeerServiceClient(conn), term)
		if status.Code(err) != codes.Unimplemented {
			return idx, err
		}
		s.log.Info("leader serves no read-index stream; asking with one call per request", "leader", addr)
		// Asked again a minute later: the leader may have been upgraded
		// in place.
		s.riNoStream, s.riRetryStream = addr, time.Now().Add(time.Minute)
	}
	s.metrics.forwarded.WithLabelValues("read_index_call").Inc()
	resp, err := cmdpb.NewPeerServiceClient(conn).ReadIndex(s.fwd.outgoing(ctx), &cmdpb.ReadIndexRequest{From: s.cfg.NodeID, Term: term})
	if err != nil {
		return 0, err
	}
	return resp.Index, nil
}

// streamReadIndex sends one request on the stream to the leader at addr,
// opening the stream first if need be, and waits for the answer within
// ctx. Any failure ends the stream; the next request opens another.
func (s *Server) streamReadIndex(ctx context.Context, addr string, conn cmdpb.PeerServiceClient, term uint64) (uint64, error) {
	if ri := s.riStream; ri != nil && ri.addr != addr {
		ri.cancel() // the leader changed
		s.riStream = nil
	}
	ri := s.riStream
	if ri == nil {
		// The stream lives until the server has stopped (after draining
		// the reads that use it) or it fails, not for one request.
		sctx, cancel := context.WithCancel(s.peers)
		ri = &readIndexStream{addr: addr, cancel: cancel}
		stop := context.AfterFunc(ctx, cancel)
		st, err := conn.ReadIndexStream(s.fwd.outgoing(sctx))
		stop()
		if err != nil {
			cancel()
			return 0, s.readIndexErr(ctx, err)
		}
		ri.stream = st
		s.riStream = ri
	}
	// A request that runs out of time ends the stream: an answer left on
	// it would belong to no request.
	defer context.AfterFunc(ctx, ri.cancel)()
	err := ri.stream.Send(&cmdpb.ReadIndexStreamRequest{From: s.cfg.NodeID, Term: term})
	var resp *cmdpb.ReadIndexStreamResponse
	if err == nil || errors.Is(err, io.EOF) {
		// On io.EOF the leader ended the stream; Recv returns why.
		resp, err = ri.stream.Recv()
	}
	if err != nil {
		ri.cancel()
		s.riStream = nil
		return 0, s.readIndexErr(ctx, err)
	}
	return resp.Index, nil
}

// readIndexErr prefers the request's own deadline to the cancellation it
// caused.
func (s *Server) readIndexErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
		// The stream ended under the request (the leader hung up, or this
		// member is closing): not the caller's doing, and worth a retry
		// elsewhere.
		return status.Error(codes.Unavailable, "the read-index stream to the leader ended")
	}
	return err
}

// ReadIndex answers one read-index request (followers that predate the
// stream).
func (p *peerService) ReadIndex(ctx context.Context, req *cmdpb.ReadIndexRequest) (*cmdpb.ReadIndexResponse, error) {
	idx, err := p.s.node.ReadIndexFor(ctx, req.From, req.Term)
	if err != nil {
		return nil, toStatus(err)
	}
	return &cmdpb.ReadIndexResponse{Index: idx}, nil
}

// ReadIndexStream answers a follower's read-index requests in order until
// it hangs up, a request fails (the stream ends with that request's
// status), or this member stops.
func (p *peerService) ReadIndexStream(stream cmdpb.PeerService_ReadIndexStreamServer) error {
	s := p.s
	if noReadIndexStream.Load() {
		return status.Error(codes.Unimplemented, "read-index stream turned off")
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	defer context.AfterFunc(s.stopping, cancel)()
	// Recv runs on its own goroutine so that a stop ends the stream at
	// once rather than at the follower's next request: graceful stop
	// waits for every open stream.
	reqs := make(chan *cmdpb.ReadIndexStreamRequest)
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case req := <-reqs:
			// Bounded without a timer of its own: ReadIndexFor waits for
			// at most one round, itself bounded (confirmRound), and the follower ends the
			// stream when its request runs out of time.
			idx, err := s.node.ReadIndexFor(ctx, req.From, req.Term)
			if err != nil {
				return toStatus(err)
			}
			if err := stream.Send(&cmdpb.ReadIndexStreamResponse{Index: idx}); err != nil {
				return err
			}
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-ctx.Done():
			if s.stopping.Err() != nil {
				return status.Error(codes.Unavailable, "this member is stopping")
			}
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}
