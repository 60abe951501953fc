package loadtest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeTarget is a system under load whose behaviour each test scripts:
// do decides how long an operation takes and whether it fails. The runner
// is the layer under test here; the real cluster is driven by the
// memdb-loadtest command's own test.
type fakeTarget struct {
	do    func(ctx context.Context, op Op) error
	calls atomic.Int64
}

func (f *fakeTarget) Name() string                             { return "fake" }
func (f *fakeTarget) Setup(context.Context, int, []byte) error { return nil }
func (f *fakeTarget) Conns() int                               { return 2 }
func (f *fakeTarget) Close() error                             { return nil }
func (f *fakeTarget) Do(ctx context.Context, _ int, op Op, _ []byte) error {
	f.calls.Add(1)
	return f.do(ctx, op)
}

func mustWorkload(t *testing.T, name string) Workload {
	t.Helper()
	w, err := NewWorkload(name, 1000, false, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestRunStopsAfterTheRequestCountAndCountsEveryOutcome(t *testing.T) {
	var n atomic.Int64
	target := &fakeTarget{do: func(context.Context, Op) error {
		if n.Add(1)%5 == 0 {
			return status.Error(codes.Unavailable, "no leader")
		}
		return nil
	}}
	res, err := Run(context.Background(), Config{Clients: 8, Requests: 1000, Duration: time.Minute}, target, mustWorkload(t, "write"))
	if err != nil {
		t.Fatal(err)
	}
	if got := res.OK + res.Errors; got != 1000 {
		t.Fatalf("ok %d + errors %d = %d, want the 1000 requested", res.OK, res.Errors, got)
	}
	if res.ErrorCodes["Unavailable"] != res.Errors || res.Errors != 200 {
		t.Fatalf("errors %d by code %v, want 200 Unavailable", res.Errors, res.ErrorCodes)
	}
	if res.Elapsed > 30*time.Second || res.Throughput <= 0 {
		t.Fatalf("elapsed %v, throughput %v", res.Elapsed, res.Throughput)
	}
	var ok, errs int64
	for _, b := range res.Timeline {
		ok += b.OK
		errs += b.Errors
	}
	if ok != res.OK || errs != res.Errors {
		t.Fatalf("timeline holds %d ok / %d errors, summary %d / %d", ok, errs, res.OK, res.Errors)
	}
}

func TestRunWarmUpIsNotMeasured(t *testing.T) {
	target := &fakeTarget{do: func(context.Context, Op) error { time.Sleep(time.Millisecond); return nil }}
	res, err := Run(context.Background(), Config{Clients: 2, Warmup: 200 * time.Millisecond, Requests: 50}, target, mustWorkload(t, "read"))
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 50 {
		t.Fatalf("measured %d operations, want 50", res.OK)
	}
	if calls := target.calls.Load(); calls <= 60 {
		t.Fatalf("%d calls in all: the warm-up did not run (or was measured)", calls)
	}
}

// An open-loop run measures from when an operation should have started.
// A target that can serve 50 operations a second, offered 200 a second,
// falls further behind with every operation; a closed loop (or an open
// loop that timed from the actual send) would report its 20 ms service
// time and hide the queue.
func TestOpenLoopLatencyIncludesTheTimeSpentWaitingToBeSent(t *testing.T) {
	target := &fakeTarget{do: func(context.Context, Op) error { time.Sleep(20 * time.Millisecond); return nil }}
	res, err := Run(context.Background(), Config{Clients: 1, Rate: 200, Duration: time.Second}, target, mustWorkload(t, "write"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Latency.P50 < 10*20*time.Millisecond || res.Latency.Max < 500*time.Millisecond {
		t.Fatalf("p50 %v, max %v: the backlog behind a 20 ms service time is not in the latency", res.Latency.P50, res.Latency.Max)
	}
	// About 200 were due within the second and about 50 could be served.
	if res.Unsent < 100 || res.Unsent+res.OK > 210 {
		t.Fatalf("%d sent, %d reported unsent, of about 200 scheduled", res.OK, res.Unsent)
	}
	closed, err := Run(context.Background(), Config{Clients: 1, Duration: 300 * time.Millisecond}, target, mustWorkload(t, "write"))
	if err != nil {
		t.Fatal(err)
	}
	if closed.Latency.P50 > 100*time.Millisecond {
		t.Fatalf("closed loop p50 %v, want about the 20 ms service time", closed.Latency.P50)
	}
}

func TestRunGivesEveryOperationItsDeadline(t *testing.T) {
	target := &fakeTarget{do: func(ctx context.Context, _ Op) error {
		<-ctx.Done() // a system that never answers
		return ctx.Err()
	}}
	start := time.Now()
	res, err := Run(context.Background(), Config{Clients: 4, Requests: 8, Timeout: 50 * time.Millisecond}, target, mustWorkload(t, "write"))
	if err != nil {
		t.Fatal(err)
	}
	if res.ErrorCodes["DeadlineExceeded"] != 8 || res.OK != 0 {
		t.Fatalf("errors %v, ok %d: want 8 DeadlineExceeded", res.ErrorCodes, res.OK)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v for 8 operations with a 50 ms deadline", d)
	}
}

// A target that refuses everything for a while: the timeline and
// Unavailability must show that window.
func TestAnOutageShowsOnTheTimeline(t *testing.T) {
	const outageFrom, outageFor = 300 * time.Millisecond, 400 * time.Millisecond
	var mu sync.Mutex
	var first time.Time
	target := &fakeTarget{do: func(context.Context, Op) error {
		mu.Lock()
		if first.IsZero() {
			first = time.Now()
		}
		since := time.Since(first)
		mu.Unlock()
		time.Sleep(time.Millisecond)
		if since >= outageFrom && since < outageFrom+outageFor {
			return status.Error(codes.Unavailable, "leader lost")
		}
		return nil
	}}
	res, err := Run(context.Background(), Config{Clients: 4, Duration: 1500 * time.Millisecond, Bucket: 10 * time.Millisecond},
		target, mustWorkload(t, "write"))
	if err != nil {
		t.Fatal(err)
	}
	if res.ErrorCodes["Unavailable"] == 0 {
		t.Fatalf("no Unavailable errors recorded: %v", res.ErrorCodes)
	}
	gap, recovery := res.Unavailability(outageFrom)
	// The bounds are loose for a shared machine; a timeline that lost the
	// gap, or that timed it by whole buckets from the wrong end, fails.
	if gap < outageFor-50*time.Millisecond || gap > outageFor+250*time.Millisecond {
		t.Fatalf("gap %v, want about %v", gap, outageFor)
	}
	// Recovery is timed in whole buckets (10 ms) from the event's bucket.
	if recovery < gap-10*time.Millisecond || recovery > 5*time.Second {
		t.Fatalf("recovery %v, gap %v", recovery, gap)
	}
}

func TestRunRejectsAnUnboundedOrEmptyConfig(t *testing.T) {
	target := &fakeTarget{do: func(context.Context, Op) error { return nil }}
	for _, cfg := range []Config{{Clients: 0, Requests: 1}, {Clients: 1}, {Clients: 1, Requests: 1, ValueSize: -1}} {
		if _, err := Run(context.Background(), cfg, target, mustWorkload(t, "write")); err == nil {
			t.Errorf("config %+v accepted", cfg)
		}
	}
	if target.calls.Load() != 0 {
		t.Fatalf("a rejected config still ran %d operations", target.calls.Load())
	}
}

func TestErrCodeNamesWrappedAndPlainErrors(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{status.Error(codes.ResourceExhausted, "busy"), "ResourceExhausted"},
		{fmt.Errorf("upsert: %w", status.Error(codes.Unavailable, "x")), "Unavailable"},
		{context.DeadlineExceeded, "DeadlineExceeded"},
		{fmt.Errorf("get: %w", context.DeadlineExceeded), "DeadlineExceeded"},
		{errors.New("boom"), "other"},
	} {
		if got := errCode(c.err); got != c.want {
			t.Errorf("errCode(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}
