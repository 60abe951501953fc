package server

import (
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/api/wire"
	"github.com/memdbd/memdbd/store"
)

// Point reads (Get, BatchGet) are answered in wire form written by hand
// from the store's rows, like watch events (watchwire.go): building a
// memdb.v1.Row per row (a map and a Value message per field) and
// marshaling it took about a tenth of a member's CPU under 64 readers,
// most of it allocation and the garbage collector's share of it.
//
// The bytes travel as the unknown fields of an otherwise empty response
// message, which the generated marshaler writes out verbatim: the handler
// keeps its generated signature, and the client decodes ordinary fields.
// TestReadWireMatchesProto checks them against the generated code.

// Field numbers of the messages written here (api/proto/memdb/v1).
const (
	wireHeaderRevision = 1
	wireHeaderNodeID   = 2
	wireHeaderTerm     = 3

	wireGetHeader = 1
	wireGetFound  = 2
	wireGetRow    = 3
)

// withWire returns m carrying b, a wire encoding of m's fields.
func withWire[M proto.Message](m M, b []byte) M {
	m.ProtoReflect().SetUnknown(b)
	return m
}

// headerFieldsSize is the length of a ResponseHeader's fields.
func headerFieldsSize(h *pb.ResponseHeader) int {
	n := sizeUintField(wireHeaderRevision, h.Revision) + sizeUintField(wireHeaderTerm, h.RaftTerm)
	if h.NodeId != "" {
		n += protowire.SizeTag(wireHeaderNodeID) + protowire.SizeBytes(len(h.NodeId))
	}
	return n
}

// sizeHeader is the length appendHeader writes for h as field num.
func sizeHeader(num protowire.Number, h *pb.ResponseHeader) int {
	return protowire.SizeTag(num) + protowire.SizeBytes(headerFieldsSize(h))
}

// appendHeader appends a ResponseHeader as field num.
func appendHeader(b []byte, num protowire.Number, h *pb.ResponseHeader) []byte {
	n := headerFieldsSize(h)
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(n))
	b = appendUintField(b, wireHeaderRevision, h.Revision)
	if h.NodeId != "" {
		b = protowire.AppendTag(b, wireHeaderNodeID, protowire.BytesType)
		b = protowire.AppendString(b, h.NodeId)
	}
	return appendUintField(b, wireHeaderTerm, h.RaftTerm)
}

// encodeGet returns the wire form of a GetResponse.
func encodeGet(h *pb.ResponseHeader, r store.Row, found bool) []byte {
	// Measured first, the response is allocated once and the row written
	// in place: a large row is neither regrown nor copied.
	rowSize := 0
	if found {
		rowSize = sizeRowFields(r)
	}
	b := make([]byte, 0, getSize(h, rowSize, found))
	b = appendHeader(b, wireGetHeader, h)
	if found {
		b = protowire.AppendTag(b, wireGetFound, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
		b = protowire.AppendTag(b, wireGetRow, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(rowSize))
		b = appendRowFields(b, r)
	}
	return b
}

// sizeGet is the length encodeGet writes.
func sizeGet(h *pb.ResponseHeader, r store.Row, found bool) int {
	if !found {
		return getSize(h, 0, false)
	}
	return getSize(h, sizeRowFields(r), true)
}

func getSize(h *pb.ResponseHeader, rowSize int, found bool) int {
	n := sizeHeader(wireGetHeader, h)
	if found {
		n += protowire.SizeTag(wireGetFound) + 1 + protowire.SizeTag(wireGetRow) + protowire.SizeBytes(rowSize)
	}
	return n
}

// batchGetWire builds the wire form of a BatchGetResponse, result by
// result.
type batchGetWire struct {
	b []byte
}

// newBatchGetWire starts a response with room for size bytes: its exact
// size (sizeHeader and sizeBatchResult) when the rows are known, so that
// a large answer is allocated once rather than regrown by doubling.
func newBatchGetWire(h *pb.ResponseHeader, size int) *batchGetWire {
	w := &batchGetWire{b: make([]byte, 0, size)}
	w.b = appendHeader(w.b, wire.BatchHeader, h)
	return w
}

// add appends the next result. The lengths are measured first, so that
// the row is written in place rather than built aside and copied.
func (w *batchGetWire) add(r store.Row, found bool) {
	w.b = protowire.AppendTag(w.b, wire.BatchResults, protowire.BytesType)
	if !found {
		w.b = protowire.AppendVarint(w.b, 0)
		return
	}
	rowSize := sizeRowFields(r)
	w.b = protowire.AppendVarint(w.b, uint64(resultSize(rowSize)))
	w.b = protowire.AppendTag(w.b, wire.ResultFound, protowire.VarintType)
	w.b = protowire.AppendVarint(w.b, 1)
	w.b = protowire.AppendTag(w.b, wire.ResultRow, protowire.BytesType)
	w.b = protowire.AppendVarint(w.b, uint64(rowSize))
	w.b = appendRowFields(w.b, r)
}

// resultSize is the length of a found GetResult's fields for a row of
// rowSize bytes.
func resultSize(rowSize int) int {
	return protowire.SizeTag(wire.ResultFound) + 1 + protowire.SizeTag(wire.ResultRow) + protowire.SizeBytes(rowSize)
}

// sizeBatchResult is the length batchGetWire.add appends for a result.
func sizeBatchResult(r store.Row, found bool) int {
	n := 0
	if found {
		n = resultSize(sizeRowFields(r))
	}
	return protowire.SizeTag(wire.BatchResults) + protowire.SizeBytes(n)
}

// sizeRowFields is the length appendRowFields writes for r, which is
// also the size of the memdb.v1.Row the generated code would build from
// it (the order of map entries changes nothing): responses are measured
// against the response limit before they are built.
func sizeRowFields(r store.Row) int {
	n := 0
	for _, f := range r.Fields {
		n += sizeEntry(f.Name, f.Value)
	}
	n += sizeUintField(wire.RowCreate, r.CreateRevision) + sizeUintField(wire.RowMod, r.ModRevision) + sizeUintField(wire.RowVersion, r.Version)
	if r.ExpiresAt != 0 {
		n += protowire.SizeTag(wire.RowExpires) + protowire.SizeBytes(sizeTimestamp(r.ExpiresAt))
	}
	return n
}

// sizeEntry is the length appendEntry writes.
func sizeEntry(name string, v store.Value) int {
	n := protowire.SizeTag(wire.EntryKey) + protowire.SizeBytes(len(name)) + protowire.SizeTag(wire.EntryValue) + protowire.SizeBytes(sizeValue(v))
	return protowire.SizeTag(wire.RowFields) + protowire.SizeBytes(n)
}

// sizeUintField is the length appendUintField writes.
func sizeUintField(num protowire.Number, v uint64) int {
	if v == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeVarint(v)
}

// sizeTimestamp is the length appendTimestamp writes.
func sizeTimestamp(unixNanos int64) int {
	sec, nsec := unixNanos/1e9, unixNanos%1e9
	if nsec < 0 {
		sec, nsec = sec-1, nsec+1e9
	}
	return sizeUintField(wire.TsSeconds, uint64(sec)) + sizeUintField(wire.TsNanos, uint64(nsec))
}
