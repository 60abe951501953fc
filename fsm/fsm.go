package fsm

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/memdbd/memdbd/api/convert"
	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/store"
)

// Command format versions. A binary writes CommandVersion and applies
// entries up to MaxCommandVersion; anything newer halts it.
//
// Version 2 added row expiry: the Expire command, and ttl_ms, clear_ttl and
// touch in transactions. An envelope carries the version its command needs
// (RequiredVersion), so a version-1 replica halts on it rather than
// applying it without the expiry and diverging.
//
// Version 4 added access control: the AuthChange command (fsm/auth.go).
//
// Version 3 changed what a write session does and what a transaction
// answers, not what either can say: a session keeps large results trimmed
// (keptForm), a write opening a session on a full table evicts the least
// recently seen one instead of failing, and a transaction whose Gets read
// more than maxTxnReadBytes answers without the rows (execute). Replicas
// that applied the same entry differently would diverge, so the new rules
// apply to entries of version 3 only, and a leader writes version 3 on
// transactions and session writes only once every member applies it (the
// feature level, Encode); until then they keep version 2's rules on every
// replica.
const (
	CommandVersion    = 1
	MaxCommandVersion = 4
	// sessionRulesVersion is the first version with version 3's session
	// and transaction rules.
	sessionRulesVersion = 3
)

// maxTxnReadBytes bounds the row data a transaction's Get operations
// return, from version 3 on. Every replica builds a transaction's result,
// and the edge's estimate (server) races with other writes: without this
// bound, 128 Gets of rows grown to 8 MiB just before the apply would make
// every member build a 1 GiB answer. Twice the edge's default response
// limit, so that the edge, which refuses before anything is applied,
// decides in all but that race.
const maxTxnReadBytes = 128 << 20

// ChangeSink receives the row changes of every applied batch, in log
// order, on the state machine's goroutine. It must not block: it runs on
// the apply path.
type ChangeSink interface {
	// Publish hands over the changes of a batch whose last entry is rev
	// (there may be none). logTime is the batch's log time.
	Publish(rev uint64, changes []store.Change)
	// Reset reports that a snapshot replaced the whole state at rev: the
	// changes before it are not known.
	Reset(rev uint64)
}

// Config configures the state machine. Every field that shapes replicated
// state (the session settings) must be equal on every replica.
type Config struct {
	// SessionTTL is how long, in log time, a client session is remembered
	// after its last write. A client retrying a write later than this may
	// apply it twice.
	SessionTTL time.Duration
	// MaxSessions bounds the number of live sessions; a write opening one
	// more evicts the least recently seen session (evictIdlest).
	MaxSessions int
	// MaxResultsPerSession bounds the unacknowledged results kept for one
	// client; a write beyond it fails with ReasonSessionLimit.
	MaxResultsPerSession int
	// Changes, when set, receives every batch of row changes (watches).
	Changes ChangeSink
	// Logger receives the state machine's logs; slog.Default() when nil.
	Logger *slog.Logger
	// HashEvery, when positive, records a state checkpoint (Checkpoints)
	// every HashEvery log entries: the state hash as of the revision just
	// before each multiple. Unlike the session settings it may differ
	// between replicas; those that record different points simply have
	// fewer in common to compare.
	HashEvery uint64
}

// DefaultConfig returns the settings every memdbd node uses.
func DefaultConfig() Config {
	return Config{SessionTTL: time.Hour, MaxSessions: 100_000, MaxResultsPerSession: 10_000}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	switch {
	case c.SessionTTL < time.Minute:
		return fmt.Errorf("fsm: SessionTTL %v must be at least 1m", c.SessionTTL)
	case c.MaxSessions < 1:
		return fmt.Errorf("fsm: MaxSessions must be positive")
	case c.MaxResultsPerSession < 1:
		return fmt.Errorf("fsm: MaxResultsPerSession must be positive")
	}
	return nil
}

