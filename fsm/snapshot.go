package fsm

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/memdbd/memdbd/api/convert"
	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	"github.com/memdbd/memdbd/store"
)

// Snapshot format, version 1:
//
//	"MEMDBSNP" | uint32 format version (big-endian)
//	record*    where record = type byte | uvarint length | payload
//	uint32 CRC-32C (Castagnoli, big-endian) of every byte before it
//
// Records, in this order: one meta (SnapshotMeta), the member registry
// (SnapshotMembers), the access-control state (SnapshotAuth) if there is
// any, the sessions (Session),
// then per table in name order a table record (SnapshotTable) followed by
// its rows in key order (the store's row encoding, verbatim), and an end
// record. The meta carries the state hash of the store, which Restore
// recomputes before it replaces anything: the CRC catches damaged bytes,
// the hash catches a snapshot that decodes to the wrong state.
const (
	snapshotMagic   = "MEMDBSNP"
	snapshotVersion = 1

	recMeta    byte = 1
	recSession byte = 2
	recTable   byte = 3
	recRow     byte = 4
	recEnd     byte = 5
	recMembers byte = 6
	// recAuth, the access-control state (SnapshotAuth), follows the member
	// record when there is any. Backups leave it out (StripAuth).
	recAuth byte = 7
)

// maxRecord bounds a record's length so that a corrupt length cannot make
// Restore allocate without bound before the checksum fails. The writer
// refuses to write a longer record (snapWriter.record). A variable only so
// that tests can lower it.
var maxRecord = 256 << 20

// recordNames name the record types in errors and logs.
var recordNames = map[byte]string{recMeta: "meta", recSession: "session", recTable: "table", recRow: "row", recEnd: "end", recMembers: "members", recAuth: "access control"}

// RecordTooLargeError is a snapshot record longer than a reader accepts
// (maxRecord). The writer fails with it rather than write a snapshot no
// member could restore.
type RecordTooLargeError struct {
	Type  string // "session", "row", ...
	Label string // which one: a client id, a table
	Size  int
}

func (e *RecordTooLargeError) Error() string {
	what := e.Type + " record"
	if e.Label != "" {
		what += " " + e.Label
	}
	return fmt.Sprintf("%s of %d bytes is above the %d bytes a snapshot reader accepts", what, e.Size, maxRecord)
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type fsmSnapshot struct {
	log      *slog.Logger
	view     *store.View
	logTime  int64
	members  []byte
	auth     []byte // nil: no access-control record
	sessions [][]byte
	// sessionIDs are the client ids of sessions, in the same order.
	sessionIDs []string
}

// Snapshot captures the current state: the store's view in O(1) and an
// encoded copy of the session table, which is small (one entry per live
// client) and, unlike the store, mutable in place.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	if err := f.Halted(); err != nil {
		// A halted node has not applied what its log says; a snapshot would
		// let Raft compact entries this node still has to apply.
		return nil, err
	}
	ids, sessions, err := encodeSessions(f.sessions)
	if err != nil {
		return nil, fmt.Errorf("fsm: encoding sessions: %w", err)
	}
	members, err := f.members.Load().encode()
	if err != nil {
		return nil, fmt.Errorf("fsm: encoding members: %w", err)
	}
	auth, err := f.auth.Load().encode()
	if err != nil {
		return nil, fmt.Errorf("fsm: encoding access control: %w", err)
	}
	return &fsmSnapshot{log: f.log, view: f.store.View(), logTime: f.logTime, members: members, auth: auth, sessions: sessions, sessionIDs: ids}, nil
}

// Persist streams the snapshot to the sink. It runs concurrently with
// ApplyBatch and only reads the immutable view it captured.
//
// It writes nothing that Restore would refuse: a record above maxRecord
// fails the snapshot (RecordTooLargeError), the sink is cancelled, so that
// no unreadable snapshot is left behind, and the error goes back to Raft,
// which reports the snapshot failed and keeps the log it would have
// compacted.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	start := time.Now()
	cw := &countingWriter{w: sink}
	if err := s.write(cw); err != nil {
		_ = sink.Cancel()
		var big *RecordTooLargeError
		if errors.As(err, &big) {
			s.log.Error("snapshot failed: a record is too large to be read back; nothing was kept",
				"revision", s.view.Revision(), "record", big.Type, "which", big.Label, "bytes", big.Size, "max_bytes", maxRecord)
		} else {
			s.log.Error("snapshot failed", "revision", s.view.Revision(), "err", err)
		}
		return err
	}
	if err := sink.Close(); err != nil {
		s.log.Error("snapshot failed: closing the sink", "revision", s.view.Revision(), "err", err)
		return fmt.Errorf("fsm: closing snapshot: %w", err)
	}
	s.log.Info("snapshot persisted", "revision", s.view.Revision(), "bytes", cw.n, "took", time.Since(start))
	return nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Release does nothing: the view is garbage once unreferenced.
