package store

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// randBytes returns a short string over an alphabet that stresses the
// escaping: 0x00, 0x01, 0xFE, 0xFF and a letter.
func randBytes(r *rand.Rand) string {
	alphabet := []byte{0x00, 0x01, 'a', 'b', 0xFE, 0xFF}
	n := r.IntN(5)
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[r.IntN(len(alphabet))]
	}
	return string(b)
}

var (
	interestingInts = []int64{math.MinInt64, math.MinInt64 + 1, -1 << 32, -256, -255, -1, 0, 1, 127, 128, 255, 256, 1 << 32, math.MaxInt64 - 1, math.MaxInt64}
	interestingDbls = []float64{math.Inf(-1), -math.MaxFloat64, -1e300, -2.5, -1, -math.SmallestNonzeroFloat64, math.Copysign(0, -1), 0,
		math.SmallestNonzeroFloat64, 1e-300, 0.5, 1, 2.5, 1e300, math.MaxFloat64, math.Inf(1)}
)

// randValue returns a random value of any kind (never NaN).
func randValue(r *rand.Rand) Value {
	switch r.IntN(8) {
	case 0:
		return Null()
	case 1:
		return Bool(r.IntN(2) == 0)
	case 2:
		if r.IntN(2) == 0 {
			return Int(interestingInts[r.IntN(len(interestingInts))])
		}
		return Int(int64(r.Uint64()))
	case 3:
		if r.IntN(2) == 0 {
			return Double(interestingDbls[r.IntN(len(interestingDbls))])
		}
		f := math.Float64frombits(r.Uint64())
		if math.IsNaN(f) {
			f = r.NormFloat64()
		}
		return Double(f)
	case 4:
		return String(randBytes(r))
	case 5:
		return Bytes([]byte(randBytes(r)))
	case 6:
		return TimestampNanos(interestingInts[r.IntN(len(interestingInts))])
	default:
		return TimestampNanos(int64(r.Uint64()))
	}
}

// randTuple returns up to max random values; with some probability the
// values share a small domain so that equal leading values are common.
func randTuple(r *rand.Rand, max int) []Value {
	n := r.IntN(max + 1)
	out := make([]Value, n)
	for i := range out {
		if r.IntN(3) == 0 {
			out[i] = []Value{Null(), Bool(true), Int(0), Int(-1), String(""), String("a"), String("a\x00"), Bytes([]byte{0xFF})}[r.IntN(8)]
		} else {
			out[i] = randValue(r)
		}
	}
	return out
}

func compareTuples(a, b []Value) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if c := a[i].Compare(b[i]); c != 0 {
			return c
		}
	}
	return cmp.Compare(len(a), len(b))
}

func tupleHasPrefix(t, p []Value) bool {
	return len(t) >= len(p) && compareTuples(t[:len(p)], p) == 0
}

func sign(c int) int { return cmp.Compare(c, 0) }

func TestKeyOrderMatchesCompare(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200000; i++ {
		a, b := randValue(r), randValue(r)
		if i%4 == 0 { // same kind more often
			for b.kind != a.kind {
				b = randValue(r)
			}
		}
		ea, eb := appendKey(nil, a), appendKey(nil, b)
		if got, want := bytes.Compare(ea, eb), sign(a.Compare(b)); got != want {
			t.Fatalf("%v vs %v: bytes.Compare(%x, %x) = %d, Compare = %d", a, b, ea, eb, got, want)
		}
		if (bytes.Equal(ea, eb)) != a.Equal(b) {
			t.Fatalf("%v vs %v: equal encodings %v, Equal %v", a, b, bytes.Equal(ea, eb), a.Equal(b))
		}
	}
	// Every pair of the interesting values, in both orders.
	var vals []Value
	for _, n := range interestingInts {
		vals = append(vals, Int(n), TimestampNanos(n))
	}
	for _, f := range interestingDbls {
		vals = append(vals, Double(f))
	}
	for _, s := range []string{"", "\x00", "\x00\x00", "\x00\xff", "\x01", "a", "a\x00", "a\x00\x00", "a\x00\xff", "a\x01", "a\xff", "\xff", "\xff\x00"} {
		vals = append(vals, String(s), Bytes([]byte(s)))
	}
	vals = append(vals, Null(), Bool(false), Bool(true))
	for _, a := range vals {
		for _, b := range vals {
			if got, want := bytes.Compare(appendKey(nil, a), appendKey(nil, b)), sign(a.Compare(b)); got != want {
				t.Fatalf("%v vs %v: %d, want %d", a, b, got, want)
			}
		}
	}
}

