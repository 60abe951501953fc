package e2e

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/client"
)

// A write whose reply is lost on the wire after the cluster committed it
// is retried by the SDK with the same session sequence and applied exactly
// once: the insert succeeds (no ErrRowExists), and an update of a value
// computed from the row raises its version by exactly one.
//
// A TCP proxy sits in front of the leader. The SDK reaches the leader only
// through it (its only endpoint is the proxy, and a dialer sends the
// leader's advertised address to the proxy too). Armed, the proxy still
// forwards the request but drops the reply; once a direct linearizable
// read shows the write committed, the proxy cuts the connection.
func TestLostReplyRetriedOnce(t *testing.T) {
	c := newCluster(t, 3)
	l := c.waitReady(10*time.Second, nil)
	leaderAddr := c.nodes[l].clientAddr
	px := startProxy(t, leaderAddr)
	dialer := func(ctx context.Context, addr string) (net.Conn, error) {
		if addr == leaderAddr {
			addr = px.addr()
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	rl := newRetryLog()
	cl := newSDKClient(t, c.ctx, client.Config{
		Endpoints:   []string{px.addr()},
		DialOptions: dialOptions(grpc.WithContextDialer(dialer)),
		Logger:      slog.New(rl),
	})
	c.createTable(cl, kvSchema("once"))
	ctx, cancel := c.callCtx(30 * time.Second)
	defer cancel()

	// prime makes the client send its next write to the leader, through
	// the proxy, on a connection that is already up: Members tells it the
	// leader (whose address the dialer sends to the proxy), and a warm-up
	// write must pass through the proxy.
	prime := func() {
		t.Helper()
		if _, err := cl.Members(ctx); err != nil {
			t.Fatal(err)
		}
		up := px.upBytes.Load()
		if _, err := cl.Upsert(ctx, "once", client.Fields{"k": client.String("warm"), "n": client.Int(0)}); err != nil {
			t.Fatal(err)
		}
		if px.upBytes.Load() == up {
			t.Fatal("the warm-up write did not go through the proxy")
		}
	}

	// directRow reads a row linearizably from the leader, not through the
	// proxy.
	directRow := func(k string) (*pb.Row, error) {
		gctx, gcancel := c.callCtx(2 * time.Second)
		defer gcancel()
		r, err := c.data(l).Get(gctx, &pb.GetRequest{Table: "once", Key: pbString(k)})
		if err != nil {
			return nil, err
		}
		if !r.Found {
			return nil, errors.New("not found")
		}
		return r.Row, nil
	}

	// loseReply runs write with the reply lost once, after commit shows in
	// committed(); it returns write's error.
	loseReply := func(what string, write func() error, committed func() error) error {
		t.Helper()
		prime()
		mark := rl.len()
		px.arm()
		done := make(chan error, 1)
		go func() { done <- write() }()
		waitFor(t, 10*time.Second, what+" committed and its reply dropped", func() error {
			select {
			case err := <-done:
				done <- err
				return nil // reported below
			default:
			}
			if err := committed(); err != nil {
				return err
			}
			if px.dropped.Load() == 0 {
				return errors.New("no reply bytes dropped yet")
			}
			return nil
		})
		select {
		case err := <-done:
			t.Fatalf("%s returned before the connection was cut (reply not held back?): %v", what, err)
		default:
		}
		px.cut()
		var err error
		select {
		case err = <-done:
		case <-time.After(15 * time.Second):
			t.Fatalf("%s did not return after its connection was cut", what)
		}
		retries := rl.retries(mark)
		if len(retries) == 0 {
			t.Errorf("%s: the client reports no retry", what)
		}
		t.Logf("%s: %d reply bytes dropped, then the connection was cut; client retries: %q", what, px.dropped.Load(), retries)
		return err
	}

	// 1. Insert: the retry returns the first attempt's success.
	var meta client.Meta
	err := loseReply("insert", func() error {
		var err error
		meta, err = cl.Insert(ctx, "once", client.Fields{"k": client.String("a"), "n": client.Int(5)})
		return err
	}, func() error { _, err := directRow("a"); return err })
	if err != nil {
		t.Fatalf("insert retried after a lost reply: %v (ErrRowExists: %v)", err, errors.Is(err, client.ErrRowExists))
	}
	row, err := directRow("a")
	if err != nil {
		t.Fatal(err)
	}
	if meta.Version != 1 || row.Version != 1 || meta.ModRevision != row.ModRevision {
		t.Fatalf("insert answered %+v; row is version %d at %d", meta, row.Version, row.ModRevision)
	}

	// 2. Update with a computed value: applied once, version +1.
	before, err := cl.Get(ctx, "once", client.String("a"))
	if err != nil {
		t.Fatal(err)
	}
	next := before.Fields["n"].AsInt() + 1
	err = loseReply("update", func() error {
		var err error
		meta, err = cl.Update(ctx, "once", client.String("a"), client.Fields{"n": client.Int(next)}, nil)
		return err
	}, func() error {
		r, err := directRow("a")
		if err != nil {
			return err
		}
		if r.Version == before.Version {
			return fmt.Errorf("still version %d", r.Version)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("update retried after a lost reply: %v", err)
	}
	after, err := cl.Get(ctx, "once", client.String("a"))
	if err != nil {
		t.Fatal(err)
	}
	if after.Version != before.Version+1 || meta.Version != after.Version || after.Fields["n"].AsInt() != next {
		t.Fatalf("update applied %d times: version %d -> %d (answer %d), n=%d want %d",
			after.Version-before.Version, before.Version, after.Version, meta.Version, after.Fields["n"].AsInt(), next)
	}
	if px.accepted.Load() < 2 {
		t.Errorf("the proxy accepted %d connections; the cut connections were not replaced", px.accepted.Load())
	}
}
