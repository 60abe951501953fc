package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/memdbd/memdbd/api/convert"
	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/api/wire"
	"github.com/memdbd/memdbd/fsm"
	"github.com/memdbd/memdbd/store"
)

// dataService serves memdb.v1.DataService.
type dataService struct {
	pb.UnimplementedDataServiceServer
	s *Server
}

// Flags of the response limits, as refusals name them (pb.MetaLimit).
const (
	flagMaxResponseBytes         = "max-response-bytes"
	flagMaxResponseBytesInFlight = "max-response-bytes-in-flight"
)

// responseReserveMin is the size from which a response reserves its bytes
// against Limits.MaxResponseBytesInFlight. Why not every response: the
// budget is one counter, and point Gets and writes, nearly all of the
// traffic, would contend on it from every core for answers of a few
// hundred bytes. Small answers need no share of it: the in-flight request
// limit (--max-in-flight, 10,000) bounds them, at 640 MiB for 10,000
// answers just under 64 KiB, the order of the budget itself.
const responseReserveMin = 64 << 10

// reserveResponse reserves n bytes of the member's budget of response
// bytes in flight for a response about to be built, and returns the
// function that releases them; a response under responseReserveMin
// reserves nothing. When the budget cannot hold n more bytes it refuses
// at once (OVERLOADED, limit max-response-bytes-in-flight), rather than
// queue: a client can retry elsewhere or later, while a queue would hold
// the request's goroutine and its connection's stream meanwhile.
func (s *Server) reserveResponse(n int) (release func(), err error) {
	if n < responseReserveMin {
		return func() {}, nil
	}
	limit := s.limits().MaxResponseBytesInFlight
	ok, used := s.metrics.responseBytes.reserve(int64(n), limit)
	if !ok {
		s.metrics.responseLimited.WithLabelValues(flagMaxResponseBytesInFlight).Inc()
		return nil, overLimit(flagMaxResponseBytesInFlight, fmt.Errorf(
			"%w: responses of %d bytes are being built on this member, and this one of %d bytes would take them over the limit of %d (--%s); retry shortly, or ask for less at a time",
			errOverloaded, used, n, limit, flagMaxResponseBytesInFlight))
	}
	return func() { s.metrics.responseBytes.release(int64(n)) }, nil
}

// tooLarge is the refusal of a response of size bytes, over limit;
// advice tells the caller how to ask for less.
func tooLarge(what string, size, limit int, advice string) error {
	return overLimit(flagMaxResponseBytes, fmt.Errorf("%w: %s is %d bytes or more, over this member's response limit of %d bytes (--%s); %s",
		errResponseTooLarge, what, size, limit, flagMaxResponseBytes, advice))
}

// Bounds on the parts of a Txn response other than the rows its Get
// operations read: an OpResult's tags and lengths, a Put result's
// revisions and expiry (64 bytes), and the response header with the
// outcome (256 bytes).
const (
	txnResultFraming = 64
	txnHeaderFraming = 256
)

// txnResponseBytes estimates the size of a Txn's response from the rows
// its Get operations read: the larger of its two branches, since which
// runs is known only when it is applied. A Get reads the row as the
// branch's earlier operations left it (an insert or upsert writes the
// fields it gives; an update adds its fields to the row; a delete leaves
// none), otherwise the row in v now.
func txnResponseBytes(v *store.View, txn store.Txn) int {
	type rowID struct {
		table string
		key   store.Value
	}
	branch := func(ops []store.Op) int {
		n := 0
		written := map[rowID]int{} // row sizes after the branch's writes so far
		current := func(id rowID) int {
			if size, ok := written[id]; ok {
				return size
			}
			// An error (no such table, a key of the wrong type) fails
			// CheckTxn, which runs first.
			if row, ok, err := v.Get(id.table, id.key); err == nil && ok {
				return sizeRowFields(row)
			}
			return 0
		}
		for _, op := range ops {
			n += txnResultFraming
			switch op.Kind {
			case store.OpGet:
				n += current(rowID{op.Table, op.Key})
			case store.OpInsert, store.OpUpsert:
				if info, err := v.Table(op.Table); err == nil {
					for _, f := range op.Fields {
						if f.Name == info.Schema.PrimaryKey {
							written[rowID{op.Table, f.Value}] = sizeFields(op.Fields)
						}
					}
				}
			case store.OpUpdate:
				id := rowID{op.Table, op.Key}
				written[id] = current(id) + sizeFields(op.Fields)
			case store.OpDelete:
				written[rowID{op.Table, op.Key}] = 0
			}
		}
		return n
	}
	return txnHeaderFraming + max(branch(txn.Then), branch(txn.Else))
}

