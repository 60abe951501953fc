package client

import (
	"context"
	"errors"

	"google.golang.org/grpc"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
)

// Request batching in the SDK (the mechanism is batcher.go).
//
// Why: a call's cost on both ends is mostly the RPC itself (HTTP/2
// framing, a socket write and read on each side, scheduling the handler),
// not the lookup or the write: with 64 readers on two cores the gRPC
// transport took most of the members' and the client's CPU. One RPC for
// several calls pays it once.
//
// Why two in flight: with one, batches were larger and 64 readers over 8
// clients read 1.5x faster than without batching, but 16 readers (two per
// client) read 25% slower and 16 writers nearly half as fast, each waiting
// out the other's round trip. With two, 16 callers run as without
// batching and 64 readers gain about a fifth.
//
// Gets of one table with the same read options go out as one BatchGet. A
// linearizable batch takes its read index after every Get in it was
// called. A failed batch is retried Get by Get, so a key that is invalid
// for the table fails only its own call.
//
// Upserts go out as one unconditional transaction (one RPC, one log entry,
// one write session sequence number), which no caller can tell apart from
// its write having been applied with the others at one revision; each
// caller gets its own row's metadata. If the transaction is rejected
// outright (an invalid row, a unique index violation, a version mismatch:
// nothing was applied), every Upsert is sent again alone; if its outcome
// is unknown (a deadline, a lost leader), every caller gets that error, as
// it would have for its own RPC. The transaction's retries are exactly-once
// through the write session like any write. Writes are bound by the
// commit's latency (a disk commit and a round trip) until the CPU runs
// out, and batching helps only once it does: with 256 writers over 8
// clients it raised throughput 1.6x, with 16 or 64 it changed nothing.
const (
	batchInFlight = 2
	maxGetBatch   = 64
	// maxUpsertBatch stays within the server's operations per transaction
	// (128 by default); maxUpsertBatchBytes well under its request size
	// limit (16 MiB by default), which rows that fit alone must not exceed
	// together.
	maxUpsertBatch      = 64
	maxUpsertBatchBytes = 1 << 20
)

// getGroup is what Gets must share to share an RPC: every field of
// pb.ReadOptions.
type getGroup struct {
	table                       string
	consistency                 pb.Consistency
	maxStalenessMs, minRevision uint64
}

func (k getGroup) readOptions() *pb.ReadOptions {
	return &pb.ReadOptions{Consistency: k.consistency, MaxStalenessMs: k.maxStalenessMs, MinRevision: k.minRevision}
}

func newGetBatcher(c *Client) *batcher[getGroup, Value, Row] {
	return &batcher[getGroup, Value, Row]{
		inFlight: batchInFlight, maxBatch: maxGetBatch, timeout: c.cfg.RequestTimeout,
		one: func(ctx context.Context, k getGroup, key Value) (Row, error) {
			return c.getOne(ctx, k.table, key, k.readOptions())
		},
		many: func(ctx context.Context, k getGroup, keys []Value) ([]Row, []error, error) {
			rows, err := c.batchGet(ctx, k.table, valuesPB(keys), k.readOptions())
			if err != nil {
				return nil, nil, err
			}
			if len(rows) != len(keys) {
				return nil, nil, &Error{Message: "batch get answered with the wrong number of results", sentinel: ErrInternal}
			}
			out, errs := make([]Row, len(keys)), make([]error, len(keys))
			for i, r := range rows {
				if r == nil {
					errs[i] = notFound(k.table, keys[i])
				} else {
					out[i] = *r
				}
			}
			return out, errs, nil
		},
		retryAlone: func(error) bool { return true },
		gaveUp:     func(err error) error { return &Error{Message: err.Error(), sentinel: ErrUnavailable} },
	}
}

func newUpsertBatcher(c *Client) *batcher[struct{}, *pb.UpsertOp, Meta] {
	return &batcher[struct{}, *pb.UpsertOp, Meta]{
		inFlight: batchInFlight, maxBatch: maxUpsertBatch, timeout: c.cfg.RequestTimeout,
		maxBytes: maxUpsertBatchBytes, size: func(op *pb.UpsertOp) int { return op.SizeVT() },
		one: func(ctx context.Context, _ struct{}, op *pb.UpsertOp) (Meta, error) {
			return c.upsertOne(ctx, op)
		},
		many: func(ctx context.Context, _ struct{}, batch []*pb.UpsertOp) ([]Meta, []error, error) {
			ops := make([]*pb.Op, len(batch))
			for i, op := range batch {
				ops[i] = &pb.Op{Op: &pb.Op_Upsert{Upsert: op}}
			}
			var results []*pb.OpResult
			err := c.write(ctx, func(ctx context.Context, cc *grpc.ClientConn, ws *pb.WriteSession) error {
				r, err := pb.NewDataServiceClient(cc).Txn(ctx, &pb.TxnRequest{Then: ops, Session: ws})
				results = r.GetResults()
				return err
			})
			if err != nil {
				return nil, nil, wrap(err)
			}
			if len(results) != len(batch) {
				// Applied, but not answered as asked: not safe to resend.
				return nil, nil, &Error{Message: "transaction answered with the wrong number of results", sentinel: ErrInternal}
			}
			metas := make([]Meta, len(batch))
			for i, r := range results {
				metas[i] = metaOf(r.GetPut())
			}
			return metas, nil, nil
		},
		retryAlone: func(err error) bool {
			var e *Error
			return errors.As(err, &e) && e.rejected()
		},
		// Sent or not, this caller can no longer learn the outcome.
		gaveUp: func(err error) error { return &Error{Message: err.Error(), sentinel: ErrOutcomeUnknown} },
	}
}
