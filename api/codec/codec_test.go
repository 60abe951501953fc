package codec

import (
	"math/rand/v2"
	"strings"
	"testing"

	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// ourMessages lists every message type of the API and the command log.
func ourMessages(t testing.TB) []protoreflect.MessageType {
	var out []protoreflect.MessageType
	protoregistry.GlobalTypes.RangeMessages(func(mt protoreflect.MessageType) bool {
		name := string(mt.Descriptor().FullName())
		if strings.HasPrefix(name, "memdb.v1.") || strings.HasPrefix(name, "memdb.command.v1.") {
			out = append(out, mt)
		}
		return true
	})
	if len(out) < 40 {
		t.Fatalf("found only %d message types", len(out))
	}
	// Make sure both packages are linked in and counted.
	_, _ = pb.Value{}, cmdpb.Envelope{}
	return out
}

// fill sets random values in m's fields, recursing to depth.
func fill(r *rand.Rand, m protoreflect.Message, depth int) {
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if fd.ContainingOneof() != nil && !fd.ContainingOneof().IsSynthetic() {
			continue // set below, one per oneof
		}
		if r.IntN(3) == 0 {
			continue
		}
		setField(r, m, fd, depth)
	}
	oneofs := m.Descriptor().Oneofs()
	for i := 0; i < oneofs.Len(); i++ {
		od := oneofs.Get(i)
		if od.IsSynthetic() || r.IntN(4) == 0 {
			continue
		}
		setField(r, m, od.Fields().Get(r.IntN(od.Fields().Len())), depth)
	}
}

func setField(r *rand.Rand, m protoreflect.Message, fd protoreflect.FieldDescriptor, depth int) {
	switch {
	case fd.IsList():
		l := m.Mutable(fd).List()
		for n := r.IntN(4); n > 0; n-- {
			if fd.Kind() == protoreflect.MessageKind {
				if depth <= 0 {
					return
				}
				e := l.NewElement()
				fill(r, e.Message(), depth-1)
				l.Append(e)
			} else {
				l.Append(scalar(r, fd))
			}
		}
	case fd.IsMap():
		mp := m.Mutable(fd).Map()
		for n := r.IntN(4); n > 0; n-- {
			k := scalar(r, fd.MapKey()).MapKey()
			if fd.MapValue().Kind() == protoreflect.MessageKind {
				if depth <= 0 {
					return
				}
				v := mp.NewValue()
				fill(r, v.Message(), depth-1)
				mp.Set(k, v)
			} else {
				mp.Set(k, scalar(r, fd.MapValue()))
			}
		}
	case fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind:
		if depth <= 0 {
			return
		}
		fill(r, m.Mutable(fd).Message(), depth-1)
	default:
		m.Set(fd, scalar(r, fd))
	}
}

func scalar(r *rand.Rand, fd protoreflect.FieldDescriptor) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(r.IntN(2) == 1)
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(r.IntN(6)))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(r.Uint32()))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(r.Uint32())
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(int64(r.Uint64()))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(r.Uint64())
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(r.Float32())
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(r.NormFloat64())
	case protoreflect.StringKind:
		// Arbitrary bytes: the API does not validate UTF-8 while decoding.
		b := make([]byte, r.IntN(12))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return protoreflect.ValueOfString(string(b))
	case protoreflect.BytesKind:
		b := make([]byte, r.IntN(40))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return protoreflect.ValueOfBytes(b)
	}
	panic("unhandled kind " + fd.Kind().String())
}

