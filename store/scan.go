package store

import (
	"fmt"
	"strings"
)

// ScanOptions selects rows by the primary key or a secondary index. Tuples
// hold values for the leading fields of the index (one field for the
// primary key) and compare field by field; a shorter tuple covers every
// entry that starts with it. All parts are optional and combine with AND.
type ScanOptions struct {
	// Index names a secondary index; "" scans the primary key.
	Index string
	// Prefix: entries whose leading fields equal these values.
	Prefix []Value
	// PartialLast: the last Prefix value, a string or bytes, matches as a
	// byte prefix.
	PartialLast bool
	// Start: lower bound, inclusive unless StartExclusive.
	Start          []Value
	StartExclusive bool
	// End: upper bound, exclusive unless EndInclusive.
	End          []Value
	EndInclusive bool
	// Limit: at most this many rows; 0 for no limit.
	Limit int
	// Reverse: descending order.
	Reverse bool
	// KeysOnly: rows carry only the primary key and their history.
	KeysOnly bool
	// After resumes a scan strictly after this cursor (in scan order), as
	// returned in ScanResult.Next by the previous page. Paging over one View
	// is consistent: every page reflects the same revision.
	After []byte
}

// ScanResult is one page of a scan.
type ScanResult struct {
	Rows []Row
	// Next is the cursor to pass as ScanOptions.After for the next page; nil
	// when the scan is complete.
	Next []byte
}

// keyRange is a half-open range [lo, hi) of encoded keys; hi nil is
// unbounded.
type keyRange struct {
	lo, hi []byte
}

func (r *keyRange) raiseLo(b []byte) {
	if strings.Compare(string(b), string(r.lo)) > 0 {
		r.lo = b
	}
}

func (r *keyRange) lowerHi(b []byte) {
	if b == nil {
		return
	}
	if r.hi == nil || string(b) < string(r.hi) {
		r.hi = b
	}
}

func (r keyRange) empty() bool { return r.hi != nil && string(r.lo) >= string(r.hi) }

// tupleEnd returns the smallest key greater than every key whose leading
// values are the tuple encoded as p. It is not prefixEnd(p): the encoding
// of a string that ends at p's last terminator 0x00 may continue with 0xFF
// (an escaped 0x00 inside a longer string: "a" is 06 61 00 and "a\x00" is
// 06 61 00 FF 00), whereas what follows a whole value is a tag byte, below
// 0xFF, or nothing.
func tupleEnd(p []byte) []byte {
	return append(p[:len(p):len(p)], 0xFF)
}

// scanner iterates the entries of the primary key or of one index.
type scanner struct {
	t  *table
	ix *index // nil for the primary key
	r  keyRange
}

