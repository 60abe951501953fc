// Package watch turns the state machine's applied changes into watch
// streams: ordered, gap-free and duplicate-free event feeds over a table,
// a primary-key range or a secondary-index range.
//
// The apply path only appends to a shared, bounded history and wakes one
// dispatcher goroutine (Publish never blocks or waits for a watcher). The
// dispatcher matches each new event against an interval index of the live
// watchers, so a write costs O(log n + matches), not O(watchers), and
// appends it to the matching watchers' bounded queues. A watcher whose
// queue overflows is cancelled (ErrTooSlow) instead of slowing anything
// down; it can resume from the last revision it delivered.
//
// A watcher that starts at an earlier revision first reads the history
// on its own goroutine (catch-up), and joins the dispatcher once it has
// reached it. A start revision older than the retained history fails with
// ErrCompacted, which names the oldest revision a watch can start from.
package watch

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/memdbd/memdbd/store"
)

// Config bounds the hub.
type Config struct {
	// HistoryEvents and HistoryBytes bound the retained history; the oldest
	// revisions are dropped first, whole.
	HistoryEvents int
	HistoryBytes  int64
	// QueueEvents bounds one live watcher's undelivered events; past it the
	// watcher is cancelled with ErrTooSlow.
	QueueEvents int
	Logger      *slog.Logger
}

// DefaultConfig returns the defaults memdbd uses.
func DefaultConfig() Config {
	return Config{HistoryEvents: 200_000, HistoryBytes: 128 << 20, QueueEvents: 10_000}
}

// Validate checks the bounds.
func (c Config) Validate() error {
	switch {
	case c.HistoryEvents < 1:
		return fmt.Errorf("watch: history of %d events must hold at least 1", c.HistoryEvents)
	case c.HistoryBytes < 1<<10:
		return fmt.Errorf("watch: history of %d bytes must hold at least 1 KiB", c.HistoryBytes)
	case c.QueueEvents < 1:
		return fmt.Errorf("watch: queue of %d events must hold at least 1", c.QueueEvents)
	}
	return nil
}

// Event is one change. The strings are the store's encodings and are
// shared with it: never modified.
type Event struct {
	Rev     uint64
	Table   string
	Key     string // encoded primary key; "" for Dropped
	Row     string // encoded row after the change; "" for a delete
	Prev    string // encoded row before; "" for an insert
	Expired bool
	Dropped *string // see store.Change
	// At is when the change was published (applied), for delay metrics.
	At time.Time
}

func (e *Event) size() int64 { return int64(len(e.Key)+len(e.Row)+len(e.Prev)) + 96 }

// ErrCompacted: the start revision is older than the retained history.
type ErrCompacted struct {
	// Oldest is the oldest revision a watch can start from now.
	Oldest uint64
}

func (e *ErrCompacted) Error() string {
	return fmt.Sprintf("the changes after that revision are no longer retained; the oldest revision a watch can start from is %d", e.Oldest)
}

// ErrTooSlow: the watcher fell more events behind than its queue holds.
type ErrTooSlow struct {
	// Delivered is the last revision the watcher delivered completely;
	// resume from it.
	Delivered uint64
	Limit     int
}

func (e *ErrTooSlow) Error() string {
	return fmt.Sprintf("the watcher fell more than %d events behind and was cancelled; resume from revision %d", e.Limit, e.Delivered)
}

// ErrDropped: the watched table or index was dropped at Rev.
type ErrDropped struct {
	Table, Index string
	Rev          uint64
}

func (e *ErrDropped) Error() string {
	if e.Index != "" {
		return fmt.Sprintf("index %s.%s was dropped at revision %d", e.Table, e.Index, e.Rev)
	}
	return fmt.Sprintf("table %s was dropped at revision %d", e.Table, e.Rev)
}

// ErrClosed: the hub is shutting down.
var ErrClosed = errors.New("watch: the server is shutting down")

// Hub holds the history and the live watchers.
type Hub struct {
	cfg Config
	log *slog.Logger

	// mu guards the history. Publish holds it briefly.
	mu         sync.Mutex
	hist       history // the retained events, in revision order
	bytes      int64
	compactRev uint64 // a watch may start at any revision >= compactRev
	rev        uint64 // last published revision
	closed     bool

	kick chan struct{} // wakes the dispatcher; capacity 1
	done chan struct{}
	wg   sync.WaitGroup

	// dmu guards the dispatcher's state: the live watchers and their index.
	dmu        sync.Mutex
	tables     map[string]*tableWatchers
	dispatched atomic.Uint64 // every event up to here is in the live queues
	cursor     int           // history position the dispatcher has reached (absolute)
	stamp      uint64
	chunk      uint64
	touchedWs  []*Watcher // watchers that got events in this chunk
	nextID     atomic.Uint64
	active     atomic.Int64
}

