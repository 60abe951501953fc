package fsm

import (
	"container/heap"
	"fmt"
	"sort"
	"time"

	"google.golang.org/protobuf/proto"

	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/store"
)

// maxClientID bounds a session's client id, in bytes.
const maxClientID = 64

// What a session remembers of one write is bounded, so that the session
// table (replicated state, one snapshot record per client) stays small
// whatever the writes read. They are constants, not settings: every
// replica must keep exactly the same copy of every result.
const (
	// maxKeptResult bounds the encoded size of a result a session keeps
	// whole; a larger one is kept trimmed (keptForm).
	maxKeptResult = 64 << 10
	// maxKeptSessionBytes bounds the encoded bytes of one session's kept
	// results: a result that would take them beyond it is kept trimmed.
	// Only results of failed writes and outcome-only copies, tens of bytes
	// each and at most MaxResultsPerSession of them, can go past it.
	maxKeptSessionBytes = 4 << 20
	// maxKeptTableBytes bounds the same across every session, so that
	// the session table, which every member holds in memory and writes in
	// every snapshot, stays far below the data however many clients
	// there are (MaxSessions times maxKeptSessionBytes would be 400 GB).
	maxKeptTableBytes = 256 << 20
)

// session is one client's deduplication state.
type session struct {
	id              string
	firstIncomplete uint64
	lastSeen        int64 // log time, Unix nanos
	results         map[uint64]*cmdpb.Result
	// kept is the encoded size (SizeVT) of results, summed.
	kept int
	// pos is the session's index in the FSM's idle heap.
	pos int
}

// applySession applies a command at most once per (client, sequence).
func (f *FSM) applySession(b *store.Batch, index uint64, env *cmdpb.Envelope) *cmdpb.Result {
	ws := env.Session
	id := string(ws.ClientId)
	fail := func(reason, format string, args ...any) *cmdpb.Result {
		_ = b.Advance(index)
		return &cmdpb.Result{Revision: index, ErrorReason: reason, ErrorMessage: fmt.Sprintf(format, args...)}
	}
	if err := checkClientID(ws.ClientId); err != nil {
		return fail(pb.ReasonInvalidArgument, "%v", err)
	}
	if ws.Seq == 0 {
		return fail(pb.ReasonInvalidArgument, "session seq must be at least 1")
	}
	rules3 := env.Version >= sessionRulesVersion
	s, ok := f.sessions[id]
	if !ok {
		if len(f.sessions) >= f.cfg.MaxSessions {
			if !rules3 {
				return fail(pb.ReasonSessionLimit, "%d client sessions are live, the limit; retry after idle ones expire", len(f.sessions))
			}
			f.evictIdlest()
		}
		s = &session{id: id, results: map[uint64]*cmdpb.Result{}}
		f.addSession(s)
	}
	f.touchSession(s)
	if ws.FirstIncompleteSeq > s.firstIncomplete {
		for seq, r := range s.results {
			if seq < ws.FirstIncompleteSeq {
				n := r.SizeVT()
				s.kept -= n
				f.keptBytes -= n
				delete(s.results, seq)
			}
		}
		s.firstIncomplete = ws.FirstIncompleteSeq
	}
	if r, ok := s.results[ws.Seq]; ok {
		// A retry: answer as the first time, apply nothing. A trimmed
		// copy answers with OUTCOME_NOT_KEPT (ResultError).
		_ = b.Advance(index)
		return r
	}
	if ws.Seq < s.firstIncomplete {
		return fail(pb.ReasonStaleSequence, "write %d of this session was already acknowledged by the client (first incomplete is %d)", ws.Seq, s.firstIncomplete)
	}
	if len(s.results) >= f.cfg.MaxResultsPerSession {
		return fail(pb.ReasonSessionLimit, "session has %d unacknowledged writes, the limit", len(s.results))
	}
	r := f.execute(b, index, env)
	kept, n := r, r.SizeVT()
	if rules3 {
		kept, n = keptForm(r, s.kept, f.keptBytes)
	}
	s.results[ws.Seq] = kept
	s.kept += n
	f.keptBytes += n
	// The caller gets the whole result; only the remembered copy may be
	// trimmed.
	return r
}

// checkClientID checks a session client id, for a write and for a
// snapshot's session record alike.
func checkClientID(id []byte) error {
	if len(id) == 0 || len(id) > maxClientID {
		return fmt.Errorf("session client_id must be 1 to %d bytes, got %d", maxClientID, len(id))
	}
	return nil
}