func (s *fsmSnapshot) Release() {}

// snapWriter frames records and checksums everything it writes.
type snapWriter struct {
	w   *bufio.Writer
	crc uint32
	err error
}

func (w *snapWriter) write(p []byte) {
	if w.err != nil {
		return
	}
	w.crc = crc32.Update(w.crc, castagnoli, p)
	_, w.err = w.w.Write(p)
}

// record writes one record. One longer than a reader accepts fails the
// snapshot instead: written, it would make the snapshot unreadable, on
// this member at its next start and on every member it is sent to.
func (w *snapWriter) record(typ byte, label string, payload []byte) {
	if w.err == nil && len(payload) > maxRecord {
		w.err = &RecordTooLargeError{Type: recordNames[typ], Label: label, Size: len(payload)}
	}
	var hdr [1 + binary.MaxVarintLen64]byte
	hdr[0] = typ
	n := binary.PutUvarint(hdr[1:], uint64(len(payload)))
	w.write(hdr[:1+n])
	w.write(payload)
}

func (w *snapWriter) message(typ byte, label string, m proto.Message) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil && w.err == nil {
		w.err = err
	}
	w.record(typ, label, b)
}

// writeHeader writes the magic and the format version.
func (w *snapWriter) writeHeader() {
	var hdr [12]byte
	copy(hdr[:], snapshotMagic)
	binary.BigEndian.PutUint32(hdr[8:], snapshotVersion)
	w.write(hdr[:])
}

// finish writes the checksum and flushes.
func (w *snapWriter) finish() error {
	if w.err != nil {
		return fmt.Errorf("fsm: writing snapshot: %w", w.err)
	}
	var trailer [4]byte
	binary.BigEndian.PutUint32(trailer[:], w.crc)
	if _, err := w.w.Write(trailer[:]); err != nil {
		return fmt.Errorf("fsm: writing snapshot: %w", err)
	}
	if err := w.w.Flush(); err != nil {
		return fmt.Errorf("fsm: writing snapshot: %w", err)
	}
	return nil
}

// StripAuth copies a snapshot without its access-control record: what a
// backup holds, since a backup seeds other clusters and the password
// hashes belong to this one. The copy is checked as it is read (framing,
// the source's checksum) and gets a checksum of its own. The state hash in
// the meta covers the store alone, so it holds for the copy.
func StripAuth(in io.Reader, out io.Writer) error {
	r := newSnapReader(in)
	if err := r.header(); err != nil {
		return err
	}
	w := &snapWriter{w: bufio.NewWriterSize(out, 1<<20)}
	w.writeHeader()
	for w.err == nil {
		typ, payload, err := r.next()
		if err != nil {
			return err
		}
		if typ != recAuth {
			w.record(typ, "", payload)
		}
		if typ == recEnd {
			if err := r.trailer(); err != nil {
				return err
			}
			break
		}
	}
	return w.finish()
}

// AuthRecordBytes returns how many bytes of a snapshot its access-control
// record takes (0 when it has none), reading only the records before it:
// what StripAuth leaves out, so a backup can announce its size first.
func AuthRecordBytes(in io.Reader) (int64, error) {
	r := newSnapReader(in)
	if err := r.header(); err != nil {
		return 0, err
	}
	for {
		typ, size, err := r.nextHeader()
		if err != nil {
			return 0, err
		}
		switch typ {
		case recAuth:
			return int64(1 + len(binary.AppendUvarint(nil, uint64(size))) + size), nil
		case recMeta, recMembers:
			if _, err := r.r.Discard(size); err != nil {
				return 0, truncated(err)
			}
		default:
			return 0, nil
		}
	}
}

