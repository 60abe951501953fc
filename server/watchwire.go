package server

import (
	"math"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/memdbd/memdbd/api/codec"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/api/wire"
	"github.com/memdbd/memdbd/store"
	"github.com/memdbd/memdbd/watch"
)

// Watch events are written to the wire by hand, from the store's row
// encoding straight to protobuf bytes, rather than by building
// memdb.v1.Event messages (a map and a Value message per field) and
// marshaling them through reflection. With thousands of watch streams the
// event path is the server's hottest loop after the log itself: the
// generic path allocated a dozen objects per event and, being deeply
// recursive, regrew the stacks of the idle stream goroutines that the
// garbage collector had shrunk. The bytes are the exact encoding of a
// memdb.v1.WatchResponse (TestWatchWireMatchesProto checks them against
// the generated code for every value kind).

// Field numbers of the messages written here (api/proto/memdb/v1) that
// the SDK does not read (the rest are in api/wire).
const (
	wireRespEvents   = 3
	wireRespRevision = 6
	wireRespFragment = 8

	wireEventType     = 1
	wireEventRevision = 2
	wireEventRow      = 3
	wireEventPrev     = 4
	wireEventExpired  = 5
)

// rawMessage is a message already in wire form.
type rawMessage struct{ b []byte }

// rawCodec is the codec of api/codec, passing rawMessage bytes through as they
// are.
type rawCodec struct{ encoding.CodecV2 }

func newRawCodec() rawCodec { return rawCodec{codec.New()} }

func (c rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(*rawMessage); ok {
		return mem.BufferSlice{mem.SliceBuffer(r.b)}, nil
	}
	return c.CodecV2.Marshal(v)
}

// watchEncoder writes watch events in wire form, reusing its scratch
// buffers from one event to the next.
type watchEncoder struct {
	pk      string // the primary key's name
	prev    bool   // events carry the previous row
	ev, row []byte
}

// event returns the wire form of e as a memdb.v1.Event, valid until the
// next call.
func (c *watchEncoder) event(e *watch.Event) ([]byte, error) {
	var err error
	ev := c.ev[:0]
	if e.Row == "" {
		ev = protowire.AppendTag(ev, wireEventType, protowire.VarintType)
		ev = protowire.AppendVarint(ev, uint64(pb.Event_TYPE_DELETE))
	}
	ev = appendUintField(ev, wireEventRevision, e.Rev)
	if e.Row != "" {
		c.row, err = appendRow(c.row[:0], e.Row, c.pk)
	} else {
		c.row, err = appendKeyRow(c.row[:0], e.Key, c.pk)
	}
	if err != nil {
		return nil, err
	}
	ev = protowire.AppendTag(ev, wireEventRow, protowire.BytesType)
	ev = protowire.AppendBytes(ev, c.row)
	if c.prev && e.Prev != "" {
		if c.row, err = appendRow(c.row[:0], e.Prev, c.pk); err != nil {
			return nil, err
		}
		ev = protowire.AppendTag(ev, wireEventPrev, protowire.BytesType)
		ev = protowire.AppendBytes(ev, c.row)
	}
	if e.Expired {
		ev = protowire.AppendTag(ev, wireEventExpired, protowire.VarintType)
		ev = protowire.AppendVarint(ev, 1)
	}
	c.ev = ev
	return ev, nil
}

// watchTrailerBytes bounds what appendWatchTrailer appends.
const watchTrailerBytes = 16

