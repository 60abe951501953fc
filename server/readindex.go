package server

import (
	"context"
	"sync"
)

// readIndexBatcher shares one read-index request to the leader among the
// linearizable reads that arrive on a follower while no request is in
// flight. A read joins the next request to start, never one already in
// flight: the index a request returns is only guaranteed to cover writes
// acknowledged before the request was sent. Without it every follower
// read costs the leader one RPC; with it, one RPC per round.
type readIndexBatcher struct {
	fetch func(ctx context.Context) (uint64, error)

	mu       sync.Mutex
	waiting  []chan readIndexResult
	inflight bool
	wg       *sync.WaitGroup
}

type readIndexResult struct {
	index uint64
	err   error
}

func (b *readIndexBatcher) get(ctx context.Context) (uint64, error) {
	ch := make(chan readIndexResult, 1)
	b.mu.Lock()
	b.waiting = append(b.waiting, ch)
	if !b.inflight {
		b.inflight = true
		b.wg.Add(1)
		go b.run()
	}
	b.mu.Unlock()
	select {
	case r := <-ch:
		return r.index, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// run serves rounds until no read waits. Each round is bounded by the
// request timeout below, so the goroutine ends.
func (b *readIndexBatcher) run() {
	defer b.wg.Done()
	for {
		b.mu.Lock()
		batch := b.waiting
		b.waiting = nil
		if len(batch) == 0 {
			b.inflight = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), readIndexTimeout)
		idx, err := b.fetch(ctx)
		cancel()
		for _, ch := range batch {
			ch <- readIndexResult{idx, err}
		}
	}
}