// FSM is the replicated state machine. See the package comment.
type FSM struct {
	cfg   Config
	log   *slog.Logger
	store *store.Store

	// Owned by the FSM goroutine (ApplyBatch, Snapshot, Restore).
	sessions   map[string]*session
	idle       idleHeap // the sessions, least recently seen first
	keptBytes  int      // the sessions' kept bytes, summed (maxKeptTableBytes)
	logTime    int64    // max leader clock seen, Unix nanos
	nextExpiry int64    // log time of the next session expiry sweep
	// evictLogAt and evictLogged: when this node last logged evictions
	// (its own clock) and the count it logged then (logEviction).
	evictLogAt  time.Time
	evictLogged uint64

	evicted atomic.Uint64 // sessions evicted for room (SessionsEvicted)

	applied atomic.Uint64 // index of the last entry applied
	// clockLag is how far this node's clock was ahead of the leader's
	// clock in the last applied command (replication delay included), in
	// nanoseconds: a gauge for clock skew, which is the precision of
	// expiry across leader changes.
	clockLag atomic.Int64
	logTimeA atomic.Int64 // logTime, for readers outside the FSM goroutine
	halted   atomic.Pointer[error]
	members  atomic.Pointer[membersState]
	auth     atomic.Pointer[AuthState]
	// authMu guards authCh, closed and replaced at every auth change.
	authMu sync.Mutex
	authCh chan struct{}

	ckpts   checkpoints
	ckptWG  sync.WaitGroup // checkpoint hashes being computed
	hashing chan struct{}  // a slot per checkpoint hash being computed

	// waitMu guards waitCh, which is closed and replaced after every batch.
	waitMu sync.Mutex
	waitCh chan struct{}
}

var _ raft.BatchingFSM = (*FSM)(nil)

// New returns a state machine over an empty store.
func New(cfg Config) (*FSM, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	st, err := store.New(store.Options{TrackChanges: cfg.Changes != nil})
	if err != nil {
		return nil, err
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.Default()
	}
	f := &FSM{cfg: cfg, log: lg, store: st, sessions: map[string]*session{}, waitCh: make(chan struct{}), hashing: make(chan struct{}, maxHashing)}
	f.members.Store(&membersState{members: map[string]Member{}})
	f.auth.Store(emptyAuth)
	f.authCh = make(chan struct{})
	return f, nil
}

// Store returns the store the state machine applies to. Callers read it
// through Store().View(); only the state machine writes.
func (f *FSM) Store() *store.Store { return f.store }

// Applied returns the index of the last log entry the state machine
// applied (entries of kinds Raft does not hand to the FSM, such as no-ops,
// are not counted).
func (f *FSM) Applied() uint64 { return f.applied.Load() }

// Halted returns the error that halted the state machine, or nil.
func (f *FSM) Halted() error {
	if p := f.halted.Load(); p != nil {
		return *p
	}
	return nil
}

// AppliedCh returns a channel closed at the next applied batch. Waiters
// load Applied, then wait on the channel they took before loading.
func (f *FSM) AppliedCh() <-chan struct{} {
	f.waitMu.Lock()
	defer f.waitMu.Unlock()
	return f.waitCh
}

func (f *FSM) notify() {
	f.waitMu.Lock()
	close(f.waitCh)
	f.waitCh = make(chan struct{})
	f.waitMu.Unlock()
}

