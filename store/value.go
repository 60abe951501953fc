package store

import (
	"bytes"
	"cmp"
	"fmt"
	"math"
	"strconv"
	"time"
)

// Kind is the type of a Value. Kinds are ordered: values of different kinds
// compare by kind, in the order declared here, so that one index can hold
// mixed kinds (for undeclared fields) with a total order.
type Kind uint8

// The kinds of a Value, in sort order.
const (
	KindNull Kind = iota
	KindBool
	KindInt
	KindDouble
	KindString
	KindBytes
	KindTimestamp
)

var kindNames = [...]string{"null", "bool", "int64", "double", "string", "bytes", "timestamp"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Value is one typed value. The zero Value is null. Values are small and
// passed by value.
type Value struct {
	kind Kind
	n    uint64 // bool (0/1), int64, double bits, timestamp nanos
	s    string // string and bytes
}

// Null returns the null value.
func Null() Value { return Value{} }

// Bool returns a bool value.
func Bool(b bool) Value {
	if b {
		return Value{kind: KindBool, n: 1}
	}
	return Value{kind: KindBool}
}

// Int returns an int64 value.
func Int(i int64) Value { return Value{kind: KindInt, n: uint64(i)} }

// Double returns a double value. NaN is representable here but refused by
// Validate.
//
// Negative zero becomes zero, in row values as well as in keys, so that a
// client that writes -0.0 reads back 0 (0.0). In a key that is inherent
// (see the key encoding in encoding.go). In a row value it is a choice
// this constructor makes, and why it is kept: the state machine builds
// every stored value through here as it applies the log, on every
// replica, so whether the sign survives is part of the replicated
// semantics of a command. A binary that kept it would hold different
// bytes from one that did not for the same log, and in a cluster during
// a rolling upgrade the consistency check would find the members'
// checkpoints differ and mark one divergent; older members also refuse a
// snapshot holding -0.0 (Loader). Keeping the sign in row values needs a
// new command format (a log entry that says its doubles keep their sign,
// written only once every voter applies it), a constructor that keeps it
// for those entries, and the checks that compare values with Equal (bits)
// where they mean numbers (an update's primary key) to compare keys.
func Double(f float64) Value {
	if f == 0 {
		f = 0
	}
	return Value{kind: KindDouble, n: math.Float64bits(f)}
}

// String returns a string value.
func String(s string) Value { return Value{kind: KindString, s: s} }

// Bytes returns a bytes value. The slice is copied.
func Bytes(b []byte) Value { return Value{kind: KindBytes, s: string(b)} }

// Timestamp returns a timestamp value with nanosecond precision.
func Timestamp(t time.Time) Value { return Value{kind: KindTimestamp, n: uint64(t.UnixNano())} }

// TimestampNanos returns a timestamp value from Unix nanoseconds.
func TimestampNanos(ns int64) Value { return Value{kind: KindTimestamp, n: uint64(ns)} }

// Kind returns the value's kind.
func (v Value) Kind() Kind { return v.kind }

// IsNull reports whether the value is null.
func (v Value) IsNull() bool { return v.kind == KindNull }

// AsBool returns the bool; false for other kinds.
func (v Value) AsBool() bool { return v.kind == KindBool && v.n != 0 }

// AsInt returns the int64; 0 for other kinds.
func (v Value) AsInt() int64 {
	if v.kind != KindInt {
		return 0
	}
	return int64(v.n)
}

// AsDouble returns the double; 0 for other kinds.
func (v Value) AsDouble() float64 {
	if v.kind != KindDouble {
		return 0
	}
	return math.Float64frombits(v.n)
}

// AsString returns the string or the bytes as a string; "" for other kinds.
func (v Value) AsString() string { return v.s }

// AsBytes returns a copy of the bytes (or string) content.
func (v Value) AsBytes() []byte { return []byte(v.s) }

// AsTimeNanos returns the timestamp in Unix nanoseconds; 0 for other kinds.
func (v Value) AsTimeNanos() int64 {
	if v.kind != KindTimestamp {
		return 0
	}
	return int64(v.n)
}

// AsTime returns the timestamp as a time.Time in UTC.
func (v Value) AsTime() time.Time { return time.Unix(0, v.AsTimeNanos()).UTC() }

// Equal reports whether two values have the same kind and content.
func (v Value) Equal(o Value) bool { return v.kind == o.kind && v.n == o.n && v.s == o.s }

// Compare orders two values: by kind first, then by content (int64 and
// timestamps numerically, doubles numerically, strings and bytes bytewise,
// false before true). It agrees with the order of their key encodings.
func (v Value) Compare(o Value) int {
	if v.kind != o.kind {
		return cmp.Compare(v.kind, o.kind)
	}
	switch v.kind {
	case KindBool:
		return cmp.Compare(v.n, o.n)
	case KindInt, KindTimestamp:
		return cmp.Compare(int64(v.n), int64(o.n))
	case KindDouble:
		return cmp.Compare(math.Float64frombits(v.n), math.Float64frombits(o.n))
	case KindString, KindBytes:
		return bytes.Compare([]byte(v.s), []byte(o.s))
	}
	return 0
}

// String formats the value for messages and logs.
func (v Value) String() string {
	switch v.kind {
	case KindNull:
		return "null"
	case KindBool:
		return strconv.FormatBool(v.n != 0)
	case KindInt:
		return strconv.FormatInt(int64(v.n), 10)
	case KindDouble:
		return strconv.FormatFloat(math.Float64frombits(v.n), 'g', -1, 64)
	case KindString:
		return strconv.Quote(v.s)
	case KindBytes:
		return fmt.Sprintf("0x%x", v.s)
	case KindTimestamp:
		return v.AsTime().Format(time.RFC3339Nano)
	}
	return v.kind.String()
}

// Field is one named value of a row.
type Field struct {
	Name  string
	Value Value
}

// Meta is the history of a row.
type Meta struct {
	// CreateRevision is the revision of the write that created the row.
	CreateRevision uint64
	// ModRevision is the revision of the last write that changed the row.
	ModRevision uint64
	// Version counts the writes to the row since it was created (1 after
	// insert).
	Version uint64
	// ExpiresAt is the log time, in Unix nanoseconds, at which the row
	// expires; 0 when it never does. An expired row is invisible to reads
	// at or after that time and is deleted by the log (Batch.Expire).
	ExpiresAt int64
}

// expiredAt reports whether a row with this expiry is expired at now (0
// means no clock: nothing is expired).
func expiredAt(expiresAt, now int64) bool {
	return expiresAt != 0 && now != 0 && expiresAt <= now
}

// Row is a decoded row: its fields sorted by name (the primary key among
// them) and its history.
type Row struct {
	Fields []Field
	Meta
}

// Get returns the named field.
func (r Row) Get(name string) (Value, bool) {
	for _, f := range r.Fields {
		if f.Name == name {
			return f.Value, true
		}
	}
	return Value{}, false
}
