package client

import (
	"context"
	"iter"
	"time"

	"google.golang.org/grpc"

	"github.com/memdbd/memdbd/api/convert"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
)

// CreateTable creates a table and returns the revision it was created at.
func (c *Client) CreateTable(ctx context.Context, s TableSchema) (uint64, error) {
	ps := convert.SchemaToPB(s)
	var rev uint64
	err := c.write(ctx, func(ctx context.Context, cc *grpc.ClientConn, ws *pb.WriteSession) error {
		r, err := pb.NewSchemaServiceClient(cc).CreateTable(ctx, &pb.CreateTableRequest{Schema: ps, Session: ws})
		rev = r.GetHeader().GetRevision()
		return err
	})
	return rev, wrap(err)
}

// DropTable removes a table and all its rows.
func (c *Client) DropTable(ctx context.Context, table string) error {
	return wrap(c.write(ctx, func(ctx context.Context, cc *grpc.ClientConn, ws *pb.WriteSession) error {
		_, err := pb.NewSchemaServiceClient(cc).DropTable(ctx, &pb.DropTableRequest{Table: table, Session: ws})
		return err
	}))
}

// CreateIndex adds a secondary index, built online over existing rows.
func (c *Client) CreateIndex(ctx context.Context, table string, ix IndexSchema) error {
	pix := &pb.IndexSchema{Name: ix.Name, Fields: ix.Fields, Unique: ix.Unique}
	return wrap(c.write(ctx, func(ctx context.Context, cc *grpc.ClientConn, ws *pb.WriteSession) error {
		_, err := pb.NewSchemaServiceClient(cc).CreateIndex(ctx, &pb.CreateIndexRequest{Table: table, Index: pix, Session: ws})
		return err
	}))
}

// DropIndex removes a secondary index.
func (c *Client) DropIndex(ctx context.Context, table, index string) error {
	return wrap(c.write(ctx, func(ctx context.Context, cc *grpc.ClientConn, ws *pb.WriteSession) error {
		_, err := pb.NewSchemaServiceClient(cc).DropIndex(ctx, &pb.DropIndexRequest{Table: table, Index: index, Session: ws})
		return err
	}))
}

// ListTables lists the tables.
func (c *Client) ListTables(ctx context.Context, opts ...ReadOption) ([]TableInfo, error) {
	ro := readOpts(opts)
	var out []TableInfo
	err := c.do(ctx, false, "", func(ctx context.Context, cc *grpc.ClientConn) error {
		r, err := pb.NewSchemaServiceClient(cc).ListTables(ctx, &pb.ListTablesRequest{Read: ro})
		if err != nil {
			return err
		}
		out = out[:0]
		for _, t := range r.Tables {
			info, err := tableInfoOf(t)
			if err != nil {
				return err
			}
			out = append(out, info)
		}
		return nil
	})
	return out, wrap(err)
}

// DescribeTable returns a table's schema and size.
func (c *Client) DescribeTable(ctx context.Context, table string, opts ...ReadOption) (TableInfo, error) {
	ro := readOpts(opts)
	var out TableInfo
	err := c.do(ctx, false, "", func(ctx context.Context, cc *grpc.ClientConn) error {
		r, err := pb.NewSchemaServiceClient(cc).DescribeTable(ctx, &pb.DescribeTableRequest{Table: table, Read: ro})
		if err != nil {
			return err
		}
		out, err = tableInfoOf(r.Table)
		return err
	})
	return out, wrap(err)
}

func tableInfoOf(t *pb.TableInfo) (TableInfo, error) {
	s, err := convert.Schema(t.GetSchema())
	if err != nil {
		return TableInfo{}, err
	}
	return TableInfo{Schema: s, Rows: int(t.GetRowCount()), Bytes: int64(t.GetDataBytes()), CreateRevision: t.GetCreateRevision()}, nil
}