func TestTupleOrderMatchesCompare(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 100000; i++ {
		a, b := randTuple(r, 4), randTuple(r, 4)
		if i%3 == 0 && len(a) > 0 { // share a prefix
			k := r.IntN(len(a) + 1)
			b = append(slices.Clone(a[:k]), b...)
		}
		ea, eb := encodeTuple(a), encodeTuple(b)
		if got, want := bytes.Compare(ea, eb), sign(compareTuples(a, b)); got != want {
			t.Fatalf("%v vs %v: bytes.Compare(%x, %x) = %d, want %d", a, b, ea, eb, got, want)
		}
	}
}

func TestKeyRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 100000; i++ {
		v := randValue(r)
		enc := appendKey([]byte("prefix"), v)[len("prefix"):]
		got, rest, err := decodeKeyValue(string(enc) + "tail")
		if err != nil || rest != "tail" || !got.Equal(v) {
			t.Fatalf("decode(encode(%v)) = %v, rest %q, %v", v, got, rest, err)
		}
		tup := randTuple(r, 5)
		dec, err := decodeTuple(string(encodeTuple(tup)))
		if err != nil || len(dec) != len(tup) {
			t.Fatalf("decodeTuple(encodeTuple(%v)) = %v, %v", tup, dec, err)
		}
		for j := range tup {
			if !dec[j].Equal(tup[j]) {
				t.Fatalf("decodeTuple(encodeTuple(%v)) = %v", tup, dec)
			}
		}
	}
	// Negative zero has the encoding of zero.
	if !bytes.Equal(appendKey(nil, Double(math.Copysign(0, -1))), appendKey(nil, Double(0))) {
		t.Fatal("-0 and 0 encode differently")
	}
	if dec, err := decodeTuple(""); err != nil || len(dec) != 0 {
		t.Fatalf("empty tuple: %v %v", dec, err)
	}
}

func TestDecodeKeyErrors(t *testing.T) {
	for _, bad := range []string{
		"\x00",
		"\x09",
		"\xff",
		"\x04\x80\x00",          // short int
		"\x05\x80",              // short double
		"\x08",                  // short timestamp
		"\x06abc",               // unterminated string
		"\x06a\x00\xff",         // escaped zero, then the end
		"\x07",                  // unterminated bytes
		"\x06a\x00\x04\x80\x00", // good string, short int
	} {
		if _, err := decodeTuple(bad); err == nil {
			t.Errorf("decodeTuple(%q) succeeded", bad)
		}
	}
}