// appendWatchTrailer ends a WatchResponse of events: the revision
// delivered through, and whether the next message holds more events of
// the revision of its last event (then the revision is 0, unset: it is not
// complete).
func appendWatchTrailer(b []byte, rev uint64, fragment bool) []byte {
	b = appendUintField(b, wireRespRevision, rev)
	if fragment {
		b = protowire.AppendTag(b, wireRespFragment, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	return b
}

// watchEventsSize estimates the wire size of events, to size buffers.
func watchEventsSize(evs []watch.Event, prev bool) int {
	n := 0
	for i := range evs {
		n += 2*len(evs[i].Row) + len(evs[i].Key) + 64
		if prev {
			n += 2 * len(evs[i].Prev)
		}
	}
	return n
}

// encodeWatchEvents returns the wire form of a WatchResponse holding these
// events, revision and fragment flag.
func encodeWatchEvents(dst []byte, evs []watch.Event, pk string, prev bool, rev uint64, fragment bool) ([]byte, error) {
	if dst == nil {
		dst = make([]byte, 0, watchEventsSize(evs, prev)+watchTrailerBytes)
	}
	c := watchEncoder{pk: pk, prev: prev}
	for i := range evs {
		ev, err := c.event(&evs[i])
		if err != nil {
			return nil, err
		}
		dst = protowire.AppendTag(dst, wireRespEvents, protowire.BytesType)
		dst = protowire.AppendBytes(dst, ev)
	}
	return appendWatchTrailer(dst, rev, fragment), nil
}

func appendUintField(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b // implicit presence: zero is not written
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

// appendRow appends the fields of a memdb.v1.Row for an encoded row.
func appendRow(b []byte, raw, pk string) ([]byte, error) {
	r, err := store.DecodeRow(raw, pk)
	if err != nil {
		return nil, err
	}
	return appendRowFields(b, r), nil
}

// appendRowFields appends the fields of a memdb.v1.Row for r.
func appendRowFields(b []byte, r store.Row) []byte {
	for _, f := range r.Fields {
		b = appendEntry(b, f.Name, f.Value)
	}
	b = appendUintField(b, wire.RowCreate, r.CreateRevision)
	b = appendUintField(b, wire.RowMod, r.ModRevision)
	b = appendUintField(b, wire.RowVersion, r.Version)
	if r.ExpiresAt != 0 {
		b = protowire.AppendTag(b, wire.RowExpires, protowire.BytesType)
		b = protowire.AppendBytes(b, appendTimestamp(nil, r.ExpiresAt))
	}
	return b
}

// appendKeyRow appends a Row holding only the primary key (deletes).
func appendKeyRow(b []byte, key, pk string) ([]byte, error) {
	v, err := store.DecodeKey(key)
	if err != nil {
		return nil, err
	}
	return appendEntry(b, pk, v), nil
}

func appendEntry(b []byte, name string, v store.Value) []byte {
	vn := sizeValue(v)
	n := protowire.SizeTag(wire.EntryKey) + protowire.SizeBytes(len(name)) + protowire.SizeTag(wire.EntryValue) + protowire.SizeBytes(vn)
	b = protowire.AppendTag(b, wire.RowFields, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(n))
	b = protowire.AppendTag(b, wire.EntryKey, protowire.BytesType)
	b = protowire.AppendString(b, name)
	b = protowire.AppendTag(b, wire.EntryValue, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(vn))
	return appendValue(b, v)
}

// sizeValue is the length appendValue writes, so that an entry is written
// in one pass without a scratch buffer.
func sizeValue(v store.Value) int {
	switch v.Kind() {
	case store.KindBool:
		return 2
	case store.KindInt:
		return 1 + protowire.SizeVarint(uint64(v.AsInt()))
	case store.KindDouble:
		return 9
	case store.KindString, store.KindBytes:
		return 1 + protowire.SizeBytes(len(v.AsString()))
	case store.KindTimestamp:
		return 1 + protowire.SizeBytes(len(appendTimestamp(make([]byte, 0, 24), v.AsTimeNanos())))
	}
	return 2
}

func appendValue(b []byte, v store.Value) []byte {
	switch v.Kind() {
	case store.KindBool:
		b = protowire.AppendTag(b, wire.ValBool, protowire.VarintType)
		return protowire.AppendVarint(b, protowire.EncodeBool(v.AsBool()))
	case store.KindInt:
		b = protowire.AppendTag(b, wire.ValInt, protowire.VarintType)
		return protowire.AppendVarint(b, uint64(v.AsInt()))
	case store.KindDouble:
		b = protowire.AppendTag(b, wire.ValDouble, protowire.Fixed64Type)
		return protowire.AppendFixed64(b, math.Float64bits(v.AsDouble()))
	case store.KindString:
		b = protowire.AppendTag(b, wire.ValString, protowire.BytesType)
		return protowire.AppendString(b, v.AsString())
	case store.KindBytes:
		b = protowire.AppendTag(b, wire.ValBytes, protowire.BytesType)
		return protowire.AppendString(b, v.AsString())
	case store.KindTimestamp:
		b = protowire.AppendTag(b, wire.ValTimestamp, protowire.BytesType)
		return protowire.AppendBytes(b, appendTimestamp(nil, v.AsTimeNanos()))
	}
	// A oneof member is written even at its zero value: it says which
	// member is set.
	b = protowire.AppendTag(b, wire.ValNull, protowire.VarintType)
	return protowire.AppendVarint(b, 0)
}

// appendTimestamp appends a google.protobuf.Timestamp's fields: whole
// seconds rounded down and non-negative nanoseconds, as timestamppb does.
func appendTimestamp(b []byte, unixNanos int64) []byte {
	sec, nsec := unixNanos/1e9, unixNanos%1e9
	if nsec < 0 {
		sec, nsec = sec-1, nsec+1e9
	}
	b = appendUintField(b, wire.TsSeconds, uint64(sec))
	return appendUintField(b, wire.TsNanos, uint64(nsec))
}