func (v *View) scanner(tableName string, o *ScanOptions) (*scanner, error) {
	t, err := v.table(tableName)
	if err != nil {
		return nil, err
	}
	s := &scanner{t: t}
	types := []FieldType{t.pkType}
	names := []string{t.schema.PrimaryKey}
	if o.Index != "" {
		if s.ix, err = t.index(o.Index); err != nil {
			return nil, err
		}
		names = s.ix.def.Fields
		types = types[:0]
		for _, f := range names {
			fs, _ := t.schema.Field(f)
			types = append(types, fs.Type)
		}
	}
	check := func(what string, vals []Value) error {
		if len(vals) > len(types) {
			return fmt.Errorf("%w: %s has %d values, the index has %d fields", ErrInvalidArgument, what, len(vals), len(types))
		}
		for i, val := range vals {
			if err := validateValue(val); err != nil {
				return fmt.Errorf("%s value %d: %w", what, i, err)
			}
			if val.kind != types[i].Kind() {
				return fmt.Errorf("%w: %s value %d: field %s is %s, got %s", ErrTypeMismatch, what, i, names[i], types[i], val.kind)
			}
		}
		return nil
	}
	if err := check("prefix", o.Prefix); err != nil {
		return nil, err
	}
	if err := check("start", o.Start); err != nil {
		return nil, err
	}
	if err := check("end", o.End); err != nil {
		return nil, err
	}
	if o.PartialLast && len(o.Prefix) > 0 {
		if k := o.Prefix[len(o.Prefix)-1].kind; k != KindString && k != KindBytes {
			return nil, fmt.Errorf("%w: a partial prefix must end with a string or bytes value, got %s", ErrInvalidArgument, k)
		}
	}
	if len(o.Prefix) > 0 {
		p := encodeTuplePrefix(o.Prefix, o.PartialLast)
		s.r.raiseLo(p)
		if o.PartialLast {
			s.r.lowerHi(prefixEnd(p))
		} else {
			s.r.lowerHi(tupleEnd(p))
		}
	}
	if len(o.Start) > 0 {
		p := encodeTuple(o.Start)
		if o.StartExclusive {
			s.r.raiseLo(tupleEnd(p))
		} else {
			s.r.raiseLo(p)
		}
	}
	if len(o.End) > 0 {
		p := encodeTuple(o.End)
		if o.EndInclusive {
			s.r.lowerHi(tupleEnd(p))
		} else {
			s.r.lowerHi(p)
		}
	}
	if o.After != nil {
		if o.Reverse {
			s.r.lowerHi(o.After)
		} else {
			s.r.raiseLo(append(append([]byte(nil), o.After...), 0))
		}
	}
	return s, nil
}

// each calls fn with each entry in range, in order, until fn returns
// false. key is the entry's sort key (the encoded primary key, or the index
// entry); raw is the row for primary-key scans.
func (s *scanner) each(reverse bool, fn func(key, raw string) bool) {
	if s.r.empty() {
		return
	}
	lo, hi := string(s.r.lo), string(s.r.hi)
	keyOf := func(item string) string { return item }
	pivot := func(b []byte) string { return string(b) }
	var tree interface {
		Ascend(pivot string, fn func(string) bool)
		Descend(pivot string, fn func(string) bool)
		Reverse(fn func(string) bool)
	} = s.t.rows
	if s.ix != nil {
		tree = s.ix.tree
	} else {
		keyOf = rowKey
		pivot = keyProbe
	}
	if !reverse {
		tree.Ascend(pivot(s.r.lo), func(item string) bool {
			k := keyOf(item)
			if s.r.hi != nil && k >= hi {
				return false
			}
			return fn(k, item)
		})
		return
	}
	iter := func(item string) bool {
		k := keyOf(item)
		if k < lo {
			return false
		}
		if s.r.hi != nil && k >= hi {
			return true // the pivot itself, when present
		}
		return fn(k, item)
	}
	if s.r.hi == nil {
		tree.Reverse(iter)
	} else {
		tree.Descend(pivot(s.r.hi), iter)
	}
}

// Scan returns one page of rows in range.
func (v *View) Scan(tableName string, o ScanOptions) (ScanResult, error) {
	s, err := v.scanner(tableName, &o)
	if err != nil {
		return ScanResult{}, err
	}
	var res ScanResult
	var last string
	more := false
	s.each(o.Reverse, func(key, raw string) bool {
		if o.Limit > 0 && len(res.Rows) == o.Limit {
			more = true
			return false
		}
		if s.ix != nil {
			pk := key[entryValuesLen(key, len(s.ix.def.Fields)):]
			var ok bool
			if raw, ok = s.t.getRaw([]byte(pk)); !ok {
				err = fmt.Errorf("%w: table %s: index %s points to a missing row", ErrCorrupt, s.t.schema.Name, s.ix.def.Name)
				return false
			}
		}
		if expiredAt(rowExpiry(raw), v.now) {
			return true
		}
		var row Row
		if o.KeysOnly {
			row, err = keysOnlyRow(raw, s.t.schema.PrimaryKey)
		} else {
			row, err = decodeRow(raw, s.t.schema.PrimaryKey)
		}
		if err != nil {
			return false
		}
		res.Rows = append(res.Rows, row)
		last = key
		return true
	})
	if err != nil {
		return ScanResult{}, err
	}
	if more {
		res.Next = []byte(last)
	}
	return res, nil
}

