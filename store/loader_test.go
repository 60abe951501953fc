package store

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// snapshotInto feeds every table and row of v to l, as a snapshot would.
func snapshotInto(tb testing.TB, v *View, l *Loader) {
	tb.Helper()
	for _, info := range v.Tables() {
		if err := l.AddTable(info.Schema, info.CreateRevision); err != nil {
			tb.Fatalf("AddTable(%s): %v", info.Schema.Name, err)
		}
		var err error
		if e := v.Rows(info.Schema.Name, func(raw string) bool {
			err = l.AddRow(raw)
			return err == nil
		}); e != nil {
			tb.Fatal(e)
		}
		if err != nil {
			tb.Fatalf("AddRow in %s: %v", info.Schema.Name, err)
		}
	}
}

// sameContent checks that two views hold the same tables, rows and
// indexes.
func sameContent(tb testing.TB, a, b *View) {
	tb.Helper()
	if a.Hash() != b.Hash() {
		tb.Fatal("hashes differ")
	}
	ta, tbl := a.Tables(), b.Tables()
	if len(ta) != len(tbl) {
		tb.Fatalf("%d tables, want %d", len(tbl), len(ta))
	}
	for i := range ta {
		x, y := ta[i], tbl[i]
		if x.Schema.Name != y.Schema.Name || x.Rows != y.Rows || x.Bytes != y.Bytes || x.CreateRevision != y.CreateRevision ||
			len(x.Schema.Indexes) != len(y.Schema.Indexes) || len(x.Schema.Fields) != len(y.Schema.Fields) {
			tb.Fatalf("table info %+v, want %+v", y, x)
		}
		name := x.Schema.Name
		indexes := []string{""}
		for _, ix := range x.Schema.Indexes {
			indexes = append(indexes, ix.Name)
		}
		for _, ix := range indexes {
			for _, rev := range []bool{false, true} {
				o := ScanOptions{Index: ix, Reverse: rev}
				ra, err1 := a.Scan(name, o)
				rb, err2 := b.Scan(name, o)
				if err1 != nil || err2 != nil || !slices.EqualFunc(ra.Rows, rb.Rows, sameRow) {
					tb.Fatalf("table %s index %q: scans differ (%v, %v):\n%s\n%s", name, ix, err1, err2, fmtRows(ra.Rows), fmtRows(rb.Rows))
				}
				ca, _ := a.Count(name, o)
				cb, _ := b.Count(name, o)
				if ca != cb || ca != len(ra.Rows) {
					tb.Fatalf("table %s index %q: counts %d and %d for %d rows", name, ix, ca, cb, len(ra.Rows))
				}
			}
		}
	}
}

// richStore builds a store with several tables, index changes and
// deletions behind it.
func richStore(tb testing.TB) *fx {
	f := usersFx(tb, 30)
	f.do(delOp("users", Int(4)), updOp("users", Int(5), nil, "email", "age"), updOp("users", Int(6), flds("score", Double(math.Inf(-1)), "blob", Bytes([]byte{0, 0xFF}), "x", Bool(true))))
	f.ok(func(b *Batch, rev uint64) error { return b.DropIndex(rev, "users", "by_age") })
	f.ok(func(b *Batch, rev uint64) error {
		return b.CreateIndex(rev, "users", IndexSchema{Name: "by_score", Fields: []string{"score", "id"}, Unique: true})
	})
	f.createTable(TableSchema{
		Name: "kv", PrimaryKey: "k",
		Fields:  []FieldSchema{{Name: "k", Type: TypeString}, {Name: "v", Type: TypeBytes}, {Name: "t", Type: TypeTimestamp}},
		Indexes: []IndexSchema{{Name: "by_v", Fields: []string{"v"}}, {Name: "by_t_v", Fields: []string{"t", "v"}, Unique: true}},
	})
	r := rand.New(rand.NewPCG(21, 22))
	var ops []Op
	for i := 0; i < 300; i++ {
		ops = append(ops, upsOp("kv", flds("k", String(sPool[r.IntN(len(sPool))]+itoa(i)), "v", Bytes([]byte(randBytes(r))), "t", TimestampNanos(int64(i)-150))))
	}
	f.do(ops...)
	f.createTable(TableSchema{Name: "empty", PrimaryKey: "b", Fields: []FieldSchema{{Name: "b", Type: TypeBool}}})
	f.createTable(TableSchema{Name: "flags", PrimaryKey: "b", Fields: []FieldSchema{{Name: "b", Type: TypeBool}, {Name: "n", Type: TypeInt}}})
	f.do(insOp("flags", flds("b", Bool(true), "n", Int(1))), insOp("flags", flds("b", Bool(false))))
	f.createTable(TableSchema{Name: "dropped", PrimaryKey: "b", Fields: []FieldSchema{{Name: "b", Type: TypeBytes}}})
	f.ok(func(b *Batch, rev uint64) error { return b.DropTable(rev, "dropped") })
	return f
}

