package loadtest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

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
func StartWatchers(ctx context.Context, addr string, n, conns, keys int, progress time.Duration) (*Watchers, error) {
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
		req := &pb.WatchRequest{Table: "bench", Range: &pb.KeyRange{
			Start: []*pb.Value{{Kind: &pb.Value_StringValue{StringValue: KeyName(lo)}}},
			End:   []*pb.Value{{Kind: &pb.Value_StringValue{StringValue: KeyName(hi)}}}},
			ProgressIntervalMs: uint32(progress / time.Millisecond), Read: &pb.ReadOptions{Consistency: pb.Consistency_CONSISTENCY_STALE}}
		dc := pb.NewDataServiceClient(w.conns[i%len(w.conns)])
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			st, err := dc.Watch(wctx, req)
			if err == nil {
				_, err = st.Recv() // the first message: the stream is registered
			}
			ready <- err
			if err != nil {
				return
			}
			w.started.Add(1)
			for {
				m, err := st.Recv()
				if err != nil {
					if wctx.Err() == nil {
						w.errs.Add(1)
					}
					return
				}
				now := time.Now().UnixNano()
				for _, e := range m.Events {
					w.events.Add(1)
					if t := e.Row.GetFields()["n"].GetIntValue(); t > 0 && now > t {
						w.mu.Lock()
						_ = w.delay.RecordValue((now - t) / 1000)
						w.mu.Unlock()
					}
				}
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
