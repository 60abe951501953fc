package store

import (
	"bytes"
	"math"
	"testing"
)

// Negative zero in keys is one key with zero whatever Value reaches the
// encoding, and through the store -0.0 reads back as 0, in indexed and
// other row values alike (see Double for why row values too).
func TestNegativeZero(t *testing.T) {
	negZero := math.Copysign(0, -1)
	raw := Value{kind: KindDouble, n: math.Float64bits(negZero)} // not through Double
	if !bytes.Equal(appendKey(nil, raw), appendKey(nil, Double(0))) {
		t.Fatalf("-0.0 encodes as key %x, 0.0 as %x", appendKey(nil, raw), appendKey(nil, Double(0)))
	}
	if raw.Compare(Double(0)) != 0 {
		t.Fatal("-0.0 and 0.0 do not compare equal")
	}
	dec, rest, err := decodeKeyValue(string(appendKey(nil, raw)))
	if err != nil || rest != "" || dec.n != 0 {
		t.Fatalf("decoded key %v (bits %x), %q, %v", dec, dec.n, rest, err)
	}

	f := newFx(t, Options{})
	f.createTable(TableSchema{
		Name: "m", PrimaryKey: "id",
		Fields:  []FieldSchema{{Name: "id", Type: TypeInt}, {Name: "x", Type: TypeDouble}, {Name: "y", Type: TypeDouble}},
		Indexes: []IndexSchema{{Name: "by_x", Fields: []string{"x"}, Unique: true}},
	})
	f.do(insOp("m", flds("id", Int(1), "x", Double(negZero), "y", Double(negZero))))
	row, ok := f.get("m", Int(1))
	if !ok {
		t.Fatal("row not found")
	}
	for _, name := range []string{"x", "y"} {
		v, _ := row.Get(name)
		if math.Signbit(v.AsDouble()) || v.AsDouble() != 0 {
			t.Errorf("%s reads back as %v, sign bit %v", name, v, math.Signbit(v.AsDouble()))
		}
	}
	// One index entry for both zeros: +0.0 is taken, and a range from
	// +0.0 finds the row.
	f.failTxn(ErrUniqueViolation, Txn{Then: []Op{insOp("m", flds("id", Int(2), "x", Double(0)))}})
	res, err := f.s.View().Scan("m", ScanOptions{Index: "by_x", Start: []Value{Double(0)}, End: []Value{Double(0)}, EndInclusive: true, Limit: 10})
	if err != nil || len(res.Rows) != 1 {
		t.Fatalf("scan of x in [0, 0]: %d rows, %v", len(res.Rows), err)
	}
}
