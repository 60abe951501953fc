package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
)

// Key encoding
//
// Primary keys and index entries are byte strings whose bytewise order is
// the order of the values they encode, so the B-trees compare plain bytes.
// Each value is a tag byte (the kind, in Kind order) followed by:
//
//	null               nothing
//	bool               nothing (false and true have their own tags)
//	int64, timestamp   8 bytes big-endian with the sign bit flipped
//	double             8 bytes big-endian: the sign bit flipped for
//	                   positives, every bit flipped for negatives;
//	                   negative zero as zero (below)
//	string, bytes      the bytes with 0x00 escaped as 0x00 0xFF, then 0x00
//
// A tuple is the concatenation of its values. Every encoded value is
// self-delimiting, so the encoding of a tuple prefix is a byte prefix of the
// encodings of every tuple that starts with it; prefix and range scans work
// on bytes alone. The converse does not hold for strings and bytes: "a"
// (06 61 00) is a byte prefix of "a\x00" (06 61 00 FF 00). A whole value is
// followed by a tag byte (below 0xFF) or nothing, so the tuples that start
// with an encoded tuple p are exactly the keys in [p, p+0xFF) (tupleEnd).
//
// Negative zero is inherent loss here: -0.0 and +0.0 are equal numbers
// (Compare says so), so a key or an index entry must have one encoding
// for both, or a unique index would hold both and a lookup of one would
// miss the other. appendKey encodes -0.0 as +0.0 whatever Value it is
// given, and such a key decodes to +0.0. (Primary keys cannot be doubles;
// index entries and range bounds can.)
const (
	tagNull byte = 0x01 + iota
	tagFalse
	tagTrue
	tagInt
	tagDouble
	tagString
	tagBytes
	tagTimestamp
)

var errCorrupt = errors.New("corrupt encoding")

// negZeroBits is the IEEE 754 encoding of -0.0.
const negZeroBits = 1 << 63

// appendKey appends the order-preserving encoding of v.
func appendKey(dst []byte, v Value) []byte {
	switch v.kind {
	case KindNull:
		return append(dst, tagNull)
	case KindBool:
		if v.n != 0 {
			return append(dst, tagTrue)
		}
		return append(dst, tagFalse)
	case KindInt:
		dst = append(dst, tagInt)
		return binary.BigEndian.AppendUint64(dst, v.n^(1<<63))
	case KindTimestamp:
		dst = append(dst, tagTimestamp)
		return binary.BigEndian.AppendUint64(dst, v.n^(1<<63))
	case KindDouble:
		dst = append(dst, tagDouble)
		b := v.n
		if b == negZeroBits {
			b = 0 // one key for -0.0 and +0.0
		}
		if b&(1<<63) != 0 {
			b = ^b
		} else {
			b |= 1 << 63
		}
		return binary.BigEndian.AppendUint64(dst, b)
	case KindString, KindBytes:
		tag := tagString
		if v.kind == KindBytes {
			tag = tagBytes
		}
		dst = append(dst, tag)
		return appendEscaped(dst, v.s, true)
	}
	return dst
}

func appendEscaped(dst []byte, s string, terminate bool) []byte {
	for {
		i := strings.IndexByte(s, 0)
		if i < 0 {
			dst = append(dst, s...)
			break
		}
		dst = append(dst, s[:i]...)
		dst = append(dst, 0x00, 0xFF)
		s = s[i+1:]
	}
	if terminate {
		dst = append(dst, 0x00)
	}
	return dst
}

// encodeTuple encodes values as one key.
func encodeTuple(vals []Value) []byte {
	var b []byte
	for _, v := range vals {
		b = appendKey(b, v)
	}
	return b
}

// encodeTuplePrefix encodes values as a key prefix; when partial is set
// and the last value is a string or bytes, its terminator is left off so
// that the prefix matches every value starting with those bytes.
func encodeTuplePrefix(vals []Value, partial bool) []byte {
	if !partial || len(vals) == 0 {
		return encodeTuple(vals)
	}
	last := vals[len(vals)-1]
	b := encodeTuple(vals[:len(vals)-1])
	switch last.kind {
	case KindString:
		return appendEscaped(append(b, tagString), last.s, false)
	case KindBytes:
		return appendEscaped(append(b, tagBytes), last.s, false)
	}
	return appendKey(b, last)
}

