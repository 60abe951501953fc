package loadtest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
)

// Watchers holds many watch streams on one member, each over its own
// slice of the bench table's key space, so that each write matches about
// one watcher: the many-observers case (one per session, per entity).
// With MemdbTarget.StampWrites, the writes carry their start time and
// the watchers measure the delay from a write's start to its event.
type Watchers struct {
	cancel  context.CancelFunc
	conns   []*grpc.ClientConn
	wg      sync.WaitGroup
	mu      sync.Mutex
	delay   *hdrhistogram.Histogram // microseconds
	events  atomic.Int64
	errs    atomic.Int64
	started atomic.Int64
}

// StartWatchers opens n watch streams on the member at addr over conns
// connections and returns once every stream has started. keys is the
// bench table's key space.
// With idle, the ranges lie beyond the key space: no write matches, which
// separates the cost of holding streams from the cost of events.
func StartWatchers(ctx context.Context, addr string, n, conns, keys int, progress time.Duration, idle bool) (*Watchers, error) {
	wctx, cancel := context.WithCancel(ctx)
	w := &Watchers{cancel: cancel, delay: hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)}
	for range max(conns, 1) {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			w.Close()
			return nil, err
		}
		w.conns = append(w.conns, cc)
	}
	ready := make(chan error, n)
	for i := range n {
		lo, hi := i*keys/n, (i+1)*keys/n
		if idle {
			lo, hi = lo+keys, hi+keys
		}
		req := &pb.WatchRequest{Table: "bench", Range: &pb.KeyRange{
			Start: []*pb.Value{{Kind: &pb.Value_StringValue{StringValue: KeyName(lo)}}},
			End:   []*pb.Value{{Kind: &pb.Value_StringValue{StringValue: KeyName(hi)}}}},
			ProgressIntervalMs: uint32(progress / time.Millisecond), Read: &pb.ReadOptions{Consistency: pb.Consistency_CONSISTENCY_STALE}}
		cc := w.conns[i%len(w.conns)]
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			st, err := openRawWatch(wctx, cc, req)
			var m rawMsg
			if err == nil {
				err = st.RecvMsg(&m) // the first message: the stream is registered
			}
			ready <- err
			if err != nil {
				return
			}
			w.started.Add(1)
			for {
				if err := st.RecvMsg(&m); err != nil {
					if wctx.Err() == nil {
						w.errs.Add(1)
					}
					return
				}
				now := time.Now().UnixNano()
				stamps, err := eventStamps(m.b)
				if err != nil {
					w.errs.Add(1)
					return
				}
				w.events.Add(int64(len(stamps)))
				w.mu.Lock()
				for _, t := range stamps {
					if t > 0 && now > t {
						_ = w.delay.RecordValue((now - t) / 1000)
					}
				}
				w.mu.Unlock()
			}
		}()
	}
	for range n {
		select {
		case err := <-ready:
			if err != nil {
				w.Close()
				return nil, fmt.Errorf("starting a watch: %w", err)
			}
		case <-ctx.Done():
			w.Close()
			return nil, ctx.Err()
		}
	}
	return w, nil
}

// Reset clears the counters (after a warm-up).
func (w *Watchers) Reset() {
	w.mu.Lock()
	w.delay.Reset()
	w.mu.Unlock()
	w.events.Store(0)
}

// WatchStats summarizes what the watchers saw.
type WatchStats struct {
	Watchers int64
	Events   int64
	// Errors counts streams that ended while the run went on.
	Errors int64
	// Write start to event received, in the watching client.
	P50, P99, Max time.Duration
}

// Stats returns the figures since the last Reset.
func (w *Watchers) Stats() WatchStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	us := func(v int64) time.Duration { return time.Duration(v) * time.Microsecond }
	return WatchStats{Watchers: w.started.Load(), Events: w.events.Load(), Errors: w.errs.Load(),
		P50: us(w.delay.ValueAtQuantile(50)), P99: us(w.delay.ValueAtQuantile(99)), Max: us(w.delay.Max())}
}

// Close ends every stream.
func (w *Watchers) Close() {
	w.cancel()
	w.wg.Wait()
	for _, cc := range w.conns {
		_ = cc.Close()
	}
}

// The watchers decode only what they measure (each event's n field, the
// write's start time) from the raw bytes: with thousands of streams in the
// same process as the writers, decoding whole messages would make the
// load generator, not the server, the measured cost.

type rawMsg struct{ b []byte }

type rawCodec struct{ encoding.CodecV2 }

func (c rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if r, ok := v.(*rawMsg); ok {
		r.b = data.Materialize()
		return nil
	}
	return c.CodecV2.Unmarshal(data, v)
}

func openRawWatch(ctx context.Context, cc *grpc.ClientConn, req *pb.WatchRequest) (grpc.ClientStream, error) {
	st, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, pb.DataService_Watch_FullMethodName,
		grpc.ForceCodecV2(rawCodec{encoding.GetCodecV2("proto")}))
	if err != nil {
		return nil, err
	}
	if err := st.SendMsg(req); err != nil {
		return nil, err
	}
	return st, st.CloseSend()
}

// eventStamps returns the int field n of every event's row in a
// WatchResponse (0 where absent).
func eventStamps(b []byte) ([]int64, error) {
	var out []int64
	err := eachField(b, func(num protowire.Number, v []byte, _ uint64) error {
		if num != 3 { // events
			return nil
		}
		var stamp int64
		err := eachField(v, func(num protowire.Number, v []byte, _ uint64) error {
			if num != 3 { // row
				return nil
			}
			return eachField(v, func(num protowire.Number, v []byte, _ uint64) error {
				if num != 1 { // fields map entry
					return nil
				}
				var key string
				var val []byte
				if err := eachField(v, func(num protowire.Number, v []byte, _ uint64) error {
					switch num {
					case 1:
						key = string(v)
					case 2:
						val = v
					}
					return nil
				}); err != nil || key != "n" {
					return err
				}
				return eachField(val, func(num protowire.Number, _ []byte, x uint64) error {
					if num == 3 { // int_value
						stamp = int64(x)
					}
					return nil
				})
			})
		})
		out = append(out, stamp)
		return err
	})
	return out, err
}

// eachField calls fn with each field of a message: the bytes of a
// length-delimited field, or the value of a varint.
func eachField(b []byte, fn func(num protowire.Number, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errors.New("bad tag")
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return errors.New("bad field")
		}
		b = b[n:]
		if err := fn(num, v, x); err != nil {
			return err
		}
	}
	return nil
}
