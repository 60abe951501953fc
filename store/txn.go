package store

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// OpKind is the kind of a transaction operation.
type OpKind uint8

// Operation kinds.
const (
	OpInsert OpKind = iota + 1 // create a row; fails if the key exists
	OpUpsert                   // create or replace a whole row
	OpUpdate                   // change some fields of an existing row
	OpDelete                   // delete a row if it exists
	OpGet                      // read a row inside the transaction
	OpTouch                    // set or clear the expiry of an existing row
)

// Op is one operation of a transaction.
type Op struct {
	Kind  OpKind
	Table string
	// Fields: the whole row for insert and upsert (primary key included),
	// the fields to set for update.
	Fields []Field
	// Key: the primary key for update, delete and get.
	Key Value
	// Unset: fields an update removes.
	Unset []string
	// ExpectedVersion, when non-zero, requires the row to exist with this
	// version (compare-and-set) for upsert, update, delete and touch.
	ExpectedVersion uint64
	// TTL, when positive, makes the row expire this long after the log time
	// of the command (Batch.SetTime). Insert and upsert write a row without
	// expiry when it is zero; update keeps the row's expiry unless TTL or
	// ClearTTL is set; touch sets it, or clears it when TTL is zero.
	TTL time.Duration
	// ClearTTL: update removes the row's expiry.
	ClearTTL bool
}

// CondTest is what a condition tests.
type CondTest uint8

// Condition tests.
const (
	CondExists CondTest = iota + 1
	CondNotExists
	CondVersion
	CondModRevision
	CondCreateRevision
	CondField
)

// CompareOp compares two numbers or values.
type CompareOp uint8

// Comparison operators.
const (
	CmpEqual CompareOp = iota
	CmpNotEqual
	CmpLess
	CmpLessEqual
	CmpGreater
	CmpGreaterEqual
)

func (o CompareOp) holds(c int) bool {
	switch o {
	case CmpEqual:
		return c == 0
	case CmpNotEqual:
		return c != 0
	case CmpLess:
		return c < 0
	case CmpLessEqual:
		return c <= 0
	case CmpGreater:
		return c > 0
	case CmpGreaterEqual:
		return c >= 0
	}
	return false
}

// Condition tests one row before a transaction's operations run. An absent
// row has version and revisions 0, and its fields are null.
type Condition struct {
	Table  string
	Key    Value
	Test   CondTest
	Op     CompareOp
	Number uint64 // CondVersion, CondModRevision, CondCreateRevision
	Field  string // CondField
	Value  Value  // CondField
}

// Txn is an atomic, conditional group of operations across tables.
type Txn struct {
	Conditions []Condition
	Then, Else []Op
}

// OpResult is the outcome of one operation.
type OpResult struct {
	Kind OpKind
	// Meta: the row after insert, upsert and update.
	Meta Meta
	// Deleted: delete found and removed a row.
	Deleted bool
	// Found and Row: get.
	Found bool
	Row   Row
}

// TxnResult is the outcome of a transaction.
type TxnResult struct {
	// Succeeded is true when the conditions held and Then ran.
	Succeeded bool
	// Results has one entry per operation of the branch that ran.
	Results []OpResult
}

// Txn applies a transaction at revision rev. If an operation of the chosen
// branch fails, every change of the transaction is undone and the error
// returned.
func (b *Batch) Txn(rev uint64, txn Txn) (res TxnResult, err error) {
	if err := b.begin(rev); err != nil {
		return res, err
	}
	defer func() { b.finish(err) }()
	l := b.s.opts.Limits
	if len(txn.Conditions) > l.MaxConditions {
		return res, fmt.Errorf("%d conditions, limit %d: %w", len(txn.Conditions), l.MaxConditions, ErrTooManyOps)
	}
	if len(txn.Then) > l.MaxOps || len(txn.Else) > l.MaxOps {
		return res, fmt.Errorf("%d operations in a branch, limit %d: %w", max(len(txn.Then), len(txn.Else)), l.MaxOps, ErrTooManyOps)
	}
	ok := true
	for i, c := range txn.Conditions {
		held, err := b.evalCondition(c)
		if err != nil {
			return res, fmt.Errorf("condition %d: %w", i, err)
		}
		ok = ok && held
	}
	ops := txn.Then
	if !ok {
		ops = txn.Else
	}
	res.Succeeded = ok
	res.Results = make([]OpResult, 0, len(ops))
	for i, op := range ops {
		r, err := b.applyOp(rev, op)
		if err != nil {
			if len(ops) > 1 {
				err = fmt.Errorf("operation %d: %w", i, err)
			}
			return TxnResult{}, err
		}
		res.Results = append(res.Results, r)
	}
	return res, nil
}