// write writes the snapshot in the format above.
func (s *fsmSnapshot) write(out io.Writer) error {
	w := &snapWriter{w: bufio.NewWriterSize(out, 1<<20)}
	hash := s.view.Hash()
	tables := s.view.Tables()
	w.writeHeader()
	w.message(recMeta, "", &cmdpb.SnapshotMeta{
		Revision: s.view.Revision(), LogUnixNanos: s.logTime,
		Tables: uint32(len(tables)), Sessions: uint32(len(s.sessions)), StateHash: binary.BigEndian.AppendUint64(nil, hash),
	})
	w.record(recMembers, "", s.members)
	if s.auth != nil {
		w.record(recAuth, "", s.auth)
	}
	for i, b := range s.sessions {
		w.record(recSession, fmt.Sprintf("%q", s.sessionIDs[i]), b)
	}
	for _, t := range tables {
		w.message(recTable, t.Schema.Name, &cmdpb.SnapshotTable{Schema: convert.SchemaToPB(t.Schema), CreateRevision: t.CreateRevision, Rows: uint64(t.Rows)})
		err := s.view.Rows(t.Schema.Name, func(raw string) bool {
			// The row is immutable; viewing its bytes in place avoids copying
			// every row of the database once more.
			w.record(recRow, "of table "+t.Schema.Name, unsafe.Slice(unsafe.StringData(raw), len(raw)))
			return w.err == nil
		})
		if err != nil && w.err == nil {
			w.err = err
		}
	}
	w.record(recEnd, "", nil)
	return w.finish()
}

// checksumReader computes the CRC-32C of everything read through it except
// the last four bytes of the stream, which are the stored checksum. It
// sits below the buffered reader, so the CRC runs over large chunks
// rather than once per record.
type checksumReader struct {
	r    io.Reader
	crc  uint32
	tail [4]byte // the last bytes read, not hashed yet
	n    int     // bytes in tail
}

func (c *checksumReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	buf := p[:n]
	if c.n+len(buf) <= len(c.tail) {
		c.n += copy(c.tail[c.n:], buf)
		return n, err
	}
	// Hash the oldest bytes of tail+buf, keep the newest four.
	hashN := c.n + len(buf) - len(c.tail)
	fromTail := min(hashN, c.n)
	c.crc = crc32.Update(c.crc, castagnoli, c.tail[:fromTail])
	c.crc = crc32.Update(c.crc, castagnoli, buf[:hashN-fromTail])
	var next [4]byte
	k := copy(next[:], c.tail[fromTail:c.n])
	copy(next[k:], buf[hashN-fromTail:])
	c.tail, c.n = next, len(c.tail)
	return n, err
}

// snapReader reads framed records.
type snapReader struct {
	r  *bufio.Reader
	cs *checksumReader
}

func newSnapReader(in io.Reader) *snapReader {
	cs := &checksumReader{r: in}
	return &snapReader{r: bufio.NewReaderSize(cs, 1<<20), cs: cs}
}

func (r *snapReader) full(p []byte) error {
	if _, err := io.ReadFull(r.r, p); err != nil {
		return truncated(err)
	}
	return nil
}

func truncated(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: truncated", ErrSnapshotCorrupt)
	}
	return err
}

// nextHeader reads the framing of the next record: its type and length.
func (r *snapReader) nextHeader() (byte, int, error) {
	var hdr [1 + binary.MaxVarintLen64]byte
	if err := r.full(hdr[:1]); err != nil {
		return 0, 0, err
	}
	n := 0
	for i := 1; ; i++ {
		if i == len(hdr) {
			return 0, 0, fmt.Errorf("%w: bad record length", ErrSnapshotCorrupt)
		}
		if err := r.full(hdr[i : i+1]); err != nil {
			return 0, 0, err
		}
		if hdr[i] < 0x80 {
			n = i + 1
			break
		}
	}
	size, w := binary.Uvarint(hdr[1:n])
	if w <= 0 || size > uint64(maxRecord) {
		name := recordNames[hdr[0]]
		if name == "" {
			name = fmt.Sprintf("type %d", hdr[0])
		}
		return 0, 0, fmt.Errorf("%w: %s record of %d bytes (at most %d are read)", ErrSnapshotCorrupt, name, size, maxRecord)
	}
	return hdr[0], int(size), nil
}

// next reads one record; the payload is freshly allocated and owned by the
// caller.
func (r *snapReader) next() (byte, []byte, error) {
	typ, size, err := r.nextHeader()
	if err != nil {
		return 0, nil, err
	}
	payload := make([]byte, size)
	if err := r.full(payload); err != nil {
		return 0, nil, err
	}
	return typ, payload, nil
}

