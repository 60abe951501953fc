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

// appendHeader appends a ResponseHeader as field num.
func appendHeader(b []byte, num protowire.Number, h *pb.ResponseHeader) []byte {
	n := 0
	if h.Revision != 0 {
		n += protowire.SizeTag(wireHeaderRevision) + protowire.SizeVarint(h.Revision)
	}
	if h.NodeId != "" {
		n += protowire.SizeTag(wireHeaderNodeID) + protowire.SizeBytes(len(h.NodeId))
	}
	if h.RaftTerm != 0 {
		n += protowire.SizeTag(wireHeaderTerm) + protowire.SizeVarint(h.RaftTerm)
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(n))
	b = appendUintField(b, wireHeaderRevision, h.Revision)
	if h.NodeId != "" {
		b = protowire.AppendTag(b, wireHeaderNodeID, protowire.BytesType)
		b = protowire.AppendString(b, h.NodeId)
	}
	return appendUintField(b, wireHeaderTerm, h.RaftTerm)
}

// appendMessage appends the message in msg as field num.
func appendMessage(b []byte, num protowire.Number, msg []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, msg)
}

// encodeGet returns the wire form of a GetResponse.
func encodeGet(h *pb.ResponseHeader, r store.Row, found bool) []byte {
	b := make([]byte, 0, 512)
	b = appendHeader(b, wireGetHeader, h)
	if found {
		b = protowire.AppendTag(b, wireGetFound, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
		b = appendMessage(b, wireGetRow, appendRowFields(nil, r))
	}
	return b
}

// batchGetWire builds the wire form of a BatchGetResponse, result by
// result.
type batchGetWire struct {
	b, result, row []byte
}

func newBatchGetWire(h *pb.ResponseHeader, n int) *batchGetWire {
	// Room for n rows of a few hundred bytes; append grows it if need be.
	w := &batchGetWire{b: make([]byte, 0, 64+n*320)}
	w.b = appendHeader(w.b, wire.BatchHeader, h)
	return w
}

// add appends the next result.
func (w *batchGetWire) add(r store.Row, found bool) {
	w.result = w.result[:0]
	if found {
		w.result = protowire.AppendTag(w.result, wire.ResultFound, protowire.VarintType)
		w.result = protowire.AppendVarint(w.result, 1)
		w.row = appendRowFields(w.row[:0], r)
		w.result = appendMessage(w.result, wire.ResultRow, w.row)
	}
	w.b = appendMessage(w.b, wire.BatchResults, w.result)
}
