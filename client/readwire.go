package client

import (
	"errors"
	"fmt"
	"math"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/memdbd/memdbd/api/codec"
	"github.com/memdbd/memdbd/api/convert"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/api/wire"
	"github.com/memdbd/memdbd/store"
)

// BatchGet answers are decoded by hand, straight from the wire into the
// SDK's rows, instead of into memdb.v1 messages first.
//
// Why: the generated decoder builds, per row, a map of *pb.Value, a Value
// message and a oneof wrapper per field, and rowOf then builds the SDK's
// map again. Under 64 readers the load generator's process, which is the
// SDK, used more CPU than any member, and decoding rows was the largest
// part of it after the transport. The result is the same as the generated
// decoder's followed by rowOf (TestBatchGetWireMatchesGenerated), unknown
// fields skipped as it skips them; only input no server sends (a result
// with two rows, a known field of the wrong wire type, a field name given
// twice with a bad value first) may be read differently.

var errWire = errors.New("malformed response")

// replyCodec decodes hand-decoded replies whatever codec the dial options
// name.
var replyCodec = codec.New()

// batchGetReply is a BatchGetResponse decoded into rows: nil where a key
// was not found.
type batchGetReply struct{ rows []*Row }

// UnmarshalVT is what the codec calls to decode the response.
func (r *batchGetReply) UnmarshalVT(b []byte) error {
	r.rows = r.rows[:0]
	return eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if num != wire.BatchResults || typ != protowire.BytesType {
			return nil
		}
		row, err := decodeResult(v)
		if err != nil {
			return err
		}
		r.rows = append(r.rows, row)
		return nil
	})
}

func decodeResult(b []byte) (*Row, error) {
	found := false
	var rowBytes []byte
	hasRow := false
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, n uint64) error {
		switch {
		case num == wire.ResultFound && typ == protowire.VarintType:
			found = n != 0
		case num == wire.ResultRow && typ == protowire.BytesType:
			// A message field given twice is merged; rows come once.
			if hasRow {
				return fmt.Errorf("%w: a result with two rows", errWire)
			}
			rowBytes, hasRow = v, true
		}
		return nil
	})
	if err != nil || !found {
		return nil, err
	}
	row := &Row{}
	if err := decodeRow(rowBytes, row); err != nil {
		return nil, err
	}
	return row, nil
}

func decodeRow(b []byte, row *Row) error {
	row.Fields = Fields{}
	return eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, n uint64) error {
		switch {
		case num == wire.RowFields && typ == protowire.BytesType:
			name, val, err := decodeEntry(v)
			if err != nil {
				return err
			}
			row.Fields[name] = val // a repeated key: the last wins, as in a map
		case num == wire.RowCreate && typ == protowire.VarintType:
			row.CreateRevision = n
		case num == wire.RowMod && typ == protowire.VarintType:
			row.ModRevision = n
		case num == wire.RowVersion && typ == protowire.VarintType:
			row.Version = n
		case num == wire.RowExpires && typ == protowire.BytesType:
			sec, nanos, err := decodeTimestamp(v)
			if err != nil {
				return err
			}
			row.ExpiresAt = time.Unix(sec, int64(nanos)).UTC()
		}
		return nil
	})
}

// decodeEntry decodes a map entry of Row.fields; no value reads as null.
func decodeEntry(b []byte) (name string, val store.Value, err error) {
	var raw []byte
	set := false
	if err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		switch {
		case num == wire.EntryKey && typ == protowire.BytesType:
			name = string(v)
		case num == wire.EntryValue && typ == protowire.BytesType:
			raw, set = v, true
		}
		return nil
	}); err != nil {
		return "", store.Value{}, err
	}
	if !set {
		return name, store.Null(), nil
	}
	val, err = decodeValue(raw)
	return name, val, err
}

// decodeValue decodes a memdb.v1.Value as convert.Value would accept it.
func decodeValue(b []byte) (store.Value, error) {
	val := store.Null()
	var err error
	ferr := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, n uint64) error {
		// A oneof given several times keeps the last.
		switch {
		case num == wire.ValNull && typ == protowire.VarintType:
			val, err = store.Null(), nil
		case num == wire.ValString && typ == protowire.BytesType:
			val, err = store.String(string(v)), nil
		case num == wire.ValInt && typ == protowire.VarintType:
			val, err = store.Int(int64(n)), nil
		case num == wire.ValDouble && typ == protowire.Fixed64Type:
			d := math.Float64frombits(n)
			if math.IsNaN(d) {
				val, err = store.Value{}, fmt.Errorf("%w: NaN is not a storable double", convert.ErrInvalid)
			} else {
				val, err = store.Double(d), nil
			}
		case num == wire.ValBool && typ == protowire.VarintType:
			val, err = store.Bool(n != 0), nil
		case num == wire.ValBytes && typ == protowire.BytesType:
			val, err = store.Bytes(v), nil
		case num == wire.ValTimestamp && typ == protowire.BytesType:
			sec, nanos, terr := decodeTimestamp(v)
			if terr != nil {
				return terr
			}
			val, err = timestampValue(sec, nanos)
		}
		return nil
	})
	if ferr != nil {
		return store.Value{}, ferr
	}
	return val, err
}

// timestampValue applies convert.Value's rules for timestamps.
func timestampValue(sec int64, nanos int32) (store.Value, error) {
	return convert.Value(&pb.Value{Kind: &pb.Value_TimestampValue{TimestampValue: &timestamppb.Timestamp{Seconds: sec, Nanos: nanos}}})
}

func decodeTimestamp(b []byte) (sec int64, nanos int32, err error) {
	err = eachField(b, func(num protowire.Number, typ protowire.Type, _ []byte, n uint64) error {
		switch {
		case num == wire.TsSeconds && typ == protowire.VarintType:
			sec = int64(n)
		case num == wire.TsNanos && typ == protowire.VarintType:
			nanos = int32(n)
		}
		return nil
	})
	return sec, nanos, err
}

// eachField calls fn with every field of a message: its number and type,
// the bytes of a length-delimited field, the value of a varint or fixed
// one. Groups and malformed input fail.
func eachField(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, n uint64) error) error {
	for len(b) > 0 {
		num, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return fmt.Errorf("%w: %v", errWire, protowire.ParseError(l))
		}
		b = b[l:]
		var v []byte
		var n uint64
		switch typ {
		case protowire.VarintType:
			n, l = protowire.ConsumeVarint(b)
		case protowire.Fixed64Type:
			n, l = protowire.ConsumeFixed64(b)
		case protowire.Fixed32Type:
			var n32 uint32
			n32, l = protowire.ConsumeFixed32(b)
			n = uint64(n32)
		case protowire.BytesType:
			v, l = protowire.ConsumeBytes(b)
		default:
			l = protowire.ConsumeFieldValue(num, typ, b)
		}
		if l < 0 {
			return fmt.Errorf("%w: %v", errWire, protowire.ParseError(l))
		}
		b = b[l:]
		if err := fn(num, typ, v, n); err != nil {
			return err
		}
	}
	return nil
}
