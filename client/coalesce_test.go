package client_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/memdbd/memdbd/client"
	"github.com/memdbd/memdbd/internal/testcluster"
	"github.com/memdbd/memdbd/server"
)

// rpcCounter counts the unary calls a client makes, by method.
type rpcCounter struct{ get, batchGet, upsert, txn atomic.Int64 }

func (r *rpcCounter) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	switch method {
	case "/memdb.v1.DataService/Get":
		r.get.Add(1)
	case "/memdb.v1.DataService/BatchGet":
		r.batchGet.Add(1)
	case "/memdb.v1.DataService/Upsert":
		r.upsert.Add(1)
	case "/memdb.v1.DataService/Txn":
		r.txn.Add(1)
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

func countingClient(t *testing.T, eps []string, disable bool) (*client.Client, *rpcCounter) {
	t.Helper()
	rc := &rpcCounter{}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.New(ctx, client.Config{Endpoints: eps, DisableGetBatching: disable, DisableUpsertBatching: disable, DialOptions: []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithUnaryInterceptor(rc.intercept)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, rc
}

// TestConcurrentGetsAreBatched: many concurrent Gets on one client, of
// present and absent keys, each get exactly their own answer, in fewer
// RPCs than Gets; a key of the wrong type fails only its own Get.
func TestConcurrentGetsAreBatched(t *testing.T) {
	cl := testcluster.Start(t, 3, testcluster.Options{})
	c, rc := countingClient(t, cl.Endpoints(), false)
	mustCreate(t, c, kvSchema("kv"))
	const keys = 300
	for from := 0; from < keys; from += 100 {
		tx := c.Txn()
		for i := from; i < from+100; i += 2 { // only the even keys exist
			tx.Then(client.UpsertOp("kv", client.Fields{"k": client.String(fmt.Sprint("k", i)), "n": client.Int(int64(i)), "tag": client.String(fmt.Sprint("t", i))}))
		}
		if _, err := tx.Commit(ctxT(t)); err != nil {
			t.Fatal(err)
		}
	}
	for _, opts := range [][]client.ReadOption{nil, {client.Stale()}} {
		rc.get.Store(0)
		rc.batchGet.Store(0)
		var wg sync.WaitGroup
		var gets atomic.Int64
		errs := make(chan error, 64*20+1)
		for w := range 64 {
			wg.Go(func() {
				for j := range 20 {
					i := (w*37 + j*11) % keys
					gets.Add(1)
					row, err := c.Get(ctxT(t), "kv", client.String(fmt.Sprint("k", i)), opts...)
					switch {
					case i%2 == 1 && !errors.Is(err, client.ErrNotFound):
						errs <- fmt.Errorf("k%d: want not found, got %v", i, err)
					case i%2 == 0 && err != nil:
						errs <- fmt.Errorf("k%d: %v", i, err)
					case i%2 == 0 && row.Fields["n"] != client.Int(int64(i)):
						errs <- fmt.Errorf("k%d: got row %v", i, row.Fields)
					}
				}
			})
		}
		// A key of the wrong type, among the others: only it fails.
		wg.Go(func() {
			if _, err := c.Get(ctxT(t), "kv", client.Int(7), opts...); !errors.Is(err, client.ErrTypeMismatch) {
				errs <- fmt.Errorf("int key: want a type mismatch, got %v", err)
			}
		})
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		rpcs := rc.get.Load() + rc.batchGet.Load()
		t.Logf("stale %v: %d gets in %d Get and %d BatchGet RPCs", len(opts) > 0, gets.Load(), rc.get.Load(), rc.batchGet.Load())
		if rc.batchGet.Load() == 0 || rpcs >= gets.Load() {
			t.Errorf("no batching: %d gets in %d Get and %d BatchGet RPCs", gets.Load(), rc.get.Load(), rc.batchGet.Load())
		}
	}

	// Turned off, every Get is its own RPC.
	c2, rc2 := countingClient(t, cl.Endpoints(), true)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for range 5 {
				if _, err := c2.Get(ctxT(t), "kv", client.String("k0")); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if rc2.batchGet.Load() != 0 || rc2.get.Load() != 160 {
		t.Errorf("batching off: %d Get and %d BatchGet RPCs for 160 gets", rc2.get.Load(), rc2.batchGet.Load())
	}
}

// TestQueuedGetHonorsItsDeadline: a Get queued behind a slow one returns
// when its own context ends.
func TestQueuedGetHonorsItsDeadline(t *testing.T) {
	cl := testcluster.Start(t, 1, testcluster.Options{})
	c := newClient(t, cl.Endpoints())
	mustCreate(t, c, kvSchema("kv"))
	// A stale read waiting for a revision that does not come holds the
	// only slot of its kind until its deadline.
	slowCtx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	slowDone := make(chan error, 1)
	go func() {
		_, err := c.Get(slowCtx, "kv", client.String("a"), client.Stale(), client.MinRevision(1<<40))
		slowDone <- err
	}()
	time.Sleep(200 * time.Millisecond)
	ctx, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	start := time.Now()
	_, err := c.Get(ctx, "kv", client.String("b"), client.Stale(), client.MinRevision(1<<40))
	if err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("queued get: %v after %v", err, time.Since(start))
	}
	if err := <-slowDone; err == nil {
		t.Fatal("the slow get succeeded")
	}
}

// TestConcurrentUpsertsAreBatched: concurrent Upserts on one client go out
// as transactions, each caller gets its own row's metadata, and a row that
// violates a unique index fails only its own Upsert.
func TestConcurrentUpsertsAreBatched(t *testing.T) {
	cl := testcluster.Start(t, 3, testcluster.Options{})
	c, rc := countingClient(t, cl.Endpoints(), false)
	mustCreate(t, c, kvSchema("kv"))
	if _, err := c.Upsert(ctxT(t), "kv", client.Fields{"k": client.String("taken"), "n": client.Int(0), "tag": client.String("dup")}); err != nil {
		t.Fatal(err)
	}
	const writers, each = 64, 10
	metas := make([][]client.Meta, writers)
	errs := make(chan error, writers*each+1)
	var wg sync.WaitGroup
	for w := range writers {
		metas[w] = make([]client.Meta, each)
		wg.Go(func() {
			for j := range each {
				k := fmt.Sprint("w", w, "-", j)
				m, err := c.Upsert(ctxT(t), "kv", client.Fields{"k": client.String(k), "n": client.Int(int64(w*each + j)), "tag": client.String(k)})
				if err != nil {
					errs <- fmt.Errorf("%s: %v", k, err)
				}
				metas[w][j] = m
			}
		})
	}
	wg.Go(func() {
		for range 5 {
			_, err := c.Upsert(ctxT(t), "kv", client.Fields{"k": client.String("other"), "n": client.Int(1), "tag": client.String("dup")})
			if !errors.Is(err, client.ErrUniqueViolation) {
				errs <- fmt.Errorf("duplicate tag: want a unique violation, got %v", err)
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for w := range writers {
		for j := range each {
			m := metas[w][j]
			row, err := c.Get(ctxT(t), "kv", client.String(fmt.Sprint("w", w, "-", j)))
			if err != nil {
				t.Fatal(err)
			}
			if row.Fields["n"] != client.Int(int64(w*each+j)) || m.Version != 1 || m.ModRevision == 0 || row.Meta.ModRevision != m.ModRevision {
				t.Fatalf("w%d-%d: meta %+v, row %+v", w, j, m, row)
			}
		}
	}
	if _, err := c.Get(ctxT(t), "kv", client.String("other")); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("the row with the duplicate tag: %v", err)
	}
	t.Logf("%d upserts in %d Upsert and %d Txn RPCs", writers*each+6, rc.upsert.Load(), rc.txn.Load())
	if rc.txn.Load() == 0 || rc.upsert.Load()+rc.txn.Load() >= writers*each {
		t.Errorf("no batching: %d Upsert and %d Txn RPCs", rc.upsert.Load(), rc.txn.Load())
	}
}

// TestLargeUpsertsAreNotBatchedPastTheSizeLimit: rows that fit the
// request size limit alone still succeed when many are written at once.
func TestLargeUpsertsAreNotBatchedPastTheSizeLimit(t *testing.T) {
	cl := testcluster.Start(t, 1, testcluster.Options{TuneServer: func(c *server.Config) {
		c.Limits.MaxRequestBytes, c.Limits.MaxRowBytes, c.Limits.MaxValueBytes = 3<<20, 3<<20, 3<<20
	}})
	c := newClient(t, cl.Endpoints())
	mustCreate(t, c, client.TableSchema{Name: "blobs", PrimaryKey: "k",
		Fields: []client.FieldSchema{{Name: "k", Type: client.TypeString}, {Name: "v", Type: client.TypeBytes}}})
	big := make([]byte, 2<<20)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			if _, err := c.Upsert(ctxT(t), "blobs", client.Fields{"k": client.String(fmt.Sprint(i)), "v": client.Bytes(big)}); err != nil {
				t.Errorf("row %d: %v", i, err)
			}
		})
	}
	wg.Wait()
}