// The encoding of a tuple prefix is a byte prefix of the encoding of every
// tuple that starts with it (and, with partial set, of every tuple whose
// value at that position starts with the partial bytes). Conversely the
// keys in [p, tupleEnd(p)) are exactly the tuples starting with p, and
// those in [p, prefixEnd(p)) with a partial p those that match it: what
// scans rely on.
func TestTuplePrefix(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for i := 0; i < 100000; i++ {
		tup := randTuple(r, 4)
		enc := encodeTuple(tup)
		k := r.IntN(len(tup) + 1)
		if p := encodeTuplePrefix(tup[:k], false); !bytes.HasPrefix(enc, p) {
			t.Fatalf("encodeTuplePrefix(%v) = %x is not a prefix of %x", tup[:k], p, enc)
		}
		if k > 0 {
			last := tup[k-1]
			if last.kind == KindString || last.kind == KindBytes {
				j := r.IntN(len(last.s) + 1)
				pt := append(slices.Clone(tup[:k-1]), Value{kind: last.kind, s: last.s[:j]})
				if p := encodeTuplePrefix(pt, true); !bytes.HasPrefix(enc, p) {
					t.Fatalf("partial encodeTuplePrefix(%v) = %x is not a prefix of %x", pt, p, enc)
				}
			} else if !bytes.Equal(encodeTuplePrefix(tup[:k], true), encodeTuplePrefix(tup[:k], false)) {
				t.Fatalf("partial prefix of non-string %v differs", tup[:k])
			}
		}

		// Converse, on an unrelated or related tuple.
		p := randTuple(r, 3)
		if r.IntN(2) == 0 && len(tup) > 0 {
			p = slices.Clone(tup[:r.IntN(len(tup))+1])
			if r.IntN(3) == 0 {
				// Perturb the last value into a near neighbour.
				l := &p[len(p)-1]
				if l.kind == KindString || l.kind == KindBytes {
					l.s = []string{l.s + "\x00", l.s + "\xff", strings.TrimSuffix(l.s, "\x00"), ""}[r.IntN(4)]
				}
			}
		}
		if len(p) == 0 {
			continue
		}
		pe := encodeTuple(p)
		in := bytes.Compare(enc, pe) >= 0 && bytes.Compare(enc, tupleEnd(pe)) < 0
		if in != tupleHasPrefix(tup, p) {
			t.Fatalf("tuple %v, prefix %v: in [p, tupleEnd(p)) = %v, has prefix = %v", tup, p, in, !in)
		}
		// Bounds: entries after every tuple starting with p.
		above := bytes.Compare(enc, tupleEnd(pe)) >= 0
		if wantAbove := compareTuples(tup[:min(len(tup), len(p))], p) > 0; above != wantAbove {
			t.Fatalf("tuple %v, bound %v: >= tupleEnd %v, want %v", tup, p, above, wantAbove)
		}
		if l := p[len(p)-1]; l.kind == KindString || l.kind == KindBytes {
			pp := encodeTuplePrefix(p, true)
			in := bytes.Compare(enc, pp) >= 0 && (prefixEnd(pp) == nil || bytes.Compare(enc, prefixEnd(pp)) < 0)
			want := len(tup) >= len(p) && compareTuples(tup[:len(p)-1], p[:len(p)-1]) == 0 &&
				tup[len(p)-1].kind == l.kind && strings.HasPrefix(tup[len(p)-1].s, l.s)
			if in != want {
				t.Fatalf("tuple %v, partial prefix %v: in range %v, want %v", tup, p, in, want)
			}
		}
	}
}