func TestLoaderRoundTrip(t *testing.T) {
	src := richStore(t)
	v := src.s.View()

	dst := newFx(t, Options{})
	// The target has content of its own, which the load replaces.
	dst.createTable(TableSchema{Name: "junk", PrimaryKey: "k", Fields: []FieldSchema{{Name: "k", Type: TypeInt}}})
	dst.do(insOp("junk", flds("k", Int(1))))
	l := dst.s.NewLoader()
	snapshotInto(t, v, l)
	if _, err := dst.s.View().Table("junk"); err != nil {
		t.Fatal("the loader changed the store before Load")
	}
	if l.Hash() != v.Hash() {
		t.Fatal("Loader.Hash differs from the source view's Hash")
	}
	if err := dst.s.Load(l, v.Revision()); err != nil {
		t.Fatal(err)
	}
	dv := dst.s.View()
	if dv.Revision() != v.Revision() {
		t.Fatalf("revision %d, want %d", dv.Revision(), v.Revision())
	}
	if _, err := dv.Table("junk"); !errors.Is(err, ErrTableNotFound) {
		t.Fatalf("junk table survived the load: %v", err)
	}
	sameContent(t, v, dv)
	checkTableInvariants(t, dst.s.tables["users"])
	checkTableInvariants(t, dst.s.tables["kv"])

	// Both stores go on identically, constraints included.
	dst.rev = src.rev
	for _, f := range []*fx{src, dst} {
		f.failTxn(ErrUniqueViolation, Txn{Then: []Op{insOp("users", user(100, "x", "e1", 1))}})
		f.failTxn(ErrRowExists, Txn{Then: []Op{insOp("users", user(1, "x", "zz", 1))}})
		f.do(insOp("users", user(100, "x", "e100", 1)), updOp("users", Int(1), flds("age", Int(77))), delOp("kv", String("a1")))
		f.do(upsOp("flags", flds("b", Bool(true), "n", Int(2))))
		f.ok(func(b *Batch, rev uint64) error {
			return b.CreateIndex(rev, "kv", IndexSchema{Name: "by_k_t", Fields: []string{"t", "k"}})
		})
		f.failTxn(ErrInvalidArgument, Txn{Then: []Op{upsOp("users", user(1, "x", "zz", 1))}, Conditions: []Condition{{Table: "users", Key: Int(1), Test: CondField, Field: "x y"}}})
	}
	sameContent(t, src.s.View(), dst.s.View())
	if r := dst.mustGet("users", Int(1)); r.Meta.CreateRevision != src.mustGet("users", Int(1)).Meta.CreateRevision || r.Meta.Version != 2 {
		t.Fatalf("meta after load %+v", r.Meta)
	}

	// A loaded store snapshots to the same content again, and an empty
	// snapshot empties a store.
	third := newFx(t, Options{})
	l = third.s.NewLoader()
	snapshotInto(t, dst.s.View(), l)
	if err := third.s.Load(l, dst.s.View().Revision()); err != nil {
		t.Fatal(err)
	}
	sameContent(t, dst.s.View(), third.s.View())
	if err := third.s.Load(third.s.NewLoader(), 5); err != nil {
		t.Fatal(err)
	}
	if len(third.s.View().Tables()) != 0 || third.s.View().Revision() != 5 {
		t.Fatal("empty load left tables")
	}
	empty, _ := New(Options{})
	if third.s.View().Hash() != empty.View().Hash() {
		t.Fatal("an emptied store hashes differently from a new one")
	}
}

// A view held across a Load keeps showing the old content.
func TestLoadKeepsHeldViews(t *testing.T) {
	f := usersFx(t, 5)
	held := f.s.View()
	h := held.Hash()
	other := usersFx(t, 9)
	l := f.s.NewLoader()
	snapshotInto(t, other.s.View(), l)
	if err := f.s.Load(l, 100); err != nil {
		t.Fatal(err)
	}
	if held.Hash() != h {
		t.Fatal("held view changed")
	}
	if n, _ := held.Count("users", ScanOptions{}); n != 5 {
		t.Fatalf("held view has %d rows", n)
	}
	if n, _ := f.s.View().Count("users", ScanOptions{}); n != 9 {
		t.Fatalf("loaded view has %d rows", n)
	}
	// Revisions go on from the loaded one.
	b := f.s.Begin()
	if err := b.Advance(100); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Advance to the loaded revision: %v", err)
	}
	if err := b.Advance(101); err != nil {
		t.Fatal(err)
	}
	b.Commit()
}

