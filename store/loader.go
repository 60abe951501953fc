package store

import (
	"encoding/binary"
	"fmt"

	"github.com/cespare/xxhash/v2"
)

// Rows calls fn with every encoded row of a table in key order, until fn
// returns false. Snapshots write these bytes as they are.
func (v *View) Rows(tableName string, fn func(raw string) bool) error {
	t, err := v.table(tableName)
	if err != nil {
		return err
	}
	t.rows.Scan(fn)
	return nil
}

// Loader rebuilds a store's content from encoded rows (a snapshot). It
// builds a complete new state on the side; nothing is visible until
// Store.Load swaps it in, so a snapshot that turns out to be corrupt
// halfway leaves the store as it was.
type Loader struct {
	hash   *xxhash.Digest // View.Hash of the content so far
	limits Limits
	tables map[string]*table
	cur    *table
	last   string
}

// NewLoader returns an empty loader.
func (s *Store) NewLoader() *Loader {
	return &Loader{limits: s.opts.Limits, tables: map[string]*table{}, hash: xxhash.New()}
}

// AddTable starts a table; its rows follow through AddRow. Tables come in
// name order, as View.Tables lists them.
func (l *Loader) AddTable(schema TableSchema, createRev uint64) error {
	if err := schema.Validate(l.limits); err != nil {
		return err
	}
	if _, ok := l.tables[schema.Name]; ok {
		return fmt.Errorf("%w: table %s appears twice", ErrCorrupt, schema.Name)
	}
	if l.cur != nil && schema.Name < l.cur.schema.Name {
		return fmt.Errorf("%w: table %s out of name order", ErrCorrupt, schema.Name)
	}
	t := newTable(schema.clone(), createRev)
	hashSchema(l.hash, t.schema, createRev)
	l.tables[schema.Name] = t
	l.cur, l.last = t, ""
	return nil
}

// AddRow adds an encoded row to the current table. Rows must come in
// strictly increasing key order, as View.Rows yields them; that lets the
// B-tree be bulk-loaded with full nodes.
func (l *Loader) AddRow(raw string) error {
	if l.cur == nil {
		return fmt.Errorf("%w: row before any table", ErrCorrupt)
	}
	if err := validateRow(raw); err != nil {
		return fmt.Errorf("table %s: %w", l.cur.schema.Name, err)
	}
	k := rowKey(raw)
	if l.last != "" && k <= l.last {
		return fmt.Errorf("%w: table %s: rows out of order", ErrCorrupt, l.cur.schema.Name)
	}
	if tagKind(k[0]) != l.cur.pkType.Kind() {
		return fmt.Errorf("%w: table %s: primary key of the wrong type", ErrCorrupt, l.cur.schema.Name)
	}
	if err := l.cur.checkLoadedRow(raw); err != nil {
		return fmt.Errorf("%w: table %s: %v", ErrCorrupt, l.cur.schema.Name, err)
	}
	l.last = k
	writeLenString(l.hash, raw)
	l.cur.rows.Load(raw)
	l.cur.bytes += int64(len(raw))
	if e := rowExpiry(raw); e != 0 {
		l.cur.setExpiry(k, 0, e)
	}
	return nil
}

// checkLoadedRow checks a well-formed row against the table's schema, as
// checkRow checks every written row: the rest of the store relies on it
// (decodeRow would list a field named as the primary key twice, typed
// scans assume declared fields hold their type).
func (t *table) checkLoadedRow(raw string) error {
	// It walks the row in place rather than decoding it: restore time is
	// dominated by per-row work, and this check runs on every row.
	sc := t.schema
	r, err := readRow(raw)
	if err != nil {
		return err
	}
	pk, _, err := decodeKeyValue(r.key)
	if err != nil {
		return err
	}
	if err := validateValue(pk); err != nil {
		return fmt.Errorf("primary key: %v", err)
	}
	required := 0
	for {
		f, ok, err := r.next()
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		if f.Name == sc.PrimaryKey {
			return fmt.Errorf("field %s repeats the primary key", f.Name)
		}
		if err := validateValue(f.Value); err != nil {
			return fmt.Errorf("field %s: %v", f.Name, err)
		}
		if f.Value.kind == KindDouble && f.Value.n == 1<<63 {
			return fmt.Errorf("field %s: negative zero, which Double stores as zero", f.Name)
		}
		if decl, ok := sc.Field(f.Name); ok && f.Value.kind != KindNull {
			if f.Value.kind != decl.Type.Kind() {
				return fmt.Errorf("field %s is %s, declared %s", f.Name, f.Value.kind, decl.Type)
			}
			if decl.Required {
				required++
			}
		}
	}
	if required != t.requiredFields() {
		for _, decl := range sc.Fields {
			if decl.Required && decl.Name != sc.PrimaryKey {
				if v, ok, _ := rowField(raw, decl.Name); !ok || v.kind == KindNull {
					return fmt.Errorf("required field %s is missing", decl.Name)
				}
			}
		}
	}
	return nil
}