func TestPrefixEnd(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"a", "b"},
		{"a\xff", "b"},
		{"a\xfe\xff\xff", "a\xff"},
		{"\xff\xff", ""},
		{"", ""},
	} {
		got := prefixEnd([]byte(tc.in))
		if string(got) != tc.want || (tc.want == "" && got != nil) {
			t.Errorf("prefixEnd(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	p := []byte("ab")
	_ = prefixEnd(p)
	_ = tupleEnd(p[:1])
	if string(p) != "ab" {
		t.Fatal("prefixEnd or tupleEnd modified its argument")
	}
}

// randRow returns a random primary key and random sorted, uniquely named
// fields none of which is named pkName.
func randRow(r *rand.Rand, pkName string) (Value, []Field) {
	var pk Value
	for pk.kind == KindNull || pk.kind == KindDouble {
		pk = randValue(r)
	}
	names := []string{"a", "b", "f", "id", "k", "x", "zz", "_u", "A"}
	var fields []Field
	for _, n := range names {
		if n != pkName && r.IntN(2) == 0 {
			fields = append(fields, Field{Name: n, Value: randValue(r)})
		}
	}
	slices.SortFunc(fields, func(a, b Field) int { return strings.Compare(a.Name, b.Name) })
	return pk, fields
}

func TestRowRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	metas := []uint64{0, 1, 127, 128, 1 << 32, math.MaxUint64}
	for i := 0; i < 50000; i++ {
		pkName := []string{"id", "k", "a", "zzz"}[r.IntN(4)]
		pk, fields := randRow(r, pkName)
		meta := Meta{CreateRevision: metas[r.IntN(len(metas))], ModRevision: r.Uint64(), Version: metas[r.IntN(len(metas))]}
		key := appendKey(nil, pk)
		raw := encodeRow(key, meta, fields)
		if err := validateRow(raw); err != nil {
			t.Fatalf("validateRow of a valid row: %v", err)
		}
		if rowKey(raw) != string(key) {
			t.Fatalf("rowKey %x, want %x", rowKey(raw), key)
		}
		row, err := decodeRow(raw, pkName)
		if err != nil {
			t.Fatal(err)
		}
		want := append(slices.Clone(fields), Field{Name: pkName, Value: pk})
		slices.SortFunc(want, func(a, b Field) int { return strings.Compare(a.Name, b.Name) })
		if row.Meta != meta || len(row.Fields) != len(want) {
			t.Fatalf("decoded %+v, want fields %v meta %+v", row, want, meta)
		}
		for j := range want {
			if row.Fields[j].Name != want[j].Name || !row.Fields[j].Value.Equal(want[j].Value) {
				t.Fatalf("field %d: %+v, want %+v", j, row.Fields[j], want[j])
			}
		}
		m, fs, err := rowFields(raw)
		if err != nil || m != meta || len(fs) != len(fields) {
			t.Fatalf("rowFields: %+v %v %v", m, fs, err)
		}
		for j := range fs {
			if fs[j].Name != fields[j].Name || !fs[j].Value.Equal(fields[j].Value) {
				t.Fatalf("rowFields field %d: %+v, want %+v", j, fs[j], fields[j])
			}
		}
		kr, err := keysOnlyRow(raw, pkName)
		if err != nil || kr.Meta != meta || len(kr.Fields) != 1 || !kr.Fields[0].Value.Equal(pk) {
			t.Fatalf("keysOnlyRow: %+v %v", kr, err)
		}
		// Every truncation is refused or decodes without panicking; a
		// truncation inside the key or revisions is always refused.
		cut := r.IntN(len(raw))
		if cut <= len(key) {
			if _, err := decodeRow(raw[:cut], pkName); err == nil {
				t.Fatalf("decodeRow of %d of %d bytes succeeded", cut, len(raw))
			}
			if validateRow(raw[:cut]) == nil {
				t.Fatalf("validateRow of %d of %d bytes succeeded", cut, len(raw))
			}
		} else {
			_, _ = decodeRow(raw[:cut], pkName)
			_ = validateRow(raw[:cut])
		}
	}
	// Equal rows have equal bytes.
	a := encodeRow(appendKey(nil, Int(1)), Meta{CreateRevision: 1, ModRevision: 2, Version: 3}, flds("a", Double(math.Copysign(0, -1)), "b", String("x")))
	b := encodeRow(appendKey(nil, Int(1)), Meta{CreateRevision: 1, ModRevision: 2, Version: 3}, flds("a", Double(0), "b", String("x")))
	if a != b {
		t.Fatal("equal rows encode differently")
	}
}

func TestValidateRowErrors(t *testing.T) {
	key := string(appendKey(nil, Int(7)))
	good := encodeRow([]byte(key), Meta{CreateRevision: 1, ModRevision: 1, Version: 1}, flds("a", Int(1), "b", String("x")))
	if err := validateRow(good); err != nil {
		t.Fatal(err)
	}
	head := func(k string) []byte {
		b := binary.AppendUvarint(nil, uint64(len(k)))
		b = append(b, k...)
		return append(b, 1, 1, 1)
	}
	field := func(name string, kind byte, payload ...byte) []byte {
		b := binary.AppendUvarint(nil, uint64(len(name)))
		b = append(b, name...)
		b = append(b, kind)
		return append(b, payload...)
	}
	cat := func(parts ...[]byte) string { return string(bytes.Join(parts, nil)) }
	maxVarint := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01} // MaxUint64
	cases := map[string]string{
		"empty":                "",
		"key length too long":  "\x05\x04",
		"key length overflow":  string([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02}),
		"key length max":       string(maxVarint) + "abc",
		"empty key":            cat(head("")),
		"two-value key":        cat(head(key + key)),
		"key with trailing":    cat(head(key + "x")),
		"no revisions":         cat(binary.AppendUvarint(nil, uint64(len(key))), []byte(key)),
		"fields out of order":  cat(head(key), field("b", byte(KindNull)), field("a", byte(KindNull))),
		"field twice":          cat(head(key), field("a", byte(KindNull)), field("a", byte(KindNull))),
		"bad field name":       cat(head(key), field("1a", byte(KindNull))),
		"empty field name":     cat(head(key), field("", byte(KindNull))),
		"unknown kind":         cat(head(key), field("a", 7)),
		"bool payload":         cat(head(key), field("a", byte(KindBool), 2)),
		"short bool":           cat(head(key), field("a", byte(KindBool))),
		"short double":         cat(head(key), field("a", byte(KindDouble), 1, 2, 3)),
		"bad varint":           cat(head(key), field("a", byte(KindInt), 0x80)),
		"short string":         cat(head(key), field("a", byte(KindString), 5, 'a')),
		"string length max":    cat(head(key), field("a", byte(KindString), maxVarint...)),
		"name length max":      cat(head(key), maxVarint, []byte("a")),
		"name length max+kind": cat(head(key), maxVarint),
		"name without kind":    cat(head(key), []byte{1, 'a'}),
	}
	for name, raw := range cases {
		if err := validateRow(raw); err == nil {
			t.Errorf("%s: validateRow(%x) succeeded", name, raw)
		} else if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v is not ErrCorrupt", name, err)
		}
	}
}

