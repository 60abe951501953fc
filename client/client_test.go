package client_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/memdbd/memdbd/client"
	"github.com/memdbd/memdbd/internal/testcluster"
)

func newClient(t *testing.T, eps []string, opts ...grpc.DialOption) *client.Client {
	t.Helper()
	cfg := client.Config{Endpoints: eps}
	if len(opts) > 0 {
		cfg.DialOptions = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// ctxT bounds a test's calls. It is generous: the tests run beside the
// fault suite and the end-to-end tests on two cores.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustCreate(t *testing.T, c *client.Client, s client.TableSchema) {
	t.Helper()
	if _, err := c.CreateTable(ctxT(t), s); err != nil {
		t.Fatal(err)
	}
}

func kvSchema(name string) client.TableSchema {
	return client.TableSchema{Name: name, PrimaryKey: "k",
		Fields:  []client.FieldSchema{{Name: "k", Type: client.TypeString}, {Name: "n", Type: client.TypeInt}, {Name: "tag", Type: client.TypeString}},
		Indexes: []client.IndexSchema{{Name: "by_tag", Fields: []string{"tag"}, Unique: true}}}
}

func TestErrorsAreSentinels(t *testing.T) {
	c := newClient(t, endpoints)
	ctx := ctxT(t)
	mustCreate(t, c, kvSchema("errs"))
	if _, err := c.Insert(ctx, "errs", client.Fields{"k": client.String("a"), "n": client.Int(1), "tag": client.String("x")}); err != nil {
		t.Fatal(err)
	}
	var ops []client.Op
	for i := 0; i < 200; i++ {
		ops = append(ops, client.GetOp("errs", client.String("a")))
	}
	cases := []struct {
		name string
		err  func() error
		want error
		code codes.Code
	}{
		{"row exists", func() error {
			_, err := c.Insert(ctx, "errs", client.Fields{"k": client.String("a")})
			return err
		}, client.ErrRowExists, codes.AlreadyExists},
		{"unique", func() error {
			_, err := c.Insert(ctx, "errs", client.Fields{"k": client.String("b"), "tag": client.String("x")})
			return err
		}, client.ErrUniqueViolation, codes.AlreadyExists},
		{"table", func() error { _, err := c.Get(ctx, "nope", client.String("a")); return err }, client.ErrTableNotFound, codes.NotFound},
		{"type", func() error {
			_, err := c.Upsert(ctx, "errs", client.Fields{"k": client.String("a"), "n": client.String("one")})
			return err
		}, client.ErrTypeMismatch, codes.InvalidArgument},
		{"key type", func() error { _, err := c.Get(ctx, "errs", client.Int(1)); return err }, client.ErrTypeMismatch, codes.InvalidArgument},
		{"version", func() error {
			_, err := c.Update(ctx, "errs", client.String("a"), client.Fields{"n": client.Int(2)}, nil, client.IfVersion(7))
			return err
		}, client.ErrVersionMismatch, codes.FailedPrecondition},
		{"update absent", func() error {
			_, err := c.Update(ctx, "errs", client.String("zz"), client.Fields{"n": client.Int(2)}, nil)
			return err
		}, client.ErrNotFound, codes.NotFound},
		{"bad name", func() error {
			_, err := c.CreateTable(ctx, client.TableSchema{Name: "bad name", PrimaryKey: "k", Fields: []client.FieldSchema{{Name: "k", Type: client.TypeString}}})
			return err
		}, client.ErrInvalidArgument, codes.InvalidArgument},
		{"too many ops", func() error { _, err := c.Txn().Then(ops...).Commit(ctx); return err }, client.ErrTooManyOps, codes.InvalidArgument},
		{"too large", func() error {
			_, err := c.Upsert(ctx, "errs", client.Fields{"k": client.String("big"), "v": client.String(strings.Repeat("x", 5<<20))})
			return err
		}, client.ErrTooLarge, codes.InvalidArgument},
		{"bad utf8", func() error {
			_, err := c.Upsert(ctx, "errs", client.Fields{"k": client.String("\xff")})
			return err
		}, client.ErrInvalidArgument, codes.InvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := c.Get(ctx, "errs", client.String("a"))
			err := tc.err()
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			var e *client.Error
			if !errors.As(err, &e) || e.Code != tc.code || e.Message == "" {
				t.Fatalf("error %#v: code %v, want %v", e, e.Code, tc.code)
			}
			after, _ := c.Get(ctx, "errs", client.String("a"))
			if after.ModRevision != before.ModRevision {
				t.Fatal("a refused write changed a row")
			}
		})
	}
}

