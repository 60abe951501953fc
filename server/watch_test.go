package server_test

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/internal/testcluster"
	"github.com/memdbd/memdbd/node"
	"github.com/memdbd/memdbd/server"
)

func errMeta(err error, key string) string {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.Metadata[key]
		}
	}
	return ""
}

// The watch errors a client acts on carry their code, reason and the
// revision to go on from; progress comes on request and on a timer.
func TestWatchStatusesAndProgress(t *testing.T) {
	cl := testcluster.Start(t, 1, testcluster.Options{
		Tune:       func(c *node.Config) { c.Watch.HistoryEvents, c.Watch.QueueEvents = 50, 5 },
		TuneServer: func(c *server.Config) { c.WatchProgressInterval = time.Hour },
	})
	cc := dial(t, cl.Endpoints()[0])
	createKV(t, cc, "kv")
	data := pb.NewDataServiceClient(cc)
	ctx := ctxT(t, 30*time.Second)
	big := str(string(make([]byte, 8<<10)))
	put := func(k string) uint64 {
		r, err := data.Upsert(ctx, &pb.UpsertRequest{Table: "kv", Fields: map[string]*pb.Value{"k": str(k), "v": big}})
		if err != nil {
			t.Fatal(err)
		}
		return r.Header.Revision
	}
	first := put("a")

	// Progress on request: WatchProgress makes an idle stream report.
	st, err := data.Watch(ctx, &pb.WatchRequest{Table: "kv", Range: &pb.KeyRange{Prefix: []*pb.Value{str("zzz")}}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.Recv()
	if err != nil || m.WatchId == "" {
		t.Fatalf("first message %+v, %v", m, err)
	}
	last := put("b")
	// Each request makes the stream report at once; the revision it reports
	// is the one the dispatcher has reached, which catches up with the
	// write within moments.
	for {
		p, err := data.WatchProgress(ctx, &pb.WatchProgressRequest{WatchId: m.WatchId})
		if err != nil {
			t.Fatal(err)
		}
		m, err = st.Recv()
		if err != nil || !m.Progress || len(m.Events) != 0 {
			t.Fatalf("progress %+v, %v", m, err)
		}
		if p.Revision > m.Revision {
			t.Fatalf("WatchProgress said %d, stream %d", p.Revision, m.Revision)
		}
		if m.Revision >= last {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := data.WatchProgress(ctx, &pb.WatchProgressRequest{WatchId: "n9-1"}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("unknown watch id: %v", err)
	}

	// A watcher that does not read fills the transport's flow-control
	// window, then its queue, and is told where to resume.
	slow, err := data.Watch(ctx, &pb.WatchRequest{Table: "kv"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := slow.Recv(); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		put(fmt.Sprint("k", i))
	}
	var werr error
	for werr == nil {
		_, werr = slow.Recv()
	}
	if status.Code(werr) != codes.ResourceExhausted || reason(werr) != pb.ReasonWatchTooSlow || errMeta(werr, pb.MetaRevision) == "" {
		t.Fatalf("slow watcher ended with %v", werr)
	}

	// A start below the history: OutOfRange with the oldest revision.
	c, err := data.Watch(ctx, &pb.WatchRequest{Table: "kv", StartRevision: first})
	if err == nil {
		_, err = c.Recv()
	}
	if status.Code(err) != codes.OutOfRange || reason(err) != pb.ReasonWatchCompacted || errMeta(err, pb.MetaOldestRevision) == "" {
		t.Fatalf("compacted start: %v", err)
	}

	// Bad requests.
	for _, req := range []*pb.WatchRequest{
		{},
		{Table: "kv", NoPut: true, NoDelete: true},
		{Table: "kv", Index: "none"},
		{Table: "kv", Range: &pb.KeyRange{Start: []*pb.Value{{Kind: &pb.Value_IntValue{IntValue: 1}}}}},
		{Table: "kv", StartRevision: 5, Read: &pb.ReadOptions{Consistency: pb.Consistency_CONSISTENCY_STALE}},
	} {
		s, err := data.Watch(ctx, req)
		if err == nil {
			_, err = s.Recv()
		}
		if c := status.Code(err); c != codes.InvalidArgument && c != codes.NotFound {
			t.Errorf("watch %+v: %v, want InvalidArgument or NotFound", req, err)
		}
	}
}

// Stopping a member ends its watch streams at once (Unavailable, so the
// client resumes elsewhere) instead of waiting out the drain deadline.
func TestStopEndsWatchStreams(t *testing.T) {
	cl := testcluster.Start(t, 1, testcluster.Options{})
	cc := dial(t, cl.Endpoints()[0])
	createKV(t, cc, "kv")
	ctx := ctxT(t, 30*time.Second)
	st, err := pb.NewDataServiceClient(cc).Watch(ctx, &pb.WatchRequest{Table: "kv"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cl.StopMember(0)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("stopping took %v with a watch open", d)
	}
	if _, err := st.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("the watch ended with %v, want Unavailable", err)
	}
}

// Watch streams beyond --max-watchers are refused at once.
func TestMaxWatchers(t *testing.T) {
	cl := testcluster.Start(t, 1, testcluster.Options{TuneServer: func(c *server.Config) { c.MaxWatchers = 2 }})
	cc := dial(t, cl.Endpoints()[0])
	createKV(t, cc, "kv")
	ctx := ctxT(t, 20*time.Second)
	data := pb.NewDataServiceClient(cc)
	for i := range 3 {
		st, err := data.Watch(ctx, &pb.WatchRequest{Table: "kv"})
		if err == nil {
			_, err = st.Recv()
		}
		if i < 2 && err != nil {
			t.Fatalf("watch %d: %v", i, err)
		}
		if i == 2 && (status.Code(err) != codes.ResourceExhausted || reason(err) != pb.ReasonOverloaded) {
			t.Fatalf("watch beyond the limit: %v", err)
		}
	}
}

// A watch from a revision this member has not reached yet, on a table
// created at that revision, waits for the member to catch up instead of
// failing with NotFound (the case of a table created through the leader
// and watched at once on a follower, or a resume on a lagging member).
func TestWatchFromARevisionAheadWaitsForIt(t *testing.T) {
	cl := testcluster.Start(t, 1, testcluster.Options{})
	cc := dial(t, cl.Endpoints()[0])
	createKV(t, cc, "kv")
	ctx := ctxT(t, 20*time.Second)
	data := pb.NewDataServiceClient(cc)
	r, err := data.Upsert(ctx, &pb.UpsertRequest{Table: "kv", Fields: map[string]*pb.Value{"k": str("a")}})
	if err != nil {
		t.Fatal(err)
	}
	now := r.Header.Revision
	st, err := data.Watch(ctx, &pb.WatchRequest{Table: "later", StartRevision: now + 1})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				got <- err
				return
			}
			for _, e := range m.Events {
				if e.Row.GetFields()["k"].GetStringValue() == "x" {
					got <- nil
					return
				}
			}
		}
	}()
	// Let the watch reach the server before the table exists.
	time.Sleep(100 * time.Millisecond)
	createKV(t, cc, "later")
	if _, err := data.Upsert(ctx, &pb.UpsertRequest{Table: "later", Fields: map[string]*pb.Value{"k": str("x")}}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("watch from revision %d on a table created there: %v", now+1, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the insert into the new table was not delivered")
	}
}
