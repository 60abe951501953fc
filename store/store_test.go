package store

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

// ---------------------------------------------------------------------------
// Test helpers shared by the test files of the package.

// fx drives a Store one command per batch, at increasing revisions.
type fx struct {
	tb  testing.TB
	s   *Store
	rev uint64
}

func newFx(tb testing.TB, opts Options) *fx {
	tb.Helper()
	s, err := New(opts)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return &fx{tb: tb, s: s}
}

// run applies one command in a batch of its own at the next revision and
// commits it. Whether the command fails or not, the committed view must
// report its revision.
func (f *fx) run(fn func(b *Batch, rev uint64) error) error {
	f.tb.Helper()
	f.rev++
	b := f.s.Begin()
	err := fn(b, f.rev)
	if got := b.Revision(); got != f.rev {
		f.tb.Fatalf("Batch.Revision() = %d, want %d", got, f.rev)
	}
	v := b.Commit()
	if v != f.s.View() {
		f.tb.Fatalf("Commit returned a view other than Store.View()")
	}
	if v.Revision() != f.rev {
		f.tb.Fatalf("View.Revision() = %d after a command at %d", v.Revision(), f.rev)
	}
	return err
}

// ok runs a command that must succeed.
func (f *fx) ok(fn func(b *Batch, rev uint64) error) {
	f.tb.Helper()
	if err := f.run(fn); err != nil {
		f.tb.Fatalf("unexpected error: %v", err)
	}
}

// fail runs a command that must fail with want and leave the content (the
// view's Hash) unchanged.
func (f *fx) fail(want error, fn func(b *Batch, rev uint64) error) error {
	f.tb.Helper()
	h := f.s.View().Hash()
	err := f.run(fn)
	if !errors.Is(err, want) {
		f.tb.Fatalf("error = %v, want %v", err, want)
	}
	if f.s.View().Hash() != h {
		f.tb.Fatalf("failed command (%v) changed the store", err)
	}
	return err
}

func (f *fx) createTable(sc TableSchema) {
	f.tb.Helper()
	f.ok(func(b *Batch, rev uint64) error { return b.CreateTable(rev, sc) })
}

func (f *fx) txn(txn Txn) (TxnResult, error) {
	f.tb.Helper()
	var res TxnResult
	err := f.run(func(b *Batch, rev uint64) error {
		var err error
		res, err = b.Txn(rev, txn)
		return err
	})
	return res, err
}

func (f *fx) mustTxn(txn Txn) TxnResult {
	f.tb.Helper()
	res, err := f.txn(txn)
	if err != nil {
		f.tb.Fatalf("txn: %v", err)
	}
	return res
}

func (f *fx) failTxn(want error, txn Txn) {
	f.tb.Helper()
	f.fail(want, func(b *Batch, rev uint64) error {
		_, err := b.Txn(rev, txn)
		return err
	})
}

// do runs a transaction of the given operations.
func (f *fx) do(ops ...Op) []OpResult {
	f.tb.Helper()
	return f.mustTxn(Txn{Then: ops}).Results
}

func (f *fx) get(table string, key Value) (Row, bool) {
	f.tb.Helper()
	row, ok, err := f.s.View().Get(table, key)
	if err != nil {
		f.tb.Fatalf("Get(%s, %s): %v", table, key, err)
	}
	return row, ok
}

func (f *fx) mustGet(table string, key Value) Row {
	f.tb.Helper()
	row, ok := f.get(table, key)
	if !ok {
		f.tb.Fatalf("Get(%s, %s): not found", table, key)
	}
	return row
}

func (f *fx) scan(table string, o ScanOptions) []Row {
	f.tb.Helper()
	res, err := f.s.View().Scan(table, o)
	if err != nil {
		f.tb.Fatalf("Scan(%s, %+v): %v", table, o, err)
	}
	return res.Rows
}

// flds builds fields from name, value pairs.
func flds(kv ...any) []Field {
	out := make([]Field, 0, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		out = append(out, Field{Name: kv[i].(string), Value: kv[i+1].(Value)})
	}
	return out
}

func insOp(table string, f []Field) Op { return Op{Kind: OpInsert, Table: table, Fields: f} }
func upsOp(table string, f []Field) Op { return Op{Kind: OpUpsert, Table: table, Fields: f} }
func updOp(table string, key Value, set []Field, unset ...string) Op {
	return Op{Kind: OpUpdate, Table: table, Key: key, Fields: set, Unset: unset}
}
func delOp(table string, key Value) Op { return Op{Kind: OpDelete, Table: table, Key: key} }
func getOp(table string, key Value) Op { return Op{Kind: OpGet, Table: table, Key: key} }

func usersSchema() TableSchema {
	return TableSchema{
		Name:       "users",
		PrimaryKey: "id",
		Fields: []FieldSchema{
			{Name: "id", Type: TypeInt},
			{Name: "name", Type: TypeString, Required: true},
			{Name: "email", Type: TypeString},
			{Name: "age", Type: TypeInt},
			{Name: "score", Type: TypeDouble},
			{Name: "blob", Type: TypeBytes},
			{Name: "born", Type: TypeTimestamp},
			{Name: "active", Type: TypeBool},
		},
		Indexes: []IndexSchema{
			{Name: "by_email", Fields: []string{"email"}, Unique: true},
			{Name: "by_age", Fields: []string{"age"}},
			{Name: "by_name_age", Fields: []string{"name", "age"}},
		},
	}
}

func user(id int64, name, email string, age int64) []Field {
	return flds("id", Int(id), "name", String(name), "email", String(email), "age", Int(age))
}

// usersFx returns a store with the users table and n users: id i, name
// "u<i%3>", email "e<i>", age 20+i%5.
func usersFx(tb testing.TB, n int) *fx {
	f := newFx(tb, Options{})
	f.createTable(usersSchema())
	for i := 1; i <= n; i++ {
		f.do(insOp("users", user(int64(i), "u"+itoa(i%3), "e"+itoa(i), int64(20+i%5))))
	}
	return f
}

func itoa(i int) string { return Int(int64(i)).String() }

func rowIDs(rows []Row, field string) []int64 {
	out := make([]int64, 0, len(rows))
	for _, r := range rows {
		v, _ := r.Get(field)
		out = append(out, v.AsInt())
	}
	return out
}

func rowStrings(rows []Row, field string) []string {
	out := make([]string, 0, len(rows))
	for _, r := range rows {
		v, _ := r.Get(field)
		out = append(out, v.AsString())
	}
	return out
}

func fieldNames(r Row) []string {
	var out []string
	for _, f := range r.Fields {
		out = append(out, f.Name)
	}
	return out
}

// ---------------------------------------------------------------------------
// Schema and table operations.

func TestCreateTableErrors(t *testing.T) {
	long := strings.Repeat("a", 65)
	cases := []struct {
		name   string
		mutate func(sc *TableSchema)
		opts   Options
		want   error
	}{
		{"empty table name", func(sc *TableSchema) { sc.Name = "" }, Options{}, ErrInvalidArgument},
		{"name starts with digit", func(sc *TableSchema) { sc.Name = "1users" }, Options{}, ErrInvalidArgument},
		{"name with dash", func(sc *TableSchema) { sc.Name = "my-users" }, Options{}, ErrInvalidArgument},
		{"name with space", func(sc *TableSchema) { sc.Name = "my users" }, Options{}, ErrInvalidArgument},
		{"name too long", func(sc *TableSchema) { sc.Name = long }, Options{}, ErrInvalidArgument},
		{"name not utf8", func(sc *TableSchema) { sc.Name = "u\xff" }, Options{}, ErrInvalidArgument},
		{"name non-ascii", func(sc *TableSchema) { sc.Name = "usé" }, Options{}, ErrInvalidArgument},
		{"bad field name", func(sc *TableSchema) { sc.Fields[2].Name = "e.mail" }, Options{}, ErrInvalidArgument},
		{"duplicate field", func(sc *TableSchema) { sc.Fields[3].Name = "email" }, Options{}, ErrInvalidArgument},
		{"primary key declared twice", func(sc *TableSchema) {
			sc.Fields = append(sc.Fields, FieldSchema{Name: "id", Type: TypeString})
		}, Options{}, ErrInvalidArgument},
		{"unspecified type", func(sc *TableSchema) { sc.Fields[3].Type = TypeUnspecified }, Options{}, ErrInvalidArgument},
		{"unknown type", func(sc *TableSchema) { sc.Fields[3].Type = 42 }, Options{}, ErrInvalidArgument},
		{"no primary key", func(sc *TableSchema) { sc.PrimaryKey = "" }, Options{}, ErrInvalidArgument},
		{"undeclared primary key", func(sc *TableSchema) { sc.PrimaryKey = "uid" }, Options{}, ErrInvalidArgument},
		{"double primary key", func(sc *TableSchema) { sc.PrimaryKey = "score" }, Options{}, ErrInvalidArgument},
		{"index without fields", func(sc *TableSchema) { sc.Indexes[0].Fields = nil }, Options{}, ErrInvalidArgument},
		{"index on undeclared field", func(sc *TableSchema) { sc.Indexes[0].Fields = []string{"phone"} }, Options{}, ErrInvalidArgument},
		{"index lists field twice", func(sc *TableSchema) { sc.Indexes[2].Fields = []string{"name", "name"} }, Options{}, ErrInvalidArgument},
		{"index declared twice", func(sc *TableSchema) { sc.Indexes[1].Name = "by_email" }, Options{}, ErrInvalidArgument},
		{"bad index name", func(sc *TableSchema) { sc.Indexes[1].Name = "by age" }, Options{}, ErrInvalidArgument},
		{"empty index name", func(sc *TableSchema) { sc.Indexes[1].Name = "" }, Options{}, ErrInvalidArgument},
		{"too many fields", func(sc *TableSchema) {}, Options{Limits: withLimits(func(l *Limits) { l.MaxFields = 7 })}, ErrTooLarge},
		{"too many indexes", func(sc *TableSchema) {}, Options{Limits: withLimits(func(l *Limits) { l.MaxIndexes = 2 })}, ErrTooLarge},
		{"too many index fields", func(sc *TableSchema) {}, Options{Limits: withLimits(func(l *Limits) { l.MaxIndexFields = 1 })}, ErrTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFx(t, tc.opts)
			f.createTable(TableSchema{Name: "other", PrimaryKey: "k", Fields: []FieldSchema{{Name: "k", Type: TypeString}}})
			sc := usersSchema()
			tc.mutate(&sc)
			f.fail(tc.want, func(b *Batch, rev uint64) error { return b.CreateTable(rev, sc) })
			if _, err := f.s.View().Table(sc.Name); sc.Name != "other" && !errors.Is(err, ErrTableNotFound) {
				t.Fatalf("table %q exists after a failed CreateTable (err %v)", sc.Name, err)
			}
			if n := len(f.s.View().Tables()); n != 1 {
				t.Fatalf("%d tables, want 1", n)
			}
		})
	}
}

func withLimits(fn func(l *Limits)) Limits {
	l := DefaultLimits()
	fn(&l)
	return l
}