// requiredFields counts the required fields other than the primary key.
func (t *table) requiredFields() int {
	n := 0
	for _, decl := range t.schema.Fields {
		if decl.Required && decl.Name != t.schema.PrimaryKey {
			n++
		}
	}
	return n
}

// rowField finds one field of an encoded row.
func rowField(raw, name string) (Value, bool, error) {
	r, err := readRow(raw)
	if err != nil {
		return Value{}, false, err
	}
	for {
		f, ok, err := r.next()
		if err != nil || !ok {
			return Value{}, false, err
		}
		if f.Name == name {
			return f.Value, true, nil
		}
	}
}

func tagKind(tag byte) Kind {
	switch tag {
	case tagFalse, tagTrue:
		return KindBool
	case tagInt:
		return KindInt
	case tagDouble:
		return KindDouble
	case tagString:
		return KindString
	case tagBytes:
		return KindBytes
	case tagTimestamp:
		return KindTimestamp
	}
	return KindNull
}

// Load replaces the store's whole content with the loader's, at revision
// rev, building every secondary index. On error the store is unchanged.
func (s *Store) Load(l *Loader, rev uint64) error {
	tables := l.tables
	for _, t := range tables {
		t.indexes = make([]*index, len(t.schema.Indexes))
		for i, def := range t.schema.Indexes {
			ix, err := t.buildIndex(t.schema, def)
			if err != nil {
				return fmt.Errorf("rebuilding index: %w", err)
			}
			t.indexes[i] = ix
		}
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.tables = tables
	s.rev = rev
	nv := &View{rev: rev, tables: make(map[string]*table, len(tables))}
	for name, t := range tables {
		nv.tables[name] = t.freeze()
	}
	s.view.Store(nv)
	return nil
}

// Hash returns a 64-bit digest (XXH64) of the view's content: every
// table's schema and every row with its history. Replicas that applied the
// same log have equal hashes at equal revisions, whatever their history of
// snapshots and restarts. XXH64 rather than SHA-256: the hash detects
// divergence, not tampering, and it runs over the whole database on every
// snapshot and restore, where SHA-256 cost more than everything else.
func (v *View) Hash() uint64 {
	h := xxhash.New()
	for _, name := range v.tableNames() {
		t := v.tables[name]
		hashSchema(h, t.schema, t.createRev)
		t.rows.Scan(func(raw string) bool {
			writeLenString(h, raw)
			return true
		})
	}
	return h.Sum64()
}

func writeLenString(h *xxhash.Digest, s string) {
	var b [binary.MaxVarintLen64]byte
	_, _ = h.Write(b[:binary.PutUvarint(b[:], uint64(len(s)))])
	_, _ = h.WriteString(s)
}

func hashSchema(h *xxhash.Digest, sc *TableSchema, createRev uint64) {
	writeLenString(h, sc.Name)
	writeLenString(h, sc.PrimaryKey)
	writeLenString(h, fmt.Sprint(createRev, len(sc.Fields), len(sc.Indexes)))
	for _, f := range sc.Fields {
		writeLenString(h, fmt.Sprint(f.Name, f.Type, f.Required))
	}
	for _, ix := range sc.Indexes {
		writeLenString(h, fmt.Sprint(ix.Name, ix.Fields, ix.Unique))
	}
}