// sizeFields is the encoded size of fields in a row.
func sizeFields(fs []store.Field) int {
	n := 0
	for _, f := range fs {
		n += sizeEntry(f.Name, f.Value)
	}
	return n
}

// hasGets reports whether txn reads rows: a Get in either branch.
func hasGets(txn store.Txn) bool {
	for _, br := range [][]store.Op{txn.Then, txn.Else} {
		for _, op := range br {
			if op.Kind == store.OpGet {
				return true
			}
		}
	}
	return false
}

// checkWrite is the edge's check of a transaction before it is proposed,
// for a client's request and for a proposal a member forwards (peer.go):
// not empty, value sizes, the data quota, the transaction against the
// current schema and limits, and its answer against the response limit.
// It returns the estimated size of the answer.
func (s *Server) checkWrite(ctx context.Context, txn *cmdpb.Txn) (int, error) {
	if txn == nil || (len(txn.Conditions) == 0 && len(txn.Then) == 0 && len(txn.Else) == 0) {
		// It would succeed and change nothing, at the price of a log entry
		// on every member.
		return 0, fmt.Errorf("%w: the transaction has no conditions and no operations; there is nothing to do", errInvalid)
	}
	st, err := convert.Txn(txn.Conditions, txn.Then, txn.Else)
	if err != nil {
		return 0, err
	}
	if err := s.limits().checkValueSizes(st); err != nil {
		return 0, err
	}
	lim := s.limits()
	grows, gets := addsData(st), hasGets(st)
	estimate := 0
	if err := s.checkFresh(ctx, func(v *store.View) error {
		if grows {
			if err := lim.checkQuota(v); err != nil {
				return err
			}
		}
		if err := v.CheckTxn(st, lim.store()); err != nil {
			return err
		}
		if !gets {
			return nil
		}
		// The rows a Get returns are known only once the transaction is
		// applied, and a refusal after that would leave its writes done.
		// So the response is estimated here, from the rows as they are
		// now, and a transaction over the limit is refused before it is
		// proposed. The estimate races with other writes: a row may grow
		// between this check and the apply, by at most MaxRowBytes per Get,
		// and a Get of a row the transaction itself writes reads what it
		// writes, not what is here. Such a response is answered over the
		// limit (see write) rather than refused.
		estimate = txnResponseBytes(v, st)
		if estimate > lim.MaxResponseBytes {
			return tooLarge("the answer of this transaction (the rows its Get operations read)", estimate, lim.MaxResponseBytes,
				"read the rows with fewer Get operations per transaction, or with Get or BatchGet outside it")
		}
		return nil
	}); err != nil {
		if errors.Is(err, errResponseTooLarge) {
			s.metrics.responseLimited.WithLabelValues(flagMaxResponseBytes).Inc()
		}
		return 0, err
	}
	return estimate, nil
}