// header reads and checks the snapshot's magic and format version.
func (r *snapReader) header() error {
	var hdr [12]byte
	if err := r.full(hdr[:]); err != nil {
		return err
	}
	if string(hdr[:8]) != snapshotMagic {
		return fmt.Errorf("%w: not a memdbd snapshot", ErrSnapshotCorrupt)
	}
	if v := binary.BigEndian.Uint32(hdr[8:]); v != snapshotVersion {
		return fmt.Errorf("%w: format version %d, this node reads %d", ErrSnapshotVersion, v, snapshotVersion)
	}
	return nil
}

// trailer reads what follows the end record, the checksum, and checks it
// against everything before it, and that nothing follows.
func (r *snapReader) trailer() error {
	var trailer [4]byte
	if _, err := io.ReadFull(r.r, trailer[:]); err != nil {
		return truncated(err)
	}
	if _, err := r.r.ReadByte(); err != io.EOF {
		return fmt.Errorf("%w: trailing bytes after the checksum", ErrSnapshotCorrupt)
	}
	// At end of stream the checksum reader holds exactly the trailer and
	// has hashed everything before it.
	if r.cs.n != 4 || r.cs.tail != trailer {
		return fmt.Errorf("%w: framing does not end at the checksum", ErrSnapshotCorrupt)
	}
	if got, want := binary.BigEndian.Uint32(trailer[:]), r.cs.crc; got != want {
		return fmt.Errorf("%w: checksum mismatch (stored %08x, computed %08x)", ErrSnapshotCorrupt, got, want)
	}
	return nil
}

// CheckSnapshot reads a snapshot stream to its end and reports what would
// make Restore refuse it that can be seen without loading it: the magic
// and format version, the record types, lengths (maxRecord) and order
// (meta first, one member record, then sessions, tables and rows, then
// the end), the session records (decodeSession) and the checksum. It
// holds one meta, member or session record in memory at a time and skips
// the rows; the rows against their tables and the state hash are checked
// by Restore alone.
//
// The node runs it over every snapshot as it is written to disk, whether
// this member took it or a leader sent it, so that a snapshot no member
// could read is refused before it replaces an older one.
func CheckSnapshot(in io.Reader) error {
	r := newSnapReader(in)
	if err := r.header(); err != nil {
		return err
	}
	var meta, members, auth bool
	for {
		typ, size, err := r.nextHeader()
		if err != nil {
			return err
		}
		if !meta && typ != recMeta {
			return fmt.Errorf("%w: snapshot does not start with its meta record", ErrSnapshotCorrupt)
		}
		switch typ {
		case recRow, recTable:
			if _, err := r.r.Discard(size); err != nil {
				return truncated(err)
			}
			continue
		case recEnd:
			if _, err := r.r.Discard(size); err != nil {
				return truncated(err)
			}
			if !members {
				return fmt.Errorf("%w: no member record", ErrSnapshotCorrupt)
			}
			return r.trailer()
		case recMeta, recMembers, recSession, recAuth:
		default:
			return fmt.Errorf("%w: unknown record type %d", ErrSnapshotCorrupt, typ)
		}
		payload := make([]byte, size)
		if err := r.full(payload); err != nil {
			return err
		}
		switch typ {
		case recMeta:
			if meta {
				return fmt.Errorf("%w: two meta records", ErrSnapshotCorrupt)
			}
			meta = true
			if err := proto.Unmarshal(payload, &cmdpb.SnapshotMeta{}); err != nil {
				return fmt.Errorf("%w: meta: %v", ErrSnapshotCorrupt, err)
			}
		case recMembers:
			if members {
				return fmt.Errorf("%w: two member records", ErrSnapshotCorrupt)
			}
			members = true
			if _, err := decodeMembers(payload); err != nil {
				return fmt.Errorf("%w: members: %v", ErrSnapshotCorrupt, err)
			}
		case recSession:
			if _, err := decodeSession(payload); err != nil {
				return fmt.Errorf("%w: session: %v", ErrSnapshotCorrupt, err)
			}
		case recAuth:
			if auth {
				return fmt.Errorf("%w: two access-control records", ErrSnapshotCorrupt)
			}
			auth = true
			if _, err := decodeAuth(payload, 0); err != nil {
				return fmt.Errorf("%w: access control: %v", ErrSnapshotCorrupt, err)
			}
		}
	}
}

