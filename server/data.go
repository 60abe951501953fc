package server

import (
	"context"
	"fmt"
	"time"

	"github.com/memdbd/memdbd/api/convert"
	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/fsm"
	"github.com/memdbd/memdbd/store"
)

// dataService serves memdb.v1.DataService.
type dataService struct {
	pb.UnimplementedDataServiceServer
	s *Server
}

// write validates a transaction at the edge, proposes it and returns its
// result; a command the state machine refused comes back as its error.
func (s *Server) write(ctx context.Context, ws *pb.WriteSession, txn *cmdpb.Txn) (*cmdpb.Result, error) {
	st, err := convert.Txn(txn.Conditions, txn.Then, txn.Else)
	if err != nil {
		return nil, err
	}
	if err := s.limits().checkValueSizes(st); err != nil {
		return nil, err
	}
	lim := s.limits()
	grows := addsData(st)
	if err := s.checkFresh(ctx, func(v *store.View) error {
		if grows {
			if err := lim.checkQuota(v); err != nil {
				return err
			}
		}
		return v.CheckTxn(st, lim.store())
	}); err != nil {
		return nil, err
	}
	if err := checkSession(ws); err != nil {
		return nil, err
	}
	res, err := s.propose(ctx, &cmdpb.Envelope{Session: ws, Command: &cmdpb.Envelope_Txn{Txn: txn}})
	if err != nil {
		return nil, err
	}
	if err := fsm.ResultError(res); err != nil {
		return nil, err
	}
	return res, nil
}

// single runs a one-operation write and returns its row result.
func (d *dataService) single(ctx context.Context, ws *pb.WriteSession, op *pb.Op) (*cmdpb.Result, *pb.OpResult, error) {
	res, err := d.s.write(ctx, ws, &cmdpb.Txn{Then: []*pb.Op{op}})
	if err != nil {
		return nil, nil, toStatus(err)
	}
	if len(res.Results) != 1 {
		return nil, nil, toStatus(fmt.Errorf("state machine returned %d results for one operation", len(res.Results)))
	}
	return res, res.Results[0], nil
}

func (d *dataService) Insert(ctx context.Context, req *pb.InsertRequest) (*pb.InsertResponse, error) {
	res, r, err := d.single(ctx, req.Session, &pb.Op{Op: &pb.Op_Insert{Insert: &pb.InsertOp{Table: req.Table, Fields: req.Fields, TtlMs: req.TtlMs}}})
	if err != nil {
		return nil, err
	}
	return &pb.InsertResponse{Header: d.s.writeHeader(res.Revision), Row: r.GetPut()}, nil
}

func (d *dataService) Upsert(ctx context.Context, req *pb.UpsertRequest) (*pb.UpsertResponse, error) {
	res, r, err := d.single(ctx, req.Session, &pb.Op{Op: &pb.Op_Upsert{Upsert: &pb.UpsertOp{Table: req.Table, Fields: req.Fields, ExpectedVersion: req.ExpectedVersion, TtlMs: req.TtlMs}}})
	if err != nil {
		return nil, err
	}
	return &pb.UpsertResponse{Header: d.s.writeHeader(res.Revision), Row: r.GetPut()}, nil
}

func (d *dataService) Update(ctx context.Context, req *pb.UpdateRequest) (*pb.UpdateResponse, error) {
	res, r, err := d.single(ctx, req.Session, &pb.Op{Op: &pb.Op_Update{Update: &pb.UpdateOp{
		Table: req.Table, Key: req.Key, Set: req.Set, Unset: req.Unset, ExpectedVersion: req.ExpectedVersion, TtlMs: req.TtlMs, ClearTtl: req.ClearTtl}}})
	if err != nil {
		return nil, err
	}
	return &pb.UpdateResponse{Header: d.s.writeHeader(res.Revision), Row: r.GetPut()}, nil
}

func (d *dataService) Touch(ctx context.Context, req *pb.TouchRequest) (*pb.TouchResponse, error) {
	res, r, err := d.single(ctx, req.Session, &pb.Op{Op: &pb.Op_Touch{Touch: &pb.TouchOp{
		Table: req.Table, Key: req.Key, TtlMs: req.TtlMs, ExpectedVersion: req.ExpectedVersion}}})
	if err != nil {
		return nil, err
	}
	return &pb.TouchResponse{Header: d.s.writeHeader(res.Revision), Row: r.GetPut()}, nil
}

func (d *dataService) Delete(ctx context.Context, req *pb.DeleteRequest) (*pb.DeleteResponse, error) {
	res, r, err := d.single(ctx, req.Session, &pb.Op{Op: &pb.Op_Delete{Delete: &pb.DeleteOp{Table: req.Table, Key: req.Key, ExpectedVersion: req.ExpectedVersion}}})
	if err != nil {
		return nil, err
	}
	return &pb.DeleteResponse{Header: d.s.writeHeader(res.Revision), Deleted: r.GetDeleted()}, nil
}

