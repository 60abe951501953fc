package client

import (
	"context"
	"sync"
	"time"

	"github.com/memdbd/memdbd/api/convert"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
)

// Get coalescing. Concurrent Gets on one Client for the same table with the
// same read options are sent together as one BatchGet once a few of them
// are already in flight. A read's cost on both ends is mostly the RPC
// itself (HTTP/2 framing, a socket write and read on each side, scheduling
// the handler), not the lookup: with 64 readers on two cores the gRPC
// transport took most of the members' and the client's CPU. One RPC for
// several keys pays it once. This is natural batching, not a timer: a Get
// that finds fewer than getsInFlight RPCs of its kind running is sent at
// once, alone, so a lone caller sees no added latency. Otherwise it waits
// for a running RPC to return and goes out with every Get that queued
// meanwhile, or at once when maxGetBatch have queued.
//
// Why two in flight: with one, batches were larger and 64 readers over 8
// clients read 1.5x faster than without batching, but 16 readers (two per
// client) read 25% slower, each waiting out the other's round trip. With
// two, 16 readers run as without batching and 64 gain about a fifth.
// Config.DisableGetBatching turns it off.
//
// Every Get keeps its own semantics: a linearizable batch takes its read
// index after every Get in it was called, and if a batch fails, each of
// its Gets is retried alone, so a key that is invalid for the table fails
// only its own call.
const (
	getsInFlight = 2
	maxGetBatch  = 64
)

type getGroupKey struct {
	table                       string
	consistency                 pb.Consistency
	maxStalenessMs, minRevision uint64
}

type getCall struct {
	ctx  context.Context
	key  Value
	done chan struct{}
	row  Row
	err  error
}

type getGroup struct {
	inflight int
	queue    []*getCall
}

type getCoalescer struct {
	c      *Client
	mu     sync.Mutex
	groups map[getGroupKey]*getGroup
}

func newGetCoalescer(c *Client) *getCoalescer {
	return &getCoalescer{c: c, groups: map[getGroupKey]*getGroup{}}
}

func (g *getCoalescer) get(ctx context.Context, table string, key Value, ro *pb.ReadOptions) (Row, error) {
	k := getGroupKey{table: table, consistency: ro.Consistency, maxStalenessMs: ro.MaxStalenessMs, minRevision: ro.MinRevision}
	g.mu.Lock()
	grp := g.groups[k]
	if grp == nil {
		grp = &getGroup{}
		g.groups[k] = grp
	}
	if grp.inflight < getsInFlight {
		grp.inflight++
		g.mu.Unlock()
		row, err := g.c.getOne(ctx, table, key, ro)
		g.next(k, grp, ro)
		return row, err
	}
	call := &getCall{ctx: ctx, key: key, done: make(chan struct{})}
	grp.queue = append(grp.queue, call)
	if len(grp.queue) >= maxGetBatch {
		// A full batch goes at once, on an RPC of its own: the wait is
		// bounded by one RPC, and throughput grows with the callers.
		batch := grp.queue
		grp.queue = nil
		grp.inflight++
		g.mu.Unlock()
		go g.run(k, grp, ro, batch)
	} else {
		g.mu.Unlock()
	}
	select {
	case <-call.done:
		return call.row, call.err
	case <-ctx.Done():
		// The batch skips or discards this call.
		return Row{}, &Error{Message: ctx.Err().Error(), sentinel: ErrUnavailable}
	}
}

// next gives the finished RPC's slot to the queued calls, or frees it.
func (g *getCoalescer) next(k getGroupKey, grp *getGroup, ro *pb.ReadOptions) {
	g.mu.Lock()
	if len(grp.queue) == 0 {
		grp.inflight--
		if grp.inflight == 0 {
			delete(g.groups, k)
		}
		g.mu.Unlock()
		return
	}
	n := min(len(grp.queue), maxGetBatch)
	batch := grp.queue[:n:n]
	grp.queue = grp.queue[n:]
	if len(grp.queue) == 0 {
		grp.queue = nil
	}
	g.mu.Unlock()
	go g.run(k, grp, ro, batch)
}

// run sends a batch on a slot already counted in grp.inflight.
func (g *getCoalescer) run(k getGroupKey, grp *getGroup, ro *pb.ReadOptions, batch []*getCall) {
	g.send(k.table, ro, batch)
	g.next(k, grp, ro)
}

// send runs one batch and answers its calls.
func (g *getCoalescer) send(table string, ro *pb.ReadOptions, batch []*getCall) {
	live := make([]*getCall, 0, len(batch))
	var latest time.Time
	for _, call := range batch {
		if err := call.ctx.Err(); err != nil {
			call.err = &Error{Message: err.Error(), sentinel: ErrUnavailable}
			close(call.done)
			continue
		}
		dl, ok := call.ctx.Deadline()
		if !ok {
			dl = time.Now().Add(g.c.cfg.RequestTimeout)
		}
		if dl.After(latest) {
			latest = dl
		}
		live = append(live, call)
	}
	switch len(live) {
	case 0:
		return
	case 1:
		live[0].row, live[0].err = g.c.getOne(live[0].ctx, table, live[0].key, ro)
		close(live[0].done)
		return
	}
	// The batch outlives any one caller's context: it runs until the
	// latest of their deadlines, and a caller that gives up earlier has
	// already returned.
	ctx, cancel := context.WithDeadline(context.Background(), latest)
	defer cancel()
	keys := make([]*pb.Value, len(live))
	for i, call := range live {
		keys[i] = convert.ValueToPB(call.key)
	}
	rows, err := g.c.batchGet(ctx, table, keys, ro)
	if err == nil && len(rows) == len(live) {
		for i, call := range live {
			if rows[i] == nil {
				call.err = notFound(table, call.key)
			} else {
				call.row = *rows[i]
			}
			close(call.done)
		}
		return
	}
	// Retry each alone, so that every caller gets the answer its own Get
	// would have had.
	var wg sync.WaitGroup
	for _, call := range live {
		wg.Go(func() {
			call.row, call.err = g.c.getOne(call.ctx, table, call.key, ro)
			close(call.done)
		})
	}
	wg.Wait()
}
