package chaos

import (
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Recorder timestamps operations on one monotonic clock and keeps the
// register history and the times of successful writes.
type Recorder struct {
	start time.Time

	mu       sync.Mutex
	ops      []porcupine.Operation
	writesOK [][2]int64 // call and return times of successful writes (failover gaps)
	counts   map[string]*OpCounts
}

// OpCounts counts a workload's operations by outcome.
type OpCounts struct {
	OK, Failed, Unknown int
}

func newRecorder() *Recorder {
	return &Recorder{start: time.Now(), counts: map[string]*OpCounts{}}
}

// Now is the time since the start of the run, in nanoseconds.
func (r *Recorder) Now() int64 { return int64(time.Since(r.start)) }

func (r *Recorder) count(workload string, ok, unknown bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.counts[workload]
	if c == nil {
		c = &OpCounts{}
		r.counts[workload] = c
	}
	switch {
	case ok:
		c.OK++
	case unknown:
		c.Unknown++
	default:
		c.Failed++
	}
}

func (r *Recorder) writeOK(call, ret int64) {
	r.mu.Lock()
	r.writesOK = append(r.writesOK, [2]int64{call, ret})
	r.mu.Unlock()
}

func (r *Recorder) addOp(op porcupine.Operation) {
	r.mu.Lock()
	r.ops = append(r.ops, op)
	r.mu.Unlock()
}

// history returns the register operations; ops of unknown outcome (Return
// < 0) return after everything else, so they may take effect at any time
// after their call, or never be observed.
func (r *Recorder) history() []porcupine.Operation {
	r.mu.Lock()
	defer r.mu.Unlock()
	var end int64
	for _, op := range r.ops {
		end = max(end, op.Call, op.Return)
	}
	out := make([]porcupine.Operation, len(r.ops))
	copy(out, r.ops)
	for i := range out {
		if out[i].Return < 0 {
			out[i].Return = end + 1
		}
	}
	return out
}

// firstWriteAfter returns when the first successful write that was called
// at or after t returned: the end of the unavailability a fault at t
// caused. (Writes already in flight at t do not count: they may have
// committed before the fault bit.)
func (r *Recorder) firstWriteAfter(t int64) (int64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	best, ok := int64(0), false
	for _, w := range r.writesOK {
		if w[0] >= t && (!ok || w[1] < best) {
			best, ok = w[1], true
		}
	}
	return best, ok
}