// Every page of a scan reflects the revision of the first page, whatever
// is written between pages.
func TestScanPagesAreConsistent(t *testing.T) {
	c := newClient(t, endpoints)
	ctx := ctxT(t)
	mustCreate(t, c, kvSchema("pages"))
	for i := 0; i < 250; i += 50 {
		tx := c.Txn()
		for j := i; j < i+50; j++ {
			tx.Then(client.UpsertOp("pages", client.Fields{"k": client.String(fmt.Sprintf("k%03d", j)), "n": client.Int(int64(j))}))
		}
		if _, err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	page, err := c.Scan(ctx, "pages", client.ScanOptions{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	rev := page.Header.Revision
	seen := len(page.Rows)
	for page.Next != nil {
		// Writes between pages: a new row, a deleted row, a changed row.
		if _, err := c.Upsert(ctx, "pages", client.Fields{"k": client.String(fmt.Sprintf("k%03d", 900+seen)), "n": client.Int(-1)}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Delete(ctx, "pages", client.String(fmt.Sprintf("k%03d", 249-seen/100))); err != nil {
			t.Fatal(err)
		}
		page, err = c.ScanPage(ctx, page.Next)
		if err != nil {
			t.Fatal(err)
		}
		if page.Header.Revision != rev {
			t.Fatalf("page at revision %d, first page at %d", page.Header.Revision, rev)
		}
		for _, r := range page.Rows {
			if r.Fields["n"].AsInt() < 0 {
				t.Fatal("a row written after the first page appeared")
			}
		}
		seen += len(page.Rows)
	}
	if seen != 250 {
		t.Fatalf("scan returned %d rows, want 250", seen)
	}
}

// A stale read with MinRevision on any member sees the client's own write.
func TestReadYourWritesOnEveryMember(t *testing.T) {
	w := newClient(t, endpoints)
	ctx := ctxT(t)
	mustCreate(t, w, kvSchema("ryw"))
	for _, ep := range endpoints {
		meta, err := w.Upsert(ctx, "ryw", client.Fields{"k": client.String(ep), "n": client.Int(1)})
		if err != nil {
			t.Fatal(err)
		}
		r := newClient(t, []string{ep})
		row, err := r.Get(ctx, "ryw", client.String(ep), client.MinRevision(meta.ModRevision))
		if err != nil || row.ModRevision != meta.ModRevision {
			t.Fatalf("read on %s: %v %+v", ep, err, row.Meta)
		}
		// Linearizable by default, on every member too.
		if _, err := r.Get(ctx, "ryw", client.String(ep)); err != nil {
			t.Fatal(err)
		}
	}
}

// dropFirstReply loses the reply of the first call of a method after the
// server has handled it, as a broken connection would.
func dropFirstReply(method string, dropped *atomic.Int32) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, m string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, m, req, reply, cc, opts...)
		if err == nil && strings.HasSuffix(m, method) && dropped.Add(1) == 1 {
			return status.Error(codes.Unavailable, "reply lost")
		}
		return err
	}
}

// A write whose reply is lost is retried with the same session sequence,
// and the cluster answers with the first result instead of applying it
// again: the insert succeeds (no AlreadyExists) and the increment-like
// update is applied once.
func TestRetryAfterLostReplyAppliesOnce(t *testing.T) {
	var dropped atomic.Int32
	c := newClient(t, endpoints, grpc.WithUnaryInterceptor(dropFirstReply("/Insert", &dropped)))
	ctx := ctxT(t)
	mustCreate(t, c, kvSchema("once"))
	meta, err := c.Insert(ctx, "once", client.Fields{"k": client.String("a"), "n": client.Int(1)})
	if err != nil {
		t.Fatalf("insert retried after a lost reply failed: %v", err)
	}
	if dropped.Load() < 2 || meta.Version != 1 {
		t.Fatalf("dropped %d replies, version %d", dropped.Load(), meta.Version)
	}
	var dropped2 atomic.Int32
	c2 := newClient(t, endpoints, grpc.WithUnaryInterceptor(dropFirstReply("/Txn", &dropped2)))
	res, err := c2.Txn().If(client.FieldIs("once", client.String("a"), "n", client.Equal, client.Int(1))).
		Then(client.UpdateOp("once", client.String("a"), client.Fields{"n": client.Int(2)}, nil)).Commit(ctx)
	if err != nil || !res.Succeeded {
		t.Fatalf("txn: %v %v", err, res.Succeeded)
	}
	row, err := c.Get(ctx, "once", client.String("a"))
	if err != nil || row.Version != 2 || row.Fields["n"].AsInt() != 2 {
		t.Fatalf("row after retried txn: %+v %v", row, err)
	}
}

// Writes keep succeeding through a leader change, each applied once.
func TestWritesSurviveLeaderChange(t *testing.T) {
	cl := testcluster.Start(t, 3, testcluster.Options{})
	c := newClient(t, cl.Endpoints())
	ctx := ctxT(t)
	mustCreate(t, c, kvSchema("fail"))
	var acked sync.Map
	var wg sync.WaitGroup
	var failed atomic.Int32
	stop := make(chan struct{})
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := fmt.Sprintf("w%d-%d", w, i)
				if _, err := c.Insert(ctx, "fail", client.Fields{"k": client.String(k)}); err != nil {
					failed.Add(1)
					t.Errorf("insert %s: %v", k, err)
					return
				}
				acked.Store(k, true)
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	cl.StopMember(cl.Leader())
	time.Sleep(700 * time.Millisecond)
	close(stop)
	wg.Wait()
	n := 0
	acked.Range(func(k, _ any) bool {
		n++
		row, err := c.Get(ctx, "fail", client.String(k.(string)))
		if err != nil || row.Version != 1 {
			t.Errorf("acknowledged %s: %v version %d", k, err, row.Version)
		}
		return true
	})
	if n == 0 || failed.Load() > 0 {
		t.Fatalf("%d acknowledged, %d failed", n, failed.Load())
	}
}

// The client's reason table mirrors the server's: every reason maps to a
// sentinel.
func TestEveryReasonHasASentinel(t *testing.T) {
	for _, r := range client.PBReasons() {
		if _, ok := client.ReasonErrors()[r]; !ok {
			t.Errorf("reason %s has no client sentinel", r)
		}
	}
}

func TestConfigTLSAndDialOptionsAreExclusive(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := client.New(ctx, client.Config{Endpoints: []string{"127.0.0.1:1"}, TLS: &tls.Config{}, DialOptions: client.DefaultDialOptions()})
	if err == nil || !strings.Contains(err.Error(), "exclusive") {
		t.Fatalf("New with TLS and DialOptions: %v, want an error saying they are exclusive", err)
	}
}
