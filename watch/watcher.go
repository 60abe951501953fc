package watch

import (
	"context"
	"errors"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Matcher selects the events of one watch.
type Matcher struct {
	Table string
	// Index is the secondary index the range applies to; "" for the
	// primary key.
	Index string
	// IndexDef identifies the index definition (fields and uniqueness):
	// watchers of the same definition share one interval index.
	IndexDef string
	// SortKey maps an encoded row to its sort key in Index
	// (store.View.SortKeyFunc); ok false: the row is not in the index.
	SortKey func(row string) (string, bool)
	// Lo and Hi bound the sort keys, [Lo, Hi); Hi nil is unbounded.
	Lo, Hi          []byte
	NoPut, NoDelete bool
}

// Batch is what Next returns: events of whole revisions, in order, and
// the revision the watcher has reached (every matching event up to it has
// been returned).
type Batch struct {
	Events []Event
	Rev    uint64
}

// Watcher is one watch. Next must be called from one goroutine.
type Watcher struct {
	hub       *Hub
	id        uint64
	m         Matcher
	lo, hi    string
	unbounded bool // hi is +infinity

	// Catch-up state, owned by the caller of Next (and by Watch).
	cursor  uint64
	pending []Event // events read in catch-up, returned before the queue

	// Dispatcher state, guarded by hub.dmu.
	live    bool
	from    uint64 // the dispatcher sends events with Rev > from
	stamp   uint64
	touched uint64
	removed bool

	mu     sync.Mutex
	queue  []Event
	err    error
	endRev uint64 // with err: the revision the queued events are complete to
	signal chan struct{}

	delivered atomic.Uint64
	closed    atomic.Bool
	poked     atomic.Bool
}

// Poke makes a waiting Next return a progress notification now.
func (w *Watcher) Poke() {
	w.poked.Store(true)
	w.signalNow()
}

// ID returns the watcher's id, unique in its hub.
func (w *Watcher) ID() uint64 { return w.id }

// Delivered returns the revision the watcher has reached in what Next
// returned.
func (w *Watcher) Delivered() uint64 { return w.delivered.Load() }

// Watch starts a watcher that returns every matching event after revision
// start. A start older than the retained history fails with ErrCompacted;
// one in the future waits for it.
func (h *Hub) Watch(start uint64, m Matcher) (*Watcher, error) {
	h.mu.Lock()
	closed, oldest := h.closed, h.compactRev
	h.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if start < oldest {
		return nil, &ErrCompacted{Oldest: oldest}
	}
	w := &Watcher{hub: h, id: h.nextID.Add(1), m: m, lo: string(m.Lo), hi: string(m.Hi), unbounded: m.Hi == nil,
		cursor: start, signal: make(chan struct{}, 1)}
	w.delivered.Store(start)
	h.active.Add(1)
	// Most watches start at or near the present: join the dispatcher now,
	// so that nothing the caller does before its first Next (sending a
	// snapshot) lets the history move past the start.
	if _, err := w.catchUp(max(1, h.cfg.QueueEvents/2)); err != nil {
		w.Close()
		return nil, err
	}
	return w, nil
}

// catchUp reads up to limit events after the cursor from the history into
// pending and joins the dispatcher when it reaches the end. It reports
// whether the watcher is live.
func (w *Watcher) catchUp(limit int) (bool, error) {
	h := w.hub
	h.dmu.Lock()
	defer h.dmu.Unlock()
	evs, reach, err := h.readAfter(w.cursor, limit)
	if err != nil {
		return false, err
	}
	for i := range evs {
		if ended, err := w.endsAt(&evs[i]); ended {
			w.cursor = evs[i].Rev
			w.setErr(err, w.cursor)
			return false, nil
		}
		if w.matches(&evs[i]) {
			w.pending = append(w.pending, evs[i])
		}
	}
	w.cursor = reach
	if reach >= h.dispatched.Load() {
		w.live, w.from = true, reach
		h.addLocked(w)
	}
	return w.live, nil
}

// Next returns the next events, waiting up to wait for some; with none
// it returns an empty batch carrying the revision reached (a progress
// notification). It fails with the watcher's terminal error (ErrTooSlow,
// ErrCompacted, ErrDropped, ErrClosed) once the events before it are
// returned, or with the context's error.
func (w *Watcher) Next(ctx context.Context, wait time.Duration) (Batch, error) {
	var timer *time.Timer
	expired := false
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		if err := ctx.Err(); err != nil {
			return Batch{}, err
		}
		if len(w.pending) > 0 {
			b := Batch{Events: w.pending, Rev: w.cursor}
			w.pending = nil
			return w.deliver(b), nil
		}
		w.hub.dmu.Lock()
		live := w.live
		w.hub.dmu.Unlock()
		if !live {
			if w.getErr() != nil {
				return Batch{}, w.getErr()
			}
			if _, err := w.catchUp(1024); err != nil {
				return Batch{}, err
			}
			if len(w.pending) == 0 && w.getErr() == nil {
				// Nothing matched in that stretch of history: report it as
				// progress, so a long catch-up still shows movement.
				return w.deliver(Batch{Rev: w.cursor}), nil
			}
			continue
		}
		// Events up to the dispatched revision are complete in the queue:
		// the dispatcher stores the revision after queueing its chunk.
		d := w.hub.dispatched.Load()
		w.mu.Lock()
		n := sort.Search(len(w.queue), func(i int) bool { return w.queue[i].Rev > d })
		var evs []Event
		if n > 0 {
			evs = append([]Event(nil), w.queue[:n]...)
			w.queue = append(w.queue[:0], w.queue[n:]...)
		}
		err, endRev := w.err, w.endRev
		rest := len(w.queue)
		w.mu.Unlock()
		reach := max(d, w.from)
		if err != nil {
			// An ended watcher reaches no further than its queue goes.
			reach = max(min(reach, endRev), w.delivered.Load())
		}
		if len(evs) > 0 {
			return w.deliver(Batch{Events: evs, Rev: max(reach, evs[len(evs)-1].Rev)}), nil
		}
		if err != nil && rest == 0 {
			if reach > w.delivered.Load() {
				return w.deliver(Batch{Rev: reach}), nil
			}
			var slow *ErrTooSlow
			if errors.As(err, &slow) {
				slow.Delivered = w.delivered.Load()
			}
			return Batch{}, err
		}
		// reach was read before draining the queue, so reporting it as
		// progress never skips an event still queued.
		if expired || w.poked.Swap(false) {
			return w.deliver(Batch{Rev: reach}), nil
		}
		if timer == nil {
			timer = time.NewTimer(wait)
		}
		select {
		case <-w.signal:
		case <-timer.C:
			expired = true
		case <-ctx.Done():
			return Batch{}, ctx.Err()
		}
	}
}

