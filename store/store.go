package store

import (
	"encoding/binary"
	"fmt"
	"maps"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/tidwall/btree"
)

// btreeDegree sets node size. 32 gives nodes of up to 63 items: a
// copy-on-write path copy moves about 1 KiB per level, which keeps the cost
// of publishing a view after every batch small, while trees of a million
// rows stay four levels deep.
const btreeDegree = 32

func newIndexTree() *btree.BTreeG[string] {
	return btree.NewBTreeGOptions(func(a, b string) bool { return a < b },
		btree.Options{Degree: btreeDegree, NoLocks: true})
}

// Options configures a Store.
type Options struct {
	// Limits bound every command; DefaultLimits when zero.
	Limits Limits
	// TrackChanges makes every Batch record the row changes it commits
	// (Batch.Changes), for change feeds.
	TrackChanges bool
}

// Store is the in-memory database. See the package comment for the
// concurrency contract.
type Store struct {
	opts Options

	// wmu is held by the open Batch. It guards tables and rev.
	wmu    sync.Mutex
	tables map[string]*table
	rev    uint64

	view atomic.Pointer[View]
}

// New returns an empty store.
func New(opts Options) (*Store, error) {
	if opts.Limits == (Limits{}) {
		opts.Limits = DefaultLimits()
	}
	if err := opts.Limits.Validate(); err != nil {
		return nil, err
	}
	s := &Store{opts: opts, tables: map[string]*table{}}
	s.view.Store(&View{tables: map[string]*table{}})
	return s, nil
}

// Limits returns the store's limits.
func (s *Store) Limits() Limits { return s.opts.Limits }

// View returns the last committed state. It never blocks.
func (s *Store) View() *View { return s.view.Load() }

// Begin opens a batch of commands. It blocks while another batch is open.
// The batch must be committed.
func (s *Store) Begin() *Batch {
	s.wmu.Lock()
	return &Batch{s: s, dirty: map[string]bool{}}
}

// Batch applies commands to the writer's state; none is visible to readers
// until Commit. Each command is atomic on its own: one that fails changes
// nothing, and the commands before and after it are unaffected.
type Batch struct {
	s        *Store
	dirty    map[string]bool // tables changed since the last publish
	setDirty bool            // tables created or dropped
	log      []mutation      // mutations of the current command (undo log)
	changes  []Change
	done     bool
	now      int64 // log time of the current command, Unix nanos; 0 none
}

// SetTime sets the log time, in Unix nanoseconds, for the commands that
// follow. Rows whose expiry is at or before it are treated as absent (and
// deleted, as an expiry, when a command touches them); time to live
// counts from it. It must never go backwards.
func (b *Batch) SetTime(now int64) {
	if now > b.now {
		b.now = now
	}
}

// Change is one row change, in commit order.
type Change struct {
	Revision uint64
	Table    string
	// Key is the encoded primary key.
	Key string
	// Row is the encoded row after the change; "" for a delete.
	Row string
	// Prev is the encoded row before the change; "" when it was created.
	Prev string
	// Expired marks a delete made because the row's time to live ran out.
	Expired bool
	// Dropped is set, with Key empty, on the change that ends a table
	// (after the deletes of its rows) or one of its indexes: "" for the
	// table, the index name for an index. Watches over it end there.
	Dropped *string
}

// mutation records one row change of the running command, so that a
// failure later in the same command can restore the row.
type mutation struct {
	t        *table
	name     string
	key      string
	old, new string
	expired  bool
}

// begin checks the revision of a command and makes it the store's.
func (b *Batch) begin(rev uint64) error {
	if b.done {
		return fmt.Errorf("%w: batch already committed", ErrInvalidArgument)
	}
	if rev <= b.s.rev {
		return fmt.Errorf("%w: revision %d is not after the current revision %d", ErrInvalidArgument, rev, b.s.rev)
	}
	b.s.rev = rev
	b.log = b.log[:0]
	return nil
}

// finish ends a command: on error it undoes the command's row changes,
// otherwise it keeps them as changes.
func (b *Batch) finish(err error) {
	if err != nil {
		for i := len(b.log) - 1; i >= 0; i-- {
			m := b.log[i]
			m.t.restoreRow(m.key, m.new, m.old)
		}
	} else {
		for _, m := range b.log {
			b.dirty[m.name] = true
			if b.s.opts.TrackChanges {
				b.changes = append(b.changes, Change{Revision: b.s.rev, Table: m.name, Key: m.key, Row: m.new, Prev: m.old, Expired: m.expired})
			}
		}
	}
	b.log = b.log[:0]
}

// Advance moves the revision forward for a log entry that changes no data
// (a failed command applied elsewhere, a clock tick).
func (b *Batch) Advance(rev uint64) error { return b.begin(rev) }