func TestUvarint(t *testing.T) {
	for _, x := range []uint64{0, 1, 127, 128, 1<<63 - 1, 1 << 63, math.MaxUint64} {
		b := binary.AppendUvarint(nil, x)
		if got, n := uvarint(string(b) + "zz"); got != x || n != len(b) {
			t.Errorf("uvarint(%x) = %d, %d", b, got, n)
		}
	}
	for _, x := range []int64{0, -1, 1, math.MinInt64, math.MaxInt64} {
		b := binary.AppendVarint(nil, x)
		if got, n := varint(string(b)); got != x || n != len(b) {
			t.Errorf("varint(%x) = %d, %d", b, got, n)
		}
	}
	for _, bad := range []string{"", "\x80", "\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02", "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"} {
		if _, n := uvarint(bad); n > 0 {
			t.Errorf("uvarint(%x) accepted", bad)
		}
	}
}

// encodedRowSize bounds the encoded length tightly: never below it, and
// above it only by the unknown width of the revisions and int varints.
func TestEncodedRowSizeBounds(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < 2000; i++ {
		key := appendKey(nil, String(fmt.Sprint(rng.Int64())))
		var fields []Field
		for j := 0; j < rng.IntN(6); j++ {
			var v Value
			switch rng.IntN(5) {
			case 0:
				v = Int(rng.Int64() - rng.Int64())
			case 1:
				v = String(strings.Repeat("x", rng.IntN(300)))
			case 2:
				v = Double(rng.Float64())
			case 3:
				v = Bool(rng.IntN(2) == 0)
			default:
				v = Null()
			}
			fields = append(fields, Field{Name: fmt.Sprintf("f%02d", j), Value: v})
		}
		meta := Meta{CreateRevision: rng.Uint64(), ModRevision: rng.Uint64(), Version: rng.Uint64()}
		got, bound := len(encodeRow(key, meta, fields)), encodedRowSize(key, fields)
		if bound < got || bound > got+3*binary.MaxVarintLen64+len(fields)*binary.MaxVarintLen64 {
			t.Fatalf("bound %d for a row of %d bytes", bound, got)
		}
	}
}