// Apply applies one entry. hashicorp/raft uses ApplyBatch, since FSM
// implements BatchingFSM; Apply exists to satisfy raft.FSM.
func (f *FSM) Apply(l *raft.Log) interface{} {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies committed entries in order and publishes their effect
// to readers at once. It returns one *commandv1.Result per entry (nil for
// configuration entries). Results may be shared with the session table
// and must not be modified.
func (f *FSM) ApplyBatch(logs []*raft.Log) []interface{} {
	out := make([]interface{}, len(logs))
	b := f.store.Begin()
	last := f.applied.Load()
	for i, l := range logs {
		if l.Index <= last && f.Halted() == nil {
			// Already applied: Raft replays entries after installing a
			// snapshot older than this state (Restore). Followers ignore
			// results, and leaders never install snapshots.
			out[i] = &cmdpb.Result{Revision: l.Index}
			continue
		}
		if rev := f.checkpointAt(last, l.Index); rev != 0 && f.Halted() == nil {
			// Commit what comes before the checkpoint so that its state
			// can be captured, then go on in a new batch: once every
			// HashEvery entries.
			f.finishBatch(b, last)
			f.recordCheckpoint(rev)
			b = f.store.Begin()
		}
		if f.Halted() != nil {
			out[i] = haltedResult(l.Index, f.Halted())
			continue
		}
		if l.Type == raft.LogCommand {
			out[i] = f.applyCommand(b, l)
		} else if err := b.Advance(l.Index); err != nil {
			// Only a revision that goes backwards fails here: a bug.
			f.log.Error("fsm: cannot advance revision", "index", l.Index, "err", err)
		}
		last = l.Index
	}
	f.finishBatch(b, last)
	return out
}

// finishBatch commits b, whose last entry is last, and tells watchers and
// waiters.
func (f *FSM) finishBatch(b *store.Batch, last uint64) {
	b.Commit()
	f.logTimeA.Store(f.logTime)
	f.applied.Store(last)
	if f.cfg.Changes != nil {
		f.cfg.Changes.Publish(last, b.Changes())
	}
	f.notify()
}

// LogTime returns the log time (Unix nanoseconds) of the last applied
// command: the largest leader clock the log carried.
func (f *FSM) LogTime() int64 { return f.logTimeA.Load() }

// ClockLag returns how far this node's clock ran ahead of the proposing
// leader's in the last applied command (negative: behind), replication
// delay included.
func (f *FSM) ClockLag() time.Duration { return time.Duration(f.clockLag.Load()) }

func haltedResult(index uint64, err error) *cmdpb.Result {
	return &cmdpb.Result{Revision: index, ErrorReason: pb.ReasonHalted, ErrorMessage: err.Error()}
}

func errResult(index uint64, err error) *cmdpb.Result {
	var ce *CommandError
	if errors.As(err, &ce) {
		return &cmdpb.Result{Revision: index, ErrorReason: ce.Reason, ErrorMessage: ce.Message}
	}
	return &cmdpb.Result{Revision: index, ErrorReason: Reason(err), ErrorMessage: err.Error()}
}

var errInvalid = store.ErrInvalidArgument

// applyCommand applies one command entry. Every path calls exactly one
// store command (or Advance), so the store's revision follows the log.
func (f *FSM) applyCommand(b *store.Batch, l *raft.Log) *cmdpb.Result {
	var env cmdpb.Envelope
	if err := env.UnmarshalVT(l.Data); err != nil {
		_ = b.Advance(l.Index)
		return errResult(l.Index, fmt.Errorf("%w: undecodable command: %v", store.ErrInvalidArgument, err))
	}
	if env.Version > MaxCommandVersion {
		err := fmt.Errorf("%w: log entry %d has command format version %d; this node understands up to %d and must be upgraded",
			ErrHalted, l.Index, env.Version, MaxCommandVersion)
		f.halted.Store(&err)
		f.log.Error("fsm: HALTED: refusing to apply a command it does not understand; upgrade this node",
			"index", l.Index, "version", env.Version, "max_version", MaxCommandVersion)
		return haltedResult(l.Index, err)
	}
	if env.Version == 0 {
		_ = b.Advance(l.Index)
		return errResult(l.Index, fmt.Errorf("%w: command has no format version", store.ErrInvalidArgument))
	}
	if env.UnixNanos > f.logTime {
		f.logTime = env.UnixNanos
	}
	f.clockLag.Store(time.Now().UnixNano() - env.UnixNanos)
	b.SetTime(f.logTime)
	f.expireSessions()
	if s := env.Session; len(s.GetClientId()) > 0 || s.GetSeq() != 0 {
		return f.applySession(b, l.Index, &env)
	}
	return f.execute(b, l.Index, &env)
}

// execute runs the command of an envelope against the store.
func (f *FSM) execute(b *store.Batch, index uint64, env *cmdpb.Envelope) *cmdpb.Result {
	res := &cmdpb.Result{Revision: index}
	var err error
	switch c := env.Command.(type) {
	case *cmdpb.Envelope_Txn:
		var txn store.Txn
		if txn, err = convert.Txn(c.Txn.GetConditions(), c.Txn.GetThen(), c.Txn.GetElse()); err != nil {
			break
		}
		var tr store.TxnResult
		if tr, err = b.Txn(index, txn); err != nil {
			return errResult(index, err)
		}
		res.Succeeded = tr.Succeeded
		res.Results = make([]*pb.OpResult, len(tr.Results))
		if n := readBytes(tr.Results); n > maxTxnReadBytes && env.Version >= sessionRulesVersion {
			// Applied, but answered without the rows (before converting
			// them): the caller gets OUTCOME_NOT_KEPT with this message.
			for i, r := range tr.Results {
				if r.Kind == store.OpGet {
					r.Row = store.Row{}
				}
				res.Results[i] = convert.OpResultToPB(r)
				if g := res.Results[i].GetGet(); g != nil {
					g.Row = nil
				}
			}
			res.ReplayTrimmed = true
			res.ErrorMessage = fmt.Sprintf("the transaction was applied at revision %d, but the rows its Get operations read, %d bytes, are over the %d a transaction returns; read them with Get or BatchGet",
				index, n, maxTxnReadBytes)
			return res
		}
		for i, r := range tr.Results {
			res.Results[i] = convert.OpResultToPB(r)
		}
		return res
	case *cmdpb.Envelope_CreateTable:
		var sc store.TableSchema
		if sc, err = convert.Schema(c.CreateTable); err != nil {
			break
		}
		if err = b.CreateTable(index, sc); err != nil {
			return errResult(index, err)
		}
		f.log.Info("table created", "table", sc.Name, "revision", index)
		return res
	case *cmdpb.Envelope_DropTable:
		if err = b.DropTable(index, c.DropTable.GetTable()); err != nil {
			return errResult(index, err)
		}
		f.log.Info("table dropped", "table", c.DropTable.GetTable(), "revision", index)
		return res
	case *cmdpb.Envelope_CreateIndex:
		start := time.Now()
		if err = b.CreateIndex(index, c.CreateIndex.GetTable(), convert.Index(c.CreateIndex.GetIndex())); err != nil {
			return errResult(index, err)
		}
		f.log.Info("index created", "table", c.CreateIndex.GetTable(), "index", c.CreateIndex.GetIndex().GetName(),
			"revision", index, "took", time.Since(start))
		return res
	case *cmdpb.Envelope_DropIndex:
		if err = b.DropIndex(index, c.DropIndex.GetTable(), c.DropIndex.GetIndex()); err != nil {
			return errResult(index, err)
		}
		return res
	case *cmdpb.Envelope_Tick:
		_ = b.Advance(index)
		return res
	case *cmdpb.Envelope_Expire:
		keys := make([]string, len(c.Expire.GetKeys()))
		for i, k := range c.Expire.GetKeys() {
			keys[i] = string(k)
		}
		if _, err = b.Expire(index, c.Expire.GetTable(), keys); err != nil {
			return errResult(index, err)
		}
		return res
	case *cmdpb.Envelope_RegisterMember:
		_ = b.Advance(index)
		if err := f.registerMember(c.RegisterMember); err != nil {
			return errResult(index, err)
		}
		return res
	case *cmdpb.Envelope_Auth:
		_ = b.Advance(index)
		if err := f.applyAuth(index, c.Auth); err != nil {
			return errResult(index, err)
		}
		f.log.Info("access control changed", "op", c.Auth.GetOp().String(), "name", c.Auth.GetName(), "revision", index)
		return res
	default:
		err = fmt.Errorf("%w: envelope carries no command", store.ErrInvalidArgument)
	}
	// Conversion failed before the store saw the command.
	_ = b.Advance(index)
	return errResult(index, err)
}

// readBytes is the row data of the Get results: the bytes of their
// values and field names, which converting them copies.
func readBytes(rs []store.OpResult) int {
	n := 0
	for _, r := range rs {
		if r.Kind != store.OpGet || !r.Found {
			continue
		}
		for _, f := range r.Row.Fields {
			n += len(f.Name) + 16
			if k := f.Value.Kind(); k == store.KindString || k == store.KindBytes {
				n += len(f.Value.AsString())
			}
		}
	}
	return n
}

// Encode builds the bytes of a log entry. now is the proposer's clock;
// level is the cluster's feature level (the highest version every voter
// applies): a session write is written at version 3 once the level
// allows, so that it gets version 3's session rules (see the versions
// above). The caller checks RequiredVersion against the level first.
func Encode(env *cmdpb.Envelope, now time.Time, level uint32) ([]byte, error) {
	env.Version = max(CommandVersion, RequiredVersion(env))
	_, isTxn := env.Command.(*cmdpb.Envelope_Txn)
	if (isTxn || env.Session != nil && len(env.Session.ClientId) > 0) && level >= sessionRulesVersion {
		env.Version = max(env.Version, sessionRulesVersion)
	}
	env.UnixNanos = now.UnixNano()
	return env.MarshalVT()
}

// ResultError returns the error a result carries, or nil. Every caller
// that answers a client from a result goes through it: a session's
// trimmed copy of a write's result (ReplayTrimmed, see keptForm), which a
// retry of the write gets, is an error with reason OUTCOME_NOT_KEPT and
// the revision the write was applied at, unless the write itself failed.
func ResultError(r *cmdpb.Result) error {
	switch {
	case r == nil:
		return nil
	case r.ErrorReason != "":
		return &CommandError{Reason: r.ErrorReason, Message: r.ErrorMessage}
	case r.ReplayTrimmed:
		return notKeptError(r)
	}
	return nil
}

// CommandError is a command's failure as the log recorded it: a wire
// reason and a message.
type CommandError struct {
	Reason  string
	Message string
	// Revision, for OUTCOME_NOT_KEPT, is the revision the retried write
	// was applied at (memdbv1.MetaRevision on the wire); 0 otherwise.
	Revision uint64
}

func (e *CommandError) Error() string { return e.Message }

// Is lets errors.Is match a CommandError against the store's sentinels.
func (e *CommandError) Is(target error) bool {
	for _, r := range reasonTable {
		if r.reason == e.Reason && r.err == target {
			return true
		}
	}
	return false
}

// StateHash returns a 64-bit digest (XXH64) of the replicated state: the
// store's content, the member registry and the session table. Replicas at the same applied index have
// equal hashes. It must be called from the FSM goroutine or while no entry
// is being applied.
func (f *FSM) StateHash() (uint64, error) {
	_, sessions, err := encodeSessions(f.sessions)
	if err != nil {
		return 0, err
	}
	members, err := f.members.Load().encode()
	if err != nil {
		return 0, err
	}
	auth, err := f.auth.Load().encode()
	if err != nil {
		return 0, err
	}
	return stateHash(f.store.View(), append(members, auth...), sessions), nil
}

// RequiredVersion is the command format version a replica needs to apply
// env: 1, unless a kind (or a part of a transaction) added later needs
// the version that introduced it (see the versions above). The leader
// proposes such a command only once the cluster's feature level (the lowest version its voters apply) reaches
// it, so that no voter meets a command it cannot apply.
func RequiredVersion(env *cmdpb.Envelope) uint32 {
	switch c := env.Command.(type) {
	case *cmdpb.Envelope_Auth:
		return 4
	case *cmdpb.Envelope_Expire:
		return 2
	case *cmdpb.Envelope_Txn:
		for _, ops := range [][]*pb.Op{c.Txn.GetThen(), c.Txn.GetElse()} {
			for _, op := range ops {
				if usesExpiry(op) {
					return 2
				}
			}
		}
	}
	return 1
}

func usesExpiry(op *pb.Op) bool {
	switch o := op.GetOp().(type) {
	case *pb.Op_Touch:
		return true
	case *pb.Op_Insert:
		return o.Insert.GetTtlMs() != 0
	case *pb.Op_Upsert:
		return o.Upsert.GetTtlMs() != 0
	case *pb.Op_Update:
		return o.Update.GetTtlMs() != 0 || o.Update.GetClearTtl()
	}
	return false
}