func TestCreateTable(t *testing.T) {
	f := newFx(t, Options{})
	sc := usersSchema()
	f.createTable(sc)
	createdAt := f.rev

	// The store keeps its own copy of the schema.
	sc.Fields[1].Name = "changed"
	sc.Indexes[0].Fields[0] = "changed"
	info, err := f.s.View().Table("users")
	if err != nil {
		t.Fatal(err)
	}
	want := usersSchema()
	if info.Schema.Fields[1].Name != "name" || info.Schema.Indexes[0].Fields[0] != "email" {
		t.Fatalf("stored schema follows the caller's changes: %+v", info.Schema)
	}
	if len(info.Schema.Fields) != len(want.Fields) || len(info.Schema.Indexes) != len(want.Indexes) || info.Schema.PrimaryKey != "id" {
		t.Fatalf("schema %+v, want %+v", info.Schema, want)
	}
	if info.Rows != 0 || info.Bytes != 0 || info.CreateRevision != createdAt {
		t.Fatalf("info %+v, want empty table created at %d", info, createdAt)
	}
	// Nor can a caller change it through TableInfo.
	info.Schema.Indexes[0].Fields[0] = "changed"
	info2, _ := f.s.View().Table("users")
	if info2.Schema.Indexes[0].Fields[0] != "email" {
		t.Fatal("TableInfo shares the stored schema")
	}

	f.fail(ErrTableExists, func(b *Batch, rev uint64) error { return b.CreateTable(rev, usersSchema()) })
	// Even with another schema.
	f.fail(ErrTableExists, func(b *Batch, rev uint64) error {
		return b.CreateTable(rev, TableSchema{Name: "users", PrimaryKey: "k", Fields: []FieldSchema{{Name: "k", Type: TypeBytes}}})
	})

	for _, name := range []string{"b", "a", "_c", "Z9"} {
		f.createTable(TableSchema{Name: name, PrimaryKey: "k", Fields: []FieldSchema{{Name: "k", Type: TypeString}}})
	}
	var names []string
	for _, ti := range f.s.View().Tables() {
		names = append(names, ti.Schema.Name)
	}
	if !slices.Equal(names, []string{"Z9", "_c", "a", "b", "users"}) {
		t.Fatalf("Tables() = %v", names)
	}
	// Every primary key type but double.
	for i, typ := range []FieldType{TypeString, TypeInt, TypeBool, TypeBytes, TypeTimestamp} {
		f.createTable(TableSchema{Name: "pk" + itoa(i), PrimaryKey: "k", Fields: []FieldSchema{{Name: "k", Type: typ}}})
	}
}

func TestTooManyTables(t *testing.T) {
	f := newFx(t, Options{Limits: withLimits(func(l *Limits) { l.MaxTables = 2 })})
	mk := func(name string) TableSchema {
		return TableSchema{Name: name, PrimaryKey: "k", Fields: []FieldSchema{{Name: "k", Type: TypeInt}}}
	}
	f.createTable(mk("a"))
	f.createTable(mk("b"))
	f.fail(ErrTooLarge, func(b *Batch, rev uint64) error { return b.CreateTable(rev, mk("c")) })
	f.ok(func(b *Batch, rev uint64) error { return b.DropTable(rev, "a") })
	f.createTable(mk("c"))
}

func TestLimitsValidate(t *testing.T) {
	for _, mut := range []func(l *Limits){
		func(l *Limits) { l.MaxKeyBytes = 15 },
		func(l *Limits) { l.MaxRowBytes = l.MaxKeyBytes - 1 },
		func(l *Limits) { l.MaxFields = 0 },
		func(l *Limits) { l.MaxOps = 0 },
		func(l *Limits) { l.MaxConditions = -1 },
		func(l *Limits) { l.MaxIndexes = -1 },
		func(l *Limits) { l.MaxIndexFields = 0 },
		func(l *Limits) { l.MaxTables = 0 },
	} {
		if _, err := New(Options{Limits: withLimits(mut)}); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("New with %+v: %v, want ErrInvalidArgument", withLimits(mut), err)
		}
	}
	s, err := New(Options{})
	if err != nil || s.Limits() != DefaultLimits() {
		t.Fatalf("New(Options{}) limits %+v, %v", s.Limits(), err)
	}
}

func TestDropTable(t *testing.T) {
	f := usersFx(t, 5)
	held := f.s.View()
	f.fail(ErrTableNotFound, func(b *Batch, rev uint64) error { return b.DropTable(rev, "nope") })
	f.ok(func(b *Batch, rev uint64) error { return b.DropTable(rev, "users") })
	v := f.s.View()
	if _, _, err := v.Get("users", Int(1)); !errors.Is(err, ErrTableNotFound) {
		t.Fatalf("Get after drop: %v", err)
	}
	if _, err := v.Scan("users", ScanOptions{}); !errors.Is(err, ErrTableNotFound) {
		t.Fatalf("Scan after drop: %v", err)
	}
	if _, err := v.Count("users", ScanOptions{}); !errors.Is(err, ErrTableNotFound) {
		t.Fatalf("Count after drop: %v", err)
	}
	if err := v.Rows("users", func(string) bool { return true }); !errors.Is(err, ErrTableNotFound) {
		t.Fatalf("Rows after drop: %v", err)
	}
	if _, err := v.Table("users"); !errors.Is(err, ErrTableNotFound) {
		t.Fatalf("Table after drop: %v", err)
	}
	if len(v.Tables()) != 0 {
		t.Fatalf("Tables() = %v", v.Tables())
	}
	f.fail(ErrTableNotFound, func(b *Batch, rev uint64) error { return b.DropTable(rev, "users") })
	f.failTxn(ErrTableNotFound, Txn{Then: []Op{insOp("users", user(9, "x", "y", 1))}})

	// A view taken before the drop still has the table.
	if _, ok, err := held.Get("users", Int(3)); err != nil || !ok {
		t.Fatalf("held view lost the dropped table: %v %v", ok, err)
	}
	if n, _ := held.Count("users", ScanOptions{}); n != 5 {
		t.Fatalf("held view has %d rows", n)
	}

	// Recreated, the table is empty.
	f.createTable(usersSchema())
	if n, _ := f.s.View().Count("users", ScanOptions{}); n != 0 {
		t.Fatalf("recreated table has %d rows", n)
	}
	if n, _ := f.s.View().Count("users", ScanOptions{Index: "by_email"}); n != 0 {
		t.Fatalf("recreated table has %d index entries", n)
	}
	f.do(insOp("users", user(1, "x", "e1", 1)))
}

func TestDropAndRecreateInOneBatch(t *testing.T) {
	f := usersFx(t, 3)
	f.rev++
	b := f.s.Begin()
	if err := b.DropTable(f.rev, "users"); err != nil {
		t.Fatal(err)
	}
	f.rev++
	if err := b.CreateTable(f.rev, usersSchema()); err != nil {
		t.Fatal(err)
	}
	f.rev++
	if _, err := b.Txn(f.rev, Txn{Then: []Op{insOp("users", user(7, "n", "e1", 1))}}); err != nil {
		t.Fatal(err)
	}
	v := b.Commit()
	rows := f.scan("users", ScanOptions{})
	if !slices.Equal(rowIDs(rows, "id"), []int64{7}) {
		t.Fatalf("rows %v", rowIDs(rows, "id"))
	}
	if info, _ := v.Table("users"); info.CreateRevision != f.rev-1 {
		t.Fatalf("CreateRevision %d, want %d", info.CreateRevision, f.rev-1)
	}
}

func TestCreateIndex(t *testing.T) {
	f := newFx(t, Options{})
	sc := usersSchema()
	sc.Indexes = nil
	f.createTable(sc)
	// Rows with absent or null indexed fields stay out of sparse indexes.
	f.do(
		insOp("users", flds("id", Int(1), "name", String("a"), "email", String("x@"), "age", Int(30))),
		insOp("users", flds("id", Int(2), "name", String("b"), "email", String("y@"), "age", Int(20))),
		insOp("users", flds("id", Int(3), "name", String("c"), "age", Int(30))),
		insOp("users", flds("id", Int(4), "name", String("d"), "email", Null(), "age", Null())),
		insOp("users", flds("id", Int(5), "name", String("e"), "email", String("a@"))),
	)
	f.ok(func(b *Batch, rev uint64) error {
		return b.CreateIndex(rev, "users", IndexSchema{Name: "by_email", Fields: []string{"email"}, Unique: true})
	})
	f.ok(func(b *Batch, rev uint64) error {
		return b.CreateIndex(rev, "users", IndexSchema{Name: "by_age", Fields: []string{"age", "id"}})
	})
	if got := rowIDs(f.scan("users", ScanOptions{Index: "by_email"}), "id"); !slices.Equal(got, []int64{5, 1, 2}) {
		t.Fatalf("by_email scan %v", got)
	}
	if got := rowIDs(f.scan("users", ScanOptions{Index: "by_age"}), "id"); !slices.Equal(got, []int64{2, 1, 3}) {
		t.Fatalf("by_age scan %v", got)
	}
	if got := rowIDs(f.scan("users", ScanOptions{Index: "by_age", Prefix: []Value{Int(30)}}), "id"); !slices.Equal(got, []int64{1, 3}) {
		t.Fatalf("by_age prefix scan %v", got)
	}
	if n, _ := f.s.View().Count("users", ScanOptions{Index: "by_email"}); n != 3 {
		t.Fatalf("by_email count %d", n)
	}
	info, _ := f.s.View().Table("users")
	if len(info.Schema.Indexes) != 2 || info.Schema.Indexes[1].Name != "by_age" || !slices.Equal(info.Schema.Indexes[1].Fields, []string{"age", "id"}) {
		t.Fatalf("indexes %+v", info.Schema.Indexes)
	}
	// The new unique index is enforced, and writes keep both indexes.
	f.failTxn(ErrUniqueViolation, Txn{Then: []Op{insOp("users", flds("id", Int(6), "name", String("f"), "email", String("x@")))}})
	f.do(updOp("users", Int(4), flds("email", String("b@"), "age", Int(25))))
	if got := rowIDs(f.scan("users", ScanOptions{Index: "by_email"}), "id"); !slices.Equal(got, []int64{5, 4, 1, 2}) {
		t.Fatalf("by_email scan %v", got)
	}
	if got := rowIDs(f.scan("users", ScanOptions{Index: "by_age"}), "id"); !slices.Equal(got, []int64{2, 4, 1, 3}) {
		t.Fatalf("by_age scan %v", got)
	}

	// Errors.
	f.fail(ErrIndexExists, func(b *Batch, rev uint64) error {
		return b.CreateIndex(rev, "users", IndexSchema{Name: "by_age", Fields: []string{"name"}})
	})
	f.fail(ErrTableNotFound, func(b *Batch, rev uint64) error {
		return b.CreateIndex(rev, "nope", IndexSchema{Name: "x", Fields: []string{"name"}})
	})
	for _, bad := range []IndexSchema{
		{Name: "x", Fields: []string{"phone"}},
		{Name: "x"},
		{Name: "x y", Fields: []string{"name"}},
		{Name: "x", Fields: []string{"name", "name"}},
	} {
		f.fail(ErrInvalidArgument, func(b *Batch, rev uint64) error { return b.CreateIndex(rev, "users", bad) })
	}
	// Several rows have age 30: a unique index cannot be built, and
	// nothing changes.
	before, _ := f.s.View().Table("users")
	f.fail(ErrUniqueViolation, func(b *Batch, rev uint64) error {
		return b.CreateIndex(rev, "users", IndexSchema{Name: "uniq_age", Fields: []string{"age"}, Unique: true})
	})
	after, _ := f.s.View().Table("users")
	if len(after.Schema.Indexes) != len(before.Schema.Indexes) {
		t.Fatalf("failed CreateIndex changed the schema: %+v", after.Schema.Indexes)
	}
	if _, err := f.s.View().Scan("users", ScanOptions{Index: "uniq_age"}); !errors.Is(err, ErrIndexNotFound) {
		t.Fatalf("scan of a failed index: %v", err)
	}
	// A unique index that holds: (age, name) are distinct.
	f.ok(func(b *Batch, rev uint64) error {
		return b.CreateIndex(rev, "users", IndexSchema{Name: "uniq_age_name", Fields: []string{"age", "name"}, Unique: true})
	})
	f.failTxn(ErrUniqueViolation, Txn{Then: []Op{updOp("users", Int(3), flds("name", String("a")))}})

	// Limits.
	g := newFx(t, Options{Limits: withLimits(func(l *Limits) { l.MaxIndexes = 1; l.MaxIndexFields = 2 })})
	g.createTable(sc)
	g.fail(ErrTooLarge, func(b *Batch, rev uint64) error {
		return b.CreateIndex(rev, "users", IndexSchema{Name: "x", Fields: []string{"name", "age", "id"}})
	})
	g.ok(func(b *Batch, rev uint64) error {
		return b.CreateIndex(rev, "users", IndexSchema{Name: "x", Fields: []string{"name", "age"}})
	})
	g.fail(ErrTooLarge, func(b *Batch, rev uint64) error {
		return b.CreateIndex(rev, "users", IndexSchema{Name: "y", Fields: []string{"name"}})
	})
}

