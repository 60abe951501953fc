package node

import (
	"context"
	"sync"

	"github.com/hashicorp/raft"
)

// verifier confirms leadership for linearizable reads, sharing one round
// of heartbeats among every read that arrives while no round is pending.
// A read joins the next round to start, never one already in flight: a
// round that began before the read arrived proves nothing about
// leadership at the time of the read.
type verifier struct {
	r  *raft.Raft
	wg *sync.WaitGroup

	mu       sync.Mutex
	waiting  []chan error
	inflight bool
}

func (v *verifier) verify(ctx context.Context) error {
	ch := make(chan error, 1)
	v.mu.Lock()
	v.waiting = append(v.waiting, ch)
	if !v.inflight {
		v.inflight = true
		v.wg.Add(1)
		go v.run()
	}
	v.mu.Unlock()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run verifies rounds until no read waits. VerifyLeader returns within
// the leader lease at most (or at shutdown), so the goroutine is bounded.
func (v *verifier) run() {
	defer v.wg.Done()
	for {
		v.mu.Lock()
		batch := v.waiting
		v.waiting = nil
		if len(batch) == 0 {
			v.inflight = false
			v.mu.Unlock()
			return
		}
		v.mu.Unlock()
		err := v.r.VerifyLeader().Error()
		for _, ch := range batch {
			ch <- err
		}
	}
}