// NewHub starts a hub whose history begins at revision rev.
func NewHub(cfg Config, rev uint64) (*Hub, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.Default()
	}
	h := &Hub{cfg: cfg, log: lg, compactRev: rev, rev: rev, kick: make(chan struct{}, 1), done: make(chan struct{}), tables: map[string]*tableWatchers{}}
	h.dispatched.Store(rev)
	h.wg.Add(1)
	go h.dispatchLoop()
	return h, nil
}

// Close stops the dispatcher and ends every watcher with ErrClosed.
func (h *Hub) Close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	h.mu.Unlock()
	close(h.done)
	h.wg.Wait()
	h.dmu.Lock()
	for _, tw := range h.tables {
		for _, w := range tw.watchers() {
			w.end(ErrClosed, h.dispatched.Load())
		}
	}
	h.tables = map[string]*tableWatchers{}
	h.dmu.Unlock()
}

// Publish appends the changes of one applied batch ending at rev. It is
// called on the apply path and never blocks on watchers.
func (h *Hub) Publish(rev uint64, changes []store.Change) {
	now := time.Now()
	h.mu.Lock()
	for _, c := range changes {
		e := Event{Rev: c.Revision, Table: c.Table, Key: c.Key, Row: c.Row, Prev: c.Prev, Expired: c.Expired, Dropped: c.Dropped, At: now}
		h.hist.push(e)
		h.bytes += e.size()
	}
	if rev > h.rev {
		h.rev = rev
	}
	h.evictLocked()
	h.mu.Unlock()
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// evictLocked drops the oldest revisions, whole, while over the bounds. A
// revision larger than the bounds on its own is dropped too.
func (h *Hub) evictLocked() {
	for h.hist.len() > 0 && (h.hist.len() > h.cfg.HistoryEvents || h.bytes > h.cfg.HistoryBytes) {
		r := h.hist.front().Rev
		for h.hist.len() > 0 && h.hist.front().Rev == r {
			h.bytes -= h.hist.front().size()
			h.hist.popFront()
		}
		h.compactRev = r
	}
}

// Reset forgets the history: a snapshot replaced the state at rev. Every
// watcher ends with ErrCompacted, since the changes that led there are not
// known.
func (h *Hub) Reset(rev uint64) {
	h.dmu.Lock()
	defer h.dmu.Unlock()
	h.mu.Lock()
	h.hist.clear()
	h.bytes = 0
	h.compactRev, h.rev = rev, rev
	h.cursor = h.hist.end
	h.mu.Unlock()
	through := h.dispatched.Load()
	h.dispatched.Store(rev)
	h.endAllLocked(&ErrCompacted{Oldest: rev}, through)
}

// endAllLocked ends every live watcher.
func (h *Hub) endAllLocked(err error, through uint64) {
	for name, tw := range h.tables {
		for _, w := range tw.watchers() {
			w.end(err, through)
		}
		delete(h.tables, name)
	}
}

// Revision returns the last revision published.
func (h *Hub) Revision() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.rev
}

// Oldest returns the oldest revision a watch can start from.
func (h *Hub) Oldest() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.compactRev
}

// Stats describes the hub for metrics.
type Stats struct {
	Watchers      int64
	HistoryEvents int
	HistoryBytes  int64
	Oldest        uint64
}

// Stats returns the hub's current figures.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return Stats{Watchers: h.active.Load(), HistoryEvents: h.hist.len(), HistoryBytes: h.bytes, Oldest: h.compactRev}
}

// readAfter copies up to limit events (at least one) with revision > after
// from the history, extended to the end of the last revision, and returns
// them with
// the revision they reach (the last published revision when they reach
// the end).
func (h *Hub) readAfter(after uint64, limit int) ([]Event, uint64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, 0, ErrClosed
	}
	if after < h.compactRev {
		return nil, 0, &ErrCompacted{Oldest: h.compactRev}
	}
	i := h.hist.searchRev(after)
	j := min(h.hist.end, i+max(limit, 1))
	for j < h.hist.end && h.hist.at(j).Rev == h.hist.at(j-1).Rev {
		j++
	}
	out := h.hist.copyRange(i, j)
	reach := h.rev
	if j < h.hist.end {
		reach = h.hist.at(j - 1).Rev
	}
	return out, max64(reach, after), nil
}

