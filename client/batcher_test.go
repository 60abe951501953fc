package client

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// take honours maxBatch and maxBytes, counting the caller that gathers a
// batch, and always lets a batch's first call go.
func TestBatcherTakeBounds(t *testing.T) {
	b := &batcher[int, int, int]{inFlight: 2, maxBatch: 3, maxBytes: 10}
	call := func(size int) *batchCall[int, int] { return &batchCall[int, int]{req: size, size: size} }
	grp := &batchGroup[int, int]{}
	for _, size := range []int{4, 4, 4, 12, 1} {
		grp.queue = append(grp.queue, call(size))
		grp.bytes += size
	}
	sizes := func(batch []*batchCall[int, int]) (out []int) {
		for _, c := range batch {
			out = append(out, c.size)
		}
		return out
	}
	for _, tc := range []struct {
		first     *batchCall[int, int]
		want      []int
		wantBytes int // left queued
	}{
		{call(3), []int{3, 4}, 4 + 4 + 12 + 1}, // 3+4+4 would pass 10 bytes
		{nil, []int{4, 4}, 12 + 1},             // 4+4+12 would
		{nil, []int{12}, 1},                    // alone, though over maxBytes
		{call(9), []int{9, 1}, 0},
	} {
		got := b.take(grp, tc.first)
		if fmt.Sprint(sizes(got)) != fmt.Sprint(tc.want) || grp.bytes != tc.wantBytes {
			t.Fatalf("take = %v leaving %d bytes, want %v leaving %d", sizes(got), grp.bytes, tc.want, tc.wantBytes)
		}
	}
	if grp.queue != nil {
		t.Fatalf("queue not empty: %d left", len(grp.queue))
	}
	for range 5 {
		grp.queue = append(grp.queue, call(1))
	}
	grp.bytes = 5
	if got := b.take(grp, call(1)); len(got) != 3 || grp.bytes != 3 {
		t.Fatalf("take = %v leaving %d bytes, want 3 calls leaving 3", sizes(got), grp.bytes)
	}
}

// Callers arriving while an RPC is in flight share RPCs: every
// caller gets its own answer, and no more RPCs run at once than inFlight
// plus full batches.
func TestBatcherAnswersEveryCallerInFewerRPCs(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	var rpcs, running, most int
	enter := func() {
		mu.Lock()
		rpcs++
		running++
		most = max(most, running)
		mu.Unlock()
	}
	leave := func() { mu.Lock(); running--; mu.Unlock() }
	b := &batcher[int, int, int]{inFlight: 2, maxBatch: 64, timeout: time.Second,
		one: func(_ context.Context, _ int, req int) (int, error) {
			enter()
			defer leave()
			if req == 0 {
				<-release // the first call holds its RPC open
			}
			return req * 10, nil
		},
		many: func(_ context.Context, _ int, reqs []int) ([]int, []error, error) {
			enter()
			defer leave()
			out := make([]int, len(reqs))
			for i, r := range reqs {
				out[i] = r * 10
			}
			return out, nil, nil
		},
		retryAlone: func(error) bool { return false },
		gaveUp:     func(err error) error { return err },
	}
	ctx := context.Background()
	first := make(chan int)
	go func() { v, _ := b.do(ctx, 0, 0); first <- v }()
	for {
		mu.Lock()
		r := running
		mu.Unlock()
		if r == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	const callers = 200
	var wg sync.WaitGroup
	errs := make(chan string, callers)
	for i := 1; i <= callers; i++ {
		wg.Go(func() {
			v, err := b.do(ctx, 0, i)
			if err != nil || v != i*10 {
				errs <- "wrong answer"
			}
		})
	}
	wg.Wait()
	close(release)
	if v := <-first; v != 0 {
		t.Fatalf("first call got %d", v)
	}
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	if rpcs >= callers {
		t.Fatalf("%d RPCs for %d callers: none were batched", rpcs, callers)
	}
	// One slot held by the first call, one serving the rest, and full
	// batches of 64 on RPCs of their own: never more than 2+callers/64.
	if most > 2+callers/64 {
		t.Fatalf("%d RPCs at once", most)
	}
}