func TestUniqueIndexIsSparse(t *testing.T) {
	f := usersFx(t, 0)
	for i := int64(1); i <= 3; i++ {
		f.do(insOp("users", flds("id", Int(i), "name", String("n"))))
		f.do(insOp("users", flds("id", Int(10+i), "name", String("n"), "email", Null())))
	}
	if n, _ := f.s.View().Count("users", ScanOptions{Index: "by_email"}); n != 0 {
		t.Fatalf("%d entries for null/absent emails", n)
	}
	if n, _ := f.s.View().Count("users", ScanOptions{Index: "by_age"}); n != 0 {
		t.Fatalf("%d entries for absent ages", n)
	}
	// by_name_age needs both fields.
	if n, _ := f.s.View().Count("users", ScanOptions{Index: "by_name_age"}); n != 0 {
		t.Fatalf("%d by_name_age entries", n)
	}
	f.do(updOp("users", Int(1), flds("age", Int(5))))
	if got := rowIDs(f.scan("users", ScanOptions{Index: "by_name_age"}), "id"); !slices.Equal(got, []int64{1}) {
		t.Fatalf("by_name_age %v", got)
	}
	// Unsetting or nulling a field takes the row out of the index.
	f.do(updOp("users", Int(1), nil, "age"))
	f.do(updOp("users", Int(2), flds("email", String("z"))))
	f.do(updOp("users", Int(2), flds("email", Null())))
	for _, ix := range []string{"by_name_age", "by_email", "by_age"} {
		if n, _ := f.s.View().Count("users", ScanOptions{Index: ix}); n != 0 {
			t.Fatalf("%s has %d entries", ix, n)
		}
	}
}

func TestDropIndex(t *testing.T) {
	f := usersFx(t, 4)
	held := f.s.View()
	f.fail(ErrIndexNotFound, func(b *Batch, rev uint64) error { return b.DropIndex(rev, "users", "nope") })
	f.fail(ErrTableNotFound, func(b *Batch, rev uint64) error { return b.DropIndex(rev, "nope", "by_email") })
	f.ok(func(b *Batch, rev uint64) error { return b.DropIndex(rev, "users", "by_email") })
	if _, err := f.s.View().Scan("users", ScanOptions{Index: "by_email"}); !errors.Is(err, ErrIndexNotFound) {
		t.Fatalf("scan of a dropped index: %v", err)
	}
	if _, err := f.s.View().Count("users", ScanOptions{Index: "by_email"}); !errors.Is(err, ErrIndexNotFound) {
		t.Fatalf("count of a dropped index: %v", err)
	}
	info, _ := f.s.View().Table("users")
	var names []string
	for _, ix := range info.Schema.Indexes {
		names = append(names, ix.Name)
	}
	if !slices.Equal(names, []string{"by_age", "by_name_age"}) {
		t.Fatalf("indexes %v", names)
	}
	// No longer unique.
	f.do(insOp("users", user(10, "x", "e1", 1)))
	// The other indexes still work.
	if n, _ := f.s.View().Count("users", ScanOptions{Index: "by_age"}); n != 5 {
		t.Fatalf("by_age has %d entries", n)
	}
	// The held view still has the index.
	if n, err := held.Count("users", ScanOptions{Index: "by_email"}); err != nil || n != 4 {
		t.Fatalf("held view by_email: %d, %v", n, err)
	}
	f.fail(ErrIndexNotFound, func(b *Batch, rev uint64) error { return b.DropIndex(rev, "users", "by_email") })
	// Recreating it fails now: e1 is duplicated.
	f.fail(ErrUniqueViolation, func(b *Batch, rev uint64) error {
		return b.CreateIndex(rev, "users", IndexSchema{Name: "by_email", Fields: []string{"email"}, Unique: true})
	})
	f.do(delOp("users", Int(10)))
	f.ok(func(b *Batch, rev uint64) error {
		return b.CreateIndex(rev, "users", IndexSchema{Name: "by_email", Fields: []string{"email"}, Unique: true})
	})
	if got := rowStrings(f.scan("users", ScanOptions{Index: "by_email"}), "email"); !slices.Equal(got, []string{"e1", "e2", "e3", "e4"}) {
		t.Fatalf("by_email %v", got)
	}
}

// ---------------------------------------------------------------------------
// Row operations.

func TestInsert(t *testing.T) {
	f := usersFx(t, 0)
	all := flds("id", Int(1), "name", String("ann"), "email", String("a@x"), "age", Int(33),
		"score", Double(-1.5), "blob", Bytes([]byte{0, 1, 0xFF}), "born", TimestampNanos(-5),
		"active", Bool(true), "extra", String("undeclared"), "more", Int(7), "nil", Null())
	res := f.do(insOp("users", all))
	if len(res) != 1 || res[0].Kind != OpInsert || res[0].Meta != (Meta{CreateRevision: f.rev, ModRevision: f.rev, Version: 1}) {
		t.Fatalf("result %+v", res)
	}
	row := f.mustGet("users", Int(1))
	if row.Meta != res[0].Meta {
		t.Fatalf("meta %+v", row.Meta)
	}
	if !slices.IsSorted(fieldNames(row)) || len(row.Fields) != len(all) {
		t.Fatalf("fields %v", fieldNames(row))
	}
	for _, fl := range all {
		if v, ok := row.Get(fl.Name); !ok || !v.Equal(fl.Value) {
			t.Fatalf("field %s = %v, %v; want %v", fl.Name, v, ok, fl.Value)
		}
	}
	f.failTxn(ErrRowExists, Txn{Then: []Op{insOp("users", user(1, "b", "b@", 1))}})
	// Within one transaction too.
	f.failTxn(ErrRowExists, Txn{Then: []Op{insOp("users", user(2, "b", "b@", 1)), insOp("users", user(2, "c", "c@", 1))}})
	if _, ok := f.get("users", Int(2)); ok {
		t.Fatal("row 2 exists after a failed transaction")
	}
	info, _ := f.s.View().Table("users")
	var raw []string
	_ = f.s.View().Rows("users", func(r string) bool { raw = append(raw, r); return true })
	if info.Rows != 1 || info.Bytes != int64(len(raw[0])) {
		t.Fatalf("info %+v, raw row of %d bytes", info, len(raw[0]))
	}
}

func TestUpsert(t *testing.T) {
	f := usersFx(t, 0)
	f.do(upsOp("users", flds("id", Int(1), "name", String("a"), "email", String("a@"), "age", Int(5), "extra", Int(1))))
	created := f.rev
	res := f.do(upsOp("users", flds("id", Int(1), "name", String("b"), "score", Double(2))))
	if res[0].Meta != (Meta{CreateRevision: created, ModRevision: f.rev, Version: 2}) {
		t.Fatalf("meta %+v", res[0].Meta)
	}
	row := f.mustGet("users", Int(1))
	if !slices.Equal(fieldNames(row), []string{"id", "name", "score"}) {
		t.Fatalf("upsert did not replace the whole row: %v", fieldNames(row))
	}
	if row.Meta != res[0].Meta {
		t.Fatalf("stored meta %+v", row.Meta)
	}
	// The replaced fields left the indexes.
	for _, ix := range []string{"by_email", "by_age", "by_name_age"} {
		if n, _ := f.s.View().Count("users", ScanOptions{Index: ix}); n != 0 {
			t.Fatalf("%s has %d entries", ix, n)
		}
	}
	// The freed email can be taken by another row.
	f.do(upsOp("users", user(2, "c", "a@", 1)))
	for v := uint64(3); v <= 5; v++ {
		res = f.do(upsOp("users", user(1, "b", "b@", int64(v))))
		if res[0].Meta.Version != v || res[0].Meta.CreateRevision != created || res[0].Meta.ModRevision != f.rev {
			t.Fatalf("meta %+v at version %d", res[0].Meta, v)
		}
	}
	// An upsert of an identical row still counts as a write.
	res = f.do(upsOp("users", user(1, "b", "b@", 5)))
	if res[0].Meta.Version != 6 || res[0].Meta.ModRevision != f.rev {
		t.Fatalf("identical upsert meta %+v", res[0].Meta)
	}
}

