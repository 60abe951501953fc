package client

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/memdbd/memdbd/api/convert"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/store"
)

// Value is one typed value; build it with String, Int, Double, Bool,
// Bytes, Timestamp or Null.
type Value = store.Value

// Value constructors.
var (
	String    = store.String
	Int       = store.Int
	Double    = store.Double
	Bool      = store.Bool
	Bytes     = store.Bytes
	Timestamp = store.Timestamp
	Null      = store.Null
)

// Schema types.
type (
	TableSchema = store.TableSchema
	FieldSchema = store.FieldSchema
	IndexSchema = store.IndexSchema
	FieldType   = store.FieldType
	TableInfo   = store.TableInfo
)

// Field types.
const (
	TypeString    = store.TypeString
	TypeInt       = store.TypeInt
	TypeDouble    = store.TypeDouble
	TypeBool      = store.TypeBool
	TypeBytes     = store.TypeBytes
	TypeTimestamp = store.TypeTimestamp
)

// Fields are a row's named values.
type Fields map[string]Value

// Meta is a row's history.
type Meta struct {
	// CreateRevision: revision of the write that created the row.
	CreateRevision uint64
	// ModRevision: revision of the write that last changed it.
	ModRevision uint64
	// Version: writes since creation, 1 after insert.
	Version uint64
	// ExpiresAt: when the row expires; zero when it never does.
	ExpiresAt time.Time
}

// Row is one row with its history.
type Row struct {
	Fields Fields
	Meta
}

// Header says which state and node served a response.
type Header struct {
	// Revision of the state the response reflects.
	Revision uint64
	NodeID   string
	Term     uint64
}

func headerOf(h *pb.ResponseHeader) Header {
	return Header{Revision: h.GetRevision(), NodeID: h.GetNodeId(), Term: h.GetRaftTerm()}
}

func metaOf(m *pb.RowMeta) Meta {
	return Meta{CreateRevision: m.GetCreateRevision(), ModRevision: m.GetModRevision(), Version: m.GetVersion(), ExpiresAt: expiresOf(m.GetExpiresAt())}
}

func expiresOf(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime()
}

func rowOf(r *pb.Row) (Row, error) {
	out := Row{Fields: make(Fields, len(r.GetFields())), Meta: Meta{CreateRevision: r.GetCreateRevision(), ModRevision: r.GetModRevision(), Version: r.GetVersion(), ExpiresAt: expiresOf(r.GetExpiresAt())}}
	for k, v := range r.GetFields() {
		sv, err := convert.Value(v)
		if err != nil {
			return Row{}, err
		}
		out.Fields[k] = sv
	}
	return out, nil
}

func fieldsPB(f Fields) map[string]*pb.Value {
	out := make(map[string]*pb.Value, len(f))
	for k, v := range f {
		out[k] = convert.ValueToPB(v)
	}
	return out
}

func valuesPB(vs []Value) []*pb.Value {
	out := make([]*pb.Value, len(vs))
	for i, v := range vs {
		out[i] = convert.ValueToPB(v)
	}
	return out
}

// ReadOption changes how a read is served.
type ReadOption func(*pb.ReadOptions)

// Stale serves the read from any member's memory without confirming
// leadership: faster, possibly behind the latest writes.
func Stale() ReadOption {
	return func(o *pb.ReadOptions) { o.Consistency = pb.Consistency_CONSISTENCY_STALE }
}

// MaxStaleness makes a stale read fail fast (ErrStale) on a member that
// has not heard from the leader within d.
func MaxStaleness(d time.Duration) ReadOption {
	return func(o *pb.ReadOptions) {
		o.Consistency = pb.Consistency_CONSISTENCY_STALE
		o.MaxStalenessMs = uint64(max(d.Milliseconds(), 1))
	}
}

// MinRevision makes a stale read wait until the member has applied at
// least rev (read-your-writes on any member: pass a write's revision).
func MinRevision(rev uint64) ReadOption {
	return func(o *pb.ReadOptions) {
		o.Consistency = pb.Consistency_CONSISTENCY_STALE
		o.MinRevision = rev
	}
}

func readOpts(opts []ReadOption) *pb.ReadOptions {
	o := &pb.ReadOptions{}
	for _, f := range opts {
		f(o)
	}
	return o
}

func isStale(o *pb.ReadOptions) bool { return o.Consistency == pb.Consistency_CONSISTENCY_STALE }

// WriteOption changes a write.
type WriteOption func(*writeOpts)

type writeOpts struct {
	expectedVersion uint64
	ttlMs           uint64
	clearTTL        bool
}

// IfVersion makes the write compare-and-set: it applies only if the row
// exists with exactly this version (else ErrVersionMismatch).
func IfVersion(v uint64) WriteOption { return func(o *writeOpts) { o.expectedVersion = v } }

// WithTTL makes the written row expire d after the write is applied
// (millisecond precision; rounded up). On insert and upsert the row
// otherwise never expires; on update it keeps its expiry.
func WithTTL(d time.Duration) WriteOption {
	return func(o *writeOpts) { o.ttlMs = uint64((max(d, 0) + time.Millisecond - 1) / time.Millisecond) }
}

// ClearTTL makes an update remove the row's expiry.
func ClearTTL() WriteOption { return func(o *writeOpts) { o.clearTTL = true } }

func wopts(opts []WriteOption) writeOpts {
	var o writeOpts
	for _, f := range opts {
		f(&o)
	}
	return o
}