// Get returns the row with this primary key, or ErrNotFound.
func (c *Client) Get(ctx context.Context, table string, key Value, opts ...ReadOption) (Row, error) {
	ro := readOpts(opts)
	if c.gets != nil {
		return c.gets.do(ctx, getGroup{table: table, consistency: ro.Consistency, maxStalenessMs: ro.MaxStalenessMs, minRevision: ro.MinRevision}, key)
	}
	return c.getOne(ctx, table, key, ro)
}

// getOne is one Get RPC (with retries).
func (c *Client) getOne(ctx context.Context, table string, key Value, ro *pb.ReadOptions) (Row, error) {
	var out Row
	found := false
	err := c.do(ctx, false, "", func(ctx context.Context, cc *grpc.ClientConn) error {
		r, err := pb.NewDataServiceClient(cc).Get(ctx, &pb.GetRequest{Table: table, Key: convert.ValueToPB(key), Read: ro})
		if err != nil {
			return err
		}
		found = r.Found
		if found {
			out, err = rowOf(r.Row)
		}
		return err
	})
	if err != nil {
		return Row{}, wrap(err)
	}
	if !found {
		return Row{}, notFound(table, key)
	}
	return out, nil
}

func notFound(table string, key Value) error {
	return &Error{Message: "no row with key " + key.String() + " in " + table, sentinel: ErrNotFound}
}

// BatchGet returns the rows of several keys, in order; nil for absent ones.
func (c *Client) BatchGet(ctx context.Context, table string, keys []Value, opts ...ReadOption) ([]*Row, error) {
	return c.batchGet(ctx, table, valuesPB(keys), readOpts(opts))
}

func (c *Client) batchGet(ctx context.Context, table string, keys []*pb.Value, ro *pb.ReadOptions) ([]*Row, error) {
	var out []*Row
	err := c.do(ctx, false, "", func(ctx context.Context, cc *grpc.ClientConn) error {
		// Decoded straight into rows (readwire.go).
		var r batchGetReply
		if err := cc.Invoke(ctx, pb.DataService_BatchGet_FullMethodName, &pb.BatchGetRequest{Table: table, Keys: keys, Read: ro}, &r, grpc.ForceCodecV2(replyCodec)); err != nil {
			return err
		}
		out = r.rows
		return nil
	})
	return out, wrap(err)
}

// Insert creates a row; ErrRowExists if its key is taken.
func (c *Client) Insert(ctx context.Context, table string, fields Fields, opts ...WriteOption) (Meta, error) {
	pf, o := fieldsPB(fields), wopts(opts)
	var m Meta
	err := c.write(ctx, func(ctx context.Context, cc *grpc.ClientConn, ws *pb.WriteSession) error {
		r, err := pb.NewDataServiceClient(cc).Insert(ctx, &pb.InsertRequest{Table: table, Fields: pf, Session: ws, TtlMs: o.ttlMs})
		m = metaOf(r.GetRow())
		return err
	})
	return m, wrap(err)
}

// Upsert creates or replaces a whole row.
func (c *Client) Upsert(ctx context.Context, table string, fields Fields, opts ...WriteOption) (Meta, error) {
	o := wopts(opts)
	op := &pb.UpsertOp{Table: table, Fields: fieldsPB(fields), ExpectedVersion: o.expectedVersion, TtlMs: o.ttlMs}
	if c.upserts != nil {
		return c.upserts.do(ctx, struct{}{}, op)
	}
	return c.upsertOne(ctx, op)
}

// upsertOne is one Upsert RPC (with retries).
func (c *Client) upsertOne(ctx context.Context, op *pb.UpsertOp) (Meta, error) {
	var m Meta
	err := c.write(ctx, func(ctx context.Context, cc *grpc.ClientConn, ws *pb.WriteSession) error {
		r, err := pb.NewDataServiceClient(cc).Upsert(ctx, &pb.UpsertRequest{Table: op.Table, Fields: op.Fields, ExpectedVersion: op.ExpectedVersion, Session: ws, TtlMs: op.TtlMs})
		m = metaOf(r.GetRow())
		return err
	})
	return m, wrap(err)
}