func TestUpdate(t *testing.T) {
	f := usersFx(t, 0)
	f.do(insOp("users", flds("id", Int(1), "name", String("a"), "email", String("a@"), "age", Int(5), "extra", Int(1))))
	created := f.rev
	res := f.do(updOp("users", Int(1), flds("age", Int(6), "score", Double(1.5)), "extra"))
	if res[0].Meta != (Meta{CreateRevision: created, ModRevision: f.rev, Version: 2}) {
		t.Fatalf("meta %+v", res[0].Meta)
	}
	row := f.mustGet("users", Int(1))
	if !slices.Equal(fieldNames(row), []string{"age", "email", "id", "name", "score"}) {
		t.Fatalf("fields %v", fieldNames(row))
	}
	if v, _ := row.Get("age"); v.AsInt() != 6 {
		t.Fatalf("age %v", v)
	}
	if v, _ := row.Get("email"); v.AsString() != "a@" {
		t.Fatalf("email %v", v)
	}
	if got := rowIDs(f.scan("users", ScanOptions{Index: "by_age", Prefix: []Value{Int(6)}}), "id"); !slices.Equal(got, []int64{1}) {
		t.Fatalf("by_age after update %v", got)
	}
	if n, _ := f.s.View().Count("users", ScanOptions{Index: "by_age", Prefix: []Value{Int(5)}}); n != 0 {
		t.Fatal("stale by_age entry")
	}
	// Unsetting an absent field and setting the primary key to its own
	// value are allowed.
	f.do(updOp("users", Int(1), flds("id", Int(1)), "nothing_here"))
	// An empty update is a write too.
	res = f.do(updOp("users", Int(1), nil))
	if res[0].Meta.Version != 4 {
		t.Fatalf("version %d", res[0].Meta.Version)
	}

	f.do(insOp("users", user(2, "b", "b@", 1)))
	cases := []struct {
		name string
		op   Op
		want error
	}{
		{"absent row", updOp("users", Int(99), flds("age", Int(1))), ErrRowNotFound},
		{"change primary key", updOp("users", Int(1), flds("id", Int(3))), ErrInvalidArgument},
		{"null primary key", updOp("users", Int(1), flds("id", Null())), ErrInvalidArgument},
		{"unset primary key", updOp("users", Int(1), nil, "id"), ErrInvalidArgument},
		{"unset required", updOp("users", Int(1), nil, "name"), ErrInvalidArgument},
		{"null required", updOp("users", Int(1), flds("name", Null())), ErrInvalidArgument},
		{"set and unset", updOp("users", Int(1), flds("age", Int(1)), "age"), ErrInvalidArgument},
		{"bad unset name", updOp("users", Int(1), nil, "no-such"), ErrInvalidArgument},
		{"bad set name", updOp("users", Int(1), flds("9x", Int(1))), ErrInvalidArgument},
		{"field twice", updOp("users", Int(1), flds("age", Int(1), "age", Int(2))), ErrInvalidArgument},
		{"type mismatch", updOp("users", Int(1), flds("age", String("old"))), ErrTypeMismatch},
		{"key type mismatch", updOp("users", String("1"), flds("age", Int(1))), ErrTypeMismatch},
		{"unique violation", updOp("users", Int(1), flds("email", String("b@"))), ErrUniqueViolation},
		{"invalid utf8", updOp("users", Int(1), flds("email", String("\xc3"))), ErrInvalidArgument},
		{"nan", updOp("users", Int(1), flds("score", Double(math.NaN()))), ErrInvalidArgument},
		{"unknown table", updOp("nope", Int(1), nil), ErrTableNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f.tb = t
			f.failTxn(tc.want, Txn{Then: []Op{tc.op}})
		})
	}
}

func TestDelete(t *testing.T) {
	f := usersFx(t, 3)
	h := f.s.View().Hash()
	res := f.do(delOp("users", Int(42)))
	if res[0].Deleted || res[0].Kind != OpDelete {
		t.Fatalf("delete of an absent row: %+v", res[0])
	}
	if f.s.View().Hash() != h {
		t.Fatal("delete of an absent row changed the store")
	}
	res = f.do(delOp("users", Int(2)))
	if !res[0].Deleted {
		t.Fatalf("delete: %+v", res[0])
	}
	if _, ok := f.get("users", Int(2)); ok {
		t.Fatal("deleted row still there")
	}
	for ix, want := range map[string]int{"": 2, "by_email": 2, "by_age": 2, "by_name_age": 2} {
		if n, _ := f.s.View().Count("users", ScanOptions{Index: ix}); n != want {
			t.Fatalf("%q has %d entries, want %d", ix, n, want)
		}
	}
	if got := rowStrings(f.scan("users", ScanOptions{Index: "by_email"}), "email"); !slices.Equal(got, []string{"e1", "e3"}) {
		t.Fatalf("by_email %v", got)
	}
	// The email is free again.
	f.do(insOp("users", user(4, "z", "e2", 1)))
	// Delete then insert again: a new row history.
	f.do(delOp("users", Int(4)))
	res = f.do(insOp("users", user(4, "z", "e2", 1)))
	if res[0].Meta != (Meta{CreateRevision: f.rev, ModRevision: f.rev, Version: 1}) {
		t.Fatalf("re-created meta %+v", res[0].Meta)
	}
	f.failTxn(ErrTypeMismatch, Txn{Then: []Op{delOp("users", String("1"))}})
	f.failTxn(ErrTableNotFound, Txn{Then: []Op{delOp("nope", Int(1))}})
	info, _ := f.s.View().Table("users")
	var total int64
	_ = f.s.View().Rows("users", func(r string) bool { total += int64(len(r)); return true })
	if info.Rows != 3 || info.Bytes != total {
		t.Fatalf("info rows %d bytes %d, want 3 and %d", info.Rows, info.Bytes, total)
	}
}

func TestGetInTxn(t *testing.T) {
	f := usersFx(t, 0)
	res := f.do(
		getOp("users", Int(1)),
		insOp("users", user(1, "a", "a@", 1)),
		getOp("users", Int(1)),
		updOp("users", Int(1), flds("age", Int(2))),
		getOp("users", Int(1)),
		delOp("users", Int(1)),
		getOp("users", Int(1)),
		upsOp("users", user(1, "b", "b@", 3)),
	)
	if len(res) != 8 {
		t.Fatalf("%d results", len(res))
	}
	if res[0].Found || res[0].Kind != OpGet {
		t.Fatalf("get before insert: %+v", res[0])
	}
	if !res[2].Found || res[2].Row.Meta.Version != 1 {
		t.Fatalf("get after insert: %+v", res[2])
	}
	if v, _ := res[2].Row.Get("age"); v.AsInt() != 1 {
		t.Fatalf("age %v", v)
	}
	if v, _ := res[4].Row.Get("age"); !res[4].Found || v.AsInt() != 2 || res[4].Row.Meta.Version != 2 {
		t.Fatalf("get after update: %+v", res[4])
	}
	if res[6].Found || !res[5].Deleted {
		t.Fatalf("get after delete: %+v %+v", res[5], res[6])
	}
	// All at one revision: the row is created anew by the final upsert.
	if res[7].Meta != (Meta{CreateRevision: f.rev, ModRevision: f.rev, Version: 1}) {
		t.Fatalf("final meta %+v", res[7].Meta)
	}
	// Get alone changes nothing and needs a well-typed key.
	h := f.s.View().Hash()
	res = f.do(getOp("users", Int(1)))
	if !res[0].Found || f.s.View().Hash() != h {
		t.Fatal("get changed the store or missed the row")
	}
	f.failTxn(ErrTypeMismatch, Txn{Then: []Op{getOp("users", Bool(true))}})
	f.failTxn(ErrTableNotFound, Txn{Then: []Op{getOp("nope", Int(1))}})
}

func TestExpectedVersion(t *testing.T) {
	f := usersFx(t, 0)
	f.do(insOp("users", user(1, "a", "a@", 1))) // version 1
	withEV := func(op Op, ev uint64) Op { op.ExpectedVersion = ev; return op }
	cases := []struct {
		name string
		op   Op
		want error // nil: succeeds
	}{
		{"upsert wrong", withEV(upsOp("users", user(1, "a", "a@", 2)), 2), ErrVersionMismatch},
		{"upsert absent", withEV(upsOp("users", user(2, "a", "x@", 2)), 1), ErrVersionMismatch},
		{"upsert right", withEV(upsOp("users", user(1, "a", "a@", 2)), 1), nil}, // -> 2
		{"update stale", withEV(updOp("users", Int(1), flds("age", Int(3))), 1), ErrVersionMismatch},
		{"update absent", withEV(updOp("users", Int(2), flds("age", Int(3))), 1), ErrRowNotFound},
		{"update right", withEV(updOp("users", Int(1), flds("age", Int(3))), 2), nil}, // -> 3
		{"delete stale", withEV(delOp("users", Int(1)), 2), ErrVersionMismatch},
		{"delete absent", withEV(delOp("users", Int(2)), 1), ErrVersionMismatch},
		{"delete right", withEV(delOp("users", Int(1)), 3), nil},
		{"upsert after delete", withEV(upsOp("users", user(1, "a", "a@", 2)), 3), ErrVersionMismatch},
	}
	for _, tc := range cases {
		if tc.want == nil {
			if _, err := f.txn(Txn{Then: []Op{tc.op}}); err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			continue
		}
		f.failTxn(tc.want, Txn{Then: []Op{tc.op}})
	}
	if _, ok := f.get("users", Int(1)); ok {
		t.Fatal("row 1 not deleted")
	}
}

func TestTypeMismatch(t *testing.T) {
	f := usersFx(t, 1)
	for _, fl := range []Field{
		{"id", String("1")},
		{"name", Int(1)},
		{"email", Bytes([]byte("x"))},
		{"age", Double(1)},
		{"score", Int(1)},
		{"blob", String("x")},
		{"born", Int(1)},
		{"active", Int(1)},
	} {
		row := user(5, "n", "m", 1)
		for i := range row {
			if row[i].Name == fl.Name {
				row = slices.Delete(row, i, i+1)
				break
			}
		}
		row = append(row, fl)
		f.failTxn(ErrTypeMismatch, Txn{Then: []Op{upsOp("users", row)}})
	}
	// Keys of the wrong kind, everywhere a key is taken.
	f.failTxn(ErrTypeMismatch, Txn{Then: []Op{delOp("users", Timestamp(time.Unix(1, 0)))}})
	f.failTxn(ErrTypeMismatch, Txn{Conditions: []Condition{{Table: "users", Key: String("1"), Test: CondExists}}})
	if _, _, err := f.s.View().Get("users", String("1")); !errors.Is(err, ErrTypeMismatch) {
		t.Fatalf("Get: %v", err)
	}
	if _, _, err := f.s.View().Get("users", Null()); !errors.Is(err, ErrTypeMismatch) {
		t.Fatalf("Get(null): %v", err)
	}
	for _, o := range []ScanOptions{
		{Prefix: []Value{String("1")}},
		{Start: []Value{Double(1)}},
		{End: []Value{Null()}},
		{Index: "by_name_age", Prefix: []Value{String("a"), String("b")}},
		{Index: "by_name_age", Start: []Value{Int(1)}},
	} {
		if _, err := f.s.View().Scan("users", o); !errors.Is(err, ErrTypeMismatch) {
			t.Fatalf("Scan(%+v): %v", o, err)
		}
		if _, err := f.s.View().Count("users", o); !errors.Is(err, ErrTypeMismatch) {
			t.Fatalf("Count(%+v): %v", o, err)
		}
	}
}