// write validates a transaction at the edge, proposes it and returns its
// result; a command the state machine refused comes back as its error.
// A refusal at the edge proposes nothing, so it changes no state.
func (s *Server) write(ctx context.Context, ws *pb.WriteSession, txn *cmdpb.Txn) (*cmdpb.Result, error) {
	estimate, err := s.checkWrite(ctx, txn)
	if err != nil {
		return nil, err
	}
	if err := checkSession(ws); err != nil {
		return nil, err
	}
	release, err := s.reserveResponse(estimate)
	if err != nil {
		return nil, err
	}
	defer release()
	res, err := s.propose(ctx, &cmdpb.Envelope{Session: ws, Command: &cmdpb.Envelope_Txn{Txn: txn}})
	if err != nil {
		return nil, err
	}
	if err := fsm.ResultError(res); err != nil {
		return nil, err
	}
	if lim := s.limits(); estimate > 0 {
		if n := res.SizeVT(); n > lim.MaxResponseBytes {
			// The write is done: refusing now would tell the caller it
			// was not.
			s.log.Warn("a transaction's answer is over the response limit: rows it reads grew after its estimate; answered anyway",
				"request_id", requestID(ctx), "bytes", n, "estimate", estimate, "limit", lim.MaxResponseBytes, "revision", res.Revision)
		}
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
	// A Get is answered whatever its size: the response limit has room
	// for one row (Limits.Validate). But many Gets of large rows at once
	// are as many large answers, and those reserve like any; the others,
	// nearly all, only pay for the measuring, which encodeGet needs
	// anyway.
	h := d.s.header(v)
	release, err := d.s.reserveResponse(sizeGet(h, row, ok))
	if err != nil {
		return nil, toStatus(err)
	}
	defer release()
	return withWire(&pb.GetResponse{}, encodeGet(h, row, ok)), nil
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
	// Without keys the loop below would not look at the table at all.
	if _, err := v.Table(req.Table); err != nil {
		return nil, toStatus(err)
	}
	// The rows are found and measured first, the answer built after: a
	// request for more than the limit is refused at the first row over
	// it, before anything is built. The rows alias the store's memory.
	h := d.s.header(v)
	limit := d.s.limits().MaxResponseBytes
	size := sizeHeader(wire.BatchHeader, h)
	rows, found := make([]store.Row, len(keys)), make([]bool, len(keys))
	for i, k := range keys {
		row, ok, err := v.Get(req.Table, k)
		if err != nil {
			return nil, toStatus(fmt.Errorf("key %d: %w", i, err))
		}
		rows[i], found[i] = row, ok
		if size += sizeBatchResult(row, ok); size > limit {
			d.s.metrics.responseLimited.WithLabelValues(flagMaxResponseBytes).Inc()
			return nil, toStatus(tooLarge(fmt.Sprintf("the answer for the first %d of these %d keys", i+1, len(keys)), size, limit,
				"ask for fewer keys at a time"))
		}
	}
	release, err := d.s.reserveResponse(size)
	if err != nil {
		return nil, toStatus(err)
	}
	defer release()
	w := newBatchGetWire(h, size)
	for i := range rows {
		w.add(rows[i], found[i])
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
		if v, ok = d.s.pages.get(ctx, tok.rev, now); !ok {
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
	h := d.s.header(v)
	token := func(next []byte) []byte {
		if next == nil {
			return nil
		}
		return pageToken{rev: v.Revision(), now: v.Now(), digest: digest, after: next}.encode()
	}
	res, tok, size, err := fitScanPage(v, req.Table, o, res, h.SizeVT(), d.s.limits().MaxResponseBytes, token)
	if err != nil {
		return nil, toStatus(err)
	}
	release, err := d.s.reserveResponse(size)
	if err != nil {
		return nil, toStatus(err)
	}
	defer release()
	resp := &pb.ScanResponse{Header: h, Rows: make([]*pb.Row, len(res.Rows)), NextPageToken: tok}
	for i, r := range res.Rows {
		resp.Rows[i] = convert.RowToPB(r)
	}
	if tok != nil {
		d.s.pages.pin(ctx, v, now)
	}
	return resp, nil
}

// fitScanPage bounds a scan page by the response limit: the page ends
// before the row that would take the response over it, with a page token
// for the rest, as long as one row is in it (a row larger than the limit
// alone, stored before the row limit was lowered, still comes, alone). res
// is the page of up to o.Limit rows; header is the size of the response
// header. It returns the page kept, its token (nil when the scan is
// complete) and the size of the response.
func fitScanPage(v *store.View, table string, o store.ScanOptions, res store.ScanResult, header, limit int,
	token func(next []byte) []byte) (store.ScanResult, []byte, int, error) {
	// sizes[k] is the size of a response of the first k rows, token aside.
	sizes := make([]int, len(res.Rows)+1)
	sizes[0] = protowire.SizeTag(1) + protowire.SizeBytes(header)
	for i, r := range res.Rows {
		sizes[i+1] = sizes[i] + protowire.SizeTag(2) + protowire.SizeBytes(sizeRowFields(r))
	}
	// keep is the number of rows kept: the most whose response, with a
	// token of the size last seen, fits.
	tokSize := 0
	keep := len(res.Rows)
	page := res
	for {
		tok := token(page.Next)
		if tok != nil {
			tokSize = protowire.SizeTag(3) + protowire.SizeBytes(len(tok))
		}
		if size := sizes[keep] + tokSize; size <= limit || keep <= 1 {
			return page, tok, size, nil
		}
		k := keep - 1
		for k > 1 && sizes[k]+tokSize > limit {
			k--
		}
		keep = k
		// The same view gives the same rows; scanned again with the
		// shorter limit, it also gives the cursor after the last row kept,
		// which the store only hands out at the end of a page.
		o.Limit = keep
		var err error
		if page, err = v.Scan(table, o); err != nil {
			return store.ScanResult{}, nil, 0, err
		}
		if len(page.Rows) != keep {
			return store.ScanResult{}, nil, 0, fmt.Errorf("a scan of one view returned %d rows where it had returned %d", len(page.Rows), keep)
		}
	}
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