// Revision returns the revision of the last command in the batch.
func (b *Batch) Revision() uint64 { return b.s.rev }

// Changes returns the row changes committed by this batch so far, when the
// store tracks changes.
func (b *Batch) Changes() []Change { return b.changes }

// Commit publishes the batch to readers and releases the writer. It
// returns the new view.
func (b *Batch) Commit() *View {
	if b.done {
		return b.s.View()
	}
	b.done = true
	s := b.s
	defer s.wmu.Unlock()
	old := s.view.Load()
	if len(b.dirty) == 0 && !b.setDirty && old.rev == s.rev {
		return old
	}
	nv := &View{rev: s.rev, tables: old.tables}
	if len(b.dirty) > 0 || b.setDirty {
		nv.tables = make(map[string]*table, len(s.tables))
		for name, t := range s.tables {
			if b.dirty[name] || old.tables[name] == nil {
				nv.tables[name] = t.freeze()
			} else {
				nv.tables[name] = old.tables[name]
			}
		}
	}
	s.view.Store(nv)
	return nv
}

// CreateTable creates an empty table.
func (b *Batch) CreateTable(rev uint64, schema TableSchema) (err error) {
	if err := b.begin(rev); err != nil {
		return err
	}
	if err := schema.Validate(b.s.opts.Limits); err != nil {
		return err
	}
	if _, ok := b.s.tables[schema.Name]; ok {
		return fmt.Errorf("%w: %s", ErrTableExists, schema.Name)
	}
	if len(b.s.tables) >= b.s.opts.Limits.MaxTables {
		return fmt.Errorf("%d tables exist, limit %d: %w", len(b.s.tables), b.s.opts.Limits.MaxTables, ErrTooLarge)
	}
	sc := schema.clone()
	t := newTable(sc, rev)
	t.indexes = make([]*index, len(sc.Indexes))
	for i := range sc.Indexes {
		t.indexes[i] = newIndex(sc, sc.Indexes[i])
	}
	b.s.tables[sc.Name] = t
	b.setDirty = true
	b.dirty[sc.Name] = true
	return nil
}

// DropTable removes a table and its rows.
func (b *Batch) DropTable(rev uint64, name string) error {
	if err := b.begin(rev); err != nil {
		return err
	}
	t, ok := b.s.tables[name]
	if !ok {
		return fmt.Errorf("%w: %s", ErrTableNotFound, name)
	}
	if b.s.opts.TrackChanges {
		t.rows.Scan(func(row string) bool {
			b.changes = append(b.changes, Change{Revision: rev, Table: name, Key: rowKey(row), Prev: row})
			return true
		})
		b.changes = append(b.changes, Change{Revision: rev, Table: name, Dropped: new(string)})
	}
	delete(b.s.tables, name)
	delete(b.dirty, name)
	b.setDirty = true
	return nil
}

// CreateIndex adds a secondary index to a table, building it over the
// existing rows. Readers are not stalled: they keep reading the previous
// view until the batch commits. A unique index over rows that already
// violate it fails and changes nothing.
func (b *Batch) CreateIndex(rev uint64, tableName string, ix IndexSchema) (err error) {
	if err := b.begin(rev); err != nil {
		return err
	}
	defer func() { b.finish(err) }()
	t, ok := b.s.tables[tableName]
	if !ok {
		return fmt.Errorf("%w: %s", ErrTableNotFound, tableName)
	}
	if _, ok := t.schema.Index(ix.Name); ok {
		return fmt.Errorf("%w: %s.%s", ErrIndexExists, tableName, ix.Name)
	}
	sc := t.schema.clone()
	sc.Indexes = append(sc.Indexes, IndexSchema{Name: ix.Name, Fields: append([]string(nil), ix.Fields...), Unique: ix.Unique})
	if err := sc.Validate(b.s.opts.Limits); err != nil {
		return err
	}
	if ix.Unique && t.hasExpiredAt(b.now) {
		// Rows past their expiry that the log has not deleted yet must not
		// make a unique index fail: they go now, as expiries (put back if
		// the index still fails).
		var keys []string
		t.expiry.Scan(func(e string) bool {
			if int64(binary.BigEndian.Uint64([]byte(e[:8]))) > b.now {
				return false
			}
			keys = append(keys, e[8:])
			return true
		})
		for _, k := range keys {
			b.live(t, []byte(k))
		}
	}
	nix, err := t.buildIndex(sc, sc.Indexes[len(sc.Indexes)-1])
	if err != nil {
		return err
	}
	t.schema = sc
	t.indexes = append(t.indexes[:len(t.indexes):len(t.indexes)], nix)
	b.dirty[tableName] = true
	return nil
}