// Update sets and removes fields of an existing row; ErrNotFound if absent.
func (c *Client) Update(ctx context.Context, table string, key Value, set Fields, unset []string, opts ...WriteOption) (Meta, error) {
	pf, o := fieldsPB(set), wopts(opts)
	var m Meta
	err := c.write(ctx, func(ctx context.Context, cc *grpc.ClientConn, ws *pb.WriteSession) error {
		r, err := pb.NewDataServiceClient(cc).Update(ctx, &pb.UpdateRequest{Table: table, Key: convert.ValueToPB(key), Set: pf, Unset: unset, ExpectedVersion: o.expectedVersion, Session: ws,
			TtlMs: o.ttlMs, ClearTtl: o.clearTTL})
		m = metaOf(r.GetRow())
		return err
	})
	return m, wrap(err)
}

// Touch sets the row's time to live to ttl from now (0 removes its
// expiry): the keep-alive of a session row. ErrNotFound if the row is
// absent or already expired.
func (c *Client) Touch(ctx context.Context, table string, key Value, ttl time.Duration, opts ...WriteOption) (Meta, error) {
	o := wopts(append(opts, WithTTL(ttl)))
	var m Meta
	err := c.write(ctx, func(ctx context.Context, cc *grpc.ClientConn, ws *pb.WriteSession) error {
		r, err := pb.NewDataServiceClient(cc).Touch(ctx, &pb.TouchRequest{Table: table, Key: convert.ValueToPB(key), TtlMs: o.ttlMs, ExpectedVersion: o.expectedVersion, Session: ws})
		m = metaOf(r.GetRow())
		return err
	})
	return m, wrap(err)
}

// Delete removes a row; it reports whether there was one.
func (c *Client) Delete(ctx context.Context, table string, key Value, opts ...WriteOption) (bool, error) {
	o := wopts(opts)
	var deleted bool
	err := c.write(ctx, func(ctx context.Context, cc *grpc.ClientConn, ws *pb.WriteSession) error {
		r, err := pb.NewDataServiceClient(cc).Delete(ctx, &pb.DeleteRequest{Table: table, Key: convert.ValueToPB(key), ExpectedVersion: o.expectedVersion, Session: ws})
		deleted = r.GetDeleted()
		return err
	})
	return deleted, wrap(err)
}

// ScanOptions selects rows; see KeyRange in the API for the semantics.
type ScanOptions struct {
	// Index to scan; "" for the primary key.
	Index string
	// Prefix: entries whose leading indexed values equal these.
	Prefix []Value
	// PartialLast: the last prefix value (string or bytes) is a byte prefix.
	PartialLast bool
	// Start (inclusive unless StartExclusive) and End (exclusive unless
	// EndInclusive) bound the range.
	Start, End                   []Value
	StartExclusive, EndInclusive bool
	// Limit is the page size (0: the server's default).
	Limit    int
	Reverse  bool
	KeysOnly bool
}

func (o ScanOptions) keyRange() *pb.KeyRange {
	return &pb.KeyRange{Prefix: valuesPB(o.Prefix), PartialLast: o.PartialLast, Start: valuesPB(o.Start),
		StartExclusive: o.StartExclusive, End: valuesPB(o.End), EndInclusive: o.EndInclusive}
}

// Page is one page of a scan.
type Page struct {
	Header Header
	Rows   []Row
	// Next continues the scan (Client.ScanPage) when non-nil.
	Next *Cursor
}

// Cursor continues a scan at the revision of its first page, on the member
// that served it.
type Cursor struct {
	table string
	opts  ScanOptions
	read  []ReadOption
	addr  string
	token []byte
}

// Scan returns the first page of a scan.
func (c *Client) Scan(ctx context.Context, table string, o ScanOptions, opts ...ReadOption) (Page, error) {
	return c.scan(ctx, &Cursor{table: table, opts: o, read: opts})
}

// ScanPage returns the page after cur.
func (c *Client) ScanPage(ctx context.Context, cur *Cursor) (Page, error) { return c.scan(ctx, cur) }