// TestMatchesProto checks, for random messages of every type, that the
// generated methods and the generic runtime agree on size and read each
// other's bytes back to an equal message.
func TestMatchesProto(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	c := New()
	for _, mt := range ourMessages(t) {
		for range 200 {
			m := mt.New().Interface()
			fill(r, m.ProtoReflect(), 3)
			vt, ok := m.(Message)
			if !ok {
				t.Fatalf("%s has no generated methods", mt.Descriptor().FullName())
			}
			if a, b := vt.SizeVT(), proto.Size(m); a != b {
				t.Fatalf("%s: SizeVT %d, proto.Size %d", mt.Descriptor().FullName(), a, b)
			}
			// Generic bytes, generated decoder.
			std, err := proto.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			got := mt.New().Interface()
			if err := got.(Message).UnmarshalVT(std); err != nil {
				t.Fatalf("%s: UnmarshalVT of proto.Marshal: %v", mt.Descriptor().FullName(), err)
			}
			if !proto.Equal(got, m) {
				t.Fatalf("%s: UnmarshalVT(proto.Marshal(m)) != m\n got %v\nwant %v", mt.Descriptor().FullName(), got, m)
			}
			// Generated bytes through the codec, generic decoder.
			bs, err := c.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			got2 := mt.New().Interface()
			if err := proto.Unmarshal(bs.Materialize(), got2); err != nil {
				t.Fatalf("%s: proto.Unmarshal of MarshalVT: %v", mt.Descriptor().FullName(), err)
			}
			if !proto.Equal(got2, m) {
				t.Fatalf("%s: proto.Unmarshal(MarshalVT(m)) != m\n got %v\nwant %v", mt.Descriptor().FullName(), got2, m)
			}
			// And back through the codec's decoder.
			got3 := mt.New().Interface()
			if err := c.Unmarshal(bs, got3); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got3, m) {
				t.Fatalf("%s: codec round trip differs", mt.Descriptor().FullName())
			}
			bs.Free()
		}
	}
}

// TestFallback: messages without generated methods go through the
// standard codec.
func TestFallback(t *testing.T) {
	c := New()
	in := &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}
	bs, err := c.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out healthpb.HealthCheckResponse
	if err := c.Unmarshal(bs, &out); err != nil || out.Status != in.Status {
		t.Fatalf("round trip: %v %v", err, out.Status)
	}
	// A large message is marshaled into a pooled buffer.
	big := &pb.Value{Kind: &pb.Value_BytesValue{BytesValue: make([]byte, 1<<16)}}
	bs, err = c.Marshal(big)
	if err != nil || bs.Len() != proto.Size(big) {
		t.Fatalf("large: %v, %d bytes", err, bs.Len())
	}
	var back pb.Value
	if err := c.Unmarshal(bs, &back); err != nil || !proto.Equal(&back, big) {
		t.Fatalf("large round trip: %v", err)
	}
	bs.Free()
}

// FuzzUnmarshal feeds arbitrary bytes to the generated decoder of the log
// entry and of the write request: it must not panic, and whatever both
// decoders accept must decode to equal messages.
func FuzzUnmarshal(f *testing.F) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 20 {
		env := &cmdpb.Envelope{}
		fill(r, env.ProtoReflect(), 4)
		b, _ := proto.Marshal(env)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, mt := range []protoreflect.MessageType{(&cmdpb.Envelope{}).ProtoReflect().Type(), (&pb.UpsertRequest{}).ProtoReflect().Type(), (&pb.TxnRequest{}).ProtoReflect().Type()} {
			vt, std := mt.New().Interface(), mt.New().Interface()
			errVT := vt.(Message).UnmarshalVT(b)
			errStd := proto.Unmarshal(b, std)
			// Unknown fields are kept as the bytes that carried them, and
			// the two keep a non-minimal tag differently; neither is read.
			discardUnknown(vt.ProtoReflect())
			discardUnknown(std.ProtoReflect())
			if errVT == nil && errStd == nil && !proto.Equal(vt, std) {
				t.Fatalf("%s: decoders disagree\n vt %v\nstd %v", mt.Descriptor().FullName(), vt, std)
			}
		}
	})
}

func discardUnknown(m protoreflect.Message) {
	if !m.IsValid() {
		return // a nil map value
	}
	m.SetUnknown(nil)
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Kind() == protoreflect.MessageKind:
			for i := 0; i < v.List().Len(); i++ {
				discardUnknown(v.List().Get(i).Message())
			}
		case fd.IsMap() && fd.MapValue().Kind() == protoreflect.MessageKind:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				discardUnknown(mv.Message())
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Kind() == protoreflect.MessageKind:
			discardUnknown(v.Message())
		}
		return true
	})
}