func max64(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

// dispatchLoop moves published events to the live watchers' queues.
func (h *Hub) dispatchLoop() {
	defer h.wg.Done()
	for {
		select {
		case <-h.done:
			return
		case <-h.kick:
		}
		for h.dispatchSome() {
		}
	}
}

// dispatchChunk bounds the events the dispatcher takes at once, so that it
// holds dmu (which new watchers need) only briefly.
const dispatchChunk = 4096

// dispatchHook, when set (by tests, before any hub starts), runs before
// each chunk is dispatched: tests hold the dispatcher back with it.
var dispatchHook func()

// dispatchSome dispatches one chunk; it reports whether more may remain.
func (h *Hub) dispatchSome() bool {
	if dispatchHook != nil {
		dispatchHook()
	}
	// Lock order: dmu, then mu.
	h.dmu.Lock()
	defer h.dmu.Unlock()
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return false
	}
	if h.cursor < h.hist.start {
		// The history dropped events the dispatcher had not handed out
		// yet (a burst larger than the history). The live watchers cannot
		// continue without a gap; they resume or re-list.
		oldest := h.compactRev
		h.cursor = h.hist.start
		h.mu.Unlock()
		through := h.dispatched.Load()
		for name, tw := range h.tables {
			for _, w := range tw.watchers() {
				// A watcher that joined after the lost stretch lost nothing.
				if w.from < oldest {
					h.log.Warn("watch: history overflowed before dispatch; ending a live watch", "oldest_revision", oldest, "watch_id", w.id)
					tw.remove(w)
					w.end(&ErrCompacted{Oldest: oldest}, through)
				}
			}
			if tw.empty() {
				delete(h.tables, name)
			}
		}
		return true
	}
	end := h.hist.end
	j := min(end, h.cursor+dispatchChunk)
	for j < end && j > h.cursor && h.hist.at(j).Rev == h.hist.at(j-1).Rev {
		j++
	}
	var chunk []Event
	if len(h.tables) > 0 {
		// Copied, so that matching runs without mu, which Publish needs.
		// With no live watcher there is nothing to match: the dispatcher
		// only moves its cursor, and the apply path's events are not
		// copied a second time.
		chunk = h.hist.copyRange(h.cursor, j)
	}
	reach := h.rev
	if j < end {
		reach = h.hist.at(j - 1).Rev
	}
	h.cursor = j
	more := j < end
	h.mu.Unlock()

	h.chunk++
	for i := range chunk {
		h.stamp++ // marks the event, so a watcher matched twice gets it once
		h.dispatchEvent(&chunk[i], h.stamp)
	}
	// Watchers without events learn the new revision when they next look
	// (progress); waking every one of them per batch would cost
	// O(watchers) on every write.
	if reach > h.dispatched.Load() {
		h.dispatched.Store(reach)
	}
	for _, w := range h.touchedWs {
		w.signalNow()
	}
	clear(h.touchedWs)
	h.touchedWs = h.touchedWs[:0]
	return more
}

func (h *Hub) dispatchEvent(e *Event, stamp uint64) {
	tw := h.tables[e.Table]
	if tw == nil {
		return
	}
	if e.Dropped != nil {
		tw.drop(h, e)
		if tw.empty() {
			delete(h.tables, e.Table)
		}
		return
	}
	tw.match(e, func(w *Watcher) {
		if w.stamp == stamp || w.removed || !w.wants(e) || e.Rev <= w.from {
			return
		}
		w.stamp = stamp
		if !w.enqueue(*e, h.cfg.QueueEvents) {
			// Cancelled: it still gets the events queued before, once the
			// chunk's revision is published, then its error.
			h.removeLocked(w)
		}
		if w.touched != h.chunk {
			w.touched = h.chunk
			h.touchedWs = append(h.touchedWs, w)
		}
	})
}

// removeLocked takes a watcher out of the dispatcher's index.
func (h *Hub) removeLocked(w *Watcher) {
	if tw := h.tables[w.m.Table]; tw != nil {
		tw.remove(w)
		if tw.empty() {
			delete(h.tables, w.m.Table)
		}
	}
}