func (c *Client) scan(ctx context.Context, cur *Cursor) (Page, error) {
	ro := readOpts(cur.read)
	var page Page
	var served string
	pinned := ""
	if cur.token != nil {
		pinned = cur.addr
	}
	err := c.do(ctx, false, pinned, func(ctx context.Context, cc *grpc.ClientConn) error {
		r, err := pb.NewDataServiceClient(cc).Scan(ctx, &pb.ScanRequest{
			Table: cur.table, Index: cur.opts.Index, Range: cur.opts.keyRange(), Limit: uint32(cur.opts.Limit),
			Reverse: cur.opts.Reverse, KeysOnly: cur.opts.KeysOnly, PageToken: cur.token, Read: ro,
		})
		if err != nil {
			return err
		}
		served = cc.Target()
		page = Page{Header: headerOf(r.Header), Rows: make([]Row, len(r.Rows))}
		for i, pr := range r.Rows {
			if page.Rows[i], err = rowOf(pr); err != nil {
				return err
			}
		}
		if len(r.NextPageToken) > 0 {
			page.Next = &Cursor{table: cur.table, opts: cur.opts, read: cur.read, addr: served, token: r.NextPageToken}
		}
		return nil
	})
	return page, wrap(err)
}

// ScanAll iterates over every row of a scan, page by page, all at the
// revision of the first page. It stops at the first error.
func (c *Client) ScanAll(ctx context.Context, table string, o ScanOptions, opts ...ReadOption) iter.Seq2[Row, error] {
	return func(yield func(Row, error) bool) {
		page, err := c.Scan(ctx, table, o, opts...)
		for {
			if err != nil {
				yield(Row{}, err)
				return
			}
			for _, r := range page.Rows {
				if !yield(r, nil) {
					return
				}
			}
			if page.Next == nil {
				return
			}
			page, err = c.ScanPage(ctx, page.Next)
		}
	}
}

// Count counts the rows a scan would return.
func (c *Client) Count(ctx context.Context, table string, o ScanOptions, opts ...ReadOption) (uint64, error) {
	ro := readOpts(opts)
	var n uint64
	err := c.do(ctx, false, "", func(ctx context.Context, cc *grpc.ClientConn) error {
		r, err := pb.NewDataServiceClient(cc).Count(ctx, &pb.CountRequest{Table: table, Index: o.Index, Range: o.keyRange(), Read: ro})
		n = r.GetCount()
		return err
	})
	return n, wrap(err)
}

// Member is a cluster member.
type Member struct {
	ID, ClientAddr, RaftAddr, Version string
	Voter, Leader                     bool
}

// Members lists the cluster's members, and remembers their addresses as
// endpoints.
func (c *Client) Members(ctx context.Context) ([]Member, error) {
	var out []Member
	err := c.do(ctx, false, "", func(ctx context.Context, cc *grpc.ClientConn) error {
		r, err := pb.NewClusterServiceClient(cc).Members(ctx, &pb.MembersRequest{})
		if err != nil {
			return err
		}
		out = out[:0]
		for _, m := range r.Members {
			out = append(out, Member{ID: m.Id, ClientAddr: m.ClientAddr, RaftAddr: m.RaftAddr, Version: m.Version, Voter: m.Voter, Leader: m.Leader})
		}
		return nil
	})
	if err != nil {
		return nil, wrap(err)
	}
	c.mu.Lock()
	for _, m := range out {
		if m.ClientAddr == "" {
			continue
		}
		known := false
		for _, e := range c.endpoints {
			known = known || e == m.ClientAddr
		}
		if !known {
			c.endpoints = append(c.endpoints, m.ClientAddr)
		}
		if m.Leader {
			c.leader = m.ClientAddr
		}
	}
	c.mu.Unlock()
	return out, nil
}

// wrap returns nil or the *Error.
func wrap(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(*Error); ok {
		return err
	}
	return fromStatus(err)
}
