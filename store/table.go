package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/tidwall/btree"
)

// table is one table. The writer's tables are mutable; the tables of a
// View are frozen copies (freeze) whose trees are never mutated again.
type table struct {
	schema    *TableSchema // immutable; replaced on index changes
	pkType    FieldType
	createRev uint64
	rows      rowTree  // encoded rows ordered by encoded key
	indexes   []*index // in schema.Indexes order
	bytes     int64    // sum of encoded row sizes
	// expiry orders the rows that have an expiry by it: entries are the
	// expiry (8 bytes big-endian) followed by the encoded key. nil until
	// the table's first expiring row, so tables without TTLs pay nothing.
	expiry *btree.BTreeG[string]
}

func expiryEntry(expiresAt int64, key string) string {
	b := make([]byte, 8, 8+len(key))
	binary.BigEndian.PutUint64(b, uint64(expiresAt))
	return string(append(b, key...))
}

// setExpiry moves a row's expiry entry from old to new (0: none).
func (t *table) setExpiry(key string, old, new int64) {
	if old == new {
		return
	}
	if old != 0 && t.expiry != nil {
		t.expiry.Delete(expiryEntry(old, key))
	}
	if new != 0 {
		if t.expiry == nil {
			t.expiry = newIndexTree()
		}
		t.expiry.Set(expiryEntry(new, key))
	}
}

// hasExpiredAt reports whether any row of the table is expired at now.
func (t *table) hasExpiredAt(now int64) bool {
	if t.expiry == nil || now == 0 {
		return false
	}
	first, ok := t.expiry.Min()
	return ok && int64(binary.BigEndian.Uint64([]byte(first[:8]))) <= now
}

// index is a secondary index. Its entries are the encoded indexed values
// followed by the encoded primary key, which makes entries of a non-unique
// index distinct and lets a scan find the row.
type index struct {
	def  IndexSchema
	pos  []int // position of each indexed field in schema.Fields
	tree *btree.BTreeG[string]
}

func newTable(sc *TableSchema, rev uint64) *table {
	pk, _ := sc.Field(sc.PrimaryKey)
	return &table{schema: sc, pkType: pk.Type, createRev: rev, rows: newRowTree()}
}

func newIndex(sc *TableSchema, def IndexSchema) *index {
	ix := &index{def: def, tree: newIndexTree()}
	for _, f := range def.Fields {
		ix.pos = append(ix.pos, slices.IndexFunc(sc.Fields, func(fs FieldSchema) bool { return fs.Name == f }))
	}
	return ix
}

// freeze returns a copy for readers: O(1) shadow copies of every tree.
func (t *table) freeze() *table {
	f := &table{schema: t.schema, pkType: t.pkType, createRev: t.createRev, rows: t.rows.Copy(), bytes: t.bytes}
	if t.expiry != nil {
		f.expiry = t.expiry.Copy()
	}
	f.indexes = make([]*index, len(t.indexes))
	for i, ix := range t.indexes {
		f.indexes[i] = &index{def: ix.def, pos: ix.pos, tree: ix.tree.Copy()}
	}
	return f
}

func (t *table) info() TableInfo {
	return TableInfo{Schema: *t.schema.clone(), Rows: t.rows.Len(), Bytes: t.bytes, CreateRevision: t.createRev}
}

func (t *table) index(name string) (*index, error) {
	for _, ix := range t.indexes {
		if ix.def.Name == name {
			return ix, nil
		}
	}
	return nil, fmt.Errorf("%w: %s.%s", ErrIndexNotFound, t.schema.Name, name)
}

// encodeKey checks a primary-key value and encodes it. limit > 0 bounds
// the encoded size.
func (t *table) encodeKey(key Value, limit int) ([]byte, error) {
	if key.kind != t.pkType.Kind() {
		return nil, fmt.Errorf("%w: table %s: primary key %s is %s, got %s", ErrTypeMismatch, t.schema.Name, t.schema.PrimaryKey, t.pkType, key.kind)
	}
	if err := validateValue(key); err != nil {
		return nil, fmt.Errorf("table %s: primary key: %w", t.schema.Name, err)
	}
	enc := appendKey(nil, key)
	if limit > 0 && len(enc) > limit {
		return nil, fmt.Errorf("table %s: primary key of %d bytes, limit %d: %w", t.schema.Name, len(enc), limit, ErrTooLarge)
	}
	return enc, nil
}

func (t *table) getRaw(key []byte) (string, bool) {
	return t.rows.Get(keyProbe(key))
}

// entry returns the index entry of a row and the length of its value
// part, or ok false when an indexed field is absent or null. fields are the
// row's non-key fields sorted by name.
func (ix *index) entry(sc *TableSchema, key string, pk Value, fields []Field) (entry string, n int, ok bool) {
	var b []byte
	for _, name := range ix.def.Fields {
		var v Value
		if name == sc.PrimaryKey {
			v = pk
		} else {
			i := sort.Search(len(fields), func(i int) bool { return fields[i].Name >= name })
			if i == len(fields) || fields[i].Name != name {
				return "", 0, false
			}
			v = fields[i].Value
		}
		if v.kind == KindNull {
			return "", 0, false
		}
		b = appendKey(b, v)
	}
	n = len(b)
	return string(append(b, key...)), n, true
}

