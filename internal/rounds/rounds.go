// Package rounds shares one call among the callers that arrive while no
// call is in flight: the shape of a leadership check or a read-index
// request, which must start after a caller arrives to answer for it, and
// which many concurrent callers can share.
package rounds

import (
	"context"
	"sync"
)

// Group runs rounds of Do. A caller joins the next round to start, never
// one already in flight: a round that began before the caller arrived
// proves nothing about the time of its arrival.
type Group[T any] struct {
	// Do performs one round; it must return in bounded time.
	Do func() (T, error)
	// WG, when set, tracks the goroutine that runs rounds.
	WG *sync.WaitGroup

	mu       sync.Mutex
	waiting  []chan result[T]
	inflight bool
}

type result[T any] struct {
	v   T
	err error
}

// Get waits for the next round's result, or for ctx.
func (g *Group[T]) Get(ctx context.Context) (T, error) {
	ch := make(chan result[T], 1)
	g.mu.Lock()
	g.waiting = append(g.waiting, ch)
	if !g.inflight {
		g.inflight = true
		if g.WG != nil {
			g.WG.Add(1)
		}
		go g.run()
	}
	g.mu.Unlock()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// run serves rounds until no caller waits.
func (g *Group[T]) run() {
	if g.WG != nil {
		defer g.WG.Done()
	}
	for {
		g.mu.Lock()
		batch := g.waiting
		g.waiting = nil
		if len(batch) == 0 {
			g.inflight = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		v, err := g.Do()
		for _, ch := range batch {
			ch <- result[T]{v, err}
		}
	}
}