// DropIndex removes a secondary index.
func (b *Batch) DropIndex(rev uint64, tableName, name string) error {
	if err := b.begin(rev); err != nil {
		return err
	}
	t, ok := b.s.tables[tableName]
	if !ok {
		return fmt.Errorf("%w: %s", ErrTableNotFound, tableName)
	}
	pos := -1
	for i, ix := range t.indexes {
		if ix.def.Name == name {
			pos = i
		}
	}
	if pos < 0 {
		return fmt.Errorf("%w: %s.%s", ErrIndexNotFound, tableName, name)
	}
	sc := t.schema.clone()
	sc.Indexes = append(sc.Indexes[:pos:pos], sc.Indexes[pos+1:]...)
	idx := append(t.indexes[:pos:pos], t.indexes[pos+1:]...)
	t.schema = sc
	t.indexes = idx
	b.dirty[tableName] = true
	if b.s.opts.TrackChanges {
		b.changes = append(b.changes, Change{Revision: rev, Table: tableName, Dropped: &name})
	}
	return nil
}

// View is an immutable, point-in-time state of the store. It is safe for
// any number of goroutines and stays valid and unchanged for as long as it
// is held, whatever the writer does.
type View struct {
	rev    uint64
	tables map[string]*table // frozen tables; never mutated
	now    int64             // reads hide rows expired at now; 0: none
}

// At returns the same state as seen at time now (Unix nanoseconds): rows
// whose expiry is at or before now are hidden from Get, Scan and Count,
// although the log has not deleted them yet. It is cheap (one small copy).
func (v *View) At(now int64) *View {
	c := *v
	c.now = now
	return &c
}

// Now returns the time the view hides expired rows at; 0 for none.
func (v *View) Now() int64 { return v.now }

// Revision returns the revision of the last command the view reflects.
func (v *View) Revision() uint64 { return v.rev }

// TableInfo describes a table.
type TableInfo struct {
	Schema         TableSchema
	Rows           int
	Bytes          int64
	CreateRevision uint64
}

// Tables lists the tables, sorted by name.
func (v *View) Tables() []TableInfo {
	names := make([]string, 0, len(v.tables))
	for n := range v.tables {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]TableInfo, 0, len(names))
	for _, n := range names {
		out = append(out, v.tables[n].info())
	}
	return out
}

// DataBytes is the sum of the tables' encoded row sizes (TableInfo.Bytes).
func (v *View) DataBytes() int64 {
	var n int64
	for _, t := range v.tables {
		n += t.bytes
	}
	return n
}

// Table describes one table.
func (v *View) Table(name string) (TableInfo, error) {
	t, ok := v.tables[name]
	if !ok {
		return TableInfo{}, fmt.Errorf("%w: %s", ErrTableNotFound, name)
	}
	return t.info(), nil
}

func (v *View) table(name string) (*table, error) {
	t, ok := v.tables[name]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrTableNotFound, name)
	}
	return t, nil
}

// Get returns the row with that primary key.
func (v *View) Get(tableName string, key Value) (Row, bool, error) {
	t, err := v.table(tableName)
	if err != nil {
		return Row{}, false, err
	}
	enc, err := t.encodeKey(key, 0)
	if err != nil {
		return Row{}, false, err
	}
	raw, ok := t.rows.Get(keyProbe(enc))
	if !ok || expiredAt(rowExpiry(raw), v.now) {
		return Row{}, false, nil
	}
	row, err := decodeRow(raw, t.schema.PrimaryKey)
	return row, err == nil, err
}

// Expired lists, table by table, the encoded keys of up to limit rows
// whose expiry is at or before now, earliest first. The leader turns them
// into Expire commands.
func (v *View) Expired(now int64, limit int) map[string][]string {
	out := map[string][]string{}
	n := 0
	for _, name := range v.tableNames() {
		t := v.tables[name]
		if !t.hasExpiredAt(now) {
			continue
		}
		t.expiry.Scan(func(e string) bool {
			if n >= limit || int64(binary.BigEndian.Uint64([]byte(e[:8]))) > now {
				return false
			}
			out[name] = append(out[name], e[8:])
			n++
			return true
		})
		if n >= limit {
			break
		}
	}
	return out
}

// NextExpiry returns the earliest expiry of any row, 0 when none expires.
func (v *View) NextExpiry() int64 {
	var next int64
	for _, t := range v.tables {
		if t.expiry == nil {
			continue
		}
		if e, ok := t.expiry.Min(); ok {
			if x := int64(binary.BigEndian.Uint64([]byte(e[:8]))); next == 0 || x < next {
				next = x
			}
		}
	}
	return next
}

// clonedTables returns a shallow copy of the table map, for tests.
func (v *View) tableNames() []string { return sortedKeys(v.tables) }

func sortedKeys[M ~map[string]V, V any](m M) []string {
	ks := make([]string, 0, len(m))
	for k := range maps.Keys(m) {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