func (w *Watcher) deliver(b Batch) Batch {
	if b.Rev < w.delivered.Load() {
		b.Rev = w.delivered.Load()
	}
	w.delivered.Store(b.Rev)
	return b
}

// Close ends the watcher and frees its place.
func (w *Watcher) Close() {
	if w.closed.Swap(true) {
		return
	}
	h := w.hub
	h.dmu.Lock()
	if w.live && !w.removed {
		h.removeLocked(w)
	}
	h.dmu.Unlock()
	h.active.Add(-1)
}

func (w *Watcher) setErr(err error, through uint64) {
	w.mu.Lock()
	if w.err == nil {
		w.err, w.endRev = err, through
	}
	w.mu.Unlock()
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

func (w *Watcher) signalNow() {
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

func (w *Watcher) getErr() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// end sets the terminal error of a live watcher (under dmu); the events
// queued before it, complete up to revision through, are still returned.
func (w *Watcher) end(err error, through uint64) {
	w.removed = true
	w.setErr(err, through)
}

// enqueue adds an event (under dmu); false when the queue overflowed and
// the watcher was ended.
func (w *Watcher) enqueue(e Event, limit int) bool {
	w.mu.Lock()
	if len(w.queue) >= limit {
		if w.err == nil {
			w.err, w.endRev = &ErrTooSlow{Limit: limit}, e.Rev-1
		}
		// Only events of revisions the watcher can deliver completely
		// stay queued; the rest would be a partial revision.
		w.queue = w.queue[:sort.Search(len(w.queue), func(i int) bool { return w.queue[i].Rev >= e.Rev })]
		w.mu.Unlock()
		w.removed = true
		return false
	}
	w.queue = append(w.queue, e)
	w.mu.Unlock()
	return true
}

// wants applies the put and delete filters.
func (w *Watcher) wants(e *Event) bool {
	if e.Row == "" {
		return !w.m.NoDelete
	}
	return !w.m.NoPut
}

// endsAt reports whether e ends the watch (its table or index dropped).
func (w *Watcher) endsAt(e *Event) (bool, error) {
	if e.Table != w.m.Table || e.Dropped == nil {
		return false, nil
	}
	if *e.Dropped == "" || *e.Dropped == w.m.Index {
		return true, &ErrDropped{Table: e.Table, Index: *e.Dropped, Rev: e.Rev}
	}
	return false, nil
}

// matches is the watcher's own test of an event, for catch-up; the
// dispatcher's interval index must agree with it.
func (w *Watcher) matches(e *Event) bool {
	if e.Table != w.m.Table || e.Dropped != nil || !w.wants(e) {
		return false
	}
	if w.m.Index == "" {
		return w.contains(e.Key)
	}
	for _, row := range []string{e.Row, e.Prev} {
		if row == "" {
			continue
		}
		if k, ok := w.m.SortKey(row); ok && w.contains(k) {
			return true
		}
	}
	return false
}

func (w *Watcher) contains(k string) bool {
	return k >= w.lo && (w.unbounded || k < w.hi)
}