func (d *dataService) Txn(ctx context.Context, req *pb.TxnRequest) (*pb.TxnResponse, error) {
	res, err := d.s.write(ctx, req.Session, &cmdpb.Txn{Conditions: req.Conditions, Then: req.Then, Else: req.Else})
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.TxnResponse{Header: d.s.writeHeader(res.Revision), Succeeded: res.Succeeded, Results: res.Results}, nil
}

func (d *dataService) Get(ctx context.Context, req *pb.GetRequest) (*pb.GetResponse, error) {
	key, err := convert.Value(req.Key)
	if err != nil {
		return nil, toStatus(fmt.Errorf("key: %w", err))
	}
	v, err := d.s.readView(ctx, req.Read)
	if err != nil {
		return nil, toStatus(err)
	}
	row, ok, err := v.Get(req.Table, key)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := withWire(&pb.GetResponse{}, encodeGet(d.s.header(v), row, ok))
	return resp, nil
}

func (d *dataService) BatchGet(ctx context.Context, req *pb.BatchGetRequest) (*pb.BatchGetResponse, error) {
	if n := len(req.Keys); n > d.s.limits().MaxBatchGet {
		return nil, toStatus(fmt.Errorf("%d keys, limit %d: %w", n, d.s.limits().MaxBatchGet, store.ErrTooManyOps))
	}
	keys, err := convert.Values(req.Keys)
	if err != nil {
		return nil, toStatus(fmt.Errorf("keys: %w", err))
	}
	v, err := d.s.readView(ctx, req.Read)
	if err != nil {
		return nil, toStatus(err)
	}
	w := newBatchGetWire(d.s.header(v), len(keys))
	for i, k := range keys {
		row, ok, err := v.Get(req.Table, k)
		if err != nil {
			return nil, toStatus(fmt.Errorf("key %d: %w", i, err))
		}
		w.add(row, ok)
	}
	return withWire(&pb.BatchGetResponse{}, w.b), nil
}

func (d *dataService) Scan(ctx context.Context, req *pb.ScanRequest) (*pb.ScanResponse, error) {
	o, err := convert.Range(req.Index, req.Range)
	if err != nil {
		return nil, toStatus(err)
	}
	lim := d.s.limits()
	o.Limit, o.Reverse, o.KeysOnly = int(req.Limit), req.Reverse, req.KeysOnly
	if o.Limit == 0 {
		o.Limit = lim.DefaultScanLimit
	}
	if o.Limit > lim.MaxScanLimit {
		return nil, toStatus(fmt.Errorf("%w: limit %d is above the maximum page size %d", errInvalid, o.Limit, lim.MaxScanLimit))
	}
	digest := scanDigest(req.Table, req.Index, req.Range, req.Reverse, req.KeysOnly)
	var v *store.View
	now := time.Now()
	if len(req.PageToken) > 0 {
		tok, err := decodeToken(req.PageToken)
		if err != nil {
			return nil, toStatus(err)
		}
		if tok.digest != digest {
			return nil, toStatus(fmt.Errorf("%w: page_token belongs to a scan with other parameters", errInvalid))
		}
		var ok bool
		if v, ok = d.s.pages.get(tok.rev, now); !ok {
			return nil, toStatus(fmt.Errorf("%w: the view of revision %d is no longer held on node %s; start the scan again", errPageExpired, tok.rev, d.s.cfg.NodeID))
		}
		v = v.At(tok.now)
		o.After = tok.after
	} else if v, err = d.s.readView(ctx, req.Read); err != nil {
		return nil, toStatus(err)
	}
	res, err := v.Scan(req.Table, o)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &pb.ScanResponse{Header: d.s.header(v), Rows: make([]*pb.Row, len(res.Rows))}
	for i, r := range res.Rows {
		resp.Rows[i] = convert.RowToPB(r)
	}
	if res.Next != nil {
		d.s.pages.pin(v, now)
		resp.NextPageToken = pageToken{rev: v.Revision(), now: v.Now(), digest: digest, after: res.Next}.encode()
	}
	return resp, nil
}

func (d *dataService) Count(ctx context.Context, req *pb.CountRequest) (*pb.CountResponse, error) {
	o, err := convert.Range(req.Index, req.Range)
	if err != nil {
		return nil, toStatus(err)
	}
	v, err := d.s.readView(ctx, req.Read)
	if err != nil {
		return nil, toStatus(err)
	}
	n, err := v.Count(req.Table, o)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.CountResponse{Header: d.s.header(v), Count: uint64(n)}, nil
}