// Restore replaces the whole state with a snapshot's. It reads and checks
// everything first (framing, checksum, state hash); on any error the state
// machine is left exactly as it was.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	start := time.Now()
	st, err := f.readSnapshot(rc)
	if err != nil {
		f.log.Error("fsm: snapshot restore failed; state unchanged", "err", err)
		return err
	}
	if applied := f.applied.Load(); st.meta.Revision < applied {
		// hashicorp/raft installs whatever snapshot a leader sends, even
		// one older than what this follower has applied (a leader that
		// re-sends its snapshot after a rejected append did so, seen in
		// e2e). Restoring it would take the state back to an earlier
		// revision for a moment, under reads that already waited for the
		// later one. The state at `applied` is the same committed prefix
		// the snapshot plus the entries after it lead to, so it stays, and
		// ApplyBatch skips the entries up to it when Raft replays them.
		f.log.Info("snapshot older than the applied state; state kept", "snapshot_revision", st.meta.Revision, "applied", applied)
		return nil
	}
	if err := f.store.Load(st.loader, st.meta.Revision); err != nil {
		return fmt.Errorf("fsm: restoring snapshot: %w", err)
	}
	f.setSessions(st.sessions)
	f.members.Store(st.members)
	if st.auth == nil {
		st.auth = emptyAuth
	}
	f.setAuth(st.auth)
	f.logTime = st.meta.LogUnixNanos
	// Every entry up to the snapshot ran the sweeps due at its log time
	// (expireSessions), so the next one is the grid point after it.
	f.nextExpiry = 0
	if f.logTime > 0 {
		f.nextExpiry = f.sweepAfter(f.logTime)
	}
	f.halted.Store(nil)
	f.logTimeA.Store(f.logTime)
	f.applied.Store(st.meta.Revision)
	if f.cfg.Changes != nil {
		f.cfg.Changes.Reset(st.meta.Revision)
	}
	f.notify()
	f.log.Info("snapshot restored", "revision", st.meta.Revision, "tables", st.meta.Tables,
		"sessions", st.meta.Sessions, "took", time.Since(start))
	return nil
}

// loadPipe applies tables and rows to a store.Loader on a goroutine of its
// own, in order, while the reader goes on reading and checksumming: on two
// cores that overlaps I/O, framing and allocation with validation, hashing
// and B-tree loading, which roughly halves the time to restore.
type loadPipe struct {
	loader *store.Loader
	ops    chan loadOp
	done   chan struct{}
	err    error // set by the loader goroutine; read after done
	failed atomic.Bool
	batch  []string
}

type loadOp struct {
	schema    *store.TableSchema
	createRev uint64
	rows      []string
}

const loadBatch = 512

func newLoadPipe(l *store.Loader) *loadPipe {
	p := &loadPipe{loader: l, ops: make(chan loadOp, 8), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for op := range p.ops {
			if p.err != nil {
				continue // drain
			}
			if op.schema != nil {
				if err := l.AddTable(*op.schema, op.createRev); err != nil {
					p.err = fmt.Errorf("table: %w", err)
				}
			}
			for _, raw := range op.rows {
				if err := l.AddRow(raw); err != nil {
					p.err = err
					break
				}
			}
			if p.err != nil {
				p.failed.Store(true)
			}
		}
	}()
	return p
}

func (p *loadPipe) flush() {
	if len(p.batch) > 0 {
		p.ops <- loadOp{rows: p.batch}
		p.batch = make([]string, 0, loadBatch)
	}
}

func (p *loadPipe) table(sc store.TableSchema, createRev uint64) {
	p.flush()
	p.ops <- loadOp{schema: &sc, createRev: createRev}
}

func (p *loadPipe) row(raw string) {
	p.batch = append(p.batch, raw)
	if len(p.batch) == loadBatch {
		p.flush()
	}
}

// finish waits for the loader and returns its error.
func (p *loadPipe) finish() error {
	p.flush()
	close(p.ops)
	<-p.done
	return p.err
}

type restored struct {
	meta     *cmdpb.SnapshotMeta
	members  *membersState
	auth     *AuthState
	sessions map[string]*session
	loader   *store.Loader
}

