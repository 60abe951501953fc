package store

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"
)

// seedRows returns valid encoded rows with the primary key named pkName.
func seedRows(pkName string, n int) []string {
	r := rand.New(rand.NewPCG(31, 32))
	var out []string
	for i := 0; i < n; i++ {
		pk, fields := randRow(r, pkName)
		out = append(out, encodeRow(appendKey(nil, pk), Meta{CreateRevision: r.Uint64N(1000), ModRevision: r.Uint64(), Version: uint64(i)}, fields))
	}
	return out
}

// FuzzDecodeRow: decoding arbitrary bytes as a row never panics, and
// whatever validateRow accepts decodes and re-encodes to the same row.
func FuzzDecodeRow(f *testing.F) {
	for _, raw := range seedRows("id", 30) {
		f.Add(raw)
	}
	f.Add("")
	f.Add("\x02\x04")
	f.Add("\x0a\x04\x80\x00\x00\x00\x00\x00\x00\x01\x01\x01\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01a")
	f.Fuzz(func(t *testing.T, raw string) {
		r, rerr := readRow(raw)
		_, derr := decodeRow(raw, "id")
		_, _, ferr := rowFields(raw)
		_, _ = keysOnlyRow(raw, "id")
		_ = rowKey(raw)
		verr := validateRow(raw)
		if verr != nil {
			return
		}
		if rerr != nil || derr != nil || ferr != nil {
			t.Fatalf("validateRow accepted a row that does not decode: %v %v %v", rerr, derr, ferr)
		}
		if rowKey(raw) != r.key {
			t.Fatalf("rowKey %x, readRow key %x", rowKey(raw), r.key)
		}
		meta, fields, _ := rowFields(raw)
		again := encodeRow([]byte(r.key), meta, fields)
		if err := validateRow(again); err != nil {
			t.Fatalf("re-encoded row is invalid: %v", err)
		}
		meta2, fields2, err := rowFields(again)
		if err != nil || meta2 != meta || len(fields2) != len(fields) {
			t.Fatalf("re-encoded row decodes differently: %v", err)
		}
		for i := range fields {
			if fields[i].Name != fields2[i].Name || !fields[i].Value.Equal(fields2[i].Value) {
				t.Fatalf("field %d: %+v, re-encoded %+v", i, fields[i], fields2[i])
			}
		}
	})
}

// FuzzDecodeKey: decoding arbitrary bytes as a key never panics, and a
// key that decodes re-encodes to the same bytes (the encoding is
// canonical, so equal keys mean equal values).
func FuzzDecodeKey(f *testing.F) {
	r := rand.New(rand.NewPCG(33, 34))
	for i := 0; i < 50; i++ {
		f.Add(string(encodeTuple(randTuple(r, 4))))
	}
	f.Add("")
	f.Add("\x06a\x00\xff")
	f.Add("\x07\x00\xff\xff\x00")
	f.Fuzz(func(t *testing.T, key string) {
		vals, err := decodeTuple(key)
		_ = entryValuesLen(key, 3)
		if err != nil {
			return
		}
		if enc := encodeTuple(vals); string(enc) != key {
			t.Fatalf("decodeTuple(%x) = %v, which encodes as %x", key, vals, enc)
		}
	})
}

// FuzzKeyOrder: the bytewise order of two keys that decode is the order of
// their values (doubles that Compare cannot order, NaN, or that it calls
// equal with different bits, -0, aside).
func FuzzKeyOrder(f *testing.F) {
	r := rand.New(rand.NewPCG(35, 36))
	for i := 0; i < 30; i++ {
		f.Add(string(encodeTuple(randTuple(r, 3))), string(encodeTuple(randTuple(r, 3))))
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		va, err1 := decodeTuple(a)
		vb, err2 := decodeTuple(b)
		if err1 != nil || err2 != nil {
			return
		}
		for _, v := range append(va, vb...) {
			if v.kind == KindDouble && (math.IsNaN(v.AsDouble()) || v.n == 1<<63) {
				return
			}
		}
		if got, want := bytes.Compare([]byte(a), []byte(b)), sign(compareTuples(va, vb)); got != want {
			t.Fatalf("%v vs %v: bytes %d, values %d", va, vb, got, want)
		}
	})
}