// keptForm returns the copy of r a session remembers, given the bytes the
// session already keeps, and that copy's encoded size. It is r itself when
// r is at most maxKeptResult bytes and fits in what is left of
// maxKeptSessionBytes. Otherwise it is a trimmed copy (ReplayTrimmed):
// the same revision, error, succeeded and write results, with the rows of
// Get results removed; and when even that does not fit, the outcome
// alone, without op results. A result that carries an error is always r:
// it has no op results, and a retry must fail as the first attempt did.
//
// The same holds for the bytes every session keeps, total, against
// maxKeptTableBytes.
//
// The decision depends only on r and the kept bytes, all replicated, so
// every replica keeps the same copy.
func keptForm(r *cmdpb.Result, kept, total int) (*cmdpb.Result, int) {
	n := r.SizeVT()
	if r.ErrorReason != "" || fits(n, kept, total) {
		return r, n
	}
	t := withoutReadRows(r)
	if n := t.SizeVT(); fits(n, kept, total) {
		return t, n
	}
	// Why a second step: write results are small (RowMeta), but with the
	// op limits raised far above their defaults a transaction of thousands
	// of writes could still exceed the bound, and a session's record must
	// stay far below what a snapshot reader accepts (maxRecord).
	o := &cmdpb.Result{Revision: r.Revision, Succeeded: r.Succeeded, ReplayTrimmed: true}
	return o, o.SizeVT()
}

func fits(n, kept, total int) bool {
	return n <= maxKeptResult && kept+n <= maxKeptSessionBytes && total+n <= maxKeptTableBytes
}

// withoutReadRows returns a copy of r whose Get results keep whether the
// row was found but not the row. r is not modified: it is also the
// answer to the write's caller.
func withoutReadRows(r *cmdpb.Result) *cmdpb.Result {
	t := &cmdpb.Result{Revision: r.Revision, ErrorReason: r.ErrorReason, ErrorMessage: r.ErrorMessage,
		Succeeded: r.Succeeded, ReplayTrimmed: true, Results: make([]*pb.OpResult, len(r.Results))}
	for i, op := range r.Results {
		if g, ok := op.GetResult().(*pb.OpResult_Get); ok {
			op = &pb.OpResult{Result: &pb.OpResult_Get{Get: &pb.GetResult{Found: g.Get.GetFound()}}}
		}
		t.Results[i] = op
	}
	return t
}

// notKeptError is the error a retry answered from a trimmed result gets.
// A result that says itself why it has no rows (execute: a transaction
// that read too much) gives that reason.
func notKeptError(r *cmdpb.Result) *CommandError {
	if r.ErrorMessage != "" {
		return &CommandError{Reason: pb.ReasonOutcomeNotKept, Revision: r.Revision, Message: r.ErrorMessage}
	}
	return &CommandError{Reason: pb.ReasonOutcomeNotKept, Revision: r.Revision, Message: fmt.Sprintf(
		"the write was applied at revision %d; its read results were not kept for retries, as they exceed what "+
			"sessions keep (%d KiB per write, %d MiB per client, %d MiB for all clients); read them again",
		r.Revision, maxKeptResult>>10, maxKeptSessionBytes>>20, maxKeptTableBytes>>20)}
}

// The idle heap orders the sessions by (lastSeen, client id), least
// recently seen first: the order in which they expire and are evicted.
// Client ids are unique, so the order is total and every replica, and a
// replica restored from a snapshot, sees the same one.
type idleHeap []*session

func (h idleHeap) Len() int { return len(h) }
func (h idleHeap) Less(i, j int) bool {
	if h[i].lastSeen != h[j].lastSeen {
		return h[i].lastSeen < h[j].lastSeen
	}
	return h[i].id < h[j].id
}
func (h idleHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].pos, h[j].pos = i, j
}
func (h *idleHeap) Push(x any) {
	s := x.(*session)
	s.pos = len(*h)
	*h = append(*h, s)
}
func (h *idleHeap) Pop() any {
	old := *h
	s := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	s.pos = -1
	return s
}

// addSession enters a new session in the table and the idle heap.
func (f *FSM) addSession(s *session) {
	f.sessions[s.id] = s
	heap.Push(&f.idle, s)
}

// touchSession records that s wrote at the current log time.
func (f *FSM) touchSession(s *session) {
	s.lastSeen = f.logTime
	heap.Fix(&f.idle, s.pos)
}

// removeSession forgets s.
func (f *FSM) removeSession(s *session) {
	heap.Remove(&f.idle, s.pos)
	delete(f.sessions, s.id)
	f.keptBytes -= s.kept
}

// setSessions replaces the session table (Restore) and rebuilds the heap.
func (f *FSM) setSessions(m map[string]*session) {
	f.sessions = m
	f.idle = make(idleHeap, 0, len(m))
	f.keptBytes = 0
	for _, s := range m {
		f.idle = append(f.idle, s)
		f.keptBytes += s.kept
	}
	for i, s := range f.idle {
		s.pos = i
	}
	heap.Init(&f.idle)
}