// rowEntries returns the index entries of an encoded row ("" for none).
func (t *table) rowEntries(row string) ([]string, []int, error) {
	if row == "" || len(t.indexes) == 0 {
		return nil, nil, nil
	}
	r, err := readRow(row)
	if err != nil {
		return nil, nil, err
	}
	pk, _, err := decodeKeyValue(r.key)
	if err != nil {
		return nil, nil, err
	}
	_, fields, err := rowFields(row)
	if err != nil {
		return nil, nil, err
	}
	entries := make([]string, len(t.indexes))
	lens := make([]int, len(t.indexes))
	for i, ix := range t.indexes {
		entries[i], lens[i], _ = ix.entry(t.schema, r.key, pk, fields)
	}
	return entries, lens, nil
}

// uniqueConflict reports whether a unique index holds an entry with the
// same values as entry for another primary key, and returns that key.
func (ix *index) uniqueConflict(entry string, n int, key string) (string, bool) {
	prefix := entry[:n]
	// Not every entry that starts with prefix has these values: "a" is a
	// byte prefix of "a\x00". The entries with these values are those in
	// [prefix, tupleEnd(prefix)).
	end := string(tupleEnd([]byte(prefix)))
	conflict, other := false, ""
	ix.tree.Ascend(prefix, func(item string) bool {
		if item >= end {
			return false
		}
		if item[n:] != key {
			conflict, other = true, item[n:]
			return false
		}
		return true
	})
	return other, conflict
}

// putRow replaces old (or nothing) with row, keeping indexes in step. It
// checks unique indexes before changing anything, so it either fully
// happens or returns ErrUniqueViolation with nothing changed. When a unique
// index holds the values for another row, evict (if not nil) may remove
// that row, if it has expired, and report true; the check then repeats.
func (t *table) putRow(key, old, row string, evict func(other string) bool) error {
	oldE, _, err := t.rowEntries(old)
	if err != nil {
		return fmt.Errorf("table %s: stored row: %w", t.schema.Name, err)
	}
	newE, newN, err := t.rowEntries(row)
	if err != nil {
		return fmt.Errorf("table %s: new row: %w", t.schema.Name, err)
	}
	for i, ix := range t.indexes {
		if !ix.def.Unique || newE[i] == "" || (oldE != nil && oldE[i] == newE[i]) {
			continue
		}
		other, conflict := ix.uniqueConflict(newE[i], newN[i], key)
		if conflict && evict != nil && evict(other) {
			_, conflict = ix.uniqueConflict(newE[i], newN[i], key)
		}
		if conflict {
			vals, _ := decodeTuple(newE[i][:newN[i]])
			return fmt.Errorf("%w: table %s: index %s already has %s", ErrUniqueViolation, t.schema.Name, ix.def.Name, formatTuple(vals))
		}
	}
	t.rows.Set(row)
	t.bytes += int64(len(row) - len(old))
	t.setExpiry(key, rowExpiry(old), rowExpiry(row))
	for i, ix := range t.indexes {
		var o, n string
		if oldE != nil {
			o = oldE[i]
		}
		if newE != nil {
			n = newE[i]
		}
		if o == n {
			continue
		}
		if o != "" {
			ix.tree.Delete(o)
		}
		if n != "" {
			ix.tree.Set(n)
		}
	}
	return nil
}

// deleteRow removes an existing row and its index entries.
func (t *table) deleteRow(key, old string) error {
	oldE, _, err := t.rowEntries(old)
	if err != nil {
		return fmt.Errorf("table %s: stored row: %w", t.schema.Name, err)
	}
	t.rows.Delete(old)
	t.bytes -= int64(len(old))
	t.setExpiry(key, rowExpiry(old), 0)
	for i, ix := range t.indexes {
		if oldE[i] != "" {
			ix.tree.Delete(oldE[i])
		}
	}
	return nil
}

// restoreRow undoes a change from old to cur. It cannot fail: both rows
// were in the table moments ago, so no unique index can object.
func (t *table) restoreRow(key, cur, old string) {
	switch {
	case old == "":
		_ = t.deleteRow(key, cur)
	default:
		_ = t.putRow(key, cur, old, nil)
	}
}

// buildIndex builds an index over the table's rows for a new schema. It
// sorts the entries and bulk-loads them, which is several times faster
// than inserting one by one.
func (t *table) buildIndex(sc *TableSchema, def IndexSchema) (*index, error) {
	ix := newIndex(sc, def)
	type ent struct {
		e string
		n int
	}
	ents := make([]ent, 0, t.rows.Len())
	var err error
	t.rows.Scan(func(row string) bool {
		var r rowReader
		r, err = readRow(row)
		if err != nil {
			return false
		}
		var pk Value
		pk, _, err = decodeKeyValue(r.key)
		if err != nil {
			return false
		}
		var fields []Field
		_, fields, err = rowFields(row)
		if err != nil {
			return false
		}
		if e, n, ok := ix.entry(sc, r.key, pk, fields); ok {
			ents = append(ents, ent{e, n})
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("table %s: stored row: %w", t.schema.Name, err)
	}
	slices.SortFunc(ents, func(a, b ent) int { return strings.Compare(a.e, b.e) })
	for i, e := range ents {
		if def.Unique && i > 0 && ents[i-1].n == e.n && ents[i-1].e[:e.n] == e.e[:e.n] {
			vals, _ := decodeTuple(e.e[:e.n])
			return nil, fmt.Errorf("%w: table %s: cannot create unique index %s: several rows have %s", ErrUniqueViolation, t.schema.Name, def.Name, formatTuple(vals))
		}
		ix.tree.Load(e.e)
	}
	return ix, nil
}

func formatTuple(vals []Value) string {
	var b bytes.Buffer
	b.WriteByte('(')
	for i, v := range vals {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(v.String())
	}
	b.WriteByte(')')
	return b.String()
}
