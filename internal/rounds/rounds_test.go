package rounds

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Callers that arrive during a round share the next one; a caller never
// gets the result of a round that started before it arrived.
func TestRoundsAreShared(t *testing.T) {
	var started atomic.Int64
	release := make(chan struct{})
	g := &Group[int64]{Do: func() (int64, error) {
		n := started.Add(1)
		<-release
		return n, nil
	}}
	first := make(chan int64, 1)
	go func() { v, _ := g.Get(context.Background()); first <- v }()
	for started.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	// Round 1 is in flight: these 10 callers must wait for round 2.
	var wg sync.WaitGroup
	results := make(chan int64, 10)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); v, _ := g.Get(context.Background()); results <- v }()
	}
	time.Sleep(20 * time.Millisecond)
	release <- struct{}{} // round 1 ends
	if v := <-first; v != 1 {
		t.Fatalf("first caller got round %d", v)
	}
	release <- struct{}{} // round 2 ends
	wg.Wait()
	close(results)
	for v := range results {
		if v != 2 {
			t.Fatalf("a late caller got round %d, want 2", v)
		}
	}
	if n := started.Load(); n != 2 {
		t.Fatalf("%d rounds for 11 callers, want 2", n)
	}
}

func TestGetHonoursContext(t *testing.T) {
	g := &Group[int]{Do: func() (int, error) { time.Sleep(200 * time.Millisecond); return 1, nil }}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := g.Get(ctx); err == nil {
		t.Fatal("Get outlived its context")
	}
}
