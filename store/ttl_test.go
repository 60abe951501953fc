package store

import (
	"errors"
	"math"
	"testing"
	"time"
)

// at runs one command at log time now (nanoseconds).
func (f *fx) at(now int64, fn func(b *Batch, rev uint64) error) error {
	f.tb.Helper()
	return f.run(func(b *Batch, rev uint64) error {
		b.SetTime(now)
		return fn(b, rev)
	})
}

func (f *fx) txnAt(now int64, ops ...Op) (TxnResult, error) {
	var res TxnResult
	err := f.at(now, func(b *Batch, rev uint64) error {
		var err error
		res, err = b.Txn(rev, Txn{Then: ops})
		return err
	})
	return res, err
}

func ttlOp(op Op, ttl time.Duration) Op { op.TTL = ttl; return op }

const sec = int64(time.Second)

func TestTTLExpiryIsHiddenThenDeletedByTheLog(t *testing.T) {
	f := newFx(t, Options{TrackChanges: true})
	f.createTable(usersSchema())
	res, err := f.txnAt(100*sec, ttlOp(insOp("users", user(1, "a", "a@", 1)), 10*time.Second), insOp("users", user(2, "b", "b@", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Results[0].Meta.ExpiresAt; got != 110*sec {
		t.Fatalf("ExpiresAt = %d, want %d", got, 110*sec)
	}
	r := f.mustGet("users", Int(1))
	if r.Meta.ExpiresAt != 110*sec {
		t.Fatalf("stored ExpiresAt = %d", r.Meta.ExpiresAt)
	}
	v := f.s.View()
	for _, c := range []struct {
		now   int64
		found bool
	}{{0, true}, {109 * sec, true}, {110*sec - 1, true}, {110 * sec, false}, {200 * sec, false}} {
		_, ok, err := v.At(c.now).Get("users", Int(1))
		if err != nil || ok != c.found {
			t.Fatalf("Get at %d: found %v, %v; want %v", c.now, ok, err, c.found)
		}
		res, err := v.At(c.now).Scan("users", ScanOptions{})
		want := 1
		if c.found {
			want = 2
		}
		if err != nil || len(res.Rows) != want {
			t.Fatalf("Scan at %d: %d rows, %v; want %d", c.now, len(res.Rows), err, want)
		}
		for _, o := range []ScanOptions{{}, {Index: "by_age"}, {Index: "by_age", Prefix: []Value{Int(1)}}, {Start: []Value{Int(1)}}} {
			if n, err := v.At(c.now).Count("users", o); err != nil || n != want {
				t.Fatalf("Count(%+v) at %d = %d, %v; want %d", o, c.now, n, err, want)
			}
		}
	}
	if got := v.NextExpiry(); got != 110*sec {
		t.Fatalf("NextExpiry = %d", got)
	}
	if got := v.Expired(109*sec, 10); len(got) != 0 {
		t.Fatalf("Expired before time: %v", got)
	}
	exp := v.Expired(110*sec, 10)
	if len(exp["users"]) != 1 {
		t.Fatalf("Expired = %v", exp)
	}
	// Expire before the time does nothing; at the time it deletes.
	var n int
	if err := f.at(105*sec, func(b *Batch, rev uint64) error { n, err = b.Expire(rev, "users", exp["users"]); return err }); err != nil || n != 0 {
		t.Fatalf("early Expire: %d, %v", n, err)
	}
	b := f.s.Begin()
	b.SetTime(111 * sec)
	f.rev++
	if n, err = b.Expire(f.rev, "users", append(exp["users"], string(appendKey(nil, Int(99))))); err != nil || n != 1 {
		t.Fatalf("Expire: %d, %v", n, err)
	}
	ch := b.Changes()
	b.Commit()
	if len(ch) != 1 || !ch[0].Expired || ch[0].Row != "" || ch[0].Prev == "" {
		t.Fatalf("changes %+v", ch)
	}
	if _, ok := f.get("users", Int(1)); ok {
		t.Fatal("row still there after Expire")
	}
	if f.s.View().NextExpiry() != 0 {
		t.Fatal("expiry index not emptied")
	}
	if n, _ := f.s.View().Count("users", ScanOptions{Index: "by_email"}); n != 1 {
		t.Fatalf("index entries left: %d", n)
	}
}

func TestTTLCommandsTouchingExpiredRows(t *testing.T) {
	f := newFx(t, Options{TrackChanges: true})
	f.createTable(usersSchema())
	if _, err := f.txnAt(10*sec, ttlOp(insOp("users", user(1, "a", "a@", 1)), time.Second)); err != nil {
		t.Fatal(err)
	}
	// Past the expiry, an insert of the same key succeeds as a new row.
	res, err := f.txnAt(20*sec, insOp("users", user(1, "a2", "a2@", 2)))
	if err != nil {
		t.Fatalf("insert over an expired row: %v", err)
	}
	if m := res.Results[0].Meta; m.Version != 1 || m.CreateRevision != f.rev || m.ExpiresAt != 0 {
		t.Fatalf("meta %+v: not a fresh row", m)
	}
	// A unique index value held by an expired row is free again.
	if _, err := f.txnAt(21*sec, ttlOp(insOp("users", user(2, "b", "b@", 1)), time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.txnAt(21*sec+1, insOp("users", user(3, "c", "b@", 1))); !errors.Is(err, ErrUniqueViolation) {
		t.Fatalf("live unique value: %v", err)
	}
	if _, err := f.txnAt(30*sec, insOp("users", user(3, "c", "b@", 1))); err != nil {
		t.Fatalf("unique value of an expired row: %v", err)
	}
	if _, ok := f.get("users", Int(2)); ok {
		t.Fatal("the expired row holding the unique value is still stored")
	}
	// Update, delete, get and conditions see an expired row as absent.
	if _, err := f.txnAt(40*sec, ttlOp(insOp("users", user(4, "d", "d@", 1)), time.Second)); err != nil {
		t.Fatal(err)
	}
	h := f.s.View().Hash()
	if _, err := f.txnAt(50*sec, updOp("users", Int(4), flds("age", Int(9)))); !errors.Is(err, ErrRowNotFound) {
		t.Fatalf("update of an expired row: %v", err)
	}
	if f.s.View().Hash() != h {
		t.Fatal("a failed update changed the store (the expiry delete must be undone)")
	}
	res, err = f.txnAt(50*sec, getOp("users", Int(4)))
	if err != nil || res.Results[0].Found {
		t.Fatalf("get of an expired row: %+v %v", res, err)
	}
	var tr TxnResult
	_ = f.at(50*sec, func(b *Batch, rev uint64) error {
		tr, err = b.Txn(rev, Txn{Conditions: []Condition{{Table: "users", Key: Int(4), Test: CondExists}}})
		return err
	})
	if err != nil || tr.Succeeded {
		t.Fatalf("exists condition on an expired row: %+v %v", tr, err)
	}
}

func TestTTLUpdateTouchAndClear(t *testing.T) {
	f := newFx(t, Options{})
	f.createTable(usersSchema())
	if _, err := f.txnAt(10*sec, ttlOp(insOp("users", user(1, "a", "a@", 1)), 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	// Update without TTL keeps the expiry.
	if _, err := f.txnAt(11*sec, updOp("users", Int(1), flds("age", Int(2)))); err != nil {
		t.Fatal(err)
	}
	if e := f.mustGet("users", Int(1)).Meta.ExpiresAt; e != 15*sec {
		t.Fatalf("update changed the expiry to %d", e)
	}
	// Touch refreshes it and counts as a write.
	res, err := f.txnAt(14*sec, Op{Kind: OpTouch, Table: "users", Key: Int(1), TTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if m := res.Results[0].Meta; m.ExpiresAt != 19*sec || m.Version != 3 {
		t.Fatalf("touch meta %+v", m)
	}
	if r := f.mustGet("users", Int(1)); len(r.Fields) != 4 {
		t.Fatalf("touch changed the fields: %+v", r.Fields)
	}
	// Touch with a stale expected version fails and changes nothing.
	f.fail(ErrVersionMismatch, func(b *Batch, rev uint64) error {
		b.SetTime(15 * sec)
		_, err := b.Txn(rev, Txn{Then: []Op{{Kind: OpTouch, Table: "users", Key: Int(1), TTL: time.Second, ExpectedVersion: 1}}})
		return err
	})
	// Update with ClearTTL makes it permanent.
	if _, err := f.txnAt(16*sec, Op{Kind: OpUpdate, Table: "users", Key: Int(1), ClearTTL: true}); err != nil {
		t.Fatal(err)
	}
	if e := f.mustGet("users", Int(1)).Meta.ExpiresAt; e != 0 {
		t.Fatalf("ClearTTL left %d", e)
	}
	if f.s.View().NextExpiry() != 0 {
		t.Fatal("expiry index entry left behind")
	}
	// Bad input.
	for _, op := range []Op{
		{Kind: OpUpdate, Table: "users", Key: Int(1), TTL: time.Second, ClearTTL: true},
		ttlOp(insOp("users", user(5, "e", "e@", 1)), -time.Second),
		ttlOp(insOp("users", user(5, "e", "e@", 1)), MaxTTL+1),
	} {
		f.fail(ErrInvalidArgument, func(b *Batch, rev uint64) error {
			b.SetTime(20 * sec)
			_, err := b.Txn(rev, Txn{Then: []Op{op}})
			return err
		})
	}
	f.fail(ErrRowNotFound, func(b *Batch, rev uint64) error {
		b.SetTime(20 * sec)
		_, err := b.Txn(rev, Txn{Then: []Op{{Kind: OpTouch, Table: "users", Key: Int(7), TTL: time.Second}}})
		return err
	})
	// Without a log time a TTL cannot be computed.
	f.fail(ErrInvalidArgument, func(b *Batch, rev uint64) error {
		_, err := b.Txn(rev, Txn{Then: []Op{ttlOp(insOp("users", user(6, "f", "f@", 1)), time.Second)}})
		return err
	})
}

func TestTTLSurvivesSnapshotLoad(t *testing.T) {
	f := newFx(t, Options{})
	f.createTable(usersSchema())
	for i := int64(1); i <= 50; i++ {
		op := insOp("users", user(i, "n", "e"+itoa(int(i)), i))
		if i%2 == 0 {
			op.TTL = time.Duration(i) * time.Second
		}
		if _, err := f.txnAt(100*sec, op); err != nil {
			t.Fatal(err)
		}
	}
	v := f.s.View()
	s2, _ := New(Options{})
	l := s2.NewLoader()
	for _, ti := range v.Tables() {
		if err := l.AddTable(ti.Schema, ti.CreateRevision); err != nil {
			t.Fatal(err)
		}
		var err error
		_ = v.Rows(ti.Schema.Name, func(raw string) bool { err = l.AddRow(raw); return err == nil })
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := s2.Load(l, v.Revision()); err != nil {
		t.Fatal(err)
	}
	v2 := s2.View()
	if v2.Hash() != v.Hash() || v2.NextExpiry() != 102*sec {
		t.Fatalf("hash equal %v, next expiry %d", v2.Hash() == v.Hash(), v2.NextExpiry())
	}
	if got, want := len(v2.Expired(120*sec, 100)["users"]), 10; got != want {
		t.Fatalf("%d expired at 120s after load, want %d", got, want)
	}
	if n, _ := v2.At(120*sec).Count("users", ScanOptions{}); n != 40 {
		t.Fatalf("count at 120s = %d", n)
	}
}

func TestNegativeExpiryIsCorrupt(t *testing.T) {
	key := appendKey(nil, Int(1))
	if err := validateRow(encodeRow(key, Meta{CreateRevision: 1, ModRevision: 1, Version: 1, ExpiresAt: -5}, nil)); err == nil {
		t.Fatal("a row with a negative expiry was accepted")
	}
	if err := validateRow(encodeRow(key, Meta{CreateRevision: 1, ModRevision: 1, Version: 1, ExpiresAt: 5}, nil)); err != nil {
		t.Fatal(err)
	}
	f := newFx(t, Options{})
	f.createTable(usersSchema())
	f.fail(ErrInvalidArgument, func(b *Batch, rev uint64) error {
		b.SetTime(math.MaxInt64 - 10)
		_, err := b.Txn(rev, Txn{Then: []Op{ttlOp(insOp("users", user(1, "a", "a@", 1)), time.Second)}})
		return err
	})
}

// Rows past their expiry that the log has not deleted yet do not block a
// unique index; before their expiry they do, and the failure changes
// nothing.
func TestUniqueIndexIgnoresExpiredRows(t *testing.T) {
	f := newFx(t, Options{TrackChanges: true})
	f.createTable(usersSchema())
	if _, err := f.txnAt(10*sec, ttlOp(insOp("users", user(1, "a", "a@", 7)), time.Second), insOp("users", user(2, "b", "b@", 7))); err != nil {
		t.Fatal(err)
	}
	uniq := IndexSchema{Name: "uniq_age", Fields: []string{"age"}, Unique: true}
	f.fail(ErrUniqueViolation, func(b *Batch, rev uint64) error {
		b.SetTime(10*sec + 1)
		return b.CreateIndex(rev, "users", uniq)
	})
	if _, ok := f.get("users", Int(1)); !ok {
		t.Fatal("a failed index creation deleted a live row")
	}
	if err := f.at(20*sec, func(b *Batch, rev uint64) error { return b.CreateIndex(rev, "users", uniq) }); err != nil {
		t.Fatalf("unique index over an expired duplicate: %v", err)
	}
	if _, ok := f.get("users", Int(1)); ok {
		t.Fatal("the expired row is still stored")
	}
	if n, _ := f.s.View().Count("users", ScanOptions{Index: "uniq_age"}); n != 1 {
		t.Fatalf("index holds %d entries", n)
	}
}