func TestInvalidArguments(t *testing.T) {
	f := newFx(t, Options{})
	f.createTable(usersSchema())
	f.createTable(TableSchema{Name: "kv", PrimaryKey: "k", Fields: []FieldSchema{{Name: "k", Type: TypeString}}})
	f.do(insOp("users", user(1, "a", "a@", 1)))
	bad := Value{kind: 99}
	cases := []struct {
		name string
		txn  Txn
		want error
	}{
		{"invalid utf8 value", Txn{Then: []Op{upsOp("users", flds("id", Int(2), "name", String("ok\xff")))}}, ErrInvalidArgument},
		{"invalid utf8 undeclared", Txn{Then: []Op{upsOp("users", flds("id", Int(2), "name", String("ok"), "x", String("\xed\xa0\x80")))}}, ErrInvalidArgument},
		{"invalid utf8 key", Txn{Then: []Op{upsOp("kv", flds("k", String("\xff")))}}, ErrInvalidArgument},
		{"invalid utf8 key delete", Txn{Then: []Op{delOp("kv", String("\xff"))}}, ErrInvalidArgument},
		{"nan", Txn{Then: []Op{upsOp("users", flds("id", Int(2), "name", String("n"), "score", Double(math.NaN())))}}, ErrInvalidArgument},
		{"nan undeclared", Txn{Then: []Op{upsOp("users", flds("id", Int(2), "name", String("n"), "x", Double(math.NaN())))}}, ErrInvalidArgument},
		{"unknown kind", Txn{Then: []Op{upsOp("users", flds("id", Int(2), "name", String("n"), "x", bad))}}, ErrInvalidArgument},
		{"missing primary key", Txn{Then: []Op{upsOp("users", flds("name", String("n")))}}, ErrInvalidArgument},
		{"null primary key", Txn{Then: []Op{insOp("users", flds("id", Null(), "name", String("n")))}}, ErrInvalidArgument},
		{"primary key twice", Txn{Then: []Op{insOp("users", flds("id", Int(2), "id", Int(3), "name", String("n")))}}, ErrInvalidArgument},
		{"field twice", Txn{Then: []Op{insOp("users", flds("id", Int(2), "name", String("n"), "name", String("m")))}}, ErrInvalidArgument},
		{"missing required", Txn{Then: []Op{insOp("users", flds("id", Int(2)))}}, ErrInvalidArgument},
		{"null required", Txn{Then: []Op{insOp("users", flds("id", Int(2), "name", Null()))}}, ErrInvalidArgument},
		{"bad field name", Txn{Then: []Op{insOp("users", flds("id", Int(2), "name", String("n"), "", Int(1)))}}, ErrInvalidArgument},
		{"unknown op", Txn{Then: []Op{{Kind: 99, Table: "users"}}}, ErrInvalidArgument},
		{"zero op", Txn{Then: []Op{{Table: "users"}}}, ErrInvalidArgument},
		{"unknown condition test", Txn{Conditions: []Condition{{Table: "users", Key: Int(1), Test: 99}}}, ErrInvalidArgument},
		{"unknown compare op", Txn{Conditions: []Condition{{Table: "users", Key: Int(1), Test: CondVersion, Op: 17}}}, ErrInvalidArgument},
		{"unknown compare op field", Txn{Conditions: []Condition{{Table: "users", Key: Int(1), Test: CondField, Field: "age", Op: 6, Value: Int(1)}}}, ErrInvalidArgument},
		{"bad condition field", Txn{Conditions: []Condition{{Table: "users", Key: Int(1), Test: CondField, Field: "a b", Value: Int(1)}}}, ErrInvalidArgument},
		{"nan condition", Txn{Conditions: []Condition{{Table: "users", Key: Int(1), Test: CondField, Field: "score", Value: Double(math.NaN())}}}, ErrInvalidArgument},
		{"invalid utf8 condition", Txn{Conditions: []Condition{{Table: "users", Key: Int(1), Test: CondField, Field: "name", Value: String("\xff")}}}, ErrInvalidArgument},
		{"invalid utf8 condition key", Txn{Conditions: []Condition{{Table: "kv", Key: String("\xff"), Test: CondExists}}}, ErrInvalidArgument},
		{"condition table", Txn{Conditions: []Condition{{Table: "nope", Key: Int(1), Test: CondExists}}}, ErrTableNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f.tb = t
			f.failTxn(tc.want, tc.txn)
		})
	}
	f.tb = t
	if _, _, err := f.s.View().Get("kv", String("\xff")); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Get with an invalid key: %v", err)
	}
	for _, o := range []ScanOptions{
		{Prefix: []Value{Int(1), Int(2)}},
		{Index: "by_age", End: []Value{Int(1), Int(2)}},
		{Index: "by_name_age", Prefix: []Value{String("a")}, PartialLast: true, Start: []Value{String("\xff")}},
		{Index: "by_age", Prefix: []Value{Int(1)}, PartialLast: true},
		{Index: "by_email", Start: []Value{bad}},
	} {
		if _, err := f.s.View().Scan("users", o); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("Scan(%+v): %v", o, err)
		}
	}
	if _, err := f.s.View().Scan("users", ScanOptions{Index: "nope"}); !errors.Is(err, ErrIndexNotFound) {
		t.Fatalf("Scan of an unknown index: %v", err)
	}
	if _, err := f.s.View().Count("users", ScanOptions{Index: "nope"}); !errors.Is(err, ErrIndexNotFound) {
		t.Fatalf("Count of an unknown index: %v", err)
	}
}

func TestUniqueViolationUndoesTxn(t *testing.T) {
	f := usersFx(t, 2) // e1, e2
	h := f.s.View().Hash()
	f.failTxn(ErrUniqueViolation, Txn{Then: []Op{
		insOp("users", user(3, "c", "e3", 1)),
		updOp("users", Int(1), flds("email", String("new"))),
		delOp("users", Int(2)),
		upsOp("users", user(4, "d", "e2", 1)), // fine: row 2 is gone
		upsOp("users", user(5, "e", "e1", 1)), // fine: row 1 moved away
		insOp("users", user(6, "f", "e3", 1)), // conflicts with row 3
	}})
	if f.s.View().Hash() != h {
		t.Fatal("store changed")
	}
	for _, id := range []int64{3, 4, 5, 6} {
		if _, ok := f.get("users", Int(id)); ok {
			t.Fatalf("row %d exists", id)
		}
	}
	if got := rowStrings(f.scan("users", ScanOptions{Index: "by_email"}), "email"); !slices.Equal(got, []string{"e1", "e2"}) {
		t.Fatalf("by_email %v", got)
	}
	if got := rowIDs(f.scan("users", ScanOptions{Index: "by_age"}), "id"); !slices.Equal(got, []int64{1, 2}) {
		t.Fatalf("by_age %v", got)
	}
	// The writer's state was restored too, not just the view: a following
	// command sees the old rows.
	f.failTxn(ErrUniqueViolation, Txn{Then: []Op{insOp("users", user(7, "x", "e2", 1))}})
	f.do(insOp("users", user(7, "x", "e3", 1)))
	// Swapping two unique values in one transaction through a third works.
	f.do(
		updOp("users", Int(1), flds("email", String("tmp"))),
		updOp("users", Int(2), flds("email", String("e1"))),
		updOp("users", Int(1), flds("email", String("e2"))),
	)
	if got := rowIDs(f.scan("users", ScanOptions{Index: "by_email"}), "id"); !slices.Equal(got, []int64{2, 1, 7}) {
		t.Fatalf("by_email after swap %v", got)
	}
}