func (b *Batch) evalCondition(c Condition) (bool, error) {
	t, ok := b.s.tables[c.Table]
	if !ok {
		return false, fmt.Errorf("%w: %s", ErrTableNotFound, c.Table)
	}
	key, err := t.encodeKey(c.Key, 0)
	if err != nil {
		return false, err
	}
	raw, found := b.live(t, key)
	var meta Meta
	var fields []Field
	if found {
		if meta, fields, err = rowFields(raw); err != nil {
			return false, fmt.Errorf("table %s: stored row: %w", c.Table, err)
		}
	}
	num := func(n uint64) (bool, error) {
		if c.Op > CmpGreaterEqual {
			return false, fmt.Errorf("%w: unknown comparison %d", ErrInvalidArgument, c.Op)
		}
		return c.Op.holds(cmpUint(n, c.Number)), nil
	}
	switch c.Test {
	case CondExists:
		return found, nil
	case CondNotExists:
		return !found, nil
	case CondVersion:
		return num(meta.Version)
	case CondModRevision:
		return num(meta.ModRevision)
	case CondCreateRevision:
		return num(meta.CreateRevision)
	case CondField:
		if err := validateName(c.Field); err != nil {
			return false, err
		}
		if err := validateValue(c.Value); err != nil {
			return false, err
		}
		if c.Op > CmpGreaterEqual {
			return false, fmt.Errorf("%w: unknown comparison %d", ErrInvalidArgument, c.Op)
		}
		var v Value
		if c.Field == t.schema.PrimaryKey {
			if found {
				v = c.Key
			}
		} else if i, ok := slices.BinarySearchFunc(fields, c.Field, func(f Field, n string) int { return strings.Compare(f.Name, n) }); ok {
			v = fields[i].Value
		}
		return c.Op.holds(v.Compare(c.Value)), nil
	}
	return false, fmt.Errorf("%w: unknown condition test %d", ErrInvalidArgument, c.Test)
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (b *Batch) applyOp(rev uint64, op Op) (OpResult, error) {
	res := OpResult{Kind: op.Kind}
	t, ok := b.s.tables[op.Table]
	if !ok {
		return res, fmt.Errorf("%w: %s", ErrTableNotFound, op.Table)
	}
	l := b.s.opts.Limits
	switch op.Kind {
	case OpInsert, OpUpsert:
		pk, fields, err := t.checkRow(op.Fields, l)
		if err != nil {
			return res, err
		}
		key, err := t.encodeKey(pk, l.MaxKeyBytes)
		if err != nil {
			return res, err
		}
		old, found := b.live(t, key)
		var meta Meta
		if found {
			if op.Kind == OpInsert {
				return res, fmt.Errorf("%w: table %s: key %s", ErrRowExists, op.Table, pk)
			}
			if meta, _, err = rowFields(old); err != nil {
				return res, fmt.Errorf("table %s: stored row: %w", op.Table, err)
			}
		}
		if op.ExpectedVersion != 0 && op.ExpectedVersion != meta.Version {
			return res, fmt.Errorf("%w: table %s: key %s has version %d, expected %d", ErrVersionMismatch, op.Table, pk, meta.Version, op.ExpectedVersion)
		}
		if meta.ExpiresAt, err = b.expiry(op.TTL); err != nil {
			return res, err
		}
		res.Meta, err = b.write(t, rev, key, old, meta, fields)
		return res, err
	case OpUpdate, OpTouch:
		key, err := t.encodeKey(op.Key, l.MaxKeyBytes)
		if err != nil {
			return res, err
		}
		old, found := b.live(t, key)
		if !found {
			return res, fmt.Errorf("%w: table %s: key %s", ErrRowNotFound, op.Table, op.Key)
		}
		meta, fields, err := rowFields(old)
		if err != nil {
			return res, fmt.Errorf("table %s: stored row: %w", op.Table, err)
		}
		if op.ExpectedVersion != 0 && op.ExpectedVersion != meta.Version {
			return res, fmt.Errorf("%w: table %s: key %s has version %d, expected %d", ErrVersionMismatch, op.Table, op.Key, meta.Version, op.ExpectedVersion)
		}
		if op.Kind == OpTouch {
			// The fields stay as they are; only the expiry and the history
			// change. A touch is a write: it gets a revision, so a watcher
			// building a view sees the new expiry.
			if meta.ExpiresAt, err = b.expiry(op.TTL); err != nil {
				return res, err
			}
			res.Meta, err = b.write(t, rev, key, old, meta, fields)
			return res, err
		}
		if op.TTL > 0 || op.ClearTTL {
			if op.TTL > 0 && op.ClearTTL {
				return res, fmt.Errorf("%w: table %s: an update cannot both set and clear the time to live", ErrInvalidArgument, op.Table)
			}
			if meta.ExpiresAt, err = b.expiry(op.TTL); err != nil {
				return res, err
			}
		}
		merged, err := t.mergeUpdate(op, fields)
		if err != nil {
			return res, err
		}
		_, fields, err = t.checkRow(merged, l)
		if err != nil {
			return res, err
		}
		res.Meta, err = b.write(t, rev, key, old, meta, fields)
		return res, err
	case OpDelete:
		key, err := t.encodeKey(op.Key, l.MaxKeyBytes)
		if err != nil {
			return res, err
		}
		old, found := b.live(t, key)
		if op.ExpectedVersion != 0 {
			var meta Meta
			if found {
				if meta, _, err = rowFields(old); err != nil {
					return res, fmt.Errorf("table %s: stored row: %w", op.Table, err)
				}
			}
			if meta.Version != op.ExpectedVersion {
				return res, fmt.Errorf("%w: table %s: key %s has version %d, expected %d", ErrVersionMismatch, op.Table, op.Key, meta.Version, op.ExpectedVersion)
			}
		}
		if !found {
			return res, nil
		}
		if err := t.deleteRow(string(key), old); err != nil {
			return res, err
		}
		b.log = append(b.log, mutation{t: t, name: op.Table, key: string(key), old: old})
		res.Deleted = true
		return res, nil
	case OpGet:
		key, err := t.encodeKey(op.Key, 0)
		if err != nil {
			return res, err
		}
		raw, found := b.live(t, key)
		if !found {
			return res, nil
		}
		res.Found = true
		res.Row, err = decodeRow(raw, t.schema.PrimaryKey)
		return res, err
	}
	return res, fmt.Errorf("%w: unknown operation kind %d", ErrInvalidArgument, op.Kind)
}

// write stores a new version of a row (old is "" when it is created).
func (b *Batch) write(t *table, rev uint64, key []byte, old string, meta Meta, fields []Field) (Meta, error) {
	if old == "" {
		meta = Meta{CreateRevision: rev, ExpiresAt: meta.ExpiresAt}
	}
	meta.ModRevision = rev
	meta.Version++
	row := encodeRow(key, meta, fields)
	if l := b.s.opts.Limits.MaxRowBytes; len(row) > l {
		return Meta{}, fmt.Errorf("table %s: row of %d bytes, limit %d: %w", t.schema.Name, len(row), l, ErrTooLarge)
	}
	if err := t.putRow(string(key), old, row, func(other string) bool {
		_, found := b.live(t, []byte(other))
		return !found
	}); err != nil {
		return Meta{}, err
	}
	b.log = append(b.log, mutation{t: t, name: t.schema.Name, key: string(key), old: old, new: row})
	return meta, nil
}

// live returns the row with that key as the current command sees it: a
// row expired at the batch's time is deleted, as an expiry, and reported
// absent. Deleting it here rather than only hiding it keeps every later
// check (unique indexes, create revisions) simple, and it is deterministic:
// every replica applies the same command at the same log time. If the
// command fails, the undo log puts the row back.
func (b *Batch) live(t *table, key []byte) (string, bool) {
	raw, found := t.getRaw(key)
	if !found || !expiredAt(rowExpiry(raw), b.now) {
		return raw, found
	}
	k := string(key)
	if err := t.deleteRow(k, raw); err != nil {
		return raw, true
	}
	b.log = append(b.log, mutation{t: t, name: t.schema.Name, key: k, old: raw, expired: true})
	return "", false
}

// expiry returns the expiry for a time to live counted from the batch's
// time; 0 for none.
func (b *Batch) expiry(ttl time.Duration) (int64, error) {
	switch {
	case ttl < 0:
		return 0, fmt.Errorf("%w: negative time to live %v", ErrInvalidArgument, ttl)
	case ttl == 0:
		return 0, nil
	case b.now <= 0:
		return 0, fmt.Errorf("%w: a time to live needs the log time, which this command lacks", ErrInvalidArgument)
	case ttl > MaxTTL:
		return 0, fmt.Errorf("%w: time to live %v is above the limit of %v", ErrInvalidArgument, ttl, MaxTTL)
	case b.now > math.MaxInt64-int64(ttl):
		return 0, fmt.Errorf("%w: the log time %d leaves no room for a time to live of %v", ErrInvalidArgument, b.now, ttl)
	}
	return b.now + int64(ttl), nil
}

// MaxTTL bounds a time to live: ten years keeps every expiry far from
// overflowing int64 nanoseconds.
const MaxTTL = 10 * 365 * 24 * time.Hour

// Expire deletes, at revision rev, the rows of a table with these encoded
// keys that are expired at the batch's time; a row that was refreshed
// since, or is gone, is left alone. It returns how many rows it deleted.
// The leader proposes it for rows it found expired (View.Expired): expiry
// is decided by the log, never by a replica's own clock.
func (b *Batch) Expire(rev uint64, tableName string, keys []string) (n int, err error) {
	if err := b.begin(rev); err != nil {
		return 0, err
	}
	defer func() { b.finish(err) }()
	t, ok := b.s.tables[tableName]
	if !ok {
		return 0, nil // dropped since: nothing to expire
	}
	for _, k := range keys {
		if _, found := t.getRaw([]byte(k)); !found {
			continue
		}
		if _, live := b.live(t, []byte(k)); !live {
			n++
		}
	}
	return n, nil
}

// mergeUpdate applies an update's set and unset to a row's fields.
func (t *table) mergeUpdate(op Op, fields []Field) ([]Field, error) {
	pkName := t.schema.PrimaryKey
	out := make([]Field, 0, len(fields)+len(op.Fields)+1)
	out = append(out, Field{Name: pkName, Value: op.Key})
	for _, f := range fields {
		if slices.Contains(op.Unset, f.Name) || slices.ContainsFunc(op.Fields, func(s Field) bool { return s.Name == f.Name }) {
			continue
		}
		out = append(out, f)
	}
	for _, name := range op.Unset {
		if err := validateName(name); err != nil {
			return nil, fmt.Errorf("table %s: unset: %w", t.schema.Name, err)
		}
		if name == pkName {
			return nil, fmt.Errorf("%w: table %s: cannot unset the primary key %s", ErrInvalidArgument, t.schema.Name, pkName)
		}
	}
	for _, f := range op.Fields {
		if f.Name == pkName {
			if !f.Value.Equal(op.Key) {
				return nil, fmt.Errorf("%w: table %s: an update cannot change the primary key %s", ErrInvalidArgument, t.schema.Name, pkName)
			}
			continue
		}
		if slices.Contains(op.Unset, f.Name) {
			return nil, fmt.Errorf("%w: table %s: field %s is both set and unset", ErrInvalidArgument, t.schema.Name, f.Name)
		}
		out = append(out, f)
	}
	return out, nil
}

// checkField validates one field on its own: its name, its value, and its
// kind against the declared type (null is allowed here; whether a field
// may be null or absent is a question about the whole row).
func (t *table) checkField(f Field) error {
	sc := t.schema
	if err := validateName(f.Name); err != nil {
		return fmt.Errorf("table %s: field name: %w", sc.Name, err)
	}
	if err := validateValue(f.Value); err != nil {
		return fmt.Errorf("table %s: field %s: %w", sc.Name, f.Name, err)
	}
	if decl, ok := sc.Field(f.Name); ok && f.Value.kind != KindNull && f.Value.kind != decl.Type.Kind() {
		return fmt.Errorf("%w: table %s: field %s is %s, got %s", ErrTypeMismatch, sc.Name, f.Name, decl.Type, f.Value.kind)
	}
	return nil
}

// checkRow validates a whole row against the schema and limits. It returns
// the primary key and the other fields sorted by name.
func (t *table) checkRow(in []Field, l Limits) (Value, []Field, error) {
	sc := t.schema
	if len(in) > l.MaxFields {
		return Value{}, nil, fmt.Errorf("table %s: row has %d fields, limit %d: %w", sc.Name, len(in), l.MaxFields, ErrTooLarge)
	}
	fields := make([]Field, 0, len(in))
	var pk Value
	havePK := false
	for _, f := range in {
		if err := t.checkField(f); err != nil {
			return Value{}, nil, err
		}
		if f.Name == sc.PrimaryKey {
			if havePK {
				return Value{}, nil, fmt.Errorf("%w: table %s: field %s given twice", ErrInvalidArgument, sc.Name, f.Name)
			}
			pk, havePK = f.Value, true
			continue
		}
		fields = append(fields, f)
	}
	if !havePK || pk.kind == KindNull {
		return Value{}, nil, fmt.Errorf("%w: table %s: the primary key %s is missing", ErrInvalidArgument, sc.Name, sc.PrimaryKey)
	}
	slices.SortFunc(fields, func(a, b Field) int { return strings.Compare(a.Name, b.Name) })
	for i := 1; i < len(fields); i++ {
		if fields[i].Name == fields[i-1].Name {
			return Value{}, nil, fmt.Errorf("%w: table %s: field %s given twice", ErrInvalidArgument, sc.Name, fields[i].Name)
		}
	}
	for _, decl := range sc.Fields {
		if !decl.Required || decl.Name == sc.PrimaryKey {
			continue
		}
		i, ok := slices.BinarySearchFunc(fields, decl.Name, func(f Field, n string) int { return strings.Compare(f.Name, n) })
		if !ok || fields[i].Value.kind == KindNull {
			return Value{}, nil, fmt.Errorf("%w: table %s: required field %s is missing", ErrInvalidArgument, sc.Name, decl.Name)
		}
	}
	return pk, fields, nil
}

// validateValue refuses values no encoding can hold: unknown kinds, NaN,
// strings that are not UTF-8.
func validateValue(v Value) error {
	switch v.kind {
	case KindNull, KindBool, KindInt, KindBytes, KindTimestamp:
		return nil
	case KindDouble:
		if isNaN(v) {
			return fmt.Errorf("%w: NaN is not a storable double", ErrInvalidArgument)
		}
		return nil
	case KindString:
		if !utf8.ValidString(v.s) {
			return fmt.Errorf("%w: string is not valid UTF-8", ErrInvalidArgument)
		}
		return nil
	}
	return fmt.Errorf("%w: unknown value kind %d", ErrInvalidArgument, v.kind)
}
