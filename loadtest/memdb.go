package loadtest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/memdbd/memdbd/client"
)

// MemdbTarget drives memdbd through the Go client SDK. Table "bench" holds
// the key space: k (8-byte string key), n (int64, indexed), v (bytes).
type MemdbTarget struct {
	clients []*client.Client
	// StampWrites makes writes store their start time (Unix nanos) in n,
	// for watchers to measure the delay to the event.
	StampWrites bool
}

var _ Target = (*MemdbTarget)(nil)

// NewMemdbTarget opens conns independent clients (each its own
// connections and write session) to the cluster at endpoints. With
// onlyEndpoints the clients use those members alone (no discovery); with
// noBatching every Get and Upsert is its own RPC (the SDK otherwise sends
// concurrent ones together).
func NewMemdbTarget(ctx context.Context, endpoints []string, conns int, onlyEndpoints, noBatching bool) (*MemdbTarget, error) {
	return NewMemdbTargetTLS(ctx, endpoints, conns, onlyEndpoints, noBatching, nil, nil)
}

// NewMemdbTargetTLS is NewMemdbTarget over TLS with tc (plaintext when
// nil), identified by creds when not nil (a cluster with access control).
func NewMemdbTargetTLS(ctx context.Context, endpoints []string, conns int, onlyEndpoints, noBatching bool, tc *tls.Config, creds *client.Credentials) (*MemdbTarget, error) {
	t := &MemdbTarget{}
	for i := 0; i < max(conns, 1); i++ {
		c, err := client.New(ctx, client.Config{Endpoints: endpoints, RequestTimeout: 10 * time.Second,
			Logger: slog.New(slog.DiscardHandler), DisableDiscovery: onlyEndpoints,
			DisableGetBatching: noBatching, DisableUpsertBatching: noBatching, TLS: tc, Credentials: creds})
		if err != nil {
			_ = t.Close()
			return nil, err
		}
		t.clients = append(t.clients, c)
	}
	return t, nil
}

func (t *MemdbTarget) Name() string { return "memdbd" }
func (t *MemdbTarget) Conns() int   { return len(t.clients) }

// Setup creates the table and writes every key once, 100 per transaction.
func (t *MemdbTarget) Setup(ctx context.Context, keys int, value []byte) error {
	c := t.clients[0]
	_, err := c.CreateTable(ctx, client.TableSchema{Name: "bench", PrimaryKey: "k",
		Fields:  []client.FieldSchema{{Name: "k", Type: client.TypeString}, {Name: "n", Type: client.TypeInt}, {Name: "v", Type: client.TypeBytes}},
		Indexes: []client.IndexSchema{{Name: "by_n", Fields: []string{"n"}}}})
	if err != nil && !errors.Is(err, client.ErrTableExists) {
		return fmt.Errorf("creating the bench table: %w", err)
	}
	for i := 0; i < keys; i += 100 {
		tx := c.Txn()
		for j := i; j < min(i+100, keys); j++ {
			tx.Then(client.UpsertOp("bench", client.Fields{"k": client.String(KeyName(j)), "n": client.Int(int64(j)), "v": client.Bytes(value)}))
		}
		if _, err := tx.Commit(ctx); err != nil {
			return fmt.Errorf("preloading keys: %w", err)
		}
	}
	return nil
}

// Do performs one operation.
func (t *MemdbTarget) Do(ctx context.Context, conn int, op Op, value []byte) error {
	c := t.clients[conn%len(t.clients)]
	key := client.String(op.Key)
	switch op.Kind {
	case OpWrite:
		n := op.Num
		if t.StampWrites {
			n = time.Now().UnixNano()
		}
		_, err := c.Upsert(ctx, "bench", client.Fields{"k": key, "n": client.Int(n), "v": client.Bytes(value)})
		return err
	case OpInsert:
		_, err := c.Insert(ctx, "bench", client.Fields{"k": key, "n": client.Int(-1), "v": client.Bytes(value)})
		return err
	case OpRead:
		_, err := c.Get(ctx, "bench", key)
		return err
	case OpStaleRead:
		_, err := c.Get(ctx, "bench", key, client.Stale())
		return err
	case OpScan:
		_, err := c.Scan(ctx, "bench", client.ScanOptions{Index: "by_n", Start: []client.Value{client.Int(op.Num)}, Limit: 10})
		return err
	case OpTxn:
		_, err := c.Txn().If(client.Exists("bench", key)).
			Then(client.UpsertOp("bench", client.Fields{"k": key, "n": client.Int(op.Num), "v": client.Bytes(value)})).Commit(ctx)
		return err
	}
	return fmt.Errorf("unknown operation %v", op.Kind)
}

// Close closes the clients.
func (t *MemdbTarget) Close() error {
	var errs []error
	for _, c := range t.clients {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}