// Count returns the number of entries in range, without decoding rows.
func (v *View) Count(tableName string, o ScanOptions) (int, error) {
	s, err := v.scanner(tableName, &o)
	if err != nil {
		return 0, err
	}
	expiring := s.t.hasExpiredAt(v.now)
	if !expiring && len(o.Prefix) == 0 && len(o.Start) == 0 && len(o.End) == 0 && o.After == nil {
		if s.ix == nil {
			return s.t.rows.Len(), nil
		}
		return s.ix.tree.Len(), nil
	}
	n := 0
	s.each(false, func(key, raw string) bool {
		// Expired rows not yet deleted by the log are not counted; only
		// tables that hold some pay for looking at each row.
		if expiring {
			if s.ix != nil {
				raw, _ = s.t.getRaw([]byte(key[entryValuesLen(key, len(s.ix.def.Fields)):]))
			}
			if expiredAt(rowExpiry(raw), v.now) {
				return true
			}
		}
		n++
		return true
	})
	return n, nil
}

// entryValuesLen returns the length of the first n encoded values of an
// index entry; what follows is the encoded primary key.
func entryValuesLen(entry string, n int) int {
	off := 0
	for i := 0; i < n; i++ {
		rest, err := skipKeyValue(entry[off:])
		if err != nil {
			return len(entry)
		}
		off = len(entry) - len(rest)
	}
	return off
}

func keysOnlyRow(raw, pkName string) (Row, error) {
	r, err := readRow(raw)
	if err != nil {
		return Row{}, err
	}
	pk, _, err := decodeKeyValue(r.key)
	if err != nil {
		return Row{}, err
	}
	return Row{Fields: []Field{{Name: pkName, Value: pk}}, Meta: r.meta}, nil
}

// KeyRange returns the byte range [lo, hi) of sort keys (encoded primary
// keys, or index entries) that a scan with these options covers; hi nil is
// unbounded. Watches match changes against it.
func (v *View) KeyRange(tableName string, o ScanOptions) (lo, hi []byte, err error) {
	o.After, o.Limit = nil, 0
	s, err := v.scanner(tableName, &o)
	if err != nil {
		return nil, nil, err
	}
	return s.r.lo, s.r.hi, nil
}

// SortKeyFunc returns the function that maps an encoded row of a table to
// its sort key in the primary key (index "") or in a secondary index; ok
// is false when the row has no entry in the index (a field is absent or
// null). The function keeps the table's definition as it is in this view.
func (v *View) SortKeyFunc(tableName, index string) (func(row string) (string, bool), error) {
	t, err := v.table(tableName)
	if err != nil {
		return nil, err
	}
	if index == "" {
		return func(row string) (string, bool) {
			k := rowKey(row)
			return k, k != ""
		}, nil
	}
	ix, err := t.index(index)
	if err != nil {
		return nil, err
	}
	sc := t.schema
	return func(row string) (string, bool) {
		r, err := readRow(row)
		if err != nil {
			return "", false
		}
		pk, _, err := decodeKeyValue(r.key)
		if err != nil {
			return "", false
		}
		_, fields, err := rowFields(row)
		if err != nil {
			return "", false
		}
		e, _, ok := ix.entry(sc, r.key, pk, fields)
		return e, ok
	}, nil
}

// DecodeRow decodes an encoded row of a table whose primary key is named
// pkName (rows handed out in Change records).
func DecodeRow(raw, pkName string) (Row, error) { return decodeRow(raw, pkName) }

// DecodeKey decodes an encoded primary key.
func DecodeKey(key string) (Value, error) {
	v, rest, err := decodeKeyValue(key)
	if err == nil && rest != "" {
		err = errCorrupt
	}
	return v, err
}

// RowMeta returns the history of an encoded row.
func RowMeta(raw string) (Meta, error) {
	r, err := readRow(raw)
	return r.meta, err
}