func TestLoaderErrors(t *testing.T) {
	src := usersFx(t, 5)
	var raws []string
	_ = src.s.View().Rows("users", func(raw string) bool { raws = append(raws, raw); return true })
	sc := usersSchema()
	kvSchema := TableSchema{Name: "kv", PrimaryKey: "k", Fields: []FieldSchema{{Name: "k", Type: TypeString}}}

	// A target with content; nothing below may change it.
	dst := usersFx(t, 2)
	before := dst.s.View()
	h := before.Hash()
	unchanged := func() {
		t.Helper()
		if dst.s.View() != before || dst.s.View().Hash() != h || dst.s.View().Revision() != before.Revision() {
			t.Fatal("the target store changed")
		}
	}

	row := func(key Value, fields ...any) string {
		sorted := flds(fields...)
		slices.SortFunc(sorted, func(a, b Field) int { return cmpStrings(a.Name, b.Name) })
		return encodeRow(appendKey(nil, key), Meta{CreateRevision: 1, ModRevision: 1, Version: 1}, sorted)
	}
	cases := []struct {
		name string
		feed func(l *Loader) error
		want error
	}{
		{"row before any table", func(l *Loader) error { return l.AddRow(raws[0]) }, ErrCorrupt},
		{"duplicate table", func(l *Loader) error {
			if err := l.AddTable(kvSchema, 1); err != nil {
				return err
			}
			if err := l.AddTable(sc, 1); err != nil {
				return err
			}
			return l.AddTable(kvSchema, 1)
		}, ErrCorrupt},
		{"rows out of order", func(l *Loader) error {
			_ = l.AddTable(sc, 1)
			if err := l.AddRow(raws[1]); err != nil {
				return err
			}
			return l.AddRow(raws[0])
		}, ErrCorrupt},
		{"duplicate row", func(l *Loader) error {
			_ = l.AddTable(sc, 1)
			if err := l.AddRow(raws[1]); err != nil {
				return err
			}
			return l.AddRow(raws[1])
		}, ErrCorrupt},
		{"truncated row", func(l *Loader) error { _ = l.AddTable(sc, 1); return l.AddRow(raws[0][:len(raws[0])-1]) }, ErrCorrupt},
		{"garbage row", func(l *Loader) error { _ = l.AddTable(sc, 1); return l.AddRow("\x03\x04\x00\x00") }, ErrCorrupt},
		{"empty row", func(l *Loader) error { _ = l.AddTable(sc, 1); return l.AddRow("") }, ErrCorrupt},
		{"key of the wrong type", func(l *Loader) error { _ = l.AddTable(kvSchema, 1); return l.AddRow(raws[0]) }, ErrCorrupt},
		{"null key", func(l *Loader) error { _ = l.AddTable(sc, 1); return l.AddRow(row(Null(), "name", String("n"))) }, ErrCorrupt},
		{"field of the wrong type", func(l *Loader) error {
			_ = l.AddTable(sc, 1)
			return l.AddRow(row(Int(1), "name", String("n"), "age", String("old")))
		}, ErrCorrupt},
		{"field named as the key", func(l *Loader) error {
			_ = l.AddTable(sc, 1)
			return l.AddRow(row(Int(1), "name", String("n"), "id", Int(2)))
		}, ErrCorrupt},
		{"required field missing", func(l *Loader) error {
			_ = l.AddTable(sc, 1)
			return l.AddRow(row(Int(1), "age", Int(3)))
		}, ErrCorrupt},
		{"required field null", func(l *Loader) error {
			_ = l.AddTable(sc, 1)
			return l.AddRow(row(Int(1), "name", Null()))
		}, ErrCorrupt},
		{"invalid utf8", func(l *Loader) error {
			_ = l.AddTable(sc, 1)
			return l.AddRow(row(Int(1), "name", String("\xff")))
		}, ErrCorrupt},
		{"nan", func(l *Loader) error {
			_ = l.AddTable(sc, 1)
			return l.AddRow(row(Int(1), "name", String("n"), "x", Double(math.NaN())))
		}, ErrCorrupt},
		{"negative zero", func(l *Loader) error {
			_ = l.AddTable(sc, 1)
			return l.AddRow(row(Int(1), "name", String("n"), "score", Value{kind: KindDouble, n: 1 << 63}))
		}, ErrCorrupt},
		{"tables out of order", func(l *Loader) error {
			if err := l.AddTable(sc, 1); err != nil {
				return err
			}
			return l.AddTable(kvSchema, 1)
		}, ErrCorrupt},
		{"invalid schema", func(l *Loader) error {
			bad := usersSchema()
			bad.PrimaryKey = "nope"
			return l.AddTable(bad, 1)
		}, ErrInvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := dst.s.NewLoader()
			if err := tc.feed(l); !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			unchanged()
		})
	}

	// Rows that break a unique index: Load fails and changes nothing.
	l := dst.s.NewLoader()
	if err := l.AddTable(sc, 1); err != nil {
		t.Fatal(err)
	}
	for i := int64(1); i <= 3; i++ {
		if err := l.AddRow(row(Int(i), "name", String("n"), "email", String("same"))); err != nil {
			t.Fatal(err)
		}
	}
	if err := dst.s.Load(l, 99); !errors.Is(err, ErrUniqueViolation) {
		t.Fatalf("Load: %v", err)
	}
	unchanged()
	// The target still works.
	dst.rev = before.Revision()
	dst.do(insOp("users", user(3, "c", "e3", 1)))
}

func cmpStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