// evictIdlest forgets the least recently seen session to make room for a
// new one, in O(log n).
//
// Why evict rather than refuse: refusing new sessions while the table is
// full lets any client that opens enough of them (100,000 empty
// transactions with fresh client ids) lock every new client out for up to
// SessionTTL. Forgetting the client that has been idle longest weakens
// exactly-once for that client alone, as SessionTTL already does: a write
// it retries now is applied again. The choice depends only on replicated
// state (lastSeen is log time), so every replica evicts the same session.
func (f *FSM) evictIdlest() {
	if len(f.idle) == 0 {
		return
	}
	s := f.idle[0]
	f.removeSession(s)
	f.evicted.Add(1)
	f.logEviction(s)
}

// evictionLogEvery spaces the logs of evictions: under a flood of new
// clients there is one per write.
const evictionLogEvery = time.Minute

// logEviction logs an eviction, at most once per evictionLogEvery of this
// node's clock (logging is not replicated state), with the count since
// the last log.
func (f *FSM) logEviction(s *session) {
	now := time.Now()
	if now.Sub(f.evictLogAt) < evictionLogEvery {
		return
	}
	total := f.evicted.Load()
	f.log.Warn("client sessions evicted: the session table is full; the least recently seen clients lose exactly-once for writes they retry",
		"max_sessions", f.cfg.MaxSessions, "evicted_since_last_log", total-f.evictLogged, "evicted_total", total,
		"last_evicted_idle_for", time.Duration(f.logTime-s.lastSeen))
	f.evictLogAt, f.evictLogged = now, total
}

// SessionsEvicted returns how many sessions this replica evicted to make
// room for new clients since it started (a counter for metrics; evictions
// replayed from the log after a restart count again).
func (f *FSM) SessionsEvicted() uint64 { return f.evicted.Load() }

// expireSessions forgets sessions idle for SessionTTL of log time. It
// sweeps at the first entry at or past each multiple of SessionTTL/8 of log
// time. The sweep times are a function of log time alone, not of when a
// replica happened to sweep last, so a replica restored from a snapshot
// (sweepAfter) sweeps at the same entries as the ones that applied the
// whole log, and all drop the same sessions at the same entry.
func (f *FSM) expireSessions() {
	if f.logTime < f.nextExpiry {
		return
	}
	ttl := int64(f.cfg.SessionTTL)
	f.nextExpiry = f.sweepAfter(f.logTime)
	for len(f.idle) > 0 && f.logTime-f.idle[0].lastSeen > ttl {
		f.removeSession(f.idle[0])
	}
}

// encodeSessions serializes the session table in client-id order (so
// equal tables give equal bytes). It returns the ids in that order too.
func encodeSessions(m map[string]*session) ([]string, [][]byte, error) {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	out := make([][]byte, 0, len(ids))
	opts := proto.MarshalOptions{Deterministic: true}
	for _, id := range ids {
		s := m[id]
		if err := s.check(); err != nil {
			// A record Restore would refuse must not be written: the
			// snapshot would be unreadable.
			return nil, nil, fmt.Errorf("session %q: %w", id, err)
		}
		b, err := opts.Marshal(&cmdpb.Session{ClientId: []byte(id), FirstIncompleteSeq: s.firstIncomplete, LastSeenUnixNanos: s.lastSeen, Results: s.results})
		if err != nil {
			return nil, nil, err
		}
		out = append(out, b)
	}
	return ids, out, nil
}

// decodeSession decodes a snapshot's session record, with the checks a
// write's session passes (checkClientID).
func decodeSession(b []byte) (*session, error) {
	var ps cmdpb.Session
	if err := proto.Unmarshal(b, &ps); err != nil {
		return nil, err
	}
	s := &session{id: string(ps.ClientId), firstIncomplete: ps.FirstIncompleteSeq, lastSeen: ps.LastSeenUnixNanos, results: ps.Results}
	if s.results == nil {
		s.results = map[uint64]*cmdpb.Result{}
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	for _, r := range s.results {
		// The same sum the replicas that kept these results computed: a
		// result's encoding survives the round trip.
		s.kept += r.SizeVT()
	}
	return s, nil
}

// check reports what would make a snapshot reader refuse the session: the
// one set of rules for the writer (encodeSessions) and the reader
// (decodeSession).
func (s *session) check() error {
	if err := checkClientID([]byte(s.id)); err != nil {
		return err
	}
	for seq, r := range s.results {
		if r == nil {
			return fmt.Errorf("session result %d is empty", seq)
		}
	}
	return nil
}

// sweepAfter returns the log time of the session sweep that follows one
// at log time t: the next multiple of SessionTTL/8 strictly after t.
func (f *FSM) sweepAfter(t int64) int64 {
	step := int64(f.cfg.SessionTTL) / 8
	return (t/step + 1) * step
}
