package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/schollz/progressbar/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Config is one run. Durations and counts bound it: it stops at Duration
// (after Warmup) or after Requests operations, whichever comes first.
type Config struct {
	// Clients is the number of concurrent workers.
	Clients int
	// Rate, when positive, runs open loop at this many operations per
	// second; zero runs closed loop.
	Rate float64
	// Warmup runs before measuring; its operations are not reported.
	Warmup time.Duration
	// Duration of the measured phase.
	Duration time.Duration
	// Requests, when positive, stops after this many measured operations.
	Requests int64
	// Keys is the key space; ValueSize the bytes per value.
	Keys, ValueSize int
	// Timeout bounds each operation.
	Timeout time.Duration
	// Seed makes the operation sequence repeatable.
	Seed uint64
	// Progress, when set, receives a progress bar.
	Progress io.Writer
	// Bucket is the timeline resolution.
	Bucket time.Duration
	// OnTick is called about every Bucket with the time since the measured
	// phase began (for scenario events such as a failover).
	OnTick func(elapsed time.Duration)
}

func (c *Config) defaults() error {
	if c.Clients < 1 {
		return errors.New("clients must be at least 1")
	}
	if c.Duration <= 0 && c.Requests <= 0 {
		return errors.New("a run needs a duration or a request count")
	}
	if c.Duration <= 0 {
		c.Duration = time.Hour
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Second
	}
	if c.Bucket <= 0 {
		c.Bucket = 100 * time.Millisecond
	}
	if c.ValueSize < 0 {
		return errors.New("value size must not be negative")
	}
	return nil
}

// job is one operation handed from the producer to a worker.
type job struct {
	op       Op
	intended time.Time // open loop: when it should have started
	measured bool
}

// recorder collects one worker's measurements.
type recorder struct {
	hist     *hdrhistogram.Histogram
	errs     map[string]int64
	timeline map[int]*Bucket
}

func newRecorder() *recorder {
	return &recorder{hist: hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3), errs: map[string]int64{}, timeline: map[int]*Bucket{}}
}

// Run performs a run against t.
func Run(ctx context.Context, cfg Config, t Target, w Workload) (*Result, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	value := make([]byte, cfg.ValueSize)
	for i := range value {
		value[i] = byte('a' + i%26)
	}
	jobs := make(chan job, cfg.Clients) // bounded: the producer waits for workers
	recs := make([]*recorder, cfg.Clients)
	var measuredOps atomic.Int64
	var start atomic.Int64 // unix nanos when measuring began
	runCtx, stop := context.WithCancel(ctx)
	defer stop()

	var bar *progressbar.ProgressBar
	if cfg.Progress != nil {
		bar = progressbar.NewOptions64(int64(cfg.Duration/time.Second),
			progressbar.OptionSetWriter(cfg.Progress), progressbar.OptionSetDescription(fmt.Sprintf("%s %s", t.Name(), w.Name())),
			progressbar.OptionShowCount(), progressbar.OptionSetItsString("s"), progressbar.OptionThrottle(200*time.Millisecond))
	}

	var wg sync.WaitGroup
	for i := 0; i < cfg.Clients; i++ {
		recs[i] = newRecorder()
		wg.Add(1)
		go func(rec *recorder, conn int) {
			defer wg.Done()
			for j := range jobs {
				begin := time.Now()
				if !j.intended.IsZero() {
					begin = j.intended
				}
				opCtx, cancel := context.WithTimeout(runCtx, cfg.Timeout)
				err := t.Do(opCtx, conn, j.op, value)
				cancel()
				end := time.Now()
				if !j.measured {
					continue
				}
				if runCtx.Err() != nil && err != nil {
					continue // cut off by the end of the run
				}
				lat := end.Sub(begin)
				since := time.Duration(end.UnixNano() - start.Load())
				b := int(since / cfg.Bucket)
				bk := rec.timeline[b]
				if bk == nil {
					bk = &Bucket{hist: hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 2)}
					rec.timeline[b] = bk
				}
				if err != nil {
					rec.errs[errCode(err)]++
					bk.Errors++
					continue
				}
				us := max(lat.Microseconds(), 1)
				_ = rec.hist.RecordValue(us)
				bk.note(since)
				_ = bk.hist.RecordValue(us)
			}
		}(recs[i], i%max(t.Conns(), 1))
	}

	// The producer: warm-up, then the measured phase.
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x6c6f6164))
	warmEnd := time.Now().Add(cfg.Warmup)
	var end time.Time
	var interval time.Duration
	if cfg.Rate > 0 {
		interval = time.Duration(float64(time.Second) / cfg.Rate)
	}
	next := time.Now()
	lastTick := time.Now()
	measuring := cfg.Warmup <= 0
	if measuring {
		start.Store(time.Now().UnixNano())
		end = time.Now().Add(cfg.Duration)
	}
	var produced int64
produce:
	for {
		now := time.Now()
		if !measuring && now.After(warmEnd) {
			measuring = true
			start.Store(now.UnixNano())
			end = now.Add(cfg.Duration)
		}
		if measuring && (now.After(end) || (cfg.Requests > 0 && produced >= cfg.Requests)) {
			break
		}
		if measuring && now.Sub(lastTick) >= cfg.Bucket {
			lastTick = now
			elapsed := now.Sub(time.Unix(0, start.Load()))
			if cfg.OnTick != nil {
				cfg.OnTick(elapsed)
			}
			if bar != nil {
				_ = bar.Set64(int64(elapsed / time.Second))
			}
		}
		j := job{op: w.Next(rng), measured: measuring}
		if interval > 0 {
			if d := time.Until(next); d > 0 {
				select {
				case <-runCtx.Done():
					break produce
				case <-time.After(d):
				}
			}
			j.intended = next
			next = next.Add(interval)
		}
		select {
		case jobs <- j:
			if measuring {
				produced++
				measuredOps.Add(1)
			}
		case <-runCtx.Done():
			break produce
		}
	}
	elapsed := time.Since(time.Unix(0, start.Load()))
	// An open loop that fell behind (every worker busy) leaves operations
	// scheduled before the end that were never sent. Their latency would
	// have been the worst of the run, so they are reported, not dropped
	// silently: the remedy is more clients.
	var unsent int64
	if stopped := minTime(end, time.Now()); interval > 0 && measuring && next.Before(stopped) {
		// Up to the planned end, or to the interruption of the run.
		unsent = int64(stopped.Sub(next)/interval) + 1
		if cfg.Requests > 0 {
			unsent = min(unsent, cfg.Requests-produced)
		}
	}
	close(jobs)
	wg.Wait()
	if bar != nil {
		_ = bar.Finish()
		fmt.Fprintln(cfg.Progress)
	}
	res := summarize(t.Name(), w.Name(), cfg, recs, elapsed)
	res.Unsent = max(unsent, 0)
	return res, nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// errCode names an error by its gRPC code (or "other").
func errCode(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return codes.DeadlineExceeded.String()
	}
	if st, ok := status.FromError(errors.Unwrap(err)); ok && st.Code() != codes.OK && st.Code() != codes.Unknown {
		return st.Code().String()
	}
	if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
		return st.Code().String()
	}
	type coder interface{ GRPCCode() codes.Code }
	var c coder
	if errors.As(err, &c) {
		return c.GRPCCode().String()
	}
	return "other"
}