// decodeKeyValue decodes one value from the front of b.
func decodeKeyValue(b string) (Value, string, error) {
	if len(b) == 0 {
		return Value{}, b, errCorrupt
	}
	tag, b := b[0], b[1:]
	switch tag {
	case tagNull:
		return Value{}, b, nil
	case tagFalse:
		return Bool(false), b, nil
	case tagTrue:
		return Bool(true), b, nil
	case tagInt, tagTimestamp, tagDouble:
		if len(b) < 8 {
			return Value{}, b, errCorrupt
		}
		n := binary.BigEndian.Uint64([]byte(b[:8]))
		b = b[8:]
		switch tag {
		case tagInt:
			return Value{kind: KindInt, n: n ^ (1 << 63)}, b, nil
		case tagTimestamp:
			return Value{kind: KindTimestamp, n: n ^ (1 << 63)}, b, nil
		}
		if n&(1<<63) != 0 {
			n &^= 1 << 63
		} else {
			n = ^n
		}
		return Value{kind: KindDouble, n: n}, b, nil
	case tagString, tagBytes:
		k := KindString
		if tag == tagBytes {
			k = KindBytes
		}
		// Fast path: no escaped zero byte, so the value is a substring of
		// the key and needs no allocation (the key is immutable).
		if i := strings.IndexByte(b, 0); i >= 0 && (i+1 == len(b) || b[i+1] != 0xFF) {
			return Value{kind: k, s: b[:i]}, b[i+1:], nil
		}
		var sb strings.Builder
		for i := 0; i < len(b); i++ {
			if b[i] != 0 {
				continue
			}
			if i+1 < len(b) && b[i+1] == 0xFF {
				sb.WriteString(b[:i+1])
				b = b[i+2:]
				i = -1
				continue
			}
			sb.WriteString(b[:i])
			return Value{kind: k, s: sb.String()}, b[i+1:], nil
		}
		return Value{}, b, errCorrupt
	}
	return Value{}, b, errCorrupt
}

// decodeTuple decodes a whole key into its values.
func decodeTuple(b string) ([]Value, error) {
	var out []Value
	for len(b) > 0 {
		v, rest, err := decodeKeyValue(b)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
		b = rest
	}
	return out, nil
}

