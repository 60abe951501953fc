package fsm

import (
	"fmt"
	"sort"

	"google.golang.org/protobuf/proto"

	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/store"
)

// maxClientID bounds a session's client id, in bytes.
const maxClientID = 64

// session is one client's deduplication state.
type session struct {
	firstIncomplete uint64
	lastSeen        int64 // log time, Unix nanos
	results         map[uint64]*cmdpb.Result
}

// applySession applies a command at most once per (client, sequence).
func (f *FSM) applySession(b *store.Batch, index uint64, env *cmdpb.Envelope) *cmdpb.Result {
	ws := env.Session
	id := string(ws.ClientId)
	fail := func(reason, format string, args ...any) *cmdpb.Result {
		_ = b.Advance(index)
		return &cmdpb.Result{Revision: index, ErrorReason: reason, ErrorMessage: fmt.Sprintf(format, args...)}
	}
	if len(id) == 0 || len(id) > maxClientID {
		return fail(pb.ReasonInvalidArgument, "session client_id must be 1 to %d bytes, got %d", maxClientID, len(id))
	}
	if ws.Seq == 0 {
		return fail(pb.ReasonInvalidArgument, "session seq must be at least 1")
	}
	s, ok := f.sessions[id]
	if !ok {
		if len(f.sessions) >= f.cfg.MaxSessions {
			return fail(pb.ReasonSessionLimit, "%d client sessions are live, the limit; retry after idle ones expire", len(f.sessions))
		}
		s = &session{results: map[uint64]*cmdpb.Result{}}
		f.sessions[id] = s
	}
	s.lastSeen = f.logTime
	if ws.FirstIncompleteSeq > s.firstIncomplete {
		for seq := range s.results {
			if seq < ws.FirstIncompleteSeq {
				delete(s.results, seq)
			}
		}
		s.firstIncomplete = ws.FirstIncompleteSeq
	}
	if r, ok := s.results[ws.Seq]; ok {
		// A retry: answer as the first time, apply nothing.
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
	s.results[ws.Seq] = r
	return r
}

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
	for id, s := range f.sessions {
		if f.logTime-s.lastSeen > ttl {
			delete(f.sessions, id)
		}
	}
}

// encodeSessions serializes the session table in client-id order (so
// equal tables give equal bytes).
func encodeSessions(m map[string]*session) ([][]byte, error) {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	out := make([][]byte, 0, len(ids))
	opts := proto.MarshalOptions{Deterministic: true}
	for _, id := range ids {
		s := m[id]
		b, err := opts.Marshal(&cmdpb.Session{ClientId: []byte(id), FirstIncompleteSeq: s.firstIncomplete, LastSeenUnixNanos: s.lastSeen, Results: s.results})
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

func decodeSession(b []byte) (string, *session, error) {
	var ps cmdpb.Session
	if err := proto.Unmarshal(b, &ps); err != nil {
		return "", nil, err
	}
	if len(ps.ClientId) == 0 || len(ps.ClientId) > maxClientID {
		return "", nil, fmt.Errorf("session client id of %d bytes", len(ps.ClientId))
	}
	s := &session{firstIncomplete: ps.FirstIncompleteSeq, lastSeen: ps.LastSeenUnixNanos, results: ps.Results}
	if s.results == nil {
		s.results = map[uint64]*cmdpb.Result{}
	}
	for seq, r := range s.results {
		if r == nil {
			return "", nil, fmt.Errorf("session result %d is empty", seq)
		}
	}
	return string(ps.ClientId), s, nil
}

// sweepAfter returns the log time of the session sweep that follows one
// at log time t: the next multiple of SessionTTL/8 strictly after t.
func (f *FSM) sweepAfter(t int64) int64 {
	step := int64(f.cfg.SessionTTL) / 8
	return (t/step + 1) * step
}