// A failing command inside a batch is undone without affecting the
// commands before and after it in the same batch.
func TestBatchCommandsAreIndependent(t *testing.T) {
	f := usersFx(t, 1)
	held := f.s.View()
	b := f.s.Begin()
	if _, err := b.Txn(f.rev+1, Txn{Then: []Op{insOp("users", user(2, "b", "b@", 1))}}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Txn(f.rev+2, Txn{Then: []Op{insOp("users", user(3, "c", "c@", 1)), insOp("users", user(4, "d", "b@", 1))}}); !errors.Is(err, ErrUniqueViolation) {
		t.Fatalf("err %v", err)
	}
	if _, err := b.Txn(f.rev+3, Txn{Then: []Op{insOp("users", user(3, "c", "c@", 1))}}); err != nil {
		t.Fatal(err)
	}
	// Nothing is visible before Commit.
	if f.s.View() != held {
		t.Fatal("view changed before commit")
	}
	v := b.Commit()
	f.rev += 3
	if got := rowIDs(f.scan("users", ScanOptions{}), "id"); !slices.Equal(got, []int64{1, 2, 3}) {
		t.Fatalf("rows %v", got)
	}
	if v.Revision() != f.rev {
		t.Fatalf("revision %d", v.Revision())
	}
	if r := f.mustGet("users", Int(3)); r.Meta.CreateRevision != f.rev {
		t.Fatalf("row 3 meta %+v", r.Meta)
	}
}

func TestConditions(t *testing.T) {
	f := usersFx(t, 0)
	f.do(insOp("users", flds("id", Int(1), "name", String("m"), "age", Int(30), "score", Double(0.5), "extra", String("x"))))
	r1 := f.rev
	f.do(updOp("users", Int(1), flds("age", Int(31))))
	r2 := f.rev
	// Row 1: create r1, mod r2, version 2, age 31.
	ops := []CompareOp{CmpEqual, CmpNotEqual, CmpLess, CmpLessEqual, CmpGreater, CmpGreaterEqual}
	holds := func(op CompareOp, c int) bool {
		return []bool{c == 0, c != 0, c < 0, c <= 0, c > 0, c >= 0}[op]
	}
	type tc struct {
		name string
		c    Condition
		want bool
	}
	var cases []tc
	add := func(name string, c Condition, want bool) { cases = append(cases, tc{name, c, want}) }
	add("exists", Condition{Table: "users", Key: Int(1), Test: CondExists}, true)
	add("exists absent", Condition{Table: "users", Key: Int(2), Test: CondExists}, false)
	add("not exists", Condition{Table: "users", Key: Int(1), Test: CondNotExists}, false)
	add("not exists absent", Condition{Table: "users", Key: Int(2), Test: CondNotExists}, true)
	for _, op := range ops {
		for _, n := range []uint64{0, 1, 2, 3} {
			add("version", Condition{Table: "users", Key: Int(1), Test: CondVersion, Op: op, Number: n}, holds(op, cmpUint(2, n)))
			add("version absent", Condition{Table: "users", Key: Int(2), Test: CondVersion, Op: op, Number: n}, holds(op, cmpUint(0, n)))
		}
		for _, n := range []uint64{0, r1 - 1, r1, r2, r2 + 1} {
			add("mod", Condition{Table: "users", Key: Int(1), Test: CondModRevision, Op: op, Number: n}, holds(op, cmpUint(r2, n)))
			add("create", Condition{Table: "users", Key: Int(1), Test: CondCreateRevision, Op: op, Number: n}, holds(op, cmpUint(r1, n)))
			add("mod absent", Condition{Table: "users", Key: Int(2), Test: CondModRevision, Op: op, Number: n}, holds(op, cmpUint(0, n)))
			add("create absent", Condition{Table: "users", Key: Int(2), Test: CondCreateRevision, Op: op, Number: n}, holds(op, cmpUint(0, n)))
		}
		for _, v := range []Value{Int(30), Int(31), Int(32), Null(), String("31"), Double(31)} {
			c := Int(31).Compare(v)
			add("field age", Condition{Table: "users", Key: Int(1), Test: CondField, Field: "age", Op: op, Value: v}, holds(op, c))
			// Absent row and absent field read as null.
			add("field absent row", Condition{Table: "users", Key: Int(2), Test: CondField, Field: "age", Op: op, Value: v}, holds(op, Null().Compare(v)))
			add("field absent", Condition{Table: "users", Key: Int(1), Test: CondField, Field: "email", Op: op, Value: v}, holds(op, Null().Compare(v)))
		}
		for _, v := range []Value{Double(0.25), Double(0.5), Double(math.Inf(1))} {
			add("field score", Condition{Table: "users", Key: Int(1), Test: CondField, Field: "score", Op: op, Value: v}, holds(op, Double(0.5).Compare(v)))
		}
		for _, v := range []Value{String("w"), String("x"), String("xx")} {
			add("field undeclared", Condition{Table: "users", Key: Int(1), Test: CondField, Field: "extra", Op: op, Value: v}, holds(op, String("x").Compare(v)))
		}
		for _, v := range []Value{Int(0), Int(1), Int(2)} {
			add("field pk", Condition{Table: "users", Key: Int(1), Test: CondField, Field: "id", Op: op, Value: v}, holds(op, Int(1).Compare(v)))
			add("field pk absent", Condition{Table: "users", Key: Int(2), Test: CondField, Field: "id", Op: op, Value: v}, holds(op, Null().Compare(v)))
		}
	}
	for i, c := range cases {
		marker := int64(1000 + i)
		res := f.mustTxn(Txn{
			Conditions: []Condition{c.c},
			Then:       []Op{upsOp("users", flds("id", Int(marker), "name", String("then")))},
			Else:       []Op{upsOp("users", flds("id", Int(marker), "name", String("else"))), getOp("users", Int(1))},
		})
		if res.Succeeded != c.want {
			t.Fatalf("case %d %s (%+v): Succeeded %v, want %v", i, c.name, c.c, res.Succeeded, c.want)
		}
		wantName, wantN := "then", 1
		if !c.want {
			wantName, wantN = "else", 2
		}
		if len(res.Results) != wantN {
			t.Fatalf("case %d: %d results", i, len(res.Results))
		}
		if v, _ := f.mustGet("users", Int(marker)).Get("name"); v.AsString() != wantName {
			t.Fatalf("case %d %s: branch %s ran, want %s", i, c.name, v.AsString(), wantName)
		}
	}
	// Several conditions must all hold.
	both := []Condition{
		{Table: "users", Key: Int(1), Test: CondExists},
		{Table: "users", Key: Int(1), Test: CondVersion, Op: CmpEqual, Number: 2},
	}
	if res := f.mustTxn(Txn{Conditions: both}); !res.Succeeded || len(res.Results) != 0 {
		t.Fatalf("both hold: %+v", res)
	}
	both[1].Number = 3
	if res := f.mustTxn(Txn{Conditions: both}); res.Succeeded {
		t.Fatal("one condition fails, yet Succeeded")
	}
	// A failing op in the Else branch undoes the branch.
	f.failTxn(ErrRowExists, Txn{
		Conditions: both,
		Else:       []Op{upsOp("users", flds("id", Int(5000), "name", String("x"))), insOp("users", user(1, "a", "b", 1))},
	})
	// Conditions see the state before the operations, and errors in any
	// condition fail the transaction even when an earlier one is false.
	f.failTxn(ErrTableNotFound, Txn{Conditions: []Condition{
		{Table: "users", Key: Int(2), Test: CondExists},
		{Table: "nope", Key: Int(1), Test: CondExists},
	}})
}

func TestLimits(t *testing.T) {
	l := withLimits(func(l *Limits) {
		l.MaxOps = 2
		l.MaxConditions = 1
		l.MaxKeyBytes = 16
		l.MaxRowBytes = 128
		l.MaxFields = 4
	})
	f := newFx(t, Options{Limits: l})
	f.createTable(TableSchema{Name: "kv", PrimaryKey: "k", Fields: []FieldSchema{{Name: "k", Type: TypeString}, {Name: "v", Type: TypeString}}})
	row := func(k, v string) []Field { return flds("k", String(k), "v", String(v)) }
	f.do(upsOp("kv", row("a", "1")), upsOp("kv", row("b", "1")))
	f.failTxn(ErrTooManyOps, Txn{Then: []Op{upsOp("kv", row("c", "1")), upsOp("kv", row("d", "1")), upsOp("kv", row("e", "1"))}})
	f.failTxn(ErrTooManyOps, Txn{
		Conditions: []Condition{{Table: "kv", Key: String("zz"), Test: CondExists}},
		Else:       []Op{getOp("kv", String("a")), getOp("kv", String("a")), getOp("kv", String("a"))},
	})
	// The limit is per branch.
	f.mustTxn(Txn{
		Conditions: []Condition{{Table: "kv", Key: String("zz"), Test: CondExists}},
		Then:       []Op{getOp("kv", String("a")), getOp("kv", String("a"))},
		Else:       []Op{upsOp("kv", row("c", "1")), upsOp("kv", row("d", "1"))},
	})
	f.failTxn(ErrTooManyOps, Txn{Conditions: []Condition{
		{Table: "kv", Key: String("a"), Test: CondExists},
		{Table: "kv", Key: String("b"), Test: CondExists},
	}})
	// Keys: tag, content, terminator.
	f.do(upsOp("kv", row(strings.Repeat("k", 14), "")))
	f.failTxn(ErrTooLarge, Txn{Then: []Op{upsOp("kv", row(strings.Repeat("k", 15), ""))}})
	f.failTxn(ErrTooLarge, Txn{Then: []Op{insOp("kv", row(strings.Repeat("\x00", 8), ""))}}) // escaping doubles it
	f.failTxn(ErrTooLarge, Txn{Then: []Op{updOp("kv", String(strings.Repeat("k", 15)), nil)}})
	f.failTxn(ErrTooLarge, Txn{Then: []Op{delOp("kv", String(strings.Repeat("k", 15)))}})
	// Rows.
	f.do(upsOp("kv", row("big", strings.Repeat("v", 100))))
	f.failTxn(ErrTooLarge, Txn{Then: []Op{upsOp("kv", row("big", strings.Repeat("v", 120)))}})
	f.failTxn(ErrTooLarge, Txn{Then: []Op{updOp("kv", String("big"), flds("w", String(strings.Repeat("v", 30))))}})
	// Fields (the primary key counts).
	f.do(upsOp("kv", flds("k", String("f"), "v", String(""), "x", Int(1), "y", Int(1))))
	f.failTxn(ErrTooLarge, Txn{Then: []Op{upsOp("kv", flds("k", String("f"), "v", String(""), "x", Int(1), "y", Int(1), "z", Int(1)))}})
	f.failTxn(ErrTooLarge, Txn{Then: []Op{updOp("kv", String("f"), flds("z", Int(1)))}})
	if r := f.mustGet("kv", String("big")); len(r.Fields) != 2 {
		t.Fatalf("big row %v", r.Fields)
	}
}

func TestRevisions(t *testing.T) {
	f := usersFx(t, 0)
	if v := f.s.View(); v.Revision() != f.rev {
		t.Fatalf("revision %d", v.Revision())
	}
	r1 := f.rev + 1
	f.do(insOp("users", user(1, "a", "a@", 1)))
	f.do(upsOp("users", user(2, "b", "b@", 1)))
	r3 := f.rev + 1
	f.do(updOp("users", Int(1), flds("age", Int(2))))
	if r := f.mustGet("users", Int(1)); r.Meta != (Meta{CreateRevision: r1, ModRevision: r3, Version: 2}) {
		t.Fatalf("meta %+v", r.Meta)
	}

	// Revisions must increase, within a batch and across batches.
	b := f.s.Begin()
	for _, rev := range []uint64{0, f.rev - 1, f.rev} {
		if err := b.Advance(rev); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("Advance(%d) at %d: %v", rev, f.rev, err)
		}
		if _, err := b.Txn(rev, Txn{Then: []Op{insOp("users", user(9, "x", "x@", 1))}}); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("Txn at old revision %d: %v", rev, err)
		}
		if err := b.CreateTable(rev, TableSchema{Name: "t", PrimaryKey: "k", Fields: []FieldSchema{{Name: "k", Type: TypeInt}}}); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("CreateTable at old revision: %v", err)
		}
		if err := b.DropTable(rev, "users"); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("DropTable at old revision: %v", err)
		}
		if err := b.CreateIndex(rev, "users", IndexSchema{Name: "x", Fields: []string{"age"}}); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("CreateIndex at old revision: %v", err)
		}
		if err := b.DropIndex(rev, "users", "by_age"); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("DropIndex at old revision: %v", err)
		}
		if b.Revision() != f.rev {
			t.Fatalf("refused command moved the revision to %d", b.Revision())
		}
	}
	if err := b.Advance(f.rev + 10); err != nil {
		t.Fatal(err)
	}
	if err := b.Advance(f.rev + 10); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Advance to the same revision: %v", err)
	}
	if b.Revision() != f.rev+10 {
		t.Fatalf("Batch.Revision %d", b.Revision())
	}
	h := f.s.View().Hash()
	v := b.Commit()
	f.rev += 10
	if v.Revision() != f.rev || v.Hash() != h {
		t.Fatalf("after Advance: revision %d", v.Revision())
	}
	// Committing twice is harmless, and a committed batch takes no more
	// commands.
	if b.Commit() != v {
		t.Fatal("second Commit returned another view")
	}
	if err := b.Advance(f.rev + 1); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("command on a committed batch: %v", err)
	}
	if _, err := b.Txn(f.rev+1, Txn{}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("txn on a committed batch: %v", err)
	}
	// An empty batch publishes nothing new.
	b = f.s.Begin()
	if b.Commit() != v {
		t.Fatal("empty batch published a new view")
	}
	// A failed command still takes its revision.
	f.failTxn(ErrRowExists, Txn{Then: []Op{insOp("users", user(1, "a", "z@", 1))}})
	if f.s.View().Revision() != f.rev {
		t.Fatalf("revision %d after a failed command at %d", f.s.View().Revision(), f.rev)
	}
	// Rows keep their revisions across later writes to other rows.
	f.do(updOp("users", Int(2), flds("age", Int(9))))
	if r := f.mustGet("users", Int(1)); r.Meta != (Meta{CreateRevision: r1, ModRevision: r3, Version: 2}) {
		t.Fatalf("meta %+v", r.Meta)
	}
	// Several commands in one batch: the view reflects the last.
	b = f.s.Begin()
	for i := 1; i <= 3; i++ {
		if _, err := b.Txn(f.rev+uint64(i), Txn{Then: []Op{updOp("users", Int(1), flds("age", Int(int64(i))))}}); err != nil {
			t.Fatal(err)
		}
	}
	v = b.Commit()
	f.rev += 3
	if r := f.mustGet("users", Int(1)); v.Revision() != f.rev || r.Meta != (Meta{CreateRevision: r1, ModRevision: f.rev, Version: 5}) {
		t.Fatalf("view %d, meta %+v", v.Revision(), r.Meta)
	}
}

