// Package codec is the gRPC codec of memdbd's server and client SDK: the
// standard proto codec, except that messages with generated
// reflection-free methods (api/proto/*_vtproto.pb.go) are encoded and
// decoded through them.
//
// Why: the generic protobuf runtime walks map<string, Value> fields and
// the Value oneof through reflection. Under 64 concurrent writers that
// walk (marshal and unmarshal of rows, on the edge and in the command log)
// took about 15% of the leader's CPU, more than any other single cost
// apart from fsync. The generated methods produce the same wire bytes.
package codec

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the fallback codec
	"google.golang.org/grpc/mem"
)

// Name is the content subtype: clients and servers that use the standard
// proto codec talk to this one unchanged.
const Name = "proto"

// Message is what the generated fast methods provide.
type Message interface {
	SizeVT() int
	MarshalToSizedBufferVT([]byte) (int, error)
	UnmarshalVT([]byte) error
}

// Codec implements encoding.CodecV2.
type Codec struct{ fallback encoding.CodecV2 }

// New returns the codec.
func New() *Codec { return &Codec{fallback: encoding.GetCodecV2(Name)} }

// Name implements encoding.CodecV2.
func (c *Codec) Name() string { return Name }

// Marshal implements encoding.CodecV2.
func (c *Codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(Message)
	if !ok {
		return c.fallback.Marshal(v)
	}
	size := m.SizeVT()
	if mem.IsBelowBufferPoolingThreshold(size) {
		buf := make([]byte, size)
		if _, err := m.MarshalToSizedBufferVT(buf); err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(buf)}, nil
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	if _, err := m.MarshalToSizedBufferVT((*buf)[:size]); err != nil {
		pool.Put(buf)
		return nil, err
	}
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

// Unmarshaler is what decoding needs: the generated messages, and replies
// decoded by hand (the client SDK's BatchGet).
type Unmarshaler interface {
	UnmarshalVT([]byte) error
}

// Unmarshal implements encoding.CodecV2. The generated methods copy every
// string and bytes field, so the buffer is returned to the pool at once;
// other Unmarshalers must copy what they keep too.
func (c *Codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(Unmarshaler)
	if !ok {
		return c.fallback.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	if err := m.UnmarshalVT(buf.ReadOnlyData()); err != nil {
		return fmt.Errorf("proto: %w", err)
	}
	return nil
}
