package server

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
)

// The state hash of a revision is computed once; a new revision waits for
// the pass budget (1/hashDutyCycle of the time), refused meanwhile with
// OVERLOADED and the time to wait.
func TestStateHashBudget(t *testing.T) {
	vs := views(t, 3)
	now := time.Unix(1000, 0)
	// Every reading of the clock moves it 10 ms on: a pass "takes" 10 ms.
	h := &stateHashes{clock: func() time.Time { now = now.Add(10 * time.Millisecond); return now }}
	ctx := context.Background()
	want := vs[0].Hash()
	for i := 0; i < 5; i++ {
		got, err := h.get(ctx, vs[0])
		if err != nil || got != want {
			t.Fatalf("call %d: %016x %v, want %016x", i, got, err, want)
		}
	}
	if h.passes != 1 {
		t.Fatalf("%d passes for one revision", h.passes)
	}
	_, err := h.get(ctx, vs[1])
	if status.Code(err) != codes.ResourceExhausted || reasonOf(err) != pb.ReasonOverloaded {
		t.Fatalf("a second pass right after the first: %v", err)
	}
	var retry time.Duration
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			retry = ri.RetryDelay.AsDuration()
		}
	}
	// The pass ended 10 ms after it started; 190 ms after its end, less
	// the 10 ms the refusal read the clock at.
	if retry != 180*time.Millisecond {
		t.Fatalf("retry after %v, want 180ms", retry)
	}
	if h.passes != 1 {
		t.Fatalf("%d passes after a refusal", h.passes)
	}
	// 19 times the pass's 10 ms later, the next may run.
	now = now.Add(190 * time.Millisecond)
	if got, err := h.get(ctx, vs[1]); err != nil || got != vs[1].Hash() {
		t.Fatalf("after the pause: %016x %v", got, err)
	}
	if h.passes != 2 {
		t.Fatalf("%d passes", h.passes)
	}
}

// A pass that panicked (a bug) leaves no pass running and hands its
// waiters an error, not a hash of zero.
func TestStateHashFailedPass(t *testing.T) {
	vs := views(t, 1)
	h := &stateHashes{}
	p := &hashPass{rev: vs[0].Revision(), done: make(chan struct{})}
	h.running = p
	close(p.done)
	if _, err := h.get(context.Background(), vs[0]); err == nil || errors.Is(err, context.Canceled) {
		t.Fatalf("waiting on a failed pass: %v", err)
	}
}