// A held View never changes, whatever the writer does afterwards.
func TestHeldViewIsImmutable(t *testing.T) {
	f := usersFx(t, 10)
	v := f.s.View()
	h := v.Hash()
	rows := f.scan("users", ScanOptions{})
	f.do(insOp("users", user(11, "x", "x@", 1)), updOp("users", Int(1), flds("age", Int(99))), delOp("users", Int(2)))
	f.ok(func(b *Batch, rev uint64) error { return b.DropIndex(rev, "users", "by_age") })
	f.ok(func(b *Batch, rev uint64) error {
		return b.CreateIndex(rev, "users", IndexSchema{Name: "by_n", Fields: []string{"name"}})
	})
	f.createTable(TableSchema{Name: "other", PrimaryKey: "k", Fields: []FieldSchema{{Name: "k", Type: TypeInt}}})
	if v.Hash() != h {
		t.Fatal("held view changed")
	}
	res, err := v.Scan("users", ScanOptions{})
	if err != nil || len(res.Rows) != len(rows) {
		t.Fatalf("held scan: %d rows, %v", len(res.Rows), err)
	}
	for i := range rows {
		if rows[i].Meta != res.Rows[i].Meta || !slices.Equal(rows[i].Fields, res.Rows[i].Fields) {
			t.Fatalf("row %d changed", i)
		}
	}
	if n, err := v.Count("users", ScanOptions{Index: "by_age"}); err != nil || n != 10 {
		t.Fatalf("held by_age: %d %v", n, err)
	}
	if _, err := v.Table("other"); !errors.Is(err, ErrTableNotFound) {
		t.Fatalf("held view sees a later table: %v", err)
	}
	if v.Hash() == f.s.View().Hash() {
		t.Fatal("current view equals the held one")
	}
}