// prefixEnd returns the smallest key greater than every key that starts
// with p, or nil when there is none (p is all 0xFF).
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xFF {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// Row encoding
//
// A row is one string:
//
//	uvarint len(key) | key | uvarint create_revision | uvarint mod_revision |
//	uvarint version | [expiry] | field*
//	expiry = 0x00 | kind byte timestamp | zig-zag varint Unix nanos
//	field = uvarint len(name) | name | kind byte | payload
//
// The expiry is present only for rows with a time to live. It is written
// as a field with an empty name, which no user field can have, so rows
// written before expiries existed decode unchanged and a row without one
// costs nothing.
// where key is the encoded primary key (so the B-tree orders rows by the
// leading bytes alone) and the fields, the primary key excluded, are sorted
// by name so that equal rows have equal bytes (state hashes rely on it).
// Payloads: null and bools nothing and one byte; int64 and timestamps a
// zig-zag varint; doubles 8 bytes little-endian; strings and bytes a uvarint
// length and the bytes.

// rowKey returns the encoded primary key of an encoded row. Rows in the
// trees were built or validated by this package; a malformed row yields "".
func rowKey(row string) string {
	n, w := uvarint(row)
	if w <= 0 || uint64(len(row)-w) < n {
		return ""
	}
	return row[w : w+int(n)]
}

// keyProbe builds a row-shaped string holding only a key, for B-tree
// lookups by key.
func keyProbe(key []byte) string {
	b := make([]byte, 0, len(key)+binary.MaxVarintLen64)
	b = binary.AppendUvarint(b, uint64(len(key)))
	return string(append(b, key...))
}

// encodeRow encodes a row. fields must be sorted by name, unique, and must
// not contain the primary key.
func encodeRow(key []byte, meta Meta, fields []Field) string {
	size := len(key) + 4*binary.MaxVarintLen64
	for _, f := range fields {
		size += len(f.Name) + len(f.Value.s) + 2*binary.MaxVarintLen64 + 1
	}
	b := make([]byte, 0, size)
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = append(b, key...)
	b = binary.AppendUvarint(b, meta.CreateRevision)
	b = binary.AppendUvarint(b, meta.ModRevision)
	b = binary.AppendUvarint(b, meta.Version)
	if meta.ExpiresAt != 0 {
		b = append(b, 0, byte(KindTimestamp))
		b = binary.AppendVarint(b, meta.ExpiresAt)
	}
	for _, f := range fields {
		b = binary.AppendUvarint(b, uint64(len(f.Name)))
		b = append(b, f.Name...)
		b = append(b, byte(f.Value.kind))
		switch f.Value.kind {
		case KindBool:
			b = append(b, byte(f.Value.n))
		case KindInt, KindTimestamp:
			b = binary.AppendVarint(b, int64(f.Value.n))
		case KindDouble:
			b = binary.LittleEndian.AppendUint64(b, f.Value.n)
		case KindString, KindBytes:
			b = binary.AppendUvarint(b, uint64(len(f.Value.s)))
			b = append(b, f.Value.s...)
		}
	}
	// Copying into an exactly sized string keeps the allocation in the
	// smallest size class that fits; the builder's slack would be wasted
	// for the row's whole life.
	return string(b)
}

// encodedRowSize bounds the length encodeRow would produce (revisions at
// their widest), without building the row.
func encodedRowSize(key []byte, fields []Field) int {
	uvlen := func(x uint64) int {
		n := 1
		for x >= 0x80 {
			x >>= 7
			n++
		}
		return n
	}
	size := uvlen(uint64(len(key))) + len(key) + 3*binary.MaxVarintLen64 + 2 + binary.MaxVarintLen64
	for _, f := range fields {
		size += uvlen(uint64(len(f.Name))) + len(f.Name) + 1
		switch f.Value.kind {
		case KindBool:
			size++
		case KindInt, KindTimestamp:
			size += binary.MaxVarintLen64
		case KindDouble:
			size += 8
		case KindString, KindBytes:
			size += uvlen(uint64(len(f.Value.s))) + len(f.Value.s)
		}
	}
	return size
}

func uvarint(s string) (uint64, int) {
	var x uint64
	var shift uint
	for i := 0; i < len(s) && i < binary.MaxVarintLen64; i++ {
		c := s[i]
		if c < 0x80 {
			if i == binary.MaxVarintLen64-1 && c > 1 {
				return 0, -1
			}
			return x | uint64(c)<<shift, i + 1
		}
		x |= uint64(c&0x7f) << shift
		shift += 7
	}
	return 0, -1
}

func varint(s string) (int64, int) {
	ux, n := uvarint(s)
	x := int64(ux >> 1)
	if ux&1 != 0 {
		x = ^x
	}
	return x, n
}

// rowReader walks an encoded row.
type rowReader struct {
	key  string
	meta Meta
	rest string
}

func readRow(row string) (rowReader, error) {
	var r rowReader
	n, w := uvarint(row)
	if w <= 0 || uint64(len(row)-w) < n {
		return r, errCorrupt
	}
	r.key = row[w : w+int(n)]
	row = row[w+int(n):]
	for _, p := range []*uint64{&r.meta.CreateRevision, &r.meta.ModRevision, &r.meta.Version} {
		v, w := uvarint(row)
		if w <= 0 {
			return r, errCorrupt
		}
		*p = v
		row = row[w:]
	}
	if len(row) > 0 && row[0] == 0 {
		// The expiry pseudo-field. A zero or negative expiry is never
		// written, so reading one means the row is corrupt.
		if len(row) < 2 || Kind(row[1]) != KindTimestamp {
			return r, errCorrupt
		}
		x, w := varint(row[2:])
		if w <= 0 || x <= 0 {
			return r, errCorrupt // the expiry index orders expiries as unsigned
		}
		r.meta.ExpiresAt = x
		row = row[2+w:]
	}
	r.rest = row
	return r, nil
}

// rowExpiry returns the expiry of an encoded row (0 for none or for a
// malformed row), reading only its header.
func rowExpiry(row string) int64 {
	if row == "" {
		return 0
	}
	r, err := readRow(row)
	if err != nil {
		return 0
	}
	return r.meta.ExpiresAt
}

// next returns the next field; ok is false at the end.
func (r *rowReader) next() (f Field, ok bool, err error) {
	if len(r.rest) == 0 {
		return f, false, nil
	}
	b := r.rest
	n, w := uvarint(b)
	// n+1 would overflow for n = MaxUint64: compare without adding.
	if w <= 0 || uint64(len(b)-w) <= n {
		return f, false, errCorrupt
	}
	f.Name = b[w : w+int(n)]
	b = b[w+int(n):]
	kind := Kind(b[0])
	b = b[1:]
	f.Value.kind = kind
	switch kind {
	case KindNull:
	case KindBool:
		if len(b) < 1 || b[0] > 1 {
			return f, false, errCorrupt
		}
		f.Value.n = uint64(b[0])
		b = b[1:]
	case KindInt, KindTimestamp:
		x, w := varint(b)
		if w <= 0 {
			return f, false, errCorrupt
		}
		f.Value.n = uint64(x)
		b = b[w:]
	case KindDouble:
		if len(b) < 8 {
			return f, false, errCorrupt
		}
		f.Value.n = binary.LittleEndian.Uint64([]byte(b[:8]))
		b = b[8:]
	case KindString, KindBytes:
		n, w := uvarint(b)
		if w <= 0 || uint64(len(b)-w) < n {
			return f, false, errCorrupt
		}
		f.Value.s = b[w : w+int(n)]
		b = b[w+int(n):]
	default:
		return f, false, errCorrupt
	}
	r.rest = b
	return f, true, nil
}

// decodeRow decodes an encoded row, putting the primary key back under
// pkName in name order.
func decodeRow(row string, pkName string) (Row, error) {
	r, err := readRow(row)
	if err != nil {
		return Row{}, err
	}
	pk, rest, err := decodeKeyValue(r.key)
	if err != nil || rest != "" {
		return Row{}, errCorrupt
	}
	out := Row{Meta: r.meta}
	out.Fields = make([]Field, 0, 4)
	pkDone := false
	for {
		f, ok, err := r.next()
		if err != nil {
			return Row{}, err
		}
		if !ok {
			break
		}
		if !pkDone && pkName < f.Name {
			out.Fields = append(out.Fields, Field{Name: pkName, Value: pk})
			pkDone = true
		}
		out.Fields = append(out.Fields, f)
	}
	if !pkDone {
		out.Fields = append(out.Fields, Field{Name: pkName, Value: pk})
	}
	return out, nil
}

// rowFields decodes the non-key fields of an encoded row; the strings
// alias the row.
func rowFields(row string) (Meta, []Field, error) {
	r, err := readRow(row)
	if err != nil {
		return Meta{}, nil, err
	}
	var fields []Field
	for {
		f, ok, err := r.next()
		if err != nil {
			return Meta{}, nil, err
		}
		if !ok {
			return r.meta, fields, nil
		}
		fields = append(fields, f)
	}
}

// validateRow checks that an encoded row from an untrusted source (a
// snapshot) is well formed: a single-value key and fields in strictly
// increasing name order.
func validateRow(row string) error {
	r, err := readRow(row)
	if err != nil {
		return err
	}
	rest, err := skipKeyValue(r.key)
	if err != nil || rest != "" {
		return fmt.Errorf("row key: %w", errCorrupt)
	}
	prev := ""
	for i := 0; ; i++ {
		f, ok, err := r.next()
		if err != nil {
			return err
		}
		if !ok {
			return nil
		}
		if i > 0 && f.Name <= prev {
			return fmt.Errorf("row fields out of order: %w", errCorrupt)
		}
		if err := validateName(f.Name); err != nil {
			return fmt.Errorf("row field: %w", errCorrupt)
		}
		prev = f.Name
	}
}

// mathNaN reports whether a double value is NaN.
func isNaN(v Value) bool { return v.kind == KindDouble && math.IsNaN(math.Float64frombits(v.n)) }

// skipKeyValue returns what follows the first encoded value of b, checking
// its framing without allocating (decodeKeyValue builds the value).
func skipKeyValue(b string) (string, error) {
	if len(b) == 0 {
		return b, errCorrupt
	}
	tag, b := b[0], b[1:]
	switch tag {
	case tagNull, tagFalse, tagTrue:
		return b, nil
	case tagInt, tagTimestamp, tagDouble:
		if len(b) < 8 {
			return b, errCorrupt
		}
		return b[8:], nil
	case tagString, tagBytes:
		for i := 0; i < len(b); i++ {
			if b[i] != 0 {
				continue
			}
			if i+1 < len(b) && b[i+1] == 0xFF {
				i++
				continue
			}
			return b[i+1:], nil
		}
	}
	return b, errCorrupt
}