func fuzzLoaderSchema() TableSchema {
	return TableSchema{
		Name:       "t",
		PrimaryKey: "k",
		Fields: []FieldSchema{
			{Name: "k", Type: TypeString},
			{Name: "n", Type: TypeInt},
			{Name: "s", Type: TypeString},
			{Name: "d", Type: TypeDouble},
		},
		Indexes: []IndexSchema{
			{Name: "by_n", Fields: []string{"n"}},
			{Name: "by_s_n", Fields: []string{"s", "n"}, Unique: true},
		},
	}
}

// FuzzLoaderAddRow: arbitrary bytes given to AddRow never panic; rows it
// accepts decode, satisfy the schema, and load into a store whose reads
// agree with them.
func FuzzLoaderAddRow(f *testing.F) {
	r := rand.New(rand.NewPCG(37, 38))
	for i := 0; i < 20; i++ {
		var rows []string
		for j := 0; j < 2; j++ {
			fields := flds("n", Int(int64(r.IntN(5)-2)), "s", String(sPool[r.IntN(len(sPool))]), "d", Double(interestingDbls[r.IntN(len(interestingDbls))]), "z", randValue(r))
			rows = append(rows, encodeRow(appendKey(nil, String("k"+itoa(i)+itoa(j))), Meta{CreateRevision: 1, ModRevision: 2, Version: 3}, fields))
		}
		f.Add(rows[0], rows[1])
	}
	for _, raw := range seedRows("k", 5) {
		f.Add(raw, "")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		s, err := New(Options{})
		if err != nil {
			t.Fatal(err)
		}
		l := s.NewLoader()
		if err := l.AddTable(fuzzLoaderSchema(), 1); err != nil {
			t.Fatal(err)
		}
		sc := fuzzLoaderSchema()
		var accepted []string
		for _, raw := range []string{a, b} {
			if err := l.AddRow(raw); err != nil {
				continue
			}
			accepted = append(accepted, raw)
			row, err := decodeRow(raw, "k")
			if err != nil {
				t.Fatalf("accepted row does not decode: %v", err)
			}
			for _, fl := range row.Fields {
				if fs, ok := sc.Field(fl.Name); ok && fl.Value.kind != fs.Type.Kind() && !(fl.Value.IsNull() && fl.Name != "k") {
					t.Fatalf("accepted row has %s of kind %s", fl.Name, fl.Value.kind)
				}
			}
		}
		if len(accepted) == 2 && rowKey(accepted[0]) >= rowKey(accepted[1]) {
			t.Fatal("accepted rows out of order")
		}
		if err := s.Load(l, 5); err != nil {
			return // a unique violation between the two rows
		}
		v := s.View()
		if v.Hash() != l.Hash() {
			t.Fatal("Loader.Hash differs from the loaded view's")
		}
		checkTableInvariants(t, s.tables["t"])
		for _, raw := range accepted {
			want, _ := decodeRow(raw, "k")
			key, _ := want.Get("k")
			got, found, err := v.Get("t", key)
			if err != nil || !found || !sameRow(got, want) {
				t.Fatalf("Get(%v) = %+v %v %v, want %+v", key, got, found, err, want)
			}
		}
		for _, ix := range []string{"", "by_n", "by_s_n"} {
			if _, err := v.Scan("t", ScanOptions{Index: ix}); err != nil {
				t.Fatalf("scan %q: %v", ix, err)
			}
		}
		// The loaded store takes writes.
		b2 := s.Begin()
		if _, err := b2.Txn(6, Txn{Then: []Op{upsOp("t", flds("k", String("new"), "n", Int(1)))}}); err != nil {
			t.Fatal(err)
		}
		b2.Commit()
	})
}