func (f *FSM) readSnapshot(in io.Reader) (*restored, error) {
	r := newSnapReader(in)
	if err := r.header(); err != nil {
		return nil, err
	}
	st := &restored{sessions: map[string]*session{}, loader: f.store.NewLoader()}
	pipe := newLoadPipe(st.loader)
	finished := false
	defer func() {
		if !finished {
			_ = pipe.finish()
		}
	}()
	var rowsLeft uint64
	var table string
	for {
		if pipe.failed.Load() {
			finished = true
			return nil, fmt.Errorf("%w: %v", ErrSnapshotCorrupt, pipe.finish())
		}
		typ, payload, err := r.next()
		if err != nil {
			return nil, err
		}
		if st.meta == nil && typ != recMeta {
			return nil, fmt.Errorf("%w: snapshot does not start with its meta record", ErrSnapshotCorrupt)
		}
		if typ != recRow && rowsLeft != 0 {
			return nil, fmt.Errorf("%w: table %s is missing %d rows", ErrSnapshotCorrupt, table, rowsLeft)
		}
		switch typ {
		case recMeta:
			if st.meta != nil {
				return nil, fmt.Errorf("%w: two meta records", ErrSnapshotCorrupt)
			}
			st.meta = &cmdpb.SnapshotMeta{}
			if err := proto.Unmarshal(payload, st.meta); err != nil {
				return nil, fmt.Errorf("%w: meta: %v", ErrSnapshotCorrupt, err)
			}
		case recMembers:
			if st.members != nil {
				return nil, fmt.Errorf("%w: two member records", ErrSnapshotCorrupt)
			}
			if st.members, err = decodeMembers(payload); err != nil {
				return nil, fmt.Errorf("%w: members: %v", ErrSnapshotCorrupt, err)
			}
		case recAuth:
			if st.auth != nil {
				return nil, fmt.Errorf("%w: two access-control records", ErrSnapshotCorrupt)
			}
			if st.auth, err = decodeAuth(payload, st.meta.Revision); err != nil {
				return nil, fmt.Errorf("%w: access control: %v", ErrSnapshotCorrupt, err)
			}
		case recSession:
			s, err := decodeSession(payload)
			if err != nil {
				return nil, fmt.Errorf("%w: session: %v", ErrSnapshotCorrupt, err)
			}
			if _, dup := st.sessions[s.id]; dup {
				return nil, fmt.Errorf("%w: session appears twice", ErrSnapshotCorrupt)
			}
			st.sessions[s.id] = s
		case recTable:
			var pt cmdpb.SnapshotTable
			if err := proto.Unmarshal(payload, &pt); err != nil {
				return nil, fmt.Errorf("%w: table: %v", ErrSnapshotCorrupt, err)
			}
			sc, err := convert.Schema(pt.Schema)
			if err != nil {
				return nil, fmt.Errorf("%w: table: %v", ErrSnapshotCorrupt, err)
			}
			pipe.table(sc, pt.CreateRevision)
			table, rowsLeft = sc.Name, pt.Rows
		case recRow:
			if rowsLeft == 0 {
				return nil, fmt.Errorf("%w: more rows than announced", ErrSnapshotCorrupt)
			}
			rowsLeft--
			// payload was allocated for this row alone and is never written
			// again, so it can become the row's string without a copy: restore
			// is dominated by per-row allocation and copying.
			pipe.row(unsafe.String(unsafe.SliceData(payload), len(payload)))
		case recEnd:
			finished = true
			if err := pipe.finish(); err != nil {
				return nil, fmt.Errorf("%w: %v", ErrSnapshotCorrupt, err)
			}
			if err := r.trailer(); err != nil {
				return nil, err
			}
			if st.members == nil {
				return nil, fmt.Errorf("%w: no member record", ErrSnapshotCorrupt)
			}
			if int(st.meta.Sessions) != len(st.sessions) {
				return nil, fmt.Errorf("%w: %d sessions announced, %d found", ErrSnapshotCorrupt, st.meta.Sessions, len(st.sessions))
			}
			if h := st.loader.Hash(); !bytes.Equal(binary.BigEndian.AppendUint64(nil, h), st.meta.StateHash) {
				return nil, fmt.Errorf("%w: state hash mismatch", ErrSnapshotCorrupt)
			}
			return st, nil
		default:
			return nil, fmt.Errorf("%w: unknown record type %d", ErrSnapshotCorrupt, typ)
		}
	}
}