func TestTrackChanges(t *testing.T) {
	f := newFx(t, Options{TrackChanges: true})
	f.createTable(usersSchema())
	b := f.s.Begin()
	if _, err := b.Txn(2, Txn{Then: []Op{insOp("users", user(1, "a", "a@", 1)), insOp("users", user(2, "b", "b@", 1))}}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Txn(3, Txn{Then: []Op{updOp("users", Int(1), flds("age", Int(5))), insOp("users", user(3, "c", "b@", 1))}}); err == nil {
		t.Fatal("expected a unique violation")
	}
	if _, err := b.Txn(4, Txn{Then: []Op{delOp("users", Int(2)), delOp("users", Int(9))}}); err != nil {
		t.Fatal(err)
	}
	ch := b.Changes()
	b.Commit()
	if len(ch) != 3 {
		t.Fatalf("%d changes: %+v", len(ch), ch)
	}
	k1, k2 := string(appendKey(nil, Int(1))), string(appendKey(nil, Int(2)))
	if ch[0].Revision != 2 || ch[0].Key != k1 || ch[0].Prev != "" || ch[0].Row == "" ||
		ch[1].Revision != 2 || ch[1].Key != k2 ||
		ch[2].Revision != 4 || ch[2].Key != k2 || ch[2].Row != "" || ch[2].Prev != ch[1].Row {
		t.Fatalf("changes %+v", ch)
	}
	r, err := decodeRow(ch[0].Row, "id")
	if err != nil || r.Meta.ModRevision != 2 {
		t.Fatalf("change row %+v %v", r, err)
	}
}

// ---------------------------------------------------------------------------
// Scans.

func TestScanPrimaryKey(t *testing.T) {
	f := usersFx(t, 20)
	ids := func(o ScanOptions) []int64 { return rowIDs(f.scan("users", o), "id") }
	seq := func(a, b int64) []int64 {
		var out []int64
		if a <= b {
			for i := a; i <= b; i++ {
				out = append(out, i)
			}
		} else {
			for i := a; i >= b; i-- {
				out = append(out, i)
			}
		}
		return out
	}
	cases := []struct {
		o    ScanOptions
		want []int64
	}{
		{ScanOptions{}, seq(1, 20)},
		{ScanOptions{Reverse: true}, seq(20, 1)},
		{ScanOptions{Prefix: []Value{Int(7)}}, []int64{7}},
		{ScanOptions{Prefix: []Value{Int(70)}}, nil},
		{ScanOptions{Start: []Value{Int(5)}, End: []Value{Int(9)}}, seq(5, 8)},
		{ScanOptions{Start: []Value{Int(5)}, StartExclusive: true, End: []Value{Int(9)}, EndInclusive: true}, seq(6, 9)},
		{ScanOptions{Start: []Value{Int(5)}, End: []Value{Int(9)}, Reverse: true}, seq(8, 5)},
		{ScanOptions{Start: []Value{Int(5)}, StartExclusive: true, End: []Value{Int(9)}, EndInclusive: true, Reverse: true}, seq(9, 6)},
		{ScanOptions{Start: []Value{Int(15)}}, seq(15, 20)},
		{ScanOptions{End: []Value{Int(3)}, Reverse: true}, seq(2, 1)},
		{ScanOptions{Start: []Value{Int(9)}, End: []Value{Int(5)}}, nil},
		{ScanOptions{Start: []Value{Int(9)}, End: []Value{Int(9)}}, nil},
		{ScanOptions{Start: []Value{Int(9)}, End: []Value{Int(9)}, EndInclusive: true}, []int64{9}},
		{ScanOptions{Limit: 3}, seq(1, 3)},
		{ScanOptions{Limit: 3, Reverse: true}, seq(20, 18)},
		{ScanOptions{Start: []Value{Int(math.MinInt64)}, End: []Value{Int(math.MaxInt64)}, EndInclusive: true}, seq(1, 20)},
	}
	for _, tc := range cases {
		if got := ids(tc.o); !slices.Equal(got, tc.want) {
			t.Errorf("Scan(%+v) = %v, want %v", tc.o, got, tc.want)
		}
		n, err := f.s.View().Count("users", tc.o)
		want := len(tc.want)
		if tc.o.Limit > 0 {
			want = 20 // Count ignores the limit
		}
		if err != nil || n != want {
			t.Errorf("Count(%+v) = %d, %v; want %d", tc.o, n, err, want)
		}
	}
	// KeysOnly rows carry the key and history only.
	rows := f.scan("users", ScanOptions{KeysOnly: true, Limit: 2})
	if len(rows) != 2 || !slices.Equal(fieldNames(rows[0]), []string{"id"}) || rows[0].Meta != f.mustGet("users", Int(1)).Meta {
		t.Fatalf("KeysOnly rows %+v", rows)
	}
	rows = f.scan("users", ScanOptions{Index: "by_age", KeysOnly: true, Limit: 2})
	if len(rows) != 2 || !slices.Equal(fieldNames(rows[0]), []string{"id"}) {
		t.Fatalf("KeysOnly index rows %+v", rows)
	}
	// Paging.
	for _, rev := range []bool{false, true} {
		var got []int64
		o := ScanOptions{Limit: 6, Reverse: rev, Start: []Value{Int(2)}, End: []Value{Int(19)}}
		pages := 0
		for {
			res, err := f.s.View().Scan("users", o)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			got = append(got, rowIDs(res.Rows, "id")...)
			if res.Next == nil {
				break
			}
			o.After = res.Next
		}
		want := seq(2, 18)
		if rev {
			want = seq(18, 2)
		}
		if !slices.Equal(got, want) || pages != 3 {
			t.Fatalf("paged (reverse %v) %v in %d pages", rev, got, pages)
		}
	}
	// A page that ends exactly at the end has no Next.
	res, _ := f.s.View().Scan("users", ScanOptions{Limit: 20})
	if res.Next != nil || len(res.Rows) != 20 {
		t.Fatalf("Next %q with %d rows", res.Next, len(res.Rows))
	}
}

func TestScanIndex(t *testing.T) {
	f := usersFx(t, 12) // names u0,u1,u2 by i%3; ages 20+i%5
	type row struct {
		name string
		age  int64
		id   int64
	}
	var all []row
	for i := int64(1); i <= 12; i++ {
		all = append(all, row{"u" + itoa(int(i%3)), 20 + i%5, i})
	}
	slices.SortFunc(all, func(a, b row) int {
		if c := strings.Compare(a.name, b.name); c != 0 {
			return c
		}
		if a.age != b.age {
			return int(a.age - b.age)
		}
		return int(a.id - b.id)
	})
	filter := func(keep func(r row) bool, reverse bool) []int64 {
		var out []int64
		for _, r := range all {
			if keep(r) {
				out = append(out, r.id)
			}
		}
		if reverse {
			slices.Reverse(out)
		}
		return out
	}
	cases := []struct {
		o    ScanOptions
		keep func(r row) bool
	}{
		{ScanOptions{}, func(r row) bool { return true }},
		{ScanOptions{Prefix: []Value{String("u1")}}, func(r row) bool { return r.name == "u1" }},
		{ScanOptions{Prefix: []Value{String("u")}}, func(r row) bool { return false }},
		{ScanOptions{Prefix: []Value{String("u")}, PartialLast: true}, func(r row) bool { return true }},
		{ScanOptions{Prefix: []Value{String("u2"), Int(22)}}, func(r row) bool { return r.name == "u2" && r.age == 22 }},
		{ScanOptions{Prefix: []Value{String("u2")}, Start: []Value{String("u2"), Int(22)}}, func(r row) bool { return r.name == "u2" && r.age >= 22 }},
		{ScanOptions{Prefix: []Value{String("u2")}, End: []Value{String("u2"), Int(22)}, EndInclusive: true}, func(r row) bool { return r.name == "u2" && r.age <= 22 }},
		{ScanOptions{Start: []Value{String("u0")}, StartExclusive: true}, func(r row) bool { return r.name > "u0" }},
		{ScanOptions{Start: []Value{String("u0"), Int(23)}, StartExclusive: true, End: []Value{String("u2")}}, func(r row) bool {
			return (r.name == "u0" && r.age > 23) || r.name == "u1"
		}},
		{ScanOptions{End: []Value{String("u1")}, EndInclusive: true}, func(r row) bool { return r.name <= "u1" }},
	}
	for _, tc := range cases {
		for _, rev := range []bool{false, true} {
			o := tc.o
			o.Index = "by_name_age"
			o.Reverse = rev
			want := filter(tc.keep, rev)
			if got := rowIDs(f.scan("users", o), "id"); !slices.Equal(got, want) {
				t.Errorf("Scan(%+v) = %v, want %v", o, got, want)
			}
			if n, err := f.s.View().Count("users", o); err != nil || n != len(want) {
				t.Errorf("Count(%+v) = %d, %v, want %d", o, n, err, len(want))
			}
		}
	}
}

// Strings are encoded with 0x00 escaped as 0x00 0xFF, so the encoding of
// "a" is a byte prefix of that of "a\x00". Scans must still treat them as
// different values.
func TestScanStringsWithZeroBytes(t *testing.T) {
	f := newFx(t, Options{})
	f.createTable(TableSchema{
		Name: "kv", PrimaryKey: "k",
		Fields:  []FieldSchema{{Name: "k", Type: TypeString}, {Name: "s", Type: TypeString}, {Name: "n", Type: TypeInt}, {Name: "b", Type: TypeBytes}},
		Indexes: []IndexSchema{{Name: "by_s_n", Fields: []string{"s", "n"}}, {Name: "by_b", Fields: []string{"b"}}},
	})
	keys := []string{"", "\x00", "a", "a\x00", "a\x00\x00", "a\x00b", "a\x01", "ab", "b"}
	var ops []Op
	for i, k := range keys {
		ops = append(ops, insOp("kv", flds("k", String(k), "s", String(k), "n", Int(int64(i)), "b", Bytes([]byte(k+"\xff")))))
	}
	f.do(ops...)
	sel := func(keep func(k string) bool, reverse bool) []string {
		var out []string
		for _, k := range keys {
			if keep(k) {
				out = append(out, k)
			}
		}
		if reverse {
			slices.Reverse(out)
		}
		return out
	}
	cases := []struct {
		name string
		o    ScanOptions
		keep func(k string) bool
	}{
		{"all", ScanOptions{}, func(string) bool { return true }},
		{"prefix a", ScanOptions{Prefix: []Value{String("a")}}, func(k string) bool { return k == "a" }},
		{"prefix empty", ScanOptions{Prefix: []Value{String("")}}, func(k string) bool { return k == "" }},
		{"prefix a0", ScanOptions{Prefix: []Value{String("a\x00")}}, func(k string) bool { return k == "a\x00" }},
		{"partial a", ScanOptions{Prefix: []Value{String("a")}, PartialLast: true}, func(k string) bool { return strings.HasPrefix(k, "a") }},
		{"partial a0", ScanOptions{Prefix: []Value{String("a\x00")}, PartialLast: true}, func(k string) bool { return strings.HasPrefix(k, "a\x00") }},
		{"partial empty", ScanOptions{Prefix: []Value{String("")}, PartialLast: true}, func(string) bool { return true }},
		{"start a exclusive", ScanOptions{Start: []Value{String("a")}, StartExclusive: true}, func(k string) bool { return k > "a" }},
		{"start a0 exclusive", ScanOptions{Start: []Value{String("a\x00")}, StartExclusive: true}, func(k string) bool { return k > "a\x00" }},
		{"start a", ScanOptions{Start: []Value{String("a")}}, func(k string) bool { return k >= "a" }},
		{"end a inclusive", ScanOptions{End: []Value{String("a")}, EndInclusive: true}, func(k string) bool { return k <= "a" }},
		{"end a0 inclusive", ScanOptions{End: []Value{String("a\x00")}, EndInclusive: true}, func(k string) bool { return k <= "a\x00" }},
		{"end a", ScanOptions{End: []Value{String("a")}}, func(k string) bool { return k < "a" }},
		{"end empty inclusive", ScanOptions{End: []Value{String("")}, EndInclusive: true}, func(k string) bool { return k == "" }},
	}
	for _, tc := range cases {
		for _, index := range []string{"", "by_s_n"} {
			for _, rev := range []bool{false, true} {
				o := tc.o
				o.Index, o.Reverse = index, rev
				want := sel(tc.keep, rev)
				if got := rowStrings(f.scan("kv", o), "k"); !slices.Equal(got, want) {
					t.Errorf("%s (index %q, reverse %v): got %q, want %q", tc.name, index, rev, got, want)
				}
				if n, _ := f.s.View().Count("kv", o); n != len(want) {
					t.Errorf("%s (index %q): count %d, want %d", tc.name, index, n, len(want))
				}
			}
		}
	}
	// Bytes with 0xFF and 0x00 on the bytes index.
	bsel := func(keep func(k string) bool) []string {
		var out []string
		for _, k := range keys {
			if keep(k + "\xff") {
				out = append(out, k)
			}
		}
		// Index order is the order of the bytes values.
		slices.SortFunc(out, func(a, b string) int { return strings.Compare(a+"\xff", b+"\xff") })
		return out
	}
	for _, tc := range []struct {
		o    ScanOptions
		keep func(b string) bool
	}{
		{ScanOptions{Prefix: []Value{Bytes([]byte("a\xff"))}}, func(b string) bool { return b == "a\xff" }},
		{ScanOptions{Prefix: []Value{Bytes([]byte("a\x00"))}, PartialLast: true}, func(b string) bool { return strings.HasPrefix(b, "a\x00") }},
		{ScanOptions{Start: []Value{Bytes([]byte("a\x00\xff"))}, StartExclusive: true, End: []Value{Bytes([]byte("a\x01\xff"))}, EndInclusive: true}, func(b string) bool {
			return b > "a\x00\xff" && b <= "a\x01\xff"
		}},
	} {
		o := tc.o
		o.Index = "by_b"
		if got, want := rowStrings(f.scan("kv", o), "k"), bsel(tc.keep); !slices.Equal(got, want) {
			t.Errorf("by_b %+v: got %q, want %q", tc.o, got, want)
		}
	}
}

// "a" encodes as a byte prefix of "a\x00": they are still different
// values for a unique index.
func TestUniqueStringsWithZeroBytes(t *testing.T) {
	f := newFx(t, Options{})
	f.createTable(TableSchema{
		Name: "kv", PrimaryKey: "k",
		Fields:  []FieldSchema{{Name: "k", Type: TypeInt}, {Name: "s", Type: TypeString}, {Name: "b", Type: TypeBytes}, {Name: "n", Type: TypeInt}},
		Indexes: []IndexSchema{{Name: "by_s", Fields: []string{"s"}, Unique: true}, {Name: "by_b_n", Fields: []string{"b", "n"}, Unique: true}},
	})
	vals := []string{"a\x00", "a\x00\x00", "a\x00b", "a", "", "\x00"}
	for i, v := range vals {
		f.do(insOp("kv", flds("k", Int(int64(i)), "s", String(v), "b", Bytes([]byte(v)), "n", Int(1))))
	}
	for i, v := range vals {
		f.failTxn(ErrUniqueViolation, Txn{Then: []Op{insOp("kv", flds("k", Int(int64(100+i)), "s", String(v)))}})
		f.failTxn(ErrUniqueViolation, Txn{Then: []Op{insOp("kv", flds("k", Int(int64(100+i)), "b", Bytes([]byte(v)), "n", Int(1)))}})
	}
	// Building a unique index over such values works too.
	f.ok(func(b *Batch, rev uint64) error {
		return b.CreateIndex(rev, "kv", IndexSchema{Name: "by_s_n", Fields: []string{"s", "n"}, Unique: true})
	})
	f.ok(func(b *Batch, rev uint64) error { return b.DropIndex(rev, "kv", "by_s") })
	f.do(insOp("kv", flds("k", Int(50), "s", String("a"), "n", Int(2))))
	f.fail(ErrUniqueViolation, func(b *Batch, rev uint64) error {
		return b.CreateIndex(rev, "kv", IndexSchema{Name: "by_s", Fields: []string{"s"}, Unique: true})
	})
}

func TestViewGet(t *testing.T) {
	f := usersFx(t, 3)
	r := f.mustGet("users", Int(2))
	if v, _ := r.Get("email"); v.AsString() != "e2" {
		t.Fatalf("row %+v", r)
	}
	if _, ok := f.get("users", Int(4)); ok {
		t.Fatal("absent row found")
	}
	if _, ok := f.get("users", Int(-2)); ok {
		t.Fatal("absent row found")
	}
	if _, _, err := f.s.View().Get("nope", Int(1)); !errors.Is(err, ErrTableNotFound) {
		t.Fatalf("unknown table: %v", err)
	}
	// A key longer than MaxKeyBytes can be looked up (and is absent).
	g := newFx(t, Options{})
	g.createTable(TableSchema{Name: "kv", PrimaryKey: "k", Fields: []FieldSchema{{Name: "k", Type: TypeBytes}}})
	if _, ok := g.get("kv", Bytes(make([]byte, 10000))); ok {
		t.Fatal("found")
	}
}

func TestValueAccessors(t *testing.T) {
	ts := time.Date(2024, 2, 3, 4, 5, 6, 7, time.UTC)
	cases := []struct {
		v    Value
		kind Kind
		str  string
	}{
		{Null(), KindNull, "null"},
		{Bool(true), KindBool, "true"},
		{Bool(false), KindBool, "false"},
		{Int(-3), KindInt, "-3"},
		{Double(1.5), KindDouble, "1.5"},
		{String("a\"b"), KindString, `"a\"b"`},
		{Bytes([]byte{1, 0xab}), KindBytes, "0x01ab"},
		{Timestamp(ts), KindTimestamp, "2024-02-03T04:05:06.000000007Z"},
	}
	for _, tc := range cases {
		if tc.v.Kind() != tc.kind || tc.v.String() != tc.str || tc.v.IsNull() != (tc.kind == KindNull) {
			t.Errorf("%v: kind %v, string %q", tc.v, tc.v.Kind(), tc.v.String())
		}
	}
	if !Bool(true).AsBool() || Int(1).AsBool() || Int(-3).AsInt() != -3 || String("1").AsInt() != 0 ||
		Double(2.5).AsDouble() != 2.5 || Int(2).AsDouble() != 0 || String("x").AsString() != "x" ||
		string(Bytes([]byte("y")).AsBytes()) != "y" || !Timestamp(ts).AsTime().Equal(ts) ||
		Timestamp(ts).AsTimeNanos() != ts.UnixNano() || Int(5).AsTimeNanos() != 0 {
		t.Fatal("accessor mismatch")
	}
	b := []byte("abc")
	v := Bytes(b)
	b[0] = 'x'
	if v.AsString() != "abc" {
		t.Fatal("Bytes does not copy")
	}
	got := v.AsBytes()
	got[0] = 'z'
	if v.AsString() != "abc" {
		t.Fatal("AsBytes does not copy")
	}
	if Kind(42).String() != "kind(42)" || TypeInt.String() != "int64" || FieldType(42).String() != "unspecified" || FieldType(42).Kind() != KindNull {
		t.Fatal("kind/type names")
	}
	if !Double(math.Copysign(0, -1)).Equal(Double(0)) {
		t.Fatal("-0 and 0 differ")
	}
	if (Row{Fields: flds("a", Int(1))}).Fields[0].Value.AsInt() != 1 {
		t.Fatal("row")
	}
	if _, ok := (Row{Fields: flds("a", Int(1))}).Get("b"); ok {
		t.Fatal("Row.Get found an absent field")
	}
}
